"""A whole hub running against the session's Tansu broker over TCP, with a SQLite control plane."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from hub.app import RunningHub, record_proof, running_hub
from hub.broker.embedded import EmbeddedBroker
from hub.record_proof import RecordProof
from hub.settings import Settings

ADMIN_TOKEN = "test-admin-token"


@dataclass
class HubClient:
    """A running hub plus an HTTP client and helpers that act as its partners would."""

    hub: RunningHub
    http: httpx.AsyncClient
    prefix: str

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def add_partner(self, name: str, kind: str, organization: str | None = None) -> tuple[str, str]:
        """Register a partner with a test-unique id; return (id, token)."""
        partner_id = f"{self.prefix}-{name}"
        answer = await self.http.post("/admin/v1/partners", headers=self.admin, json={
            "id": partner_id, "kind": kind, "name": name.title(),
            "organization": organization or f"Organization/{partner_id}",
        })
        assert 201 == answer.status_code, answer.text
        return partner_id, answer.json()["token"]

    async def record_proof(self) -> RecordProof:
        """The hub's record proof, loaded as a second process on the same database would load it."""
        return await record_proof(self.hub.settings, self.hub.sessions)

    async def post_fhir(self, path: str, body: bytes, token: str) -> httpx.Response:
        return await self.http.post(f"/fhir/{path}", content=body, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"})


def settings_for(bootstrap: str, tmp: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "database_url": f"sqlite+aiosqlite:///{tmp / 'hub.db'}",
        "http_port": 0,
        "mllp_port": 0,
        "admin_token": ADMIN_TOKEN,
        "worker_group": f"test-{uuid.uuid4().hex[:8]}",
        "consumer_session_timeout_ms": 2000,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def hub_client(tansu: EmbeddedBroker, tmp_path: Path) -> AsyncIterator[HubClient]:
    async with (
        running_hub(settings_for(tansu.bootstrap, tmp_path)) as hub,
        httpx.AsyncClient(base_url=hub.http_url or "", timeout=30) as http,
    ):
        yield HubClient(hub=hub, http=http, prefix=f"t{uuid.uuid4().hex[:8]}")


async def read_topic(bootstrap: str, topic: str, *, expect: int, timeout_s: float = 20.0,
                     settle_s: float = 0.0) -> list[ConsumerRecord[bytes, bytes]]:
    """Read a topic from the beginning, as a partner's aiokafka consumer would, until ``expect`` records
    arrived (then keep listening ``settle_s`` more to catch extras) or the timeout passed."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, fetch_max_wait_ms=20)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(records) < expect:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
        if settle_s:
            end = time.monotonic() + settle_s
            while time.monotonic() < end:
                for part in (await consumer.getmany(timeout_ms=100)).values():
                    records.extend(part)
        await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return records
