"""Audit of sharing decisions: every permit and deny, kept append-only for the accounting of disclosures.

Holds :class:`DecisionRecord` and the functions that record and list decisions. It touches only the
``consent_decisions`` table through the session it is given; the database itself rejects UPDATE and
DELETE on that table (triggers created by the migration).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Final, Literal, cast

from sqlalchemy import Row, Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.control.models import ConsentDecisionRow
from hub.control.store_errors import guarded
from hub.control.upsert import insert_ignoring_conflicts_template
from hub.control.validation import require_text
from hub.errors import InvalidInput

Verdict = Literal["permit", "deny"]
VERDICTS: Final = ("permit", "deny")
MAX_LIST_LIMIT: Final = 10_000
# Rows per INSERT statement: 9 parameters each stays far below SQLite's bound-parameter limit.
_BATCH: Final = 500
_TABLE: Final = cast("Table", ConsentDecisionRow.__table__)
_TEXT_LIMITS: Final = {
    "event_id": 255,
    "hub_patient_id": 64,
    "recipient_id": 63,
    "rule": 128,
    "purpose": 64,
    "resource_type": 64,
}
_UNIQUE_KEY: Final = ("event_id", "recipient_id", "verdict", "rule")


_DecisionColumns = Row[str, str, str, str, str, str, str, str, datetime]


@dataclass(frozen=True)
class DecisionRecord:
    """One consent decision about one event for one recipient, as audited."""

    event_id: str
    hub_patient_id: str
    recipient_id: str
    verdict: Verdict
    rule: str
    reason: str
    purpose: str
    resource_type: str
    decided_at: datetime


def validate_record(record: DecisionRecord) -> None:
    """Raise :class:`hub.errors.InvalidInput` (``expression`` = field name) for an unstorable record."""
    for field, limit in _TEXT_LIMITS.items():
        require_text(field, getattr(record, field), limit)
    require_text("reason", record.reason, 10_000, single_line=False)
    if record.verdict not in VERDICTS:
        raise InvalidInput("verdict must be 'permit' or 'deny'", expression="verdict")
    if record.decided_at.tzinfo is None or record.decided_at.utcoffset() is None:
        raise InvalidInput("decided_at must be timezone-aware", expression="decided_at")


async def record_decisions(session: AsyncSession, records: Sequence[DecisionRecord]) -> None:
    """Append ``records``; a record already audited (same event, recipient, verdict, rule) is skipped.

    Idempotent, so a retried pipeline step does not count a disclosure twice. Commits.
    """
    for record in records:
        validate_record(record)
    if not records:
        return
    rows = [asdict(record) for record in records]
    async with guarded(session, "record_decisions"):
        dialect = session.get_bind().dialect.name
        statement = insert_ignoring_conflicts_template(dialect, _TABLE, _UNIQUE_KEY)
        for start in range(0, len(rows), _BATCH):
            await session.execute(statement, rows[start : start + _BATCH])
        await session.commit()


def _record(row: _DecisionColumns) -> DecisionRecord:
    return DecisionRecord(
        event_id=row.event_id,
        hub_patient_id=row.hub_patient_id,
        recipient_id=row.recipient_id,
        verdict=cast("Verdict", row.verdict),
        rule=row.rule,
        reason=row.reason,
        purpose=row.purpose,
        resource_type=row.resource_type,
        decided_at=row.decided_at,
    )


async def list_decisions(
    session: AsyncSession,
    *,
    hub_patient_id: str | None = None,
    event_id: str | None = None,
    recipient_id: str | None = None,
    limit: int = 1000,
) -> list[DecisionRecord]:
    """Audited decisions matching every given filter, oldest first (by insertion id), at most ``limit``."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIST_LIMIT}", expression="limit")
    row_type = ConsentDecisionRow
    statement = select(
        row_type.event_id,
        row_type.hub_patient_id,
        row_type.recipient_id,
        row_type.verdict,
        row_type.rule,
        row_type.reason,
        row_type.purpose,
        row_type.resource_type,
        row_type.decided_at,
    )
    if hub_patient_id is not None:
        statement = statement.where(row_type.hub_patient_id == hub_patient_id)
    if event_id is not None:
        statement = statement.where(row_type.event_id == event_id)
    if recipient_id is not None:
        statement = statement.where(row_type.recipient_id == recipient_id)
    statement = statement.order_by(row_type.id).limit(limit)
    async with guarded(session, "list_decisions"):
        rows = (await session.execute(statement)).all()
    return [_record(row) for row in rows]
