"""Index the resource store by patient, for the consent source's load of a patient's Consents.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Hand-written like 0001 and 0002. ``SqlConsentSource`` (the route stage) reads the Consents whose
``patient_source`` is one of a hub patient's crosswalk sources on every cache miss; without this index
that is a scan of ``resources``.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``ix_resources_resource_type_patient_source``."""
    op.create_index(
        op.f("ix_resources_resource_type_patient_source"), "resources", ["resource_type", "patient_source"]
    )


def downgrade() -> None:
    """Drop the index :func:`upgrade` created."""
    op.drop_index(op.f("ix_resources_resource_type_patient_source"), table_name="resources")
