"""Partner rosters: the patients a partner (a CBO) serves, so admit/discharge events reach it (issue 5).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24

Hand-written like the others. ``partner_rosters`` holds one row per (partner, patient name); the patient
is named by exactly one of ``source`` (a crosswalk source, ``system|value``, resolved through
``patient_identities`` when the route stage reads the roster, so an entry the crosswalk does not know
yet starts matching as soon as it does) or ``hub_patient_id``. The two unique constraints lead with the
patient column, so they are also the indexes of the route stage's read "whose roster holds this
patient?"; ``(partner_id, id)`` serves listing one partner's roster. See docs/adr/0009-rosters.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "partner_rosters"
_BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create ``partner_rosters``."""
    op.create_table(
        _TABLE,
        sa.Column("id", _BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("source", sa.String(length=512), nullable=True),
        sa.Column("hub_patient_id", sa.String(length=64), nullable=True),
        sa.Column("added_at", sa.DateTime(timezone=True), server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.CheckConstraint(
            "(source IS NULL) <> (hub_patient_id IS NULL)", name=op.f("ck_partner_rosters_one_patient_name")
        ),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"], name=op.f("fk_partner_rosters_partner_id_partners")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partner_rosters")),
        sa.UniqueConstraint("source", "partner_id", name=op.f("uq_partner_rosters_source_partner_id")),
        sa.UniqueConstraint("hub_patient_id", "partner_id", name=op.f("uq_partner_rosters_hub_patient_id_partner_id")),
    )
    op.create_index(op.f("ix_partner_rosters_partner_id_id"), _TABLE, ["partner_id", "id"])


def downgrade() -> None:
    """Drop what :func:`upgrade` created."""
    op.drop_index(op.f("ix_partner_rosters_partner_id_id"), table_name=_TABLE)
    op.drop_table(_TABLE)
