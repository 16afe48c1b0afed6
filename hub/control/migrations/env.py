"""Alembic environment for the control-plane schema.

Holds the glue Alembic runs for every command. It may touch only the database it is given:
:func:`hub.control.db.upgrade` passes an open connection in ``config.attributes["connection"]`` (already
inside the transaction and lock it manages); the ``alembic`` command line instead gets the URL from
``sqlalchemy.url`` and this module opens an async engine itself and runs the migrations through
``connection.run_sync``. Offline mode (``--sql``) renders the SQL without connecting.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from hub.control.db import make_engine
from hub.control.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)


def run_migrations_on(connection: Connection) -> None:
    """Run the pending migrations on an open synchronous connection."""
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_async(url: str) -> None:
    """Open an async engine on ``url`` and run the pending migrations through ``run_sync``."""
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations_on)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_offline(url: str) -> None:
    """Render the migrations as SQL for ``url``'s dialect without connecting."""
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    """Entry point Alembic executes when it loads this environment."""
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        run_migrations_on(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url or pass a connection in config.attributes['connection']")
    if context.is_offline_mode():
        run_migrations_offline(url)
    else:
        asyncio.run(run_migrations_async(url))


main()
