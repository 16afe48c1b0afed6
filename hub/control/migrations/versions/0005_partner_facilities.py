"""HL7 v2 sending facilities of hospital partners (MSH-4 -> partner), kept by the operator.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23

Hand-written like the others. ``partner_facilities`` maps an MSH-4 sending facility (its first
component, or all its components joined with ``^``) to the hospital partner that sends under it; a
facility belongs to one partner at most. ``HUB_MLLP_FACILITIES`` keeps working beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOW = sa.text("CURRENT_TIMESTAMP")


def upgrade() -> None:
    """Create ``partner_facilities``."""
    op.create_table(
        "partner_facilities",
        sa.Column("facility", sa.String(length=227), nullable=False),
        sa.Column("partner_id", sa.String(length=63), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_partner_facilities_partner_id_partners")
        ),
        sa.PrimaryKeyConstraint("facility", name=op.f("pk_partner_facilities")),
    )
    op.create_index(op.f("ix_partner_facilities_partner_id"), "partner_facilities", ["partner_id"])


def downgrade() -> None:
    """Drop what :func:`upgrade` created."""
    op.drop_index(op.f("ix_partner_facilities_partner_id"), table_name="partner_facilities")
    op.drop_table("partner_facilities")
