"""Partner rosters: which patients a CBO serves, so the route stage offers it their admit/discharge events.

Holds the :class:`RosterEntry` value, :func:`parse_patient` (how an operator names a patient) and the async
functions that add, remove, list and replace (sync) entries and answer the route stage's question "whose roster holds
this hub patient?" (:func:`rostered_partners`). It touches the ``partner_rosters`` table (read and
write) and reads ``partners`` and ``patient_identities``, through the session it is given.

An entry names the patient by a crosswalk *source* (``system|value``, as the CBO knows the patient) or by
hub patient id. Sources are stored as given and joined through ``patient_identities`` at read time, never
resolved (or created) when the entry is added: an identifier the crosswalk does not know yet matches as
soon as a hospital's Patient or event teaches it, and adding an entry never mints a hub patient id (the
crosswalk does not merge two ids, so an id minted early would keep the CBO's identifier apart from the
hospital's patient for good). See docs/adr/0009-rosters.md. Identifiers are PHI: no error message
repeats one.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, delete, insert, select, union
from sqlalchemy.ext.asyncio import AsyncSession

from hub.control.crosswalk import HUB_PATIENT_ID_PREFIX, SOURCE_MAX
from hub.control.models import PartnerRosterRow, PartnerRow, PatientIdentityRow
from hub.control.partners import PartnerNotFound
from hub.control.sqltypes import utc_now
from hub.control.store_errors import guarded
from hub.control.upsert import insert_ignoring_conflicts
from hub.errors import InvalidInput, PermanentError

#: Partner kinds that may hold a roster. Hospitals are left out for now (docs/adr/0009-rosters.md).
ROSTER_KINDS: Final = frozenset({"cbo"})
DEFAULT_LIMIT: Final = 1000
MAX_LIMIT: Final = 10_000
_HUB_PATIENT_ID = re.compile(re.escape(HUB_PATIENT_ID_PREFIX) + r"[0-9a-f]{32}")
# The same shape as a partner's organization identifier: neither part empty, no '|' inside, no spaces
# in the system and none around the value.
_IDENTIFIER = re.compile(r"([^\s|]*)\|([^\s|](?:[^|]*[^\s|])?)")
_CHUNK = 500
#: Most patients one roster sync takes (a CBO's whole client list).
MAX_SYNC: Final = 100_000


def partner_namespace(partner_id: str) -> str:
    """The URN of a partner's local names: the same as ``hub.adapters.fhir_facts.partner_namespace``."""
    return f"urn:carehub:partner:{partner_id}"


@dataclass(frozen=True)
class RosterEntry:
    """One patient on one partner's roster.

    ``source`` or ``named_hub_patient_id`` is how the entry names the patient (exactly one is set);
    ``hub_patient_id`` is the patient's hub id when known (named directly, or the crosswalk knows the
    source), else None: the entry matches nothing yet.
    """

    id: int
    partner_id: str
    source: str | None
    named_hub_patient_id: str | None
    hub_patient_id: str | None
    added_at: datetime

    @property
    def patient(self) -> str:
        """The patient as the entry names it (the source, or the hub patient id)."""
        return self.source or self.named_hub_patient_id or ""

    def to_public(self) -> dict[str, Any]:
        """JSON-ready form for the admin API."""
        return {
            "id": self.id,
            "partner_id": self.partner_id,
            "patient": self.patient,
            "hub_patient_id": self.hub_patient_id,
            "added_at": self.added_at.isoformat(),
        }


class RosterNotAllowed(PermanentError):
    """The partner is of a kind that holds no roster (a hospital)."""

    def __init__(self, partner_id: str, kind: str) -> None:
        super().__init__(
            f"partner {partner_id} is a {kind}: only community-based organizations (kind 'cbo') hold a roster"
        )
        self.partner_id = partner_id
        self.kind = kind


def parse_patient(partner_id: str, patient: str) -> tuple[str | None, str | None]:
    """``(source, hub_patient_id)`` of a patient as an operator names it for ``partner_id``'s roster.

    * ``system|value``: a crosswalk source, kept as given (an identifier the hub may not know yet);
    * ``|value`` (no system): the partner's own local identifier, ``urn:carehub:partner:<id>|value``, the
      form the edges give a system-less identifier this partner sends;
    * ``hp-`` and 32 hex digits: a hub patient id.

    Raises :class:`hub.errors.InvalidInput` (``expression`` ``patient``) for anything else; the message
    does not repeat the value.
    """
    if not isinstance(patient, str) or not patient.strip():
        raise InvalidInput(
            "patient is required: an identifier 'system|value' or a hub patient id", expression="patient"
        )
    if any(ord(char) < 32 or ord(char) == 127 for char in patient):
        raise InvalidInput("patient must not contain control characters", expression="patient")
    if _HUB_PATIENT_ID.fullmatch(patient):
        return None, patient
    match = _IDENTIFIER.fullmatch(patient)
    if match is None:
        raise InvalidInput(
            "patient must be an identifier 'system|value' (value not empty, no '|' inside, no spaces in the "
            "system; '|value' for the partner's own local identifier) or a hub patient id 'hp-<32 hex digits>'",
            expression="patient",
        )
    source = patient if match[1] else f"{partner_namespace(partner_id)}|{match[2]}"
    if len(source) > SOURCE_MAX:
        raise InvalidInput(f"patient must be at most {SOURCE_MAX} characters", expression="patient")
    return source, None


