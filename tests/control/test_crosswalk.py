"""Identity crosswalk: one source identifier, one hub patient id, even under concurrency."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import asyncio
import re

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.control.crosswalk import resolve_patient
from hub.errors import InvalidInput
from tests.control.helpers import fetch_all

SOURCE = "http://hospital.example/mrn|000123"


async def test_a_new_source_gets_an_opaque_hub_patient_id(session: AsyncSession) -> None:
    hub_id = await resolve_patient(session, SOURCE)
    assert re.fullmatch(r"hp-[0-9a-f]{32}", hub_id) is not None
    assert "000123" not in hub_id


async def test_the_same_source_always_resolves_to_the_same_id(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as first_session:
        first = await resolve_patient(first_session, SOURCE)
    async with sessions() as second_session:
        second = await resolve_patient(second_session, SOURCE)
    assert first == second


async def test_different_sources_get_different_ids(session: AsyncSession) -> None:
    first = await resolve_patient(session, SOURCE)
    second = await resolve_patient(session, "http://hospital.example/mrn|000124")
    assert first != second


async def test_concurrent_resolutions_of_one_source_agree_and_store_one_row(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async def resolve() -> str:
        async with sessions() as session:
            return await resolve_patient(session, SOURCE)

    ids = await asyncio.gather(*(resolve() for _ in range(10)))
    async with sessions() as session:
        rows = await fetch_all(session, "SELECT hub_patient_id FROM patient_identities")
    assert 1 == len(set(ids))
    assert [{"hub_patient_id": ids[0]}] == rows


@pytest.mark.parametrize("source", ["", "   ", "x" * 513, "line\nbreak"])
async def test_an_unusable_source_is_invalid_input_that_does_not_echo_it(session: AsyncSession, source: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        await resolve_patient(session, source)
    assert "source" == caught.value.expression
    assert source.strip() == "" or source not in str(caught.value)
