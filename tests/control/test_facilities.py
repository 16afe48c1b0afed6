"""MSH-4 sending facilities: registered in the control plane or mapped by settings, resolving only to active
hospital partners."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.control import facilities
from hub.control.facilities import FacilityDirectory
from hub.control.partners import PartnerNotFound, create_partner, set_partner_active
from hub.errors import InvalidInput


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


# --- facilities registered in the control plane ------------------------------------------------------


async def _partners(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        await create_partner(session, id="general", kind="hospital", name="G", organization="Organization/general")
        await create_partner(session, id="mercy", kind="hospital", name="M", organization="Organization/mercy")
        await create_partner(session, id="pantry", kind="cbo", name="P", organization="Organization/pantry")


async def test_a_registered_facility_resolves_to_its_hospital_by_full_key_or_first_component(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await _partners(sessions)
    async with sessions() as session:
        await facilities.add_facility(session, "general", "GHH")
        await facilities.add_facility(session, "mercy", "MERCY^2.16.840.1.113883.3.1^ISO")
    directory = FacilityDirectory(sessions, cache_ttl_s=0)
    assert "general" == await directory.hospital_for_facility("GHH")
    assert "general" == await directory.hospital_for_facility("GHH^1.2.3^ISO")
    assert "mercy" == await directory.hospital_for_facility("MERCY^2.16.840.1.113883.3.1^ISO")
    assert await directory.hospital_for_facility("MERCY") is None
    assert await directory.hospital_for_facility("OTHER") is None


async def test_the_environment_mapping_wins_over_the_table(sessions: async_sessionmaker[AsyncSession]) -> None:
    await _partners(sessions)
    async with sessions() as session:
        await facilities.add_facility(session, "general", "GHH")
    assert "mercy" == await FacilityDirectory(sessions, {"GHH": "mercy"}, cache_ttl_s=0).hospital_for_facility("GHH")


async def test_adding_is_idempotent_and_a_facility_belongs_to_one_partner(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await _partners(sessions)
    async with sessions() as session:
        first = await facilities.add_facility(session, "general", " GHH^ ")
        again = await facilities.add_facility(session, "general", "GHH")
        with pytest.raises(facilities.FacilityTaken):
            await facilities.add_facility(session, "mercy", "GHH")
        assert ("GHH", "general") == (first.facility, first.partner_id)
        assert first == again
        assert ["GHH"] == [f.facility for f in await facilities.list_facilities(session)]


@pytest.mark.parametrize("facility", ["", "   ", "A|B", "A~B", "A&B", "A\\B", "é", "X" * 228, "A\rB"])
async def test_a_facility_that_cannot_be_an_msh4_is_refused(
    sessions: async_sessionmaker[AsyncSession], facility: str
) -> None:
    await _partners(sessions)
    async with sessions() as session:
        with pytest.raises(InvalidInput) as caught:
            await facilities.add_facility(session, "general", facility)
    assert "facility" == caught.value.expression


async def test_only_an_existing_hospital_gets_a_facility(sessions: async_sessionmaker[AsyncSession]) -> None:
    await _partners(sessions)
    async with sessions() as session:
        with pytest.raises(PartnerNotFound):
            await facilities.add_facility(session, "nobody", "GHH")
        with pytest.raises(facilities.NotAHospital):
            await facilities.add_facility(session, "pantry", "GHH")
        assert [] == await facilities.list_facilities(session)


async def test_removing_a_facility_stops_its_messages_once_the_cache_expires(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await _partners(sessions)
    async with sessions() as session:
        await facilities.add_facility(session, "general", "GHH")
        await facilities.add_facility(session, "general", "GHH-ER")
    directory = FacilityDirectory(sessions, cache_ttl_s=0)
    assert "general" == await directory.hospital_for_facility("GHH")
    async with sessions() as session:
        assert not await facilities.remove_facility(session, "mercy", "GHH")
        assert await facilities.remove_facility(session, "general", "GHH")
        assert not await facilities.remove_facility(session, "general", "GHH")
        assert ["GHH-ER"] == [f.facility for f in await facilities.list_facilities(session, "general")]
    assert await directory.hospital_for_facility("GHH") is None
