"""The accounting of disclosures (HIPAA 45 CFR 164.528) and the AuditEvent export, for the admin API and CLI.

Holds the query parsing both surfaces share (:func:`parse_instant`, :func:`accounting_window`,
:func:`parse_limit`, cursors), the JSON shapes (:func:`disclosure_json`, :func:`accounting_json`,
:func:`searchset_bundle`) and two async readers, :func:`read_accounting` and :func:`read_audit_events`,
that gather through ``hub.control`` (audit, partners) on the session they are given and never write.
Everything else here is pure. Invalid input raises :class:`hub.errors.InvalidInput` whose ``expression``
names the query parameter; messages never echo a patient identifier.

See ``docs/adr/0008-accounting-and-audit-export.md`` for what is listed and why.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

from hub.control import audit, partners
from hub.control.audit import AuditEntry, AuditKey, PatientMatch, Verdict
from hub.control.balp import ACT_REASON, HubIdentity, audit_event, describe_resource, is_tpo, purpose_display
from hub.errors import InvalidInput

#: HIPAA 164.528(a)(1): the accounting covers the six years before the request.
ACCOUNTING_YEARS: Final = 6
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,200}")
_MAX_POSITION: Final = 2**63 - 1  # a row id; a larger number cannot be bound as one


@dataclass(frozen=True)
class Window:
    """The period an accounting covers: ``since`` inclusive, ``until`` exclusive (UTC).

    ``default_since``: ``since`` was not given, so the window is the six years HIPAA entitles the
    individual to. ``beyond_six_years``: the operator asked for more than that (allowed: state law or an
    investigation may need it; the response says so).
    """

    since: datetime
    until: datetime
    default_since: bool
    beyond_six_years: bool


def years_before(moment: datetime, years: int) -> datetime:
    """The same calendar instant ``years`` earlier (29 February becomes 28 February)."""
    try:
        return moment.replace(year=moment.year - years)
    except ValueError:
        return moment.replace(year=moment.year - years, day=28)


def parse_instant(name: str, text: str, *, end_of_day: bool = False) -> datetime:
    """A query date or time as an aware UTC datetime.

    ``YYYY-MM-DD`` is a UTC day: its start, or with ``end_of_day`` the start of the next day (so an
    exclusive ``until=2024-12-31`` still covers 31 December). A time must carry its offset (``Z`` or
    ``+hh:mm``): a naive time is ambiguous by up to a day.
    """
    value = text.strip()
    if _DATE.fullmatch(value):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise InvalidInput(f"{name} is not a valid date (YYYY-MM-DD)", expression=name) from None
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if end_of_day and day == date.max:
            return datetime.max.replace(tzinfo=UTC)
        return start + timedelta(days=1) if end_of_day else start
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{name} must be a date YYYY-MM-DD or a time with offset such as 2024-05-01T08:00:00Z", expression=name
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput(
            f"{name} needs a UTC offset (e.g. 2024-05-01T08:00:00Z) or use a date YYYY-MM-DD", expression=name
        )
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first UTC instant datetime holds
        raise InvalidInput(f"{name} is out of range", expression=name) from None


def _ordered(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        raise InvalidInput("since must be before until", expression="since")


def accounting_window(since: str | None, until: str | None, *, now: datetime) -> Window:
    """The accounting's period: ``until`` defaults to ``now``, ``since`` to six years before ``now``."""
    end = parse_instant("until", until, end_of_day=True) if until else now.astimezone(UTC)
    six_years_ago = years_before(now.astimezone(UTC), ACCOUNTING_YEARS)
    start = parse_instant("since", since) if since else six_years_ago
    if start >= end:
        if since:
            raise InvalidInput("since must be before until", expression="since")
        raise InvalidInput(
            "until is before the default since (six years ago): give since as well", expression="until"
        )
    return Window(since=start, until=end, default_since=not since, beyond_six_years=start < six_years_ago)


