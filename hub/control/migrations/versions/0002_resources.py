"""FHIR resource store: versioned resources and the identifier index of their current versions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

Hand-written like 0001. ``resources`` keeps every version of every resource the FHIR edge accepted
(primary key type, id, version); ``resource_identifiers`` holds the identifiers of the current version
only, for ``If-None-Exist: identifier=system|value``. No foreign keys: the FHIR store outlives partner
changes, like the audit.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``resources`` and ``resource_identifiers``."""
    op.create_table(
        "resources",
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sender", sa.String(63), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=True),
        sa.Column("patient_source", sa.String(512), nullable=True),
        sa.PrimaryKeyConstraint("resource_type", "resource_id", "version_id", name=op.f("pk_resources")),
        sa.CheckConstraint("version_id >= 1", name=op.f("ck_resources_version_positive")),
    )
    op.create_index(op.f("ix_resources_event_id"), "resources", ["event_id"])
    op.create_table(
        "resource_identifiers",
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("id_system", sa.String(512), nullable=False),
        sa.Column("id_value", sa.String(512), nullable=False),
        sa.PrimaryKeyConstraint(
            "resource_type", "id_system", "id_value", "resource_id", name=op.f("pk_resource_identifiers")
        ),
    )
    op.create_index(
        op.f("ix_resource_identifiers_resource_type_resource_id"),
        "resource_identifiers",
        ["resource_type", "resource_id"],
    )
    op.create_index(
        op.f("ix_resource_identifiers_resource_type_id_value"), "resource_identifiers", ["resource_type", "id_value"]
    )


def downgrade() -> None:
    """Drop everything :func:`upgrade` created."""
    op.drop_index(op.f("ix_resource_identifiers_resource_type_id_value"), table_name="resource_identifiers")
    op.drop_index(op.f("ix_resource_identifiers_resource_type_resource_id"), table_name="resource_identifiers")
    op.drop_table("resource_identifiers")
    op.drop_index(op.f("ix_resources_event_id"), table_name="resources")
    op.drop_table("resources")