def _entries_statement() -> Any:
    resolved = PatientIdentityRow.hub_patient_id
    return (
        select(
            PartnerRosterRow.id, PartnerRosterRow.partner_id, PartnerRosterRow.source,
            PartnerRosterRow.hub_patient_id.label("named"), resolved.label("resolved"), PartnerRosterRow.added_at,
        )
        .select_from(PartnerRosterRow)
        .outerjoin(PatientIdentityRow, PatientIdentityRow.source == PartnerRosterRow.source)
    )


def _named(source: str | None, hub_patient_id: str | None) -> ColumnElement[bool]:
    if source is not None:
        return PartnerRosterRow.source == source
    return PartnerRosterRow.hub_patient_id == hub_patient_id


def _entry(row: Any) -> RosterEntry:
    return RosterEntry(
        id=int(row.id), partner_id=row.partner_id, source=row.source, named_hub_patient_id=row.named,
        hub_patient_id=row.named or row.resolved, added_at=row.added_at,
    )


async def _roster_partner(session: AsyncSession, partner_id: str) -> str:
    """The partner's kind; raises :class:`PartnerNotFound`."""
    kind = await session.scalar(select(PartnerRow.kind).where(PartnerRow.id == partner_id))
    if kind is None:
        raise PartnerNotFound
    return str(kind)


async def add_to_roster(session: AsyncSession, partner_id: str, patient: str) -> tuple[RosterEntry, bool]:
    """Put ``patient`` (see :func:`parse_patient`) on the roster of CBO ``partner_id``. Commits.

    Idempotent: adding a patient already on the roster returns the existing entry and ``False``; a new
    entry comes back with ``True``. Raises InvalidInput, :class:`PartnerNotFound` or :class:`RosterNotAllowed`.
    """
    source, hub_patient_id = parse_patient(partner_id, patient)
    async with guarded(session, "add_to_roster"):
        kind = await _roster_partner(session, partner_id)
        if kind not in ROSTER_KINDS:
            raise RosterNotAllowed(partner_id, kind)
        column = "source" if source is not None else "hub_patient_id"
        row = {"partner_id": partner_id, "source": source, "hub_patient_id": hub_patient_id, "added_at": utc_now()}
        dialect = session.get_bind().dialect.name
        inserted = await session.execute(
            insert_ignoring_conflicts(dialect, PartnerRosterRow, [row], [column, "partner_id"])
            .returning(PartnerRosterRow.id)
        )
        created = inserted.scalar_one_or_none() is not None
        named = _named(source, hub_patient_id)
        found = (
            await session.execute(_entries_statement().where(PartnerRosterRow.partner_id == partner_id, named))
        ).one()
        await session.commit()
    return _entry(found), created


async def remove_from_roster(
    session: AsyncSession, partner_id: str, *, entry_id: int | None = None, patient: str | None = None
) -> RosterEntry | None:
    """Take one entry off ``partner_id``'s roster, by its id or by the patient as the entry names it. Commits.

    Returns the removed entry, or None when the roster has no such entry. Raises InvalidInput for a bad
    ``patient`` (or neither/both given) and :class:`PartnerNotFound` for an unknown partner.
    """
    if (entry_id is None) == (patient is None):
        raise InvalidInput("name the entry to remove by its id or by the patient, not both", expression="entry")
    wanted = _entries_statement().where(PartnerRosterRow.partner_id == partner_id)
    if entry_id is not None:
        wanted = wanted.where(PartnerRosterRow.id == entry_id)
    else:
        source, hub_patient_id = parse_patient(partner_id, patient or "")
        wanted = wanted.where(_named(source, hub_patient_id))
    async with guarded(session, "remove_from_roster"):
        await _roster_partner(session, partner_id)
        found = (await session.execute(wanted)).one_or_none()
        if found is None:
            await session.rollback()
            return None
        await session.execute(delete(PartnerRosterRow).where(PartnerRosterRow.id == found.id))
        await session.commit()
    return _entry(found)


