"""Partner rosters in the control plane (SQLite and PostgreSQL): add, remove, list, resolution through the
identity crosswalk (also for identifiers it learns later), the constraints, and the route stage's cached read."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.control import crosswalk, resources, rosters
from hub.control.models import PartnerRosterRow, ResourceIdentifierRow
from hub.control.partners import PartnerNotFound, create_partner
from hub.control.sqltypes import utc_now
from hub.errors import InvalidInput
from hub.pipeline.stores import SqlPartnerDirectory, SqlRosterSource
from tests.control.helpers import fetch_all

MRN = "urn:oid:1.2.3|MRN-1"
CLIENT = "urn:foodbank:clients|C-42"


async def _partners(session: AsyncSession) -> None:
    await create_partner(session, id="general", kind="hospital", name="G", organization="Organization/general")
    await create_partner(session, id="foodbank", kind="cbo", name="F", organization="Organization/foodbank")
    await create_partner(session, id="housing", kind="cbo", name="H", organization="urn:npi|1234567893")


@pytest.fixture
async def seeded(sessions: async_sessionmaker[AsyncSession]) -> async_sessionmaker[AsyncSession]:
    async with sessions() as session:
        await _partners(session)
    return sessions


async def test_add_list_and_remove_keep_a_cbos_roster_in_order(seeded: async_sessionmaker[AsyncSession]) -> None:
    async with seeded() as session:
        first, created = await rosters.add_to_roster(session, "foodbank", MRN)
        second, _ = await rosters.add_to_roster(session, "foodbank", CLIENT)
        await rosters.add_to_roster(session, "housing", MRN)
        assert created
        assert (MRN, None, "foodbank") == (first.patient, first.hub_patient_id, first.partner_id)
        assert [MRN, CLIENT] == [e.patient for e in await rosters.list_roster(session, "foodbank")]
        assert [CLIENT] == [e.patient for e in await rosters.list_roster(session, "foodbank", after=first.id)]
        assert [MRN] == [e.patient for e in await rosters.list_roster(session, "foodbank", limit=1)]

        removed = await rosters.remove_from_roster(session, "foodbank", patient=MRN)
        assert removed is not None
        assert first.id == removed.id
        assert await rosters.remove_from_roster(session, "foodbank", patient=MRN) is None
        assert await rosters.remove_from_roster(session, "housing", entry_id=second.id) is None  # not its entry
        assert (await rosters.remove_from_roster(session, "foodbank", entry_id=second.id)) is not None
        assert [] == await rosters.list_roster(session, "foodbank")
        assert [MRN] == [e.patient for e in await rosters.list_roster(session, "housing")]


async def test_adding_a_patient_twice_returns_the_same_entry(seeded: async_sessionmaker[AsyncSession]) -> None:
    async with seeded() as session:
        entry, created = await rosters.add_to_roster(session, "foodbank", MRN)
        again, created_again = await rosters.add_to_roster(session, "foodbank", MRN)
        rows = await fetch_all(session, "SELECT partner_id, source FROM partner_rosters")
    assert (True, False, entry.id) == (created, created_again, again.id)
    assert [{"partner_id": "foodbank", "source": MRN}] == rows


async def test_a_roster_entry_resolves_once_the_crosswalk_learns_its_identifier(
    seeded: async_sessionmaker[AsyncSession],
) -> None:
    async with seeded() as session:
        await rosters.add_to_roster(session, "foodbank", CLIENT)
        hub_patient_id = await crosswalk.resolve_patient(session, MRN)  # the hospital's MRN, known first
        assert {hub_patient_id: frozenset()} == await rosters.rostered_partners(session, [hub_patient_id])
        # The crosswalk did not learn the CBO's identifier from the roster: adding never mints an id.
        assert [] == await fetch_all(session, "SELECT source FROM patient_identities WHERE source = :s", s=CLIENT)

        # A hospital's Patient links the MRN and the CBO's client number: the entry now matches.
        await resources.link_patient_sources(session, [[MRN, CLIENT]])
        await session.commit()
        assert {hub_patient_id: frozenset({"foodbank"})} == await rosters.rostered_partners(session, [hub_patient_id])
        [entry] = await rosters.list_roster(session, "foodbank")
        assert hub_patient_id == entry.hub_patient_id


async def test_rostered_partners_match_by_any_source_or_by_hub_patient_id(
    seeded: async_sessionmaker[AsyncSession],
) -> None:
    async with seeded() as session:
        await resources.link_patient_sources(session, [[MRN, CLIENT]])
        await session.commit()
        patient = await crosswalk.resolve_patient(session, MRN)
        other = await crosswalk.resolve_patient(session, "urn:oid:1.2.3|MRN-2")
        await rosters.add_to_roster(session, "foodbank", CLIENT)
        await rosters.add_to_roster(session, "foodbank", MRN)  # two names of one patient: still one partner
        await rosters.add_to_roster(session, "housing", patient)  # by hub patient id
        found = await rosters.rostered_partners(session, [patient, other, "hp-unknown"])
    assert {patient: frozenset({"foodbank", "housing"}), other: frozenset(), "hp-unknown": frozenset()} == found


async def test_a_system_less_identifier_is_the_cbos_own_local_one(seeded: async_sessionmaker[AsyncSession]) -> None:
    async with seeded() as session:
        entry, _ = await rosters.add_to_roster(session, "foodbank", "|C-42")
    assert "urn:carehub:partner:foodbank|C-42" == entry.patient


@pytest.mark.parametrize("patient", ["", "   ", "MRN-1", "a|b|c", "sys tem|v", "sys| v", "sys|", "hp-xyz|", "x|\n1"])
async def test_an_unusable_patient_is_invalid_input_without_echoing_it(
    seeded: async_sessionmaker[AsyncSession], patient: str
) -> None:
    async with seeded() as session:
        with pytest.raises(InvalidInput) as caught:
            await rosters.add_to_roster(session, "foodbank", patient)
    assert "patient" == caught.value.expression
    assert patient.strip() == "" or patient not in str(caught.value)


async def test_a_hospital_holds_no_roster_and_an_unknown_partner_is_not_found(
    seeded: async_sessionmaker[AsyncSession],
) -> None:
    async with seeded() as session:
        with pytest.raises(rosters.RosterNotAllowed):
            await rosters.add_to_roster(session, "general", MRN)
        with pytest.raises(PartnerNotFound):
            await rosters.add_to_roster(session, "nobody", MRN)
        with pytest.raises(PartnerNotFound):
            await rosters.list_roster(session, "nobody")
        with pytest.raises(PartnerNotFound):
            await rosters.remove_from_roster(session, "nobody", patient=MRN)
        assert [] == await rosters.list_roster(session, "general")


async def test_the_table_refuses_duplicates_and_entries_naming_the_patient_twice_or_not_at_all(
    seeded: async_sessionmaker[AsyncSession],
) -> None:
    now = utc_now()
    bad_rows = [
        [{"partner_id": "foodbank", "source": MRN, "added_at": now}] * 2,
        [{"partner_id": "foodbank", "hub_patient_id": "hp-1", "added_at": now}] * 2,
        [{"partner_id": "foodbank", "source": MRN, "hub_patient_id": "hp-1", "added_at": now}],
        [{"partner_id": "foodbank", "added_at": now}],
        [{"partner_id": "nobody", "source": MRN, "added_at": now}],
    ]
    for rows in bad_rows:
        async with seeded() as session:
            with pytest.raises(IntegrityError):  # noqa: PT012 - the duplicate fails on its insert or at commit
                for row in rows:
                    await session.execute(insert(PartnerRosterRow).values(**row))
                await session.commit()
    async with seeded() as session:
        for partner in ("foodbank", "housing"):  # the same patient on two rosters is fine
            await session.execute(insert(PartnerRosterRow).values(partner_id=partner, source=MRN, added_at=now))
        await session.commit()


async def test_the_route_stage_source_caches_per_patient_and_forgets_on_invalidate(
    seeded: async_sessionmaker[AsyncSession],
) -> None:
    now = [0.0]
    source = SqlRosterSource(seeded, ttl_s=5.0, clock=lambda: now[0])
    async with seeded() as session:
        patient = await crosswalk.resolve_patient(session, MRN)
    assert {patient: frozenset()} == await source.rostered([patient])
    async with seeded() as session:
        await rosters.add_to_roster(session, "foodbank", MRN)
    assert {patient: frozenset()} == await source.rostered([patient])  # cached, within the TTL
    assert 1 == source.loads
    source.invalidate()
    assert {patient: frozenset({"foodbank"})} == await source.rostered([patient])
    async with seeded() as session:
        await rosters.remove_from_roster(session, "foodbank", patient=MRN)
    now[0] = 5.1  # past the TTL: reloaded without being told
    assert {patient: frozenset()} == await source.rostered([patient])
    assert 3 == source.loads


async def test_the_directory_lists_the_identifiers_of_a_partners_stored_organization(
    seeded: async_sessionmaker[AsyncSession],
) -> None:
    async with seeded() as session:
        await session.execute(insert(ResourceIdentifierRow), [
            {"resource_type": "Organization", "resource_id": "foodbank", "id_system": "urn:npi", "id_value": "111"},
            {"resource_type": "Organization", "resource_id": "foodbank", "id_system": "", "id_value": "FB"},
            {"resource_type": "Organization", "resource_id": "h-1", "id_system": "urn:npi", "id_value": "1234567893"},
            {"resource_type": "Patient", "resource_id": "foodbank", "id_system": "urn:x", "id_value": "no"},
        ])
        await session.commit()
    by_id = {r.partner_id: r.identifiers for r in await SqlPartnerDirectory(seeded).partners(named=())}
    assert {"foodbank": ("urn:npi|111", "|FB"), "housing": ("Organization/h-1",), "general": ()} == by_id


async def test_replacing_a_roster_keeps_adds_and_removes_in_one_transaction(
    seeded: async_sessionmaker[AsyncSession],
) -> None:
    async with seeded() as session:
        kept, _ = await rosters.add_to_roster(session, "foodbank", MRN)
        await rosters.add_to_roster(session, "foodbank", CLIENT)
        await rosters.add_to_roster(session, "housing", CLIENT)
        hub_id = await crosswalk.resolve_patient(session, "urn:x|known")
        synced = await rosters.replace_roster(session, "foodbank", [MRN, hub_id, "|L-1", MRN])
        entries = await rosters.list_roster(session, "foodbank")
        others = await rosters.list_roster(session, "housing")
    assert (2, 1, 1, 3) == (synced.added, synced.removed, synced.kept, synced.total)
    assert [(MRN, None), (None, hub_id), ("urn:carehub:partner:foodbank|L-1", None)] == [
        (e.source, e.named_hub_patient_id) for e in entries]
    assert kept.id == entries[0].id
    assert [CLIENT] == [e.source for e in others]


async def test_a_bad_roster_sync_changes_nothing(seeded: async_sessionmaker[AsyncSession]) -> None:
    async with seeded() as session:
        await rosters.add_to_roster(session, "foodbank", CLIENT)
        with pytest.raises(InvalidInput) as caught:
            await rosters.replace_roster(session, "foodbank", [MRN, "bad"])
        with pytest.raises(rosters.RosterNotAllowed):
            await rosters.replace_roster(session, "general", [MRN])
        with pytest.raises(PartnerNotFound):
            await rosters.replace_roster(session, "nobody", [MRN])
        assert [CLIENT] == [e.source for e in await rosters.list_roster(session, "foodbank")]
    assert "patients[1]" == caught.value.expression
