"""Durable on the embedded default (issue 13, docs/adr/0012): ``kill -9`` of ``carehub run`` while a hospital
sends about 100 events a second (FHIR referrals and HL7 v2 ADT over MLLP), then the documented restart with
the same settings: every event the hub answered 201 or AA reaches the CBO's topic, and a duplicate carries
the same ``ce_id`` and the same event number."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import defaultdict
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from hub.adapters.hl7_adt import adt_event_id, parse_message
from tests.adapters.hl7_fakes import adt, read_ack
from tests.e2e.hub_process import ADMIN_TOKEN, HubPorts, hub_environment, start_hub, stop, wait_until_serving

pytestmark = pytest.mark.broker

HOSPITAL, CBO, FACILITY = "kill-hosp", "kill-cbo", "KILLFAC"
ROSTERED = "urn:oid:2.16.840.1.113883.19.5|PATID1234"  # the patient of the sample ADT messages (PID-3)
REFERRALS_PER_S, ADTS_PER_S = 90, 10
LOAD_BEFORE_KILL_S = 3.0


def _referral(n: int) -> bytes:
    return orjson.dumps({
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "subject": {"identifier": {"system": "urn:oid:1.2.3", "value": f"MRN-KILL-{n}"}},
        "requester": {"reference": f"Organization/{HOSPITAL}"},
        "performer": [{"reference": f"Organization/{CBO}"}],
    })


async def _register(url: str) -> str:
    """Register the hospital and the CBO, put the ADT patient on the CBO's roster; the hospital's token."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=admin, timeout=30) as http:
        tokens = {}
        for partner, kind in ((HOSPITAL, "hospital"), (CBO, "cbo")):
            answer = await http.post("/admin/v1/partners", json={
                "id": partner, "kind": kind, "name": partner, "organization": f"Organization/{partner}"})
            assert 201 == answer.status_code, answer.text
            tokens[partner] = answer.json()["token"]
        rostered = await http.post(f"/admin/v1/partners/{CBO}/roster", json={"patient": ROSTERED})
        assert 201 == rostered.status_code, rostered.text
    return str(tokens[HOSPITAL])


async def _post_referrals(url: str, token: str, answered: set[str]) -> None:
    """POST referrals at REFERRALS_PER_S until cancelled; record each id answered 201 (its ce_id)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}

    async def post(http: httpx.AsyncClient, n: int) -> None:
        with contextlib.suppress(httpx.TransportError):
            answer = await http.post("/fhir/ServiceRequest", content=_referral(n), headers=headers)
            if answer.status_code == 201:
                answered.add(answer.json()["id"])

    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=50)) as http:
        pending: set[asyncio.Task[None]] = set()
        try:
            for n in range(1_000_000):
                task = asyncio.create_task(post(http, n))
                pending.add(task)
                task.add_done_callback(pending.discard)
                await asyncio.sleep(1 / REFERRALS_PER_S)
        finally:
            for task in pending:
                task.cancel()


async def _send_adts(port: int, answered: set[str]) -> None:
    """Send ADT messages over one MLLP connection at ADTS_PER_S until cancelled; record each ce_id answered AA."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for n in range(1_000_000):
            message = adt({"MSH-4": FACILITY, "MSH-10": f"KILL-{n}"})
            ce_id = adt_event_id(HOSPITAL, parse_message(message))
            writer.write(b"\x0b" + message + b"\x1c\x0d")
            await writer.drain()
            frame = await reader.readuntil(b"\x1c\x0d")
            if read_ack(frame.strip(b"\x0b\x1c\x0d")).code == "AA":
                answered.add(ce_id)
            await asyncio.sleep(1 / ADTS_PER_S)
    except (OSError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def _follow(bootstrap: str, topic: str, seen: dict[str, str]) -> None:
    """Read ``topic`` as the CBO does until cancelled, recording each ce_id's event number."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, fetch_max_wait_ms=50)
    try:
        await consumer.start()
        while True:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    headers = {name: value.decode() for name, value in record.headers}
                    seen[headers["ce_id"]] = headers["ce_sequence"]
    except Exception:  # the broker dies with the hub: what was seen until then counts
        pass
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()


async def _read_until_complete(
    bootstrap: str, topic: str, wanted: set[str], timeout_s: float
) -> dict[str, list[tuple[bytes, str]]]:
    """Read ``topic`` from the beginning, as the CBO's aiokafka consumer would, until every ``wanted`` ce_id
    arrived or the timeout passed; each ce_id's records as (value, ce_sequence)."""
    found: dict[str, list[tuple[bytes, str]]] = defaultdict(list)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not wanted <= found.keys():
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    headers = {name: value.decode() for name, value in record.headers}
                    found[headers["ce_id"]].append((record.value or b"", headers["ce_sequence"]))
    finally:
        await consumer.stop()
    return found


async def test_every_event_answered_before_a_kill_9_reaches_the_partner_after_the_restart(tmp_path: Path) -> None:
    ports = HubPorts.free()
    env = hub_environment(tmp_path, ports, HUB_MLLP_FACILITIES=orjson.dumps({FACILITY: HOSPITAL}).decode())
    log = tmp_path / "hub.log"
    hub = start_hub(env, log)
    answered: set[str] = set()
    adts: set[str] = set()
    before: dict[str, str] = {}  # what the CBO read before the kill: ce_id -> event number
    try:
        await wait_until_serving(hub, ports.http_url, log)
        token = await _register(ports.http_url)
        load = [asyncio.create_task(_post_referrals(ports.http_url, token, answered)),
                asyncio.create_task(_send_adts(ports.mllp, adts)),
                asyncio.create_task(_follow(f"127.0.0.1:{ports.kafka}", f"partner.{CBO}", before))]
        await asyncio.sleep(LOAD_BEFORE_KILL_S)  # the load runs; the kill comes mid-stream, requests in flight
        hub.send_signal(signal.SIGKILL)
        assert -signal.SIGKILL == await asyncio.to_thread(hub.wait)
        for task in load:
            task.cancel()
        await asyncio.gather(*load, return_exceptions=True)
    finally:
        if hub.poll() is None:
            hub.kill()
            await asyncio.to_thread(hub.wait)
    assert len(answered) > LOAD_BEFORE_KILL_S * REFERRALS_PER_S / 3, "the hub took too few referrals"
    assert len(adts) > LOAD_BEFORE_KILL_S * ADTS_PER_S / 3, "the hub took too few ADT messages"
    answered_before_kill = answered | adts

    restarted = start_hub(env, log)
    try:
        await wait_until_serving(restarted, ports.http_url, log)
        delivered = await _read_until_complete(
            f"127.0.0.1:{ports.kafka}", f"partner.{CBO}", answered_before_kill, timeout_s=45
        )
    finally:
        await stop(restarted)

    missing = answered_before_kill - delivered.keys()
    assert set() == missing, f"{len(missing)} of {len(answered_before_kill)} answered events were lost"
    for ce_id, copies in delivered.items():
        assert 1 == len(set(copies)), f"duplicates of {ce_id} differ in content or event number"
    assert before, "the CBO read nothing before the kill"
    renumbered = {ce_id for ce_id, number in before.items() if delivered[ce_id][0][1] != number}
    assert set() == renumbered, "events delivered before the kill came back with another event number"
    numbers = [copies[0][1] for copies in delivered.values()]
    assert len(numbers) == len(set(numbers)), "two events share one event number"
