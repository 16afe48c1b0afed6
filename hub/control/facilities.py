"""Which hospital sends under an HL7 v2 MSH-4 sending facility (``hub.adapters.mllp.HospitalDirectory``).

The operator maps facilities to hospital partners with ``HUB_MLLP_FACILITIES`` (JSON, e.g.
``{"GHH": "general"}``); the partner must exist, be active and be a hospital. Touches only the
``partners`` table, read-only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.control import partners


class FacilityDirectory:
    """MSH-4 facility → hospital partner id, from the operator's mapping and the partners table."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], facilities: Mapping[str, str], *, cache_ttl_s: float = 10.0
    ) -> None:
        self._sessions = sessions
        self._facilities = dict(facilities)
        self._cache_ttl_s = cache_ttl_s
        self._checked: dict[str, tuple[float, bool]] = {}

    async def hospital_for_facility(self, facility: str) -> str | None:
        """The partner id mapped to ``facility`` (its full MSH-4, or its first component), if active.

        Whether the partner is an active hospital is remembered for ``cache_ttl_s`` (10 s), so a
        deactivated hospital is refused at most that long after deactivation.
        """
        partner_id = self._facilities.get(facility) or self._facilities.get(facility.split("^", 1)[0])
        if partner_id is None:
            return None
        checked = self._checked.get(partner_id)
        if checked is None or time.monotonic() - checked[0] > self._cache_ttl_s:
            async with self._sessions() as session:
                partner = await partners.get_partner(session, partner_id)
            usable = partner is not None and partner.active and partner.kind == "hospital"
            checked = (time.monotonic(), usable)
            self._checked[partner_id] = checked
        return partner_id if checked[1] else None
