"""Group commit of the FHIR edge's broker writes (issue 13): concurrent creates share ``publish_many`` calls
through ``GroupPublisher``, each answered only after its own record was acknowledged and its version
stored; a broker failure inside a batch fails only the requests whose records it concerns (a precise 503
OperationOutcome), never the others and never with a 500."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import httpx
import orjson
import pytest
from fastapi import FastAPI

from hub.adapters.fhir_rest import RETRY_AFTER_SECONDS, build_fhir_router, install_fhir_error_handlers
from hub.errors import BrokerUnavailable
from hub.pipeline.publisher import GroupPublisher, Outgoing
from tests.adapters.conftest import VALID_SERVICE_REQUEST, auth, make_authenticator
from tests.adapters.resource_fakes import FakeReadGate, FakeResourceStore

CONCURRENT = 12
POISON = b"R-poison"


@dataclass
class GatedBroker:
    """A RecordPublisher whose first ``publish_many`` waits for ``gate``; it refuses (as a broker that does
    not acknowledge) every call carrying a record whose value contains ``POISON``."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    calls: list[list[Outgoing]] = field(default_factory=list)
    acknowledged: list[Outgoing] = field(default_factory=list)

    async def publish(self, topic: str, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        await self.publish_many([Outgoing(topic, key, value, headers)])

    async def publish_many(self, records: Sequence[Outgoing]) -> None:
        self.calls.append(list(records))
        if len(self.calls) == 1:
            await self.gate.wait()
        if any(POISON in record.value for record in records):
            raise BrokerUnavailable(f"the broker did not acknowledge {len(records)} write(s): KafkaTimeoutError")
        self.acknowledged.extend(records)


@dataclass
class Edge:
    client: httpx.AsyncClient
    broker: GatedBroker
    group: GroupPublisher
    store: FakeResourceStore


@pytest.fixture
async def edge() -> AsyncIterator[Edge]:
    broker = GatedBroker()
    group = GroupPublisher(broker)
    store = FakeResourceStore()
    app = FastAPI()
    app.include_router(build_fhir_router(authenticator=make_authenticator(), ingress=group, store=store,
                                         max_body_bytes=1 << 20, reads=FakeReadGate()), prefix="/fhir")
    install_fhir_error_handlers(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub.test") as client:
        yield Edge(client, broker, group, store)


def referral(marker: str) -> bytes:
    body = copy.deepcopy(VALID_SERVICE_REQUEST)
    body["identifier"] = [{"system": "urn:test:referral", "value": marker}]
    return orjson.dumps(body)


async def post_while_first_write_is_held(edge: Edge, bodies: list[bytes]) -> list[httpx.Response]:
    """POST ``bodies`` at once; the first broker write is held until every request has handed its record to
    the group (in that first write or waiting for the next), so they share at most two writes."""
    async def release() -> None:
        while sum(map(len, edge.broker.calls)) + edge.group.waiting < len(bodies):  # noqa: ASYNC110 - yields only
            await asyncio.sleep(0)
        edge.broker.gate.set()

    releaser = asyncio.create_task(release())
    answers = await asyncio.gather(*(edge.client.post("/fhir/ServiceRequest", content=b, headers=auth())
                                     for b in bodies))
    await releaser
    return list(answers)


async def test_concurrent_creates_share_one_broker_write_and_each_is_readable_after_its_201(edge: Edge) -> None:
    answers = await post_while_first_write_is_held(edge, [referral(f"R-{n}") for n in range(CONCURRENT)])
    assert [201] * CONCURRENT == [a.status_code for a in answers]
    assert len(edge.broker.calls) <= 2  # shared round trips, not one per request
    ids = [a.json()["id"] for a in answers]
    assert sorted(ids) == sorted(r.headers["ce_id"] for r in edge.broker.acknowledged)
    reads = await asyncio.gather(*(edge.client.get(f"/fhir/ServiceRequest/{i}", headers=auth()) for i in ids))
    assert [200] * CONCURRENT == [r.status_code for r in reads]


async def test_a_broker_failure_inside_a_batch_fails_only_its_own_request_with_a_503(edge: Edge) -> None:
    bodies = [referral(f"R-{n}") for n in range(CONCURRENT)]
    bodies[5] = referral(POISON.decode())
    answers = await post_while_first_write_is_held(edge, bodies)
    statuses = [a.status_code for a in answers]
    assert [201 if n != 5 else 503 for n in range(CONCURRENT)] == statuses
    failed = answers[5]
    assert "application/fhir+json" == failed.headers["content-type"]
    assert str(RETRY_AFTER_SECONDS) == failed.headers["retry-after"]
    outcome = failed.json()
    assert ("OperationOutcome", "transient") == (outcome["resourceType"], outcome["issue"][0]["code"])
    assert "R-poison" not in failed.text  # the refused record's content is not echoed
    # The batch holding the poisoned record failed as a whole, then each of its callers was retried alone.
    sizes = [len(call) for call in edge.broker.calls]
    poisoned = next(n for n, call in enumerate(edge.broker.calls) if any(POISON in r.value for r in call))
    assert sizes[poisoned] > 1
    assert [1] * sizes[poisoned] == sizes[poisoned + 1 :]
    # Nothing was stored for the failed request; every other one is stored and was acknowledged.
    stored = {key[1] for key in edge.store.resources}
    acknowledged = {r.headers["ce_id"] for r in edge.broker.acknowledged}
    assert {a.json()["id"] for n, a in enumerate(answers) if n != 5} == stored
    assert stored <= acknowledged


async def test_a_retry_of_the_failed_request_is_created_under_the_same_id(edge: Edge) -> None:
    edge.broker.gate.set()
    poisoned = await edge.client.post("/fhir/ServiceRequest", content=referral(POISON.decode()), headers=auth())
    assert 503 == poisoned.status_code
    first = await edge.client.post("/fhir/ServiceRequest", content=referral("R-1"), headers=auth())
    again = await edge.client.post("/fhir/ServiceRequest", content=referral("R-1"), headers=auth())
    assert (201, 201) == (first.status_code, again.status_code)
    assert first.json()["id"] == again.json()["id"]
    assert 1 == sum(r.headers["ce_id"] == first.json()["id"] for r in edge.broker.acknowledged)
