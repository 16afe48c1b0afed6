"""Hub secrets: random keys the hub generates once and every process on the same database shares.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25

Hand-written like the others. ``hub_secrets`` holds one row per named secret (e.g. ``record-proof``, the
HMAC key that proves a ``hub.*`` record was written by the hub when ``HUB_RECORD_KEY`` is unset). A row
is inserted once, by whichever process asks first (``INSERT ... ON CONFLICT DO NOTHING``), and never
updated: see ``hub/control/secrets.py`` and docs/adr/0010-record-proof.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "hub_secrets"


def upgrade() -> None:
    """Create ``hub_secrets``."""
    op.create_table(
        _TABLE,
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_hub_secrets")),
    )


def downgrade() -> None:
    """Drop what :func:`upgrade` created."""
    op.drop_table(_TABLE)
