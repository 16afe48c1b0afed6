"""Hub secrets: generated once per database, the same bytes for every process, concurrent first calls included."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hub.control.db import make_engine, make_sessionmaker, upgrade
from hub.control.secrets import hub_secret
from hub.errors import ConfigurationError, InvalidInput
from tests.control.helpers import fetch_all


async def test_the_first_call_creates_a_random_secret_of_the_requested_size(engine: AsyncEngine) -> None:
    key = await hub_secret(engine, "record-proof", size=48)
    assert 48 == len(key)
    assert b"\x00" * 48 != key


async def test_a_second_call_returns_the_stored_secret_and_ignores_a_new_size(engine: AsyncEngine) -> None:
    first = await hub_secret(engine, "record-proof")
    assert first == await hub_secret(engine, "record-proof", size=64)


async def test_every_name_has_its_own_secret(engine: AsyncEngine) -> None:
    assert await hub_secret(engine, "record-proof") != await hub_secret(engine, "resource-ids")


async def test_a_session_factory_and_a_session_see_the_secret_an_engine_created(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], session: AsyncSession
) -> None:
    key = await hub_secret(engine, "record-proof")
    assert key == await hub_secret(sessions, "record-proof")
    assert key == await hub_secret(session, "record-proof")
    assert [{"name": "record-proof"}] == await fetch_all(session, "SELECT name FROM hub_secrets")


async def test_another_process_on_the_same_database_gets_the_same_secret(db_url: str) -> None:
    """A fresh engine (as a second ``carehub worker`` would open) reads what the first one stored."""
    await upgrade(db_url)
    first_engine = make_engine(db_url)
    try:
        key = await hub_secret(first_engine, "record-proof")
    finally:
        await first_engine.dispose()
    second_engine = make_engine(db_url)
    try:
        assert key == await hub_secret(make_sessionmaker(second_engine), "record-proof")
    finally:
        await second_engine.dispose()


async def test_concurrent_first_calls_from_separate_connections_all_get_the_one_stored_secret(db_url: str) -> None:
    """Eight engines (eight connections, as eight processes) ask at once for a secret nobody created yet."""
    await upgrade(db_url)
    engines = [make_engine(db_url) for _ in range(8)]
    try:
        keys = await asyncio.gather(*(hub_secret(engine, "record-proof") for engine in engines))
        async with make_sessionmaker(engines[0])() as session:
            stored = await fetch_all(session, "SELECT value FROM hub_secrets WHERE name = 'record-proof'")
    finally:
        await asyncio.gather(*(engine.dispose() for engine in engines))
    assert 1 == len(stored)
    assert {bytes(stored[0]["value"])} == set(keys)


@pytest.mark.parametrize("size", [0, 15, 1025])
async def test_a_size_outside_16_to_1024_bytes_is_refused(engine: AsyncEngine, size: int) -> None:
    with pytest.raises(InvalidInput):
        await hub_secret(engine, "record-proof", size=size)


@pytest.mark.parametrize("name", ["", "  ", "a\nb", "x" * 65])
async def test_a_blank_multiline_or_overlong_name_is_refused(engine: AsyncEngine, name: str) -> None:
    with pytest.raises(InvalidInput):
        await hub_secret(engine, name)


async def test_a_database_without_the_schema_is_a_configuration_error(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with pytest.raises(ConfigurationError):
            await hub_secret(engine, "record-proof")
    finally:
        await engine.dispose()
