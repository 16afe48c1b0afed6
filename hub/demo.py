"""``carehub demo``: the hub with a sample hospital and two CBOs, one referral, and what each receives.

The sample referral below is written for this demo (a fictional patient); it is not a copy of any
published example.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table

from hub.app import running_hub
from hub.broker.client_security import ClientSecurity
from hub.settings import Settings
from hub.topics.registry import partner_topic

HOSPITAL = {"id": "demo-hospital", "kind": "hospital", "name": "Riverside General Hospital",
            "organization": "Organization/demo-hospital"}
FOOD_BANK = {"id": "demo-foodbank", "kind": "cbo", "name": "Eastside Community Food Bank",
             "organization": "Organization/demo-foodbank"}
HOUSING = {"id": "demo-housing", "kind": "cbo", "name": "Harbor Housing Collaborative",
           "organization": "Organization/demo-housing"}


def sample_referral() -> dict[str, Any]:
    """A food-insecurity referral from the demo hospital to the demo food bank (fictional patient)."""
    return {
        "resourceType": "ServiceRequest",
        "meta": {"profile": ["http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-ServiceRequest"]},
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{
            "system": "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes",
            "code": "food-insecurity", "display": "Food Insecurity"}]}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "467771000124109",
                             "display": "Assistance with application for food pantry program"}]},
        "subject": {"identifier": {"system": "urn:oid:2.16.840.1.113883.3.9999.1", "value": "DEMO-MRN-0042"},
                    "display": "Demo Patient"},
        "authoredOn": "2026-11-23T09:30:00Z",
        "requester": {"reference": "Organization/demo-hospital"},
        "performer": [{"reference": "Organization/demo-foodbank"}],
        "reasonCode": [{"text": "Hunger Vital Sign positive"}],
    }


async def _receive_one(bootstrap: str, topic: str, timeout_s: float, security: ClientSecurity) -> Any:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        fetch_max_wait_ms=20, group_id=None, **security.aiokafka_kwargs(),
    )
    await consumer.start()
    try:
        return await asyncio.wait_for(consumer.getone(), timeout=timeout_s)
    finally:
        await consumer.stop()


async def run_demo(
    settings: Settings,
    *,
    console: Console,
    keep_running: bool = False,
    until: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Run the demo end to end and print what happens."""
    with tempfile.TemporaryDirectory(prefix="carehub-demo-") as tmp:
        if "database_url" not in settings.model_fields_set:
            settings = settings.model_copy(
                update={"database_url": f"sqlite+aiosqlite:///{Path(tmp) / 'carehub-demo.db'}"}
            )
        started = time.monotonic()
        console.rule("[bold]CareHub demo")
        async with running_hub(settings) as hub:
            console.print(f"hub running: Kafka {hub.bootstrap}, HTTP {hub.http_url}")
            admin = {"Authorization": f"Bearer {hub.admin_token}"}
            async with httpx.AsyncClient(base_url=hub.http_url or "", timeout=30) as client:
                tokens: dict[str, str] = {}
                for partner in (HOSPITAL, FOOD_BANK, HOUSING):
                    answer = await client.post("/admin/v1/partners", json=partner, headers=admin)
                    answer.raise_for_status()
                    tokens[partner["id"]] = answer.json()["token"]
                    console.print(f"registered {partner['kind']:8} [cyan]{partner['id']}[/] ({partner['name']})")

                referral = orjson.dumps(sample_referral())
                answer = await client.post(
                    "/fhir/ServiceRequest", content=referral,
                    headers={"Authorization": f"Bearer {tokens['demo-hospital']}",
                             "Content-Type": "application/fhir+json"},
                )
                console.print(f"hospital POST /fhir/ServiceRequest -> [bold]{answer.status_code}[/] "
                              f"Location: {answer.headers.get('location')}")
                answer.raise_for_status()

                record = await _receive_one(
                    hub.bootstrap, partner_topic("demo-foodbank").name, timeout_s=30, security=hub.security
                )
                headers = Table("header", "value", title=f"{partner_topic('demo-foodbank').name} received")
                for name, value in record.headers:
                    if name.startswith("ce_") or name == "content-type":
                        headers.add_row(name, value.decode())
                console.print(headers)
                pretty = orjson.dumps(orjson.loads(record.value), option=orjson.OPT_INDENT_2).decode()
                console.print(Panel(Syntax(pretty, "json", word_wrap=True), title="value (FHIR R4 JSON)"))

                event_id = dict(record.headers)["ce_id"].decode()
                decisions = (await client.get("/admin/v1/audit", params={"event": event_id}, headers=admin)).json()
                table = Table("recipient", "verdict", "rule", "reason", title="sharing decisions (audited)")
                for row in decisions:
                    table.add_row(row["recipient"], row["verdict"], row["rule"], row["reason"])
                console.print(table)
            console.print(f"[bold green]Loop shown in {time.monotonic() - started:.1f}s:[/] the food bank got the "
                          "referral addressed to it; the housing agency got nothing, and both decisions are audited.")
            if keep_running and until is not None:
                console.print(f"Hub still running at {hub.http_url} (admin token {hub.admin_token}); Ctrl-C stops it.")
                await until()
