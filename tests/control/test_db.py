"""Engines and migrations: upgrade reaches head once, is idempotent, and failures are translated."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.control.crosswalk import resolve_patient
from hub.control.db import current_revision, downgrade, make_engine, make_sessionmaker, upgrade
from hub.control.models import Base
from hub.control.partners import create_partner
from hub.errors import ConfigurationError, StoreUnavailable
from tests.control.helpers import fetch_all

HEAD = "0008"
TABLES = {
    "partners", "patient_identities", "consent_decisions", "partner_sequences", "partner_event_numbers",
    "resources", "resource_identifiers", "partner_facilities", "partner_rosters", "hub_secrets",
    "accepted_records",
}


async def test_a_new_database_has_no_revision_until_upgraded(db_url: str) -> None:
    assert await current_revision(db_url) is None
    await upgrade(db_url)
    assert await current_revision(db_url) == HEAD


async def _tables(db_url: str) -> set[str]:
    engine = make_engine(db_url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


async def test_upgrade_creates_every_control_plane_table(db_url: str) -> None:
    await upgrade(db_url)
    assert TABLES | {"alembic_version"} == await _tables(db_url)


async def test_running_the_migrations_twice_is_a_no_op(db_url: str) -> None:
    await upgrade(db_url)
    engine = make_engine(db_url)
    try:
        async with make_sessionmaker(engine)() as session:
            await create_partner(session, id="general", kind="hospital", name="General", organization="Organization/1")
        await upgrade(db_url)
        async with make_sessionmaker(engine)() as session:
            rows = await fetch_all(session, "SELECT id FROM partners")
            versions = await fetch_all(session, "SELECT version_num FROM alembic_version")
    finally:
        await engine.dispose()
    assert HEAD == await current_revision(db_url)
    assert [{"id": "general"}] == rows
    assert [{"version_num": HEAD}] == versions


async def test_concurrent_upgrades_of_a_new_database_all_succeed(db_url: str) -> None:
    await asyncio.gather(*(upgrade(db_url) for _ in range(4)))
    assert HEAD == await current_revision(db_url)


async def test_downgrade_to_base_removes_the_schema_and_upgrade_restores_it(db_url: str) -> None:
    await upgrade(db_url)
    await downgrade(db_url)
    assert {"alembic_version"} == await _tables(db_url)
    assert await current_revision(db_url) is None
    await upgrade(db_url)
    assert TABLES | {"alembic_version"} == await _tables(db_url)


async def test_the_models_match_the_migrated_schema(db_url: str) -> None:
    await upgrade(db_url)
    engine = make_engine(db_url)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
                )
            )
    finally:
        await engine.dispose()
    assert [] == differences


async def test_foreign_keys_are_enforced(session: AsyncSession) -> None:
    orphan = text("INSERT INTO partner_sequences (partner_id, last_number) VALUES ('nobody', 0)")
    with pytest.raises(IntegrityError):
        await session.execute(orphan)


def _unreachable(db_url: str, tmp_path: Path) -> str:
    if make_url(db_url).get_backend_name() == "sqlite":
        # A directory where the database file should be: SQLite cannot open it.
        return f"sqlite+aiosqlite:///{tmp_path}"
    return "postgresql+asyncpg://postgres@127.0.0.1:1/carehub"


async def test_an_unreachable_database_raises_store_unavailable(db_url: str, tmp_path: Path) -> None:
    url = _unreachable(db_url, tmp_path)
    with pytest.raises(StoreUnavailable) as caught:
        await current_revision(url)
    assert caught.value.__cause__ is not None


async def test_a_database_without_the_schema_raises_configuration_error_without_phi(db_url: str) -> None:
    engine = make_engine(db_url)
    sessions: async_sessionmaker[AsyncSession] = make_sessionmaker(engine)
    source = "urn:oid:2.16.840.1.113883.3.1|MRN-SECRET-4711"
    try:
        async with sessions() as session:
            with pytest.raises(ConfigurationError) as caught:
                await resolve_patient(session, source)
    finally:
        await engine.dispose()
    assert "MRN-SECRET-4711" not in _chain_text(caught.value)


def _chain_text(error: BaseException) -> str:
    parts: list[str] = []
    current: BaseException | None = error
    while current is not None:
        parts.append(str(current))
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


def test_an_unsupported_database_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unsupported"):
        make_engine("mysql+aiomysql://user@localhost/hub")


def test_a_sqlite_engine_creates_the_parent_directory(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "hub.db"
    make_engine(f"sqlite+aiosqlite:///{target}")
    assert target.parent.is_dir()


def test_a_sqlite_path_under_a_regular_file_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(ConfigurationError, match="directory"):
        make_engine(f"sqlite+aiosqlite:///{blocker / 'hub.db'}")


async def test_a_migrated_sqlite_database_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    await upgrade(url)
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            journal = (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar_one()
            foreign_keys = (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar_one()
    finally:
        await engine.dispose()
    assert ("wal", 1) == (journal, foreign_keys)