async def list_roster(
    session: AsyncSession, partner_id: str, *, after: int = 0, limit: int = DEFAULT_LIMIT
) -> list[RosterEntry]:
    """``partner_id``'s roster in the order it was built, ``limit`` entries with an id above ``after``.

    Raises :class:`PartnerNotFound` for an unknown partner (a hospital's roster is simply empty).
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}", expression="limit")
    statement = (
        _entries_statement()
        .where(PartnerRosterRow.partner_id == partner_id, PartnerRosterRow.id > after)
        .order_by(PartnerRosterRow.id)
        .limit(limit)
    )
    async with guarded(session, "list_roster"):
        await _roster_partner(session, partner_id)
        rows = (await session.execute(statement)).all()
    return [_entry(row) for row in rows]


@dataclass(frozen=True)
class RosterSync:
    """What :func:`replace_roster` changed."""

    added: int
    removed: int
    kept: int

    @property
    def total(self) -> int:
        """Entries on the roster afterwards."""
        return self.added + self.kept


async def replace_roster(session: AsyncSession, partner_id: str, patients: Sequence[str]) -> RosterSync:
    """Make ``partner_id``'s roster exactly ``patients`` (each as :func:`parse_patient` reads it), in one
    transaction: the nightly client-list sync of a CBO. Entries already there keep their id; duplicates
    in ``patients`` count once; new entries are added in the list's order. Commits.

    Raises InvalidInput (``expression`` ``patients[i]``, the first bad one; nothing changes),
    :class:`PartnerNotFound` or :class:`RosterNotAllowed`.
    """
    if len(patients) > MAX_SYNC:
        raise InvalidInput(f"a roster sync takes at most {MAX_SYNC} patients", expression="patients")
    wanted: dict[tuple[str | None, str | None], None] = {}  # in the list's order, each once
    for index, patient in enumerate(patients):
        try:
            wanted[parse_patient(partner_id, patient)] = None
        except InvalidInput as error:
            raise InvalidInput(str(error), expression=f"patients[{index}]") from None
    async with guarded(session, "replace_roster"):
        kind = await _roster_partner(session, partner_id)
        if kind not in ROSTER_KINDS:
            raise RosterNotAllowed(partner_id, kind)
        existing = {
            (row.source, row.hub_patient_id): row.id
            for row in (
                await session.execute(
                    select(PartnerRosterRow.id, PartnerRosterRow.source, PartnerRosterRow.hub_patient_id).where(
                        PartnerRosterRow.partner_id == partner_id
                    )
                )
            ).all()
        }
        stale = sorted(entry_id for named, entry_id in existing.items() if named not in wanted)
        for start in range(0, len(stale), _CHUNK):
            await session.execute(delete(PartnerRosterRow).where(PartnerRosterRow.id.in_(stale[start:start + _CHUNK])))
        now = utc_now()
        new = [
            {"partner_id": partner_id, "source": source, "hub_patient_id": hub_patient_id, "added_at": now}
            for source, hub_patient_id in wanted
            if (source, hub_patient_id) not in existing
        ]
        for start in range(0, len(new), _CHUNK):
            await session.execute(insert(PartnerRosterRow), new[start:start + _CHUNK])
        await session.commit()
    return RosterSync(added=len(new), removed=len(stale), kept=len(existing) - len(stale))


async def rostered_partners(session: AsyncSession, hub_patient_ids: Collection[str]) -> dict[str, frozenset[str]]:
    """For each hub patient id, the partners whose roster holds the patient (by hub id, or by any of the
    patient's crosswalk sources). Patients on no roster map to an empty set. Read only.

    Active or not, any kind: the caller intersects with the partners it may send to.
    """
    wanted = list(dict.fromkeys(hub_patient_ids))
    found: dict[str, set[str]] = {patient: set() for patient in wanted}
    async with guarded(session, "read_rostered_partners"):
        for start in range(0, len(wanted), _CHUNK):
            chunk: Sequence[str] = wanted[start:start + _CHUNK]
            by_source = (
                select(PatientIdentityRow.hub_patient_id.label("patient"), PartnerRosterRow.partner_id)
                .join(PartnerRosterRow, PartnerRosterRow.source == PatientIdentityRow.source)
                .where(PatientIdentityRow.hub_patient_id.in_(chunk))
            )
            by_id = select(PartnerRosterRow.hub_patient_id.label("patient"), PartnerRosterRow.partner_id).where(
                PartnerRosterRow.hub_patient_id.in_(chunk)
            )
            rows: Sequence[Any] = (await session.execute(union(by_source, by_id))).all()
            for row in rows:
                found[row.patient].add(row.partner_id)
    return {patient: frozenset(partner_ids) for patient, partner_ids in found.items()}
