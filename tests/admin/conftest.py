"""The real HTTP application (``hub.app.build_http_app``) on a migrated SQLite control plane, in process.

``admin`` gives an httpx client on the app (ASGI transport, no server, no broker: the admin routes never
publish), the session factory under it to record decisions directly, and helpers to register partners.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.app import build_http_app
from hub.auth import SqlAuthenticator
from hub.control import db, partners
from hub.pipeline.publisher import AioKafkaRecordPublisher
from hub.settings import Settings
from tests.records import TEST_PROOF

ADMIN_TOKEN = "test-admin-token"


@dataclass
class Admin:
    """An in-process hub HTTP app and what the tests need around it."""

    http: httpx.AsyncClient
    sessions: async_sessionmaker[AsyncSession]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def add_partner(self, partner_id: str, kind: str = "cbo", name: str | None = None,
                          organization: str | None = None) -> str:
        """Register a partner through the admin API; return its bearer token."""
        answer = await self.http.post("/admin/v1/partners", headers=self.headers, json={
            "id": partner_id, "kind": kind, "name": name or partner_id.title(),
            "organization": organization or f"Organization/{partner_id}"})
        assert 201 == answer.status_code, answer.text
        return str(answer.json()["token"])


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    await db.upgrade(url)
    engine = db.make_engine(url)
    sessions = db.make_sessionmaker(engine)

    async def created(_partner: partners.Partner) -> None:
        return None

    app = build_http_app(
        settings=Settings(database_url=url, admin_token=SecretStr(ADMIN_TOKEN)),
        sessions=sessions,
        authenticator=SqlAuthenticator(sessions, admin_token=ADMIN_TOKEN),
        publisher=AioKafkaRecordPublisher("127.0.0.1:1", proof=TEST_PROOF),  # never started: no admin API publishes
        on_partner_created=created,
    )
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub.test") as http:
            yield Admin(http=http, sessions=sessions)
    finally:
        await engine.dispose()
