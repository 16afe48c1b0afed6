"""End to end over the embedded broker: a referral a CBO received shows up in the patient's accounting of
disclosures and in the AuditEvent export, naming the stored resource version; the CBO it was not for does not."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from pydantic import SecretStr

from hub.app import running_hub
from hub.broker.embedded import EmbeddedBroker
from hub.settings import Settings

pytestmark = pytest.mark.broker

ADMIN = {"Authorization": "Bearer e2e-admin-token"}


async def _poll(http: httpx.AsyncClient, url: str, params: dict[str, str], *, until_count: int) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        body: dict[str, Any] = (await http.get(url, params=params, headers=ADMIN)).json()
        if body["count"] >= until_count or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.1)


async def test_a_delivered_referral_is_in_the_accounting_and_the_export(tansu: EmbeddedBroker, tmp_path: Path) -> None:
    settings = Settings(
        kafka_bootstrap=tansu.bootstrap, database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", http_port=0,
        mllp_port=0, admin_token=SecretStr("e2e-admin-token"), worker_group=f"test-{uuid.uuid4().hex[:8]}",
        consumer_session_timeout_ms=2000,
    )
    prefix = f"a{uuid.uuid4().hex[:8]}"
    async with running_hub(settings) as hub, httpx.AsyncClient(base_url=hub.http_url or "", timeout=30) as http:
        tokens = {}
        for name, kind in (("hosp", "hospital"), ("food", "cbo"), ("housing", "cbo")):
            answer = await http.post("/admin/v1/partners", headers=ADMIN, json={
                "id": f"{prefix}-{name}", "kind": kind, "name": name.title(),
                "organization": f"Organization/{prefix}-{name}"})
            assert 201 == answer.status_code, answer.text
            tokens[name] = answer.json()["token"]
        referral = orjson.dumps({
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "subject": {"identifier": {"system": "urn:oid:1.2.3", "value": "MRN-42"}},
            "performer": [{"reference": f"Organization/{prefix}-food"}],
        })
        created = await http.post("/fhir/ServiceRequest", content=referral, headers={
            "Authorization": f"Bearer {tokens['hosp']}", "Content-Type": "application/fhir+json"})
        assert 201 == created.status_code, created.text
        location = created.headers["location"]  # /fhir/ServiceRequest/<id>/_history/1

        accounting = await _poll(http, "/admin/v1/disclosures", {"patient": "urn:oid:1.2.3|MRN-42"}, until_count=1)
        [line] = accounting["disclosures"]
        assert (f"{prefix}-food", "Food", "ServiceRequest") == (
            line["recipient"]["id"], line["recipient"]["name"], line["resource_type"])
        assert location.removeprefix("/fhir/") == line["resource"]

        export = await http.get("/admin/v1/audit/AuditEvent", params={"patient": "urn:oid:1.2.3|MRN-42"},
                                headers=ADMIN)
        bundle = export.json()
        Bundle.model_validate(bundle)
        recipients = {
            (agent["who"]["identifier"]["value"], entry["resource"]["outcome"])
            for entry in bundle["entry"]
            for agent in entry["resource"]["agent"]
            if agent["type"]["coding"][0]["code"] in {"110152", "IRCP"}  # BALP recipient / information recipient
        }
        assert {(f"{prefix}-food", "0"), (f"{prefix}-housing", "4")} == recipients
