"""The pipeline router end to end in memory, with FastStream's TestKafkaBroker (no TCP)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import fast_depends.utils
import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage

from hub import events
from hub.consent.decision import Recipient
from hub.consent.model import Policies
from hub.pipeline import stage
from hub.pipeline.publisher import KafkaRecordPublisher
from hub.pipeline.route import engine_decider
from hub.pipeline.workers import PipelineDeps, build_pipeline_router
from hub.topics.registry import DLQ, INGRESS
from tests.fakes import FakeAuditLog, FakeConsentSource, FakeDirectory, FakePatientIndex, FakeSequencer
from tests.records import TEST_PROOF, cloud_event, hub_event

CBO_A = Recipient(partner_id="cbo-a", kind="cbo", organization="Organization/cbo-a")
CBO_B = Recipient(partner_id="cbo-b", kind="cbo", organization="Organization/cbo-b")


@dataclass
class Harness:
    broker: KafkaBroker
    edge: KafkaRecordPublisher  # what the edges write through: it stamps the record proof
    audit: FakeAuditLog
    patients: FakePatientIndex
    received: dict[str, list[tuple[bytes, dict[str, str]]]]


async def _undecoded(msg: KafkaMessage) -> tuple[bytes, dict[str, str]]:
    """The sinks' decoder: they read bytes, whatever content type a (dead-lettered) record claims, and take
    what they read as their body (no context parameter: FastStream resolves those in a worker thread)."""
    return bytes(msg.body), dict(msg.headers)


@pytest.fixture
async def harness(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    monkeypatch.setattr(stage, "RETRY_PAUSE_S", 0)
    broker = KafkaBroker("localhost:9092")
    audit, patients = FakeAuditLog(), FakePatientIndex()
    publisher = KafkaRecordPublisher(broker, proof=TEST_PROOF)
    deps = PipelineDeps(patients=patients, directory=FakeDirectory([CBO_A, CBO_B]), audit=audit,
                        sequencer=FakeSequencer(), publisher=publisher,
                        consents=FakeConsentSource(), decide=engine_decider(Policies()), proof=TEST_PROOF)
    broker.include_router(build_pipeline_router(deps, group_id="test", fetch_max_wait_ms=20))
    received: dict[str, list[tuple[bytes, dict[str, str]]]] = {"partner.cbo-a": [], "partner.cbo-b": [], DLQ.name: []}
    for topic in received:
        def make(t: str):  # type: ignore[no-untyped-def]
            async def sink(item: Any) -> None:
                received[t].append(item)
            return sink
        broker.subscriber(topic, group_id=f"sink-{topic}", decoder=_undecoded)(make(topic))
    async with TestKafkaBroker(broker) as test_broker:
        yield Harness(test_broker, publisher, audit, patients, received)


async def test_a_referral_reaches_only_the_addressed_cbo_in_memory(harness: Harness) -> None:
    event, ce = hub_event(), cloud_event("evt-42")

    await harness.edge.write(key=b"hosp-a|x", value=events.encode(event), headers=ce.to_headers())
    [(body, headers)] = harness.received["partner.cbo-a"]
    assert event.body.encode() == body
    assert ("evt-42", "1", "Patient/hp-1") == (headers["ce_id"], headers["ce_sequence"], headers["ce_subject"])
    assert [] == harness.received["partner.cbo-b"]
    assert {("cbo-a", "permit"), ("cbo-b", "deny")} == {(r.recipient_id, r.verdict) for r in harness.audit.records}


async def test_a_poison_record_is_dead_lettered_and_the_next_one_still_flows(harness: Harness) -> None:
    await harness.edge.write(key=b"k", value=b"\x00garbage", headers={"ce_id": "bad"})
    await harness.edge.write(key=b"k", value=events.encode(hub_event()), headers=cloud_event("good").to_headers())
    [(body, headers)] = harness.received[DLQ.name]
    assert b"\x00garbage" == body
    assert "normalize" == headers["hub_dlq_stage"]
    assert "ce_specversion" in headers["hub_dlq_reason"], "the edge's record is proven: its bytes are what fails"
    assert ["good"] == [h["ce_id"] for _, h in harness.received["partner.cbo-a"]]


async def test_a_record_produced_past_the_edge_without_a_proof_is_dead_lettered_not_delivered(harness: Harness) -> None:
    """Anyone who can produce to the broker is not the hub: a record claiming hosp-a goes to hub.dlq."""
    forged = events.encode(hub_event(sender="hosp-a"))
    await harness.broker.publish(forged, INGRESS.name, key=b"hosp-a|x", headers=cloud_event("forged").to_headers())
    await harness.edge.write(key=b"k", value=events.encode(hub_event()), headers=cloud_event("marker").to_headers())
    [(body, headers)] = harness.received[DLQ.name]
    assert (forged, "forged") == (body, headers["ce_id"])
    assert "record proof missing" in headers["hub_dlq_reason"]
    assert ["marker"] == [h["ce_id"] for _, h in harness.received["partner.cbo-a"]]
    assert {"marker"} == {r.event_id for r in harness.audit.records}


async def test_a_record_whose_body_contradicts_its_json_content_type_is_dead_lettered_not_redelivered_forever(
    harness: Harness,
) -> None:
    """The stages get the raw records: no framework decoder parses a body (and fails) before a stage can
    dead-letter it, which under NACK_ON_ERROR would redeliver the batch forever."""
    await harness.edge.write(key=b"k", value=b"{not json", headers={"ce_id": "bad", "content-type": "application/json"})
    await harness.edge.write(key=b"k", value=events.encode(hub_event()), headers=cloud_event("good").to_headers())
    [(body, headers)] = harness.received[DLQ.name]
    assert (b"{not json", "normalize") == (body, headers["hub_dlq_stage"])
    assert ["good"] == [h["ce_id"] for _, h in harness.received["partner.cbo-a"]]


async def test_the_stages_run_on_the_event_loop_without_a_worker_thread_per_batch(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastStream resolves a handler's context parameters (``msg: KafkaMessage``) in a worker thread; the
    stage handlers take their records as the body instead, so no batch waits for a thread hop."""

    async def no_threads(*args: object, **kwargs: object) -> None:
        raise AssertionError("a handler was run through a worker thread")

    monkeypatch.setattr(fast_depends.utils, "run_in_threadpool", no_threads)
    await harness.edge.write(key=b"k", value=events.encode(hub_event()), headers=cloud_event("e1").to_headers())
    assert ["e1"] == [h["ce_id"] for _, h in harness.received["partner.cbo-a"]]
