"""Audit of sharing decisions: every permit and deny, kept append-only for the accounting of disclosures.

Holds :class:`DecisionRecord` and the functions that record and list decisions, plus the keyset-paged
reads of the accounting of disclosures and the AuditEvent export (:func:`page_decisions`,
:func:`find_patient`, :func:`disclosed_resources`). It writes only the ``consent_decisions`` table through
the session it is given; the database itself rejects UPDATE and DELETE on that table (triggers created
by the migration). The read helpers also read, never write, ``patient_identities`` (to resolve a patient
named by a source identifier) and ``resources`` (to name the resource version an event carried).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, cast

from sqlalchemy import BindParameter, Row, Select, Table, exists, literal, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from hub.control.models import ConsentDecisionRow, PatientIdentityRow, ResourceRow
from hub.control.sqltypes import UTCDateTime
from hub.control.store_errors import guarded
from hub.control.upsert import insert_ignoring_conflicts_template
from hub.control.validation import require_text
from hub.errors import InvalidInput

Verdict = Literal["permit", "deny"]
VERDICTS: Final = ("permit", "deny")
#: Rules of decisions the consent decision service (CDS Hooks) audits: answers, not disclosures.
CONSULT_RULE_PREFIX: Final = "cds:"
MAX_LIST_LIMIT: Final = 10_000
#: Largest page :func:`page_decisions` returns.
MAX_PAGE: Final = 5000
#: How a hub patient id looks (``hp-`` + 32 hex digits, see ``hub.control.crosswalk``).
_HUB_PATIENT_ID = re.compile(r"hp-[0-9a-f]{32}")
_SOURCE_MAX: Final = 512
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
    if not records:
        return
    async with guarded(session, "record_decisions"):
        await insert_decisions(session, records)
        await session.commit()


async def insert_decisions(session: AsyncSession, records: Sequence[DecisionRecord]) -> None:
    """:func:`record_decisions` inside the caller's transaction: validates and inserts, neither commits nor
    translates driver errors (the caller runs it under ``guarded`` and commits, e.g. together with the
    delivery numbers of the same batch)."""
    for record in records:
        validate_record(record)
    rows = [_row(record) for record in records]
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    statement = insert_ignoring_conflicts_template(dialect, _TABLE, _UNIQUE_KEY)
    for start in range(0, len(rows), _BATCH):
        await session.execute(statement, rows[start : start + _BATCH])


def _row(record: DecisionRecord) -> dict[str, object]:
    # Field by field: dataclasses.asdict deep-copies every value, which the hot path does not need.
    return {
        "event_id": record.event_id,
        "hub_patient_id": record.hub_patient_id,
        "recipient_id": record.recipient_id,
        "verdict": record.verdict,
        "rule": record.rule,
        "reason": record.reason,
        "purpose": record.purpose,
        "resource_type": record.resource_type,
        "decided_at": record.decided_at,
    }


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
    statement = _decision_columns()
    if hub_patient_id is not None:
        statement = statement.where(row_type.hub_patient_id == hub_patient_id)
    if event_id is not None:
        statement = statement.where(row_type.event_id == event_id)
    if recipient_id is not None:
        statement = statement.where(row_type.recipient_id == recipient_id)
    statement = statement.order_by(row_type.id).limit(limit)
    async with guarded(session, "list_decisions"):
        rows = (await session.execute(statement)).all()
    return [_record(cast("_DecisionColumns", row)) for row in rows]


async def was_disclosed_to(session: AsyncSession, recipient_id: str, hub_patient_id: str) -> bool:
    """Whether anything about the patient was ever permitted to ``recipient_id`` (consent service answers,
    rules ``cds:*``, do not count: they disclosed nothing)."""
    row_type = ConsentDecisionRow
    statement = select(
        exists().where(
            row_type.hub_patient_id == hub_patient_id,
            row_type.verdict == "permit",
            row_type.recipient_id == recipient_id,
            ~row_type.rule.startswith(CONSULT_RULE_PREFIX, autoescape=True),
        )
    )
    async with guarded(session, "was_disclosed_to"):
        return bool(await session.scalar(statement))


# --- keyset-paged reads: the accounting of disclosures and the AuditEvent export -------------------------


@dataclass(frozen=True, order=True)
class AuditKey:
    """A position in the audit's reading order: ``decided_at``, then the row id (insertion order)."""

    decided_at: datetime
    position: int


@dataclass(frozen=True)
class AuditEntry:
    """One audited decision and its row id (stable: the table is append-only)."""

    position: int
    record: DecisionRecord

    @property
    def key(self) -> AuditKey:
        """Where a page that ends with this entry continues."""
        return AuditKey(self.record.decided_at, self.position)


@dataclass(frozen=True)
class PatientMatch:
    """A hub patient and every crosswalk source (``system|value`` or namespaced reference) linked to it."""

    hub_patient_id: str
    sources: tuple[str, ...]


