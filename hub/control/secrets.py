"""Named random secrets the hub generates once and keeps in the control-plane database.

Holds :func:`hub_secret`. It touches only the ``hub_secrets`` table (migration 0007). Every process on
the same database (``carehub run``, each ``carehub worker``) gets the same bytes for the same name: the
first caller's random value wins, concurrent first callers included (``INSERT ... ON CONFLICT DO
NOTHING``, then read the one row). A secret is never updated or rotated here; rotating one is an
operator's job (set the setting that overrides it). Secret values never appear in a log or an error.

Used where the hub needs a key but the operator configured none, as on the embedded development
default: the record-proof key when ``HUB_RECORD_KEY`` is unset (docs/adr/0010-record-proof.md).
"""

from __future__ import annotations

import secrets
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hub.control.db import make_sessionmaker
from hub.control.models import SECRET_NAME_MAX, HubSecretRow
from hub.control.sqltypes import utc_now
from hub.control.store_errors import guarded
from hub.control.upsert import insert_ignoring_conflicts
from hub.control.validation import require_text
from hub.errors import InvalidInput, StoreUnavailable

#: Fewer random bytes than this would not be a key (HMAC-SHA256 wants at least 32; 16 is the floor).
MIN_SIZE: Final = 16
MAX_SIZE: Final = 1024

Database = AsyncEngine | async_sessionmaker[AsyncSession] | AsyncSession


async def hub_secret(database: Database, name: str, *, size: int = 32) -> bytes:
    """The secret called ``name``: created with ``size`` random bytes on first use, the stored bytes after.

    ``database`` is an engine, a session factory or a session (which is committed). Race-safe across
    processes on SQLite and PostgreSQL: concurrent first callers all get the one value that was stored.
    ``size`` applies only when the secret is created; a stored secret comes back as it was stored.
    Raises ``InvalidInput`` for a bad name or size, ``StoreUnavailable``/``ConfigurationError`` when the
    database does not answer or has no schema.
    """
    require_text("name", name, SECRET_NAME_MAX)
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise InvalidInput(f"size must be between {MIN_SIZE} and {MAX_SIZE} bytes", expression="size")
    if isinstance(database, AsyncSession):
        return await _load_or_create(database, name, size)
    factory = make_sessionmaker(database) if isinstance(database, AsyncEngine) else database
    async with factory() as session:
        return await _load_or_create(session, name, size)


async def _lookup(session: AsyncSession, name: str) -> bytes | None:
    value: bytes | None = await session.scalar(select(HubSecretRow.value).where(HubSecretRow.name == name))
    return None if value is None else bytes(value)


async def _load_or_create(session: AsyncSession, name: str, size: int) -> bytes:
    async with guarded(session, "hub_secret"):
        existing = await _lookup(session, name)
        if existing is None:
            dialect = session.get_bind().dialect.name
            row = {"name": name, "value": secrets.token_bytes(size), "created_at": utc_now()}
            await session.execute(insert_ignoring_conflicts(dialect, HubSecretRow, [row], ["name"]))
            existing = await _lookup(session, name)
        await session.commit()
    if existing is None:  # the winning row vanished: only a concurrent manual delete can do that
        raise StoreUnavailable("hub secret row disappeared during hub_secret; retry")
    return existing
