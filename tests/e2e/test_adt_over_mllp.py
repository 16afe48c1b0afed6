"""A hospital's HL7 v2 ADT feed over MLLP into the running hub: AA only after the broker acknowledged,
the event on hub.events keyed by hub patient id with the original message; an unknown facility gets AR."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from hl7.client import MLLPClient

from hub import events
from hub.app import running_hub
from hub.broker.embedded import EmbeddedBroker
from tests.adapters.hl7_fakes import adt, client_send, read_ack
from tests.e2e.conftest import HubClient, read_topic, settings_for

pytestmark = pytest.mark.broker


@pytest.fixture
async def feed(tansu: EmbeddedBroker, tmp_path: Path) -> AsyncIterator[tuple[HubClient, str]]:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    facility = f"FAC{prefix.upper()}"
    settings = settings_for(tansu.bootstrap, tmp_path, mllp_facilities={facility: f"{prefix}-hosp"})
    async with (
        running_hub(settings) as hub,
        httpx.AsyncClient(base_url=hub.http_url or "", timeout=30) as http,
    ):
        client = HubClient(hub=hub, http=http, prefix=prefix)
        await client.add_partner("hosp", "hospital")
        yield client, facility


def send(port: int, message: bytes) -> bytes:
    """One message on its own connection, as a hospital's python-hl7 client sends it."""
    with MLLPClient("127.0.0.1", port) as client:
        return client_send(client, message)


async def test_an_admit_over_mllp_is_acknowledged_and_reaches_hub_events(feed: tuple[HubClient, str]) -> None:
    hub_client, facility = feed
    control_id = f"MSG-{hub_client.prefix}"
    message = adt({"MSH-4": facility, "MSH-10": control_id, "PID-3": f"{hub_client.prefix}^^^{facility}^MR"})
    assert hub_client.hub.mllp_port

    ack = read_ack(await asyncio.to_thread(send, hub_client.hub.mllp_port, message))

    assert ("AA", control_id) == (ack.code, ack.control_id)
    found = [r for r in await read_topic(hub_client.hub.bootstrap, "hub.events", expect=10_000, timeout_s=5)
             if events.decode(r.value).facts.sender == f"{hub_client.prefix}-hosp"]
    assert 1 == len(found)
    event = events.decode(found[0].value)
    assert message.decode() == event.original
    assert ("Encounter", "admit") == (event.facts.resource_type, event.facts.event_kind)
    assert event.facts.hub_patient_id is not None
    assert event.facts.hub_patient_id.encode() == found[0].key


async def test_a_message_from_an_unmapped_facility_is_rejected_with_err_at_msh_4(
    feed: tuple[HubClient, str],
) -> None:
    hub_client, _ = feed
    message = adt({"MSH-4": "NOT-MAPPED", "MSH-10": f"MSG-X-{hub_client.prefix}"})
    ack = read_ack(await asyncio.to_thread(send, hub_client.hub.mllp_port or 0, message))
    assert ("AR", "MSH-4") == (ack.code, ack.location)


async def test_a_facility_registered_through_the_admin_api_is_accepted_and_refused_once_removed(
    feed: tuple[HubClient, str],
) -> None:
    hub_client, _ = feed
    facility = f"REG{hub_client.prefix.upper()}^2.16.840.1.113883.19.5^ISO"
    url = f"/admin/v1/partners/{hub_client.prefix}-hosp/facilities"
    port = hub_client.hub.mllp_port or 0
    before = read_ack(await asyncio.to_thread(send, port, adt({"MSH-4": facility, "MSH-10": "R-1"})))
    registered = await hub_client.http.post(url, headers=hub_client.admin, json={"facility": facility})
    assert 201 == registered.status_code, registered.text
    # The MLLP edge remembers that a facility is unknown for up to 1 s; this hub asked about it just before.
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        after = read_ack(await asyncio.to_thread(send, port, adt({"MSH-4": facility, "MSH-10": "R-2"})))
        if after.code == "AA" or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.2)
    assert ("AR", "MSH-4") == (before.code, before.location)
    assert "AA" == after.code
    removed = await hub_client.http.delete(f"{url}/{facility}", headers=hub_client.admin)
    assert 204 == removed.status_code