def _decision_columns() -> Select[int, str, str, str, str, str, str, str, str, datetime]:
    row_type = ConsentDecisionRow
    return select(
        row_type.id,
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


def _check_aware(field: str, value: datetime | None) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise InvalidInput(f"{field} must be timezone-aware", expression=field)


async def page_decisions(
    session: AsyncSession,
    *,
    hub_patient_id: str | None = None,
    verdict: Verdict | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: AuditKey | None = None,
    limit: int = 100,
    disclosures_only: bool = False,
) -> list[AuditEntry]:
    """One page of audited decisions in ``(decided_at, id)`` order, oldest first.

    ``since`` is inclusive, ``until`` exclusive; ``after`` is the key of the last entry of the previous
    page (keyset paging: a page costs the same however deep it is, and rows appended meanwhile never
    shift it). ``disclosures_only`` leaves out the answers of the consent decision service (rules
    ``cds:*``): they answered a question, nothing was disclosed. With ``hub_patient_id`` and ``verdict``
    the read is one range scan of ``ix_consent_decisions_hub_patient_id_verdict_decided_at_id`` (the rule
    is checked on the rows it yields); without a patient, of ``ix_consent_decisions_decided_at_id``
    (migration 0004).
    """
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", expression="limit")
    if verdict is not None and verdict not in VERDICTS:
        raise InvalidInput("verdict must be 'permit' or 'deny'", expression="verdict")
    _check_aware("since", since)
    _check_aware("until", until)
    if after is not None:
        _check_aware("after", after.decided_at)
    row_type = ConsentDecisionRow
    statement = _decision_columns()
    if hub_patient_id is not None:
        statement = statement.where(row_type.hub_patient_id == hub_patient_id)
    if verdict is not None:
        statement = statement.where(row_type.verdict == verdict)
    if disclosures_only:
        statement = statement.where(~row_type.rule.startswith(CONSULT_RULE_PREFIX, autoescape=True))
    if since is not None:
        statement = statement.where(row_type.decided_at >= since)
    if until is not None:
        statement = statement.where(row_type.decided_at < until)
    if after is not None:
        statement = statement.where(
            tuple_(row_type.decided_at, row_type.id) > tuple_(_typed(after.decided_at), after.position)
        )
    statement = statement.order_by(row_type.decided_at, row_type.id).limit(limit)
    async with guarded(session, "page_decisions"):
        rows = (await session.execute(statement)).all()
    return [AuditEntry(position=row.id, record=_record(cast("_DecisionColumns", row))) for row in rows]


def _typed(value: datetime) -> BindParameter[datetime]:
    """``value`` bound with the column's type (stored in UTC, in the column's format on SQLite)."""
    return literal(value, UTCDateTime())


async def find_patient(session: AsyncSession, patient: str) -> PatientMatch | None:
    """The hub patient named by ``patient`` (a hub patient id or any crosswalk source), or None.

    Read only: unlike ``crosswalk.resolve_patient`` an unknown source is not created. A hub patient id
    the crosswalk does not hold (e.g. decided about, but its sources never recorded) still matches,
    with no sources.
    """
    if _HUB_PATIENT_ID.fullmatch(patient):
        statement = select(PatientIdentityRow.source).where(PatientIdentityRow.hub_patient_id == patient)
        async with guarded(session, "find_patient"):
            sources = (await session.scalars(statement)).all()
        return PatientMatch(hub_patient_id=patient, sources=tuple(sorted(sources)))
    require_text("patient", patient, _SOURCE_MAX)
    lookup = select(PatientIdentityRow.hub_patient_id).where(PatientIdentityRow.source == patient)
    async with guarded(session, "find_patient"):
        hub_patient_id = await session.scalar(lookup)
        if hub_patient_id is None:
            return None
        statement = select(PatientIdentityRow.source).where(PatientIdentityRow.hub_patient_id == hub_patient_id)
        sources = (await session.scalars(statement)).all()
    return PatientMatch(hub_patient_id=hub_patient_id, sources=tuple(sorted(sources)))


async def disclosed_resources(session: AsyncSession, event_ids: Sequence[str]) -> dict[str, str]:
    """``ResourceType/id/_history/version`` of the stored resource version each event carried.

    Events the FHIR store holds no version for (e.g. HL7 v2 ADT) are absent from the answer. Uses
    ``ix_resources_event_id``.
    """
    wanted = [event for event in dict.fromkeys(event_ids) if event]
    found: dict[str, str] = {}
    async with guarded(session, "disclosed_resources"):
        for start in range(0, len(wanted), _BATCH):
            statement = select(
                ResourceRow.event_id, ResourceRow.resource_type, ResourceRow.resource_id, ResourceRow.version_id
            ).where(ResourceRow.event_id.in_(wanted[start : start + _BATCH]))
            for row in (await session.execute(statement)).all():
                if row.event_id is not None:
                    found[row.event_id] = f"{row.resource_type}/{row.resource_id}/_history/{row.version_id}"
    return found
