"""Engines, sessions and schema migrations for the control-plane database.

Holds the engine factory (SQLite via aiosqlite by default, PostgreSQL via asyncpg in production), the
session factory and the programmatic Alembic entry points :func:`upgrade` and :func:`current_revision`.
It may touch the database named by the URL it is given and, for SQLite, create that file's parent
directory. It never reads the environment: callers pass ``Settings.database_url``.

SQLite transactions: the driver's default (implicit ``BEGIN`` before the first write, reads outside a
transaction) is kept on purpose. Every write path in this package starts its transaction with a write,
so a writer waiting for another one goes through SQLite's busy handler (``busy_timeout``) instead of
failing with ``SQLITE_BUSY`` on a stale snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from hub.control.store_errors import classify
from hub.errors import ConfigurationError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# pg_advisory_xact_lock key serialising concurrent upgrades ("CareHub!" as a big-endian int64).
_MIGRATION_LOCK_KEY = 0x4361726548756221


def backend_name(url: str | URL) -> str:
    """``sqlite`` or ``postgresql``; anything else is a configuration error."""
    try:
        name = make_url(url).get_backend_name()
    except (ArgumentError, ValueError) as exc:
        raise ConfigurationError("HUB_DATABASE_URL is not a valid database URL") from exc
    if name not in {"sqlite", "postgresql"}:
        raise ConfigurationError(
            f"unsupported control-plane database {name!r}: use sqlite+aiosqlite:// or postgresql+asyncpg://"
        )
    return name


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _create_parent_directory(path: Path) -> None:
    try:
        path.expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            "cannot create the directory of the SQLite database named by HUB_DATABASE_URL"
        ) from exc


def _on_sqlite_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def make_engine(url: str) -> AsyncEngine:
    """Build the async engine for ``url``.

    SQLite: creates the database file's parent directory (ConfigurationError if it cannot), and every
    connection gets foreign keys and a busy timeout; WAL journaling is stored in the file by
    :func:`upgrade`. PostgreSQL: a bounded, pre-pinged, recycled connection pool. Statement parameters
    are hidden from logs and exception text (PHI).
    """
    sa_url = make_url(url)
    backend = backend_name(sa_url)
    options: dict[str, Any] = {"hide_parameters": True}
    if backend == "sqlite":
        path = _sqlite_file(sa_url)
        if path is not None:
            _create_parent_directory(path)
        if path is not None:
            options.update(pool_size=1, max_overflow=0, pool_timeout=60)
        engine = _create_async_engine(sa_url, **options)
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        return engine
    options.update(pool_size=5, max_overflow=10, pool_timeout=30, pool_recycle=1800, pool_pre_ping=True)
    return _create_async_engine(sa_url, **options)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Session factory bound to ``engine``; objects stay readable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    """An Alembic configuration built in code, pointing at the migrations shipped inside the package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    # ConfigParser interpolates '%': escape it (URL-encoded passwords contain it).
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _run_upgrade(connection: Connection, config: Config, revision: str) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _run_downgrade(connection: Connection, config: Config, revision: str) -> None:
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


def _read_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def _lock_for_migration(connection: AsyncConnection) -> None:
    """Serialise concurrent upgrades and make the whole upgrade one transaction, on both backends."""
    if connection.dialect.name == "postgresql":
        await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
    else:
        await connection.exec_driver_sql("BEGIN IMMEDIATE")


async def _enable_wal(engine: AsyncEngine) -> None:
    """Switch a SQLite database to WAL journaling (persistent in the file; a no-op once done).

    Changing the journal mode needs an exclusive lock, and SQLite answers ``SQLITE_BUSY`` at once
    instead of calling the busy handler when another connection holds one (several workers starting
    on a new file at the same moment), so the switch is retried here for up to the busy timeout.
    """
    deadline = asyncio.get_running_loop().time() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            async with engine.connect() as connection:
                await connection.exec_driver_sql("PRAGMA journal_mode = WAL")
            return
        except OperationalError as exc:
            if "locked" not in str(exc.orig) or asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.02)


async def _migrate(url: str, step: Callable[[Connection, Config, str], None], revision: str) -> None:
    engine = make_engine(url)
    try:
        if engine.dialect.name == "sqlite":
            await _enable_wal(engine)
        async with engine.connect() as connection:
            await _lock_for_migration(connection)
            await connection.run_sync(step, alembic_config(url), revision)
            await connection.commit()
    except Exception as exc:
        translated = classify(exc, "schema migration")
        if translated is None:
            raise
        raise translated from exc
    finally:
        await engine.dispose()


async def upgrade(url: str) -> None:
    """Migrate the database at ``url`` to the newest revision; a no-op when it is already there.

    The whole upgrade is one transaction, and concurrent callers (several workers starting at once)
    are serialised by the database. Raises :class:`hub.errors.StoreUnavailable` when the database
    does not answer.
    """
    await _migrate(url, _run_upgrade, "head")


async def downgrade(url: str, revision: str = "base") -> None:
    """Revert the database at ``url`` to ``revision`` (``base``: drop the whole control-plane schema)."""
    await _migrate(url, _run_downgrade, revision)


async def current_revision(url: str) -> str | None:
    """The Alembic revision the database at ``url`` is at, or None before the first migration."""
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_read_revision)
    except Exception as exc:
        translated = classify(exc, "reading the schema revision")
        if translated is None:
            raise
        raise translated from exc
    finally:
        await engine.dispose()


def head_revision() -> str | None:
    """The newest revision the code knows."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


async def prepare(url: str) -> None:
    """Make the database usable at start-up.

    SQLite (the embedded default) is migrated on the spot. PostgreSQL is migrated by the operator
    (``carehub db upgrade``); here it must already be at the newest revision, otherwise a
    ``ConfigurationError`` says what to run.
    """
    if backend_name(url) == "sqlite":
        await upgrade(url)
        return
    current, head = await current_revision(url), head_revision()
    if current != head:
        raise ConfigurationError(
            f"the database is at revision {current or 'none'}, the hub needs {head}: run `carehub db upgrade`"
        )