def export_window(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """The export's optional bounds (no default: the export is every audited decision)."""
    start = parse_instant("since", since) if since else None
    end = parse_instant("until", until, end_of_day=True) if until else None
    _ordered(start, end)
    return start, end


def parse_limit(name: str, text: str | None, *, default: int = DEFAULT_LIMIT) -> int:
    """A page size between 1 and :data:`MAX_LIMIT`."""
    if text is None or text == "":
        return default
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or not 1 <= int(digits) <= MAX_LIMIT:  # '²'.isdigit() is True
        raise InvalidInput(f"{name} must be a whole number between 1 and {MAX_LIMIT}", expression=name)
    return int(digits)


def parse_verdict(text: str | None) -> Verdict | None:
    """``permit``, ``deny`` or nothing (both)."""
    if text is None or text == "":
        return None
    if text == "permit":
        return "permit"
    if text == "deny":
        return "deny"
    raise InvalidInput("verdict must be 'permit' or 'deny'", expression="verdict")


def encode_cursor(key: AuditKey) -> str:
    """An opaque continuation token for the page after ``key``."""
    raw = f"{key.decided_at.astimezone(UTC).isoformat()}|{key.position}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str | None) -> AuditKey | None:
    """The position a cursor from :func:`encode_cursor` names; InvalidInput for anything else."""
    if text is None or text == "":
        return None
    invalid = InvalidInput("cursor is not one this server issued: use the next link of the previous page",
                           expression="cursor")
    if _CURSOR.fullmatch(text) is None:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        stamp, _, position = raw.partition("|")
        moment = datetime.fromisoformat(stamp)
        number = int(position)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid from None
    if moment.tzinfo is None or not 0 <= number <= _MAX_POSITION:
        raise invalid
    try:
        return AuditKey(decided_at=moment.astimezone(UTC), position=number)
    except OverflowError:
        raise invalid from None


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def disclosure_json(entry: AuditEntry, partner: partners.Partner | None, resource: str | None) -> dict[str, Any]:
    """One line of the accounting: date, recipient, what was shared, why, and the rule that allowed it."""
    record = entry.record
    return {
        "date": _instant(record.decided_at),
        "event_id": record.event_id,
        "recipient": {
            "id": record.recipient_id,
            "name": partner.name if partner else None,
            "organization": partner.organization if partner else None,
            "kind": partner.kind if partner else None,
        },
        "description": describe_resource(record.resource_type),
        "resource_type": record.resource_type,
        "resource": resource,
        "purpose": {"code": record.purpose, "display": purpose_display(record.purpose), "system": ACT_REASON},
        "tpo": is_tpo(record.purpose),
        "rule": record.rule,
        "reason": record.reason,
    }


@dataclass(frozen=True)
class Accounting:
    """One page of a patient's accounting of disclosures."""

    patient: PatientMatch | None
    window: Window
    disclosures: tuple[dict[str, Any], ...]
    next_after: AuditKey | None


def accounting_json(accounting: Accounting, *, next_url: str | None = None) -> dict[str, Any]:
    """The accounting as the admin API answers it (and ``carehub audit disclosures --json`` prints it)."""
    match = accounting.patient
    return {
        "patient": {
            "hub_patient_id": match.hub_patient_id if match else None,
            "linked_identifiers": len(match.sources) if match else 0,
        },
        "period": {
            "since": _instant(accounting.window.since),
            "until": _instant(accounting.window.until),
            "six_year_default": accounting.window.default_since,
            "beyond_six_years": accounting.window.beyond_six_years,
        },
        "count": len(accounting.disclosures),
        "disclosures": list(accounting.disclosures),
        "next": next_url,
    }


async def _partners_by_id(session: AsyncSession) -> dict[str, partners.Partner]:
    return {partner.id: partner for partner in await partners.list_partners(session)}


async def _page(
    session: AsyncSession, *, limit: int, **filters: Any
) -> tuple[list[AuditEntry], AuditKey | None]:
    """A page and, when more rows follow (one more was read to know), the key to continue after."""
    entries = await audit.page_decisions(session, limit=limit + 1, **filters)
    if len(entries) > limit:
        entries = entries[:limit]
        return entries, entries[-1].key
    return entries, None


async def read_accounting(
    session: AsyncSession,
    patient: str,
    window: Window,
    *,
    after: AuditKey | None = None,
    limit: int = DEFAULT_LIMIT,
    directory: Mapping[str, partners.Partner] | None = None,
) -> Accounting:
    """One page of the disclosures (permitted decisions) of ``patient`` within ``window``, oldest first.

    ``patient`` is a hub patient id or any crosswalk source of it; every source of that hub patient is
    covered (the audit is keyed by hub patient id). An unknown patient has an empty accounting.
    """
    match = await audit.find_patient(session, patient)
    if match is None:
        return Accounting(patient=None, window=window, disclosures=(), next_after=None)
    entries, next_after = await _page(
        session, limit=limit, hub_patient_id=match.hub_patient_id, verdict="permit",
        since=window.since, until=window.until, after=after, disclosures_only=True,
    )
    known = directory if directory is not None else await _partners_by_id(session)
    resources = await audit.disclosed_resources(session, [entry.record.event_id for entry in entries])
    lines = tuple(
        disclosure_json(entry, known.get(entry.record.recipient_id), resources.get(entry.record.event_id))
        for entry in entries
    )
    return Accounting(patient=match, window=window, disclosures=lines, next_after=next_after)


async def read_audit_events(
    session: AsyncSession,
    *,
    patient: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    verdict: Verdict | None = None,
    after: AuditKey | None = None,
    limit: int = DEFAULT_LIMIT,
    hub: HubIdentity | None = None,
    directory: Mapping[str, partners.Partner] | None = None,
) -> tuple[list[dict[str, Any]], AuditKey | None]:
    """One page of audited decisions as BALP AuditEvents, oldest first, and where the next page starts."""
    hub_patient_id: str | None = None
    if patient is not None:
        match = await audit.find_patient(session, patient)
        if match is None:
            return [], None
        hub_patient_id = match.hub_patient_id
    entries, next_after = await _page(
        session, limit=limit, hub_patient_id=hub_patient_id, verdict=verdict, since=since, until=until, after=after
    )
    known = directory if directory is not None else await _partners_by_id(session)
    resources = await audit.disclosed_resources(session, [entry.record.event_id for entry in entries])
    events = [
        audit_event(
            entry.record, known.get(entry.record.recipient_id), resource=resources.get(entry.record.event_id), hub=hub
        )
        for entry in entries
    ]
    return events, next_after


def searchset_bundle(
    events: Sequence[dict[str, Any]], *, self_url: str, next_url: str | None, now: datetime
) -> dict[str, Any]:
    """A FHIR R4 ``searchset`` Bundle of AuditEvents with ``self`` and (when more follow) ``next`` links."""
    links = [{"relation": "self", "url": self_url}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": _instant(now),
        "link": links,
        "entry": [
            {"fullUrl": f"urn:uuid:{event['id']}", "resource": event, "search": {"mode": "match"}}
            for event in events
        ],
    }
