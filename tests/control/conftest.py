"""Fixtures for the control-plane tests: every database test runs on SQLite and on PostgreSQL.

``db_url`` is parametrized over both backends (the PostgreSQL case is marked ``postgres``): a SQLite file
in ``tmp_path``, or a fresh database on the session's PostgreSQL server (see ``pg_server``).
``sessions`` gives a session factory on that database after the migrations ran.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hub.control.db import make_engine, make_sessionmaker, upgrade
from tests.control.pg_server import create_database, drop_database, postgres_server

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """Maintenance-database URL of the one PostgreSQL server used by the whole test session."""
    with postgres_server() as url:
        yield url


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """URL of an empty database of the parametrized backend, private to the test."""
    if request.param == "sqlite":
        # A directory that does not exist yet: make_engine must create it.
        yield f"sqlite+aiosqlite:///{tmp_path / 'control' / 'hub.db'}"
        return
    admin_url: str = request.getfixturevalue("postgres_admin_url")
    url = await create_database(admin_url)
    yield url
    await drop_database(admin_url, url)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test's database, migrated to head."""
    await upgrade(db_url)
    engine = make_engine(db_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Session factory on the migrated test database."""
    return make_sessionmaker(engine)


@pytest.fixture
async def session(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One session on the migrated test database, closed after the test."""
    async with sessions() as session:
        yield session
