"""A worker killed with SIGKILL between consume and produce loses nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from hub import events
from hub.broker.embedded import EmbeddedBroker
from hub.control import db, partners
from hub.events import CloudEvent, HubEvent, RoutingFacts
from hub.topics.registry import EVENTS, INGRESS
from tests.conftest import free_port
from tests.e2e.conftest import read_topic
from tests.records import TEST_RECORD_KEY, signed_headers

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parents[2]


async def _start_worker(env: dict[str, str], prefix: str, marker: Path) -> subprocess.Popen[bytes]:
    log = (marker.parent / "worker.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.crashing_worker", prefix, str(marker)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log,
    )


async def _wait_line(process: subprocess.Popen[bytes], text: bytes, log: Path, timeout_s: float = 60) -> None:
    assert process.stdout is not None
    stdout = process.stdout

    async def scan() -> None:
        while True:
            line = await asyncio.to_thread(stdout.readline)
            if not line:
                raise AssertionError(f"worker exited before printing {text!r}; its stderr: {log.read_text()[-3000:]}")
            if text in line:
                return

    await asyncio.wait_for(scan(), timeout_s)


@pytest.fixture
async def tansu() -> AsyncIterator[EmbeddedBroker]:
    """A broker of this test's own: a new consumer group reads hub.ingress from the start, and
    records of other tests there must not trip the crash point before the worker is ready."""
    async with EmbeddedBroker(port=free_port()) as broker:
        yield broker


@pytest.mark.parametrize("crash_before", [EVENTS.name, "partner."])
async def test_a_worker_killed_between_consume_and_produce_loses_nothing(
    tansu: EmbeddedBroker, tmp_path: Path, crash_before: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    await db.upgrade(database_url)
    engine = db.make_engine(database_url)
    async with db.make_sessionmaker(engine)() as session:
        await partners.create_partner(session, id=f"hosp-{tag}", kind="hospital", name="H",
                                      organization=f"Organization/hosp-{tag}")
        await partners.create_partner(session, id=f"cbo-{tag}", kind="cbo", name="C",
                                      organization=f"Organization/cbo-{tag}")
    await engine.dispose()

    env = {**os.environ, "HUB_KAFKA_BOOTSTRAP": tansu.bootstrap, "HUB_DATABASE_URL": database_url,
           "HUB_WORKER_GROUP": f"crash-{tag}", "HUB_CONSUMER_SESSION_TIMEOUT_MS": "2000",
           "HUB_RECORD_KEY": TEST_RECORD_KEY.decode()}  # the test writes hub.ingress as the edge would
    marker = tmp_path / "crashed"
    worker = await _start_worker(env, crash_before, marker)
    await _wait_line(worker, b"worker-ready", tmp_path / "worker.log")

    event = HubEvent(facts=RoutingFacts(resource_type="ServiceRequest", sender=f"hosp-{tag}",
                                        patient_source=f"urn:mrn|{tag}", performers=(f"Organization/cbo-{tag}",)),
                     body='{"resourceType":"ServiceRequest"}')
    ce = CloudEvent(id=f"evt-{tag}", source=f"/partners/hosp-{tag}", type="org.carehub.servicerequest.submitted",
                    time=events.now())
    producer = AIOKafkaProducer(bootstrap_servers=tansu.bootstrap, acks="all")
    await producer.start()
    value = events.encode(event)
    await producer.send_and_wait(INGRESS.name, value, key=tag.encode(),
                                 headers=signed_headers(INGRESS.name, key=tag.encode(), value=value,
                                                        headers=ce.to_headers()))
    await producer.stop()

    returncode = await asyncio.wait_for(asyncio.to_thread(worker.wait), 60)
    assert -9 == returncode
    assert marker.exists()

    restarted = await _start_worker(env, crash_before, marker)
    try:
        await _wait_line(restarted, b"worker-ready", tmp_path / "worker.log")
        delivered = await read_topic(tansu.bootstrap, f"partner.cbo-{tag}", expect=1, timeout_s=60)
    finally:
        restarted.terminate()
        await asyncio.to_thread(restarted.wait)
    assert {f"evt-{tag}"} == {dict(r.headers)["ce_id"].decode() for r in delivered}
    assert event.body.encode() == delivered[0].value
