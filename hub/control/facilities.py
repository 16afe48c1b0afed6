"""Which hospital sends under an HL7 v2 MSH-4 sending facility (``hub.adapters.mllp.HospitalDirectory``).

The operator maps facilities to hospital partners with ``HUB_MLLP_FACILITIES`` (JSON, e.g.
``{"GHH": "general"}``); the partner must exist, be active and be a hospital. Touches only the
``partners`` table, read-only.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.control import partners


class FacilityDirectory:
    """MSH-4 facility → hospital partner id, from the operator's mapping and the partners table."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], facilities: Mapping[str, str]) -> None:
        self._sessions = sessions
        self._facilities = dict(facilities)

    async def hospital_for_facility(self, facility: str) -> str | None:
        """The partner id mapped to ``facility`` (its full MSH-4, or its first component), if active."""
        partner_id = self._facilities.get(facility) or self._facilities.get(facility.split("^", 1)[0])
        if partner_id is None:
            return None
        async with self._sessions() as session:
            partner = await partners.get_partner(session, partner_id)
        if partner is None or not partner.active or partner.kind != "hospital":
            return None
        return partner.id
