"""The hub's real HTTP application (``hub.app.build_http_app``) on a migrated SQLite control plane with a
registered hospital and CBO, for tests that exercise the whole app in process: every route, the
guards and the error handlers, as partners and the operator reach them (no broker: accepted writes land
in :class:`MemoryPublisher`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hub.app import build_http_app
from hub.auth import SqlAuthenticator
from hub.control import db, partners
from hub.pipeline.publisher import AioKafkaRecordPublisher, Outgoing
from hub.settings import Settings

ADMIN_TOKEN = "contract-admin-token"
HOSPITAL = "general"
CBO = "foodbank"


class MemoryPublisher(AioKafkaRecordPublisher):
    """The hub's publisher type, keeping records in memory instead of sending them to a broker."""

    def __init__(self) -> None:  # no producer: nothing here talks to Kafka
        self.records: list[Outgoing] = []

    async def publish_many(self, records: Sequence[Outgoing]) -> None:
        self.records.extend(records)


@dataclass
class HubHttp:
    """The app, its control plane and the bearer tokens of the partners registered in it."""

    app: FastAPI
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    publisher: MemoryPublisher
    tokens: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


def database_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"


async def prepare_control_plane(url: str) -> dict[str, str]:
    """Migrate the database and register a hospital and a CBO; return their tokens by partner id."""
    await db.upgrade(url)
    engine = db.make_engine(url)
    try:
        sessions = db.make_sessionmaker(engine)
        tokens: dict[str, str] = {}
        for partner_id, kind in ((HOSPITAL, "hospital"), (CBO, "cbo")):
            async with sessions() as session:
                _, tokens[partner_id] = await partners.create_partner(
                    session, id=partner_id, kind=kind, name=partner_id.title(),
                    organization=f"Organization/{partner_id}",
                )
        return tokens
    finally:
        await engine.dispose()


def build_hub_http(url: str, tokens: dict[str, str], **settings: Any) -> HubHttp:
    """The app on the (prepared) database at ``url``. Its engine opens connections on first use, so the
    app may run on another event loop than the one that prepared the database."""
    engine = db.make_engine(url)
    sessions = db.make_sessionmaker(engine)
    publisher = MemoryPublisher()

    async def created(_partner: partners.Partner) -> None:
        return None

    app = build_http_app(
        settings=Settings(database_url=url, admin_token=SecretStr(ADMIN_TOKEN), **settings),
        sessions=sessions,
        authenticator=SqlAuthenticator(sessions, admin_token=ADMIN_TOKEN),
        publisher=publisher,
        on_partner_created=created,
    )
    return HubHttp(app=app, engine=engine, sessions=sessions, publisher=publisher, tokens=dict(tokens))


@contextlib.asynccontextmanager
async def serving(directory: Path, **settings: Any) -> AsyncIterator[tuple[HubHttp, httpx.AsyncClient]]:
    """The app on a fresh prepared control plane in ``directory`` and an in-process client on it; the
    engine is disposed afterwards."""
    url = database_url(directory)
    hub_http = build_hub_http(url, await prepare_control_plane(url), **settings)
    try:
        transport = httpx.ASGITransport(app=hub_http.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as http:
            yield hub_http, http
    finally:
        await hub_http.engine.dispose()
