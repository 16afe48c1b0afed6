"""Index the consent-decision audit for the accounting of disclosures and the AuditEvent export.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24

Hand-written like 0001-0003. Both reads page through ``consent_decisions`` in ``(decided_at, id)``
order with a keyset cursor (``hub.control.audit.page_decisions``):

* ``ix_consent_decisions_hub_patient_id_verdict_decided_at_id`` serves the accounting of one patient's
  disclosures (``hub_patient_id = ? AND verdict = 'permit' AND (decided_at, id) > (?, ?)``) as one range
  scan, without reading the denies (most decisions are denies: every CBO is a candidate for every
  event). Its ``hub_patient_id`` prefix also serves every other per-patient read, so it replaces
  ``ix_consent_decisions_hub_patient_id`` (one index less to maintain on the pipeline's hot insert).
* ``ix_consent_decisions_decided_at_id`` serves the export of every patient's decisions by time.

On PostgreSQL ``CREATE INDEX`` blocks inserts into the table while it builds; on a large audit run
``carehub db upgrade`` in a quiet period (the upgrade is one transaction, so ``CONCURRENTLY`` cannot be used).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "consent_decisions"


def upgrade() -> None:
    """Create the two keyset indexes and drop the single-column patient index they make redundant."""
    op.create_index(
        op.f("ix_consent_decisions_hub_patient_id_verdict_decided_at_id"),
        _TABLE,
        ["hub_patient_id", "verdict", "decided_at", "id"],
    )
    op.create_index(op.f("ix_consent_decisions_decided_at_id"), _TABLE, ["decided_at", "id"])
    op.drop_index(op.f("ix_consent_decisions_hub_patient_id"), table_name=_TABLE)


def downgrade() -> None:
    """Restore the 0003 indexes."""
    op.create_index(op.f("ix_consent_decisions_hub_patient_id"), _TABLE, ["hub_patient_id"])
    op.drop_index(op.f("ix_consent_decisions_decided_at_id"), table_name=_TABLE)
    op.drop_index(op.f("ix_consent_decisions_hub_patient_id_verdict_decided_at_id"), table_name=_TABLE)
