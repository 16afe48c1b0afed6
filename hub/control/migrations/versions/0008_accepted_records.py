"""Accepted records: the journal that makes an accepted event durable on the embedded broker.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26

Hand-written like the others. ``accepted_records`` holds, in ``seq`` order, every record an edge (FHIR
REST, Bundles, Da Vinci, MLLP) wrote to ``hub.ingress`` or ``hub.events`` on the embedded broker, written
after the broker's acknowledgement and before the 2xx/AA. The hub replays it into a fresh embedded
broker at start (the broker keeps its log in memory) and prunes it by age: see
``hub/control/journal.py`` and docs/adr/0012-durable-accepted-events.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "accepted_records"


def upgrade() -> None:
    """Create ``accepted_records`` and its index by age (pruning)."""
    op.create_table(
        _TABLE,
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("topic", sa.String(length=249), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("ce_id", sa.String(length=255), nullable=True),
        sa.Column(
            "accepted_at", sa.DateTime(timezone=True), server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_accepted_records")),
    )
    op.create_index(op.f("ix_accepted_records_accepted_at"), _TABLE, ["accepted_at"])


def downgrade() -> None:
    """Drop what :func:`upgrade` created."""
    op.drop_index(op.f("ix_accepted_records_accepted_at"), table_name=_TABLE)
    op.drop_table(_TABLE)
