"""HL7 v2 sending facilities: which hospital partner sends under an MSH-4 (``hub.adapters.mllp.HospitalDirectory``).

The operator registers a hospital's facilities in the control plane (``partner_facilities``, through
``/admin/v1/partners/{id}/facilities`` or ``carehub partners facility add``); ``HUB_MLLP_FACILITIES``
(JSON, e.g. ``{"GHH": "general"}``) still works beside it and wins when both name a facility. A facility
key is MSH-4 as :attr:`hub.adapters.hl7_adt.MessageHeader.facility_key` writes it (``GHH`` or
``GHH^1.2.3^ISO``); a message whose full key is not registered is matched on its first component.

Touches the ``partner_facilities`` table (read and write) and ``partners`` (read).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.control import partners
from hub.control.models import FACILITY_MAX, PartnerFacilityRow
from hub.control.store_errors import guarded
from hub.errors import InvalidInput, PermanentError

# Printable ASCII without the HL7 delimiters other than the component separator '^'.
_FACILITY: Final = re.compile(r"[!-~ ]+")
_FORBIDDEN: Final = frozenset("|~\\&\r\n")
_UNKNOWN_TTL_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class Facility:
    """One registered sending facility."""

    facility: str
    partner_id: str
    created_at: datetime


class FacilityTaken(PermanentError):
    """The facility is already registered for another partner."""


class NotAHospital(PermanentError):
    """Only hospital partners send HL7 v2 feeds."""


def validate_facility(facility: str) -> str:
    """The facility key, trimmed; ``InvalidInput`` (expression ``facility``) when it cannot be an MSH-4."""
    key = facility.strip().rstrip("^")
    if not key or len(key) > FACILITY_MAX or not _FACILITY.fullmatch(key) or _FORBIDDEN & set(key):
        raise InvalidInput(
            f"facility must be MSH-4 as sent (e.g. 'GHH' or 'GHH^1.2.3^ISO'): 1-{FACILITY_MAX} printable "
            "characters without | ~ \\ &",
            expression="facility",
        )
    return key


async def add_facility(session: AsyncSession, partner_id: str, facility: str) -> Facility:
    """Register ``facility`` for the hospital ``partner_id``; idempotent for the same partner. Commits.

    Raises ``PartnerNotFound``, ``NotAHospital``, ``FacilityTaken`` (another partner has it) or
    ``InvalidInput``.
    """
    key = validate_facility(facility)
    partner = await partners.get_partner(session, partner_id)
    if partner is None:
        raise partners.PartnerNotFound
    if partner.kind != "hospital":
        raise NotAHospital(f"partner {partner_id!r} is a {partner.kind}: only hospitals send HL7 v2 feeds")
    existing = await _get(session, key)
    if existing is None:
        try:
            async with guarded(session, "add_facility"):
                session.add(PartnerFacilityRow(facility=key, partner_id=partner_id))
                await session.commit()
        except IntegrityError:
            await session.rollback()  # a concurrent add of the same facility: read who won
        existing = await _get(session, key)
    if existing is None or existing.partner_id != partner_id:
        raise FacilityTaken(f"facility {key!r} is registered for another partner")
    return existing


async def remove_facility(session: AsyncSession, partner_id: str, facility: str) -> bool:
    """Unregister ``facility`` from ``partner_id``; True when it was registered there. Commits."""
    key = validate_facility(facility)
    statement = delete(PartnerFacilityRow).where(
        PartnerFacilityRow.facility == key, PartnerFacilityRow.partner_id == partner_id
    )
    async with guarded(session, "remove_facility"):
        result = await session.execute(statement)
        await session.commit()
    return bool(getattr(result, "rowcount", 0))


async def list_facilities(session: AsyncSession, partner_id: str | None = None) -> list[Facility]:
    """Registered facilities (of one partner, or all), ordered by facility."""
    statement = select(PartnerFacilityRow).order_by(PartnerFacilityRow.facility)
    if partner_id is not None:
        statement = statement.where(PartnerFacilityRow.partner_id == partner_id)
    async with guarded(session, "list_facilities"):
        rows = (await session.scalars(statement)).all()
    return [_facility(row) for row in rows]


async def partner_for_facility(session: AsyncSession, facility: str) -> str | None:
    """The partner registered for exactly this facility key, or None."""
    found = await _get(session, facility)
    return found.partner_id if found is not None else None


async def _get(session: AsyncSession, key: str) -> Facility | None:
    if not key or len(key) > FACILITY_MAX:
        return None
    async with guarded(session, "read_facility"):
        row = await session.get(PartnerFacilityRow, key)
    return _facility(row) if row is not None else None


def _facility(row: PartnerFacilityRow) -> Facility:
    return Facility(facility=row.facility, partner_id=row.partner_id, created_at=row.created_at)


class FacilityDirectory:
    """MSH-4 facility → active hospital partner id, from ``HUB_MLLP_FACILITIES`` and the control plane.

    A hospital found is remembered for ``cache_ttl_s`` (10 s): a hospital deactivated, or a facility
    removed, takes effect at most that long later. An unknown facility is remembered for at most 1 s, so
    one the operator has just registered is accepted almost at once while a sender of garbage still
    costs one lookup a second.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        facilities: Mapping[str, str] | None = None,
        *,
        cache_ttl_s: float = 10.0,
    ) -> None:
        self._sessions = sessions
        self._configured = dict(facilities or {})
        self._cache_ttl_s = cache_ttl_s
        self._answers: dict[str, tuple[float, str | None]] = {}

    async def hospital_for_facility(self, facility: str) -> str | None:
        """The active hospital partner sending under ``facility`` (its full MSH-4, else its first component)."""
        cached = self._answers.get(facility)
        if cached is not None:
            ttl = self._cache_ttl_s if cached[1] is not None else min(_UNKNOWN_TTL_S, self._cache_ttl_s)
            if time.monotonic() - cached[0] <= ttl:
                return cached[1]
        answer = await self._lookup(facility)
        self._answers[facility] = (time.monotonic(), answer)
        return answer

    async def _lookup(self, facility: str) -> str | None:
        first = facility.split("^", 1)[0]
        async with self._sessions() as session:
            partner_id = self._configured.get(facility) or await partner_for_facility(session, facility)
            if partner_id is None and first != facility:
                partner_id = self._configured.get(first) or await partner_for_facility(session, first)
            if partner_id is None:
                return None
            partner = await partners.get_partner(session, partner_id)
        usable = partner is not None and partner.active and partner.kind == "hospital"
        return partner_id if usable else None
