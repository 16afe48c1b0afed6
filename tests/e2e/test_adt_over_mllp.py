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


async def closed_by_hub(reader: asyncio.StreamReader) -> bool:
    """True when the hub closed the connection (EOF or reset), False when bytes came instead."""
    try:
        return b"" == await reader.read(65_536)
    except ConnectionError:
        return True


async def test_a_half_frame_flood_does_not_lock_a_hospital_out_of_the_running_hub(
    tansu: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Limits from the environment (HUB_MLLP_*): 24 connections from six addresses send half a frame
    into a listener of 8 slots, 2 reserved, 4 per address. A hospital connecting after them gets its AA
    (after the broker acknowledged); every flood connection is closed by the hub (evicted, or at the
    identify timeout) while the hospital's connection stays usable."""
    for name, value in {
        "HUB_MLLP_MAX_CONNECTIONS": "8", "HUB_MLLP_RESERVED_CONNECTIONS": "2",
        "HUB_MLLP_MAX_CONNECTIONS_PER_SOURCE": "4", "HUB_MLLP_IDENTIFY_TIMEOUT_S": "1",
    }.items():
        monkeypatch.setenv(name, value)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    facility = f"FAC{prefix.upper()}"
    settings = settings_for(tansu.bootstrap, tmp_path, mllp_facilities={facility: f"{prefix}-hosp"})
    assert (8, 2, 4, 1.0) == (settings.mllp_max_connections, settings.mllp_reserved_connections,
                              settings.mllp_max_connections_per_source, settings.mllp_identify_timeout_s)
    async with (
        running_hub(settings) as hub,
        httpx.AsyncClient(base_url=hub.http_url or "", timeout=30) as http,
    ):
        await HubClient(hub=hub, http=http, prefix=prefix).add_partner("hosp", "hospital")
        port = hub.mllp_port or 0
        flood = []
        for n in range(24):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(f"127.0.0.{2 + n % 6}", 0))
            writer.write(b"\x0b" + adt({"MSH-4": facility})[:30])
            await writer.drain()
            flood.append((reader, writer))
        hospital_reader, hospital_writer = await asyncio.open_connection("127.0.0.1", port)

        async def exchange(control_id: str) -> str:
            message = adt({"MSH-4": facility, "MSH-10": control_id, "PID-3": f"{prefix}^^^{facility}^MR"})
            hospital_writer.write(b"\x0b" + message + b"\x1c\r")
            await hospital_writer.drain()
            return read_ack(await asyncio.wait_for(hospital_reader.readuntil(b"\x1c\r"), 30)).code

        assert "AA" == await exchange(f"MSG-{prefix}-1")
        closed = await asyncio.wait_for(asyncio.gather(*(closed_by_hub(reader) for reader, _ in flood)), 60)
        assert [True] * 24 == closed
        assert "AA" == await exchange(f"MSG-{prefix}-2")
        hospital_writer.close()
        for _, writer in flood:
            writer.close()
