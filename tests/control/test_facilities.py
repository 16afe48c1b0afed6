"""MSH-4 sending facilities resolve only to mapped, active hospital partners."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.control.facilities import FacilityDirectory
from hub.control.partners import create_partner, set_partner_active


async def test_a_mapped_active_hospital_is_found_by_its_facility_and_nothing_else_is(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        await create_partner(session, id="general", kind="hospital", name="G", organization="Organization/general")
        await create_partner(session, id="pantry", kind="cbo", name="P", organization="Organization/pantry")
    directory = FacilityDirectory(sessions, {"GHH": "general", "PANTRY": "pantry", "GONE": "nobody"}, cache_ttl_s=0)
    assert "general" == await directory.hospital_for_facility("GHH")
    assert "general" == await directory.hospital_for_facility("GHH^2.16.840.1.1^ISO")
    assert await directory.hospital_for_facility("OTHER") is None
    assert await directory.hospital_for_facility("PANTRY") is None
    assert await directory.hospital_for_facility("GONE") is None


async def test_a_deactivated_hospital_is_refused_once_the_cache_expires(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        await create_partner(session, id="general", kind="hospital", name="G", organization="Organization/general")
    cached = FacilityDirectory(sessions, {"GHH": "general"}, cache_ttl_s=3600)
    fresh = FacilityDirectory(sessions, {"GHH": "general"}, cache_ttl_s=0)
    assert "general" == await cached.hospital_for_facility("GHH")
    assert "general" == await fresh.hospital_for_facility("GHH")
    async with sessions() as session:
        await set_partner_active(session, "general", False)
    assert "general" == await cached.hospital_for_facility("GHH")
    assert await fresh.hospital_for_facility("GHH") is None
