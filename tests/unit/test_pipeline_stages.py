"""Unit tests of the normalize and route stages and the batch runner, on in-memory fakes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pytest

from hub import events
from hub.consent.decision import Decision, Recipient
from hub.consent.model import Consent, Policies
from hub.errors import BrokerUnavailable, InvalidInput, StoreUnavailable
from hub.events import CloudEvent, RoutingFacts
from hub.pipeline import normalize, route, stage
from hub.topics.registry import DLQ, EVENTS, INGRESS
from tests.fakes import (
    FakeAuditLog,
    FakeConsentSource,
    FakeDirectory,
    FakePatientIndex,
    FakePublisher,
    FakeSequencer,
)
from tests.records import TEST_PROOF, Record, cloud_event, hub_event, record_of, signed_headers

CBO_A = Recipient(partner_id="cbo-a", kind="cbo", organization="Organization/cbo-a")
CBO_B = Recipient(partner_id="cbo-b", kind="cbo", organization="Organization/cbo-b")
decide = route.engine_decider(Policies())


@pytest.fixture(autouse=True)
def no_retry_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage, "RETRY_PAUSE_S", 0)


async def test_normalize_keys_the_event_by_hub_patient_id_and_keeps_body_and_id() -> None:
    publisher, patients = FakePublisher(), FakePatientIndex()
    event = hub_event()
    await normalize.normalize([record_of(INGRESS.name, event, cloud_event("e1"))], patients=patients,
                              publisher=publisher, proof=TEST_PROOF)
    [(topic, key, value, headers)] = publisher.published
    out = events.decode(value)
    assert EVENTS.name == topic
    assert b"hp-1" == key
    assert "hp-1" == out.facts.hub_patient_id
    assert event.body == out.body
    assert "e1" == headers["ce_id"]
    assert "Patient/hp-1" == headers["ce_subject"]


async def test_the_same_patient_in_one_batch_gets_one_hub_id_and_order_is_kept() -> None:
    publisher, patients = FakePublisher(), FakePatientIndex()
    batch = [record_of(INGRESS.name, hub_event(mrn=m), cloud_event(f"e{i}")) for i, m in enumerate(["A", "B", "A"])]
    await normalize.normalize(batch, patients=patients, publisher=publisher, proof=TEST_PROOF)
    assert [(b"hp-1", "e0"), (b"hp-2", "e1"), (b"hp-1", "e2")] == [
        (key, headers["ce_id"]) for _, key, _, headers in publisher.published
    ]


async def test_a_poison_record_mid_batch_is_dead_lettered_in_place_and_the_rest_flows() -> None:
    publisher = FakePublisher()
    poison = Record(topic=INGRESS.name, value=b"\xff not json", key=b"key-1", offset=7,
                    headers=signed_headers(INGRESS.name, key=b"key-1", value=b"\xff not json", headers={"ce_id": "x1"}))
    batch = [record_of(INGRESS.name, hub_event(), cloud_event("e0")), poison,
             record_of(INGRESS.name, hub_event(), cloud_event("e2"))]
    await normalize.normalize(batch, patients=FakePatientIndex(), publisher=publisher, proof=TEST_PROOF)
    assert [EVENTS.name, DLQ.name, EVENTS.name] == [t for t, *_ in publisher.published]
    _, key, value, headers = publisher.published[1]
    assert (b"key-1", b"\xff not json") == (key, value)
    assert ("normalize", "7", "x1") == (headers["hub_dlq_stage"], headers["hub_dlq_source_offset"], headers["ce_id"])
    assert "ce_specversion" in headers["hub_dlq_reason"]


async def test_a_dead_letter_reason_names_the_malformed_field_without_echoing_values() -> None:
    publisher = FakePublisher()
    value = b'{"facts": {"resource_type": "ServiceRequest"}, "body": "SECRET-MRN"}'
    headers = signed_headers(INGRESS.name, key=b"k", value=value, headers=cloud_event().to_headers())
    record = Record(topic=INGRESS.name, headers=headers, value=value)
    await normalize.normalize([record], patients=FakePatientIndex(), publisher=publisher, proof=TEST_PROOF)
    reason = publisher.to(DLQ.name)[0][3]["hub_dlq_reason"]
    assert "facts.sender" in reason
    assert "SECRET-MRN" not in reason


async def test_an_event_without_patient_is_dead_lettered_not_dropped() -> None:
    publisher = FakePublisher()
    event = hub_event()
    event = event.model_copy(update={"facts": event.facts.model_copy(update={"patient_source": None})})
    await normalize.normalize([record_of(INGRESS.name, event, cloud_event())], patients=FakePatientIndex(),
                              publisher=publisher, proof=TEST_PROOF)
    assert 1 == len(publisher.to(DLQ.name))
    assert "names no patient" in publisher.to(DLQ.name)[0][3]["hub_dlq_reason"]


async def test_a_transient_database_failure_fails_the_whole_batch_for_a_retry() -> None:
    publisher, patients = FakePublisher(), FakePatientIndex(fail_times=1)
    batch = [record_of(INGRESS.name, hub_event(), cloud_event("e0"))]

    async def work(records: Sequence[Any]) -> None:
        await normalize.normalize(records, patients=patients, publisher=publisher, proof=TEST_PROOF)

    with pytest.raises(StoreUnavailable):
        await stage.run_batch("normalize", batch, work, publisher)
    assert [] == publisher.published
    await stage.run_batch("normalize", batch, work, publisher)
    assert ["e0"] == [h["ce_id"] for *_, h in publisher.published]


async def test_a_bug_escaping_a_stage_is_isolated_to_its_record_and_dead_lettered() -> None:
    publisher = FakePublisher()
    batch = [record_of(EVENTS.name, hub_event(hub_patient_id="hp-1", mrn=mrn), cloud_event(f"e{i}"), offset=i)
             for i, mrn in enumerate(["A", "BUG", "C"])]

    def buggy_decide(facts: RoutingFacts, recipient: Recipient, consents: Sequence[Consent], at: datetime) -> Decision:
        if facts.patient_source == "urn:mrn|BUG":
            raise ZeroDivisionError
        return decide(facts, recipient, consents, at)

    async def work(records: Sequence[Any]) -> None:
        await route.route(records, decide=buggy_decide, directory=FakeDirectory([CBO_A]), audit=FakeAuditLog(),
                          consents=FakeConsentSource(), sequencer=FakeSequencer(), publisher=publisher,
                          proof=TEST_PROOF)

    await stage.run_batch("route", batch, work, publisher)
    assert ["e0", "e2"] == [h["ce_id"] for t, _, _, h in publisher.published if t == "partner.cbo-a"]
    [(_, _, _, dead)] = publisher.to(DLQ.name)
    assert ("e1", "unexpected ZeroDivisionError while processing the record") == (dead["ce_id"], dead["hub_dlq_reason"])


async def _route(records: list[Record], directory: FakeDirectory, publisher: FakePublisher,
                 audit: FakeAuditLog | None = None, sequencer: FakeSequencer | None = None,
                 consents: FakeConsentSource | None = None) -> FakeAuditLog:
    audit = audit or FakeAuditLog()
    await route.route(records, decide=decide, directory=directory, audit=audit, sequencer=sequencer or FakeSequencer(),
                      consents=consents or FakeConsentSource(), publisher=publisher, proof=TEST_PROOF)
    return audit


async def test_route_delivers_only_to_the_addressed_performer_and_audits_every_decision() -> None:
    publisher = FakePublisher()
    event = hub_event(hub_patient_id="hp-9")
    audit = await _route([record_of(EVENTS.name, event, cloud_event("e1"))], FakeDirectory([CBO_A, CBO_B]), publisher)
    assert ["partner.cbo-a"] == [topic for topic, *_ in publisher.published]
    _, key, value, headers = publisher.published[0]
    assert b"hp-9" == key
    assert event.body.encode() == value
    assert ("e1", "1", "application/fhir+json") == (headers["ce_id"], headers["ce_sequence"], headers["content-type"])
    assert {("cbo-a", "permit"), ("cbo-b", "deny")} == {(r.recipient_id, r.verdict) for r in audit.records}


async def test_route_numbers_each_partners_events_consecutively_across_batches() -> None:
    publisher, sequencer = FakePublisher(), FakeSequencer()
    batch = [record_of(EVENTS.name, hub_event(performer=p, hub_patient_id="hp-1"), cloud_event(f"e{i}"))
             for i, p in enumerate(["Organization/cbo-a", "Organization/cbo-b", "Organization/cbo-a"])]
    await _route(batch[:2], FakeDirectory([CBO_A, CBO_B]), publisher, sequencer=sequencer)
    await _route(batch[2:], FakeDirectory([CBO_A, CBO_B]), publisher, sequencer=sequencer)
    assert [("partner.cbo-a", "1"), ("partner.cbo-b", "1"), ("partner.cbo-a", "2")] == [
        (t, h["ce_sequence"]) for t, _, _, h in publisher.published
    ]


async def test_route_never_delivers_a_referral_to_its_sender() -> None:
    sender = Recipient(partner_id="hosp-a", kind="hospital", organization="Organization/hosp-a")
    publisher = FakePublisher()
    event = hub_event(performer="Organization/hosp-a", sender="hosp-a", hub_patient_id="hp-1")
    audit = await _route([record_of(EVENTS.name, event, cloud_event())], FakeDirectory([sender]), publisher)
    assert [] == publisher.published
    assert [] == audit.records


async def test_route_offers_hospitals_only_what_names_them() -> None:
    hospital = Recipient(partner_id="hosp-b", kind="hospital", organization="Organization/hosp-b")
    assert [] == route.candidates(hub_event().facts, [hospital])
    facts = hub_event(performer="Organization/hosp-b").facts
    assert [hospital] == route.candidates(facts, [hospital])


async def test_route_delivers_nothing_when_nobody_is_addressed() -> None:
    publisher = FakePublisher()
    event = hub_event(performer="Organization/unknown", hub_patient_id="hp-1")
    audit = await _route([record_of(EVENTS.name, event, cloud_event())], FakeDirectory([CBO_A]), publisher)
    assert [] == publisher.published
    assert ["deny"] == [r.verdict for r in audit.records]


async def test_a_retried_route_batch_audits_once_and_keeps_the_event_numbers() -> None:
    publisher, audit, sequencer = FakePublisher(fail_times=1), FakeAuditLog(), FakeSequencer()
    batch = [record_of(EVENTS.name, hub_event(hub_patient_id="hp-1"), cloud_event(f"e{i}")) for i in range(2)]
    with pytest.raises(BrokerUnavailable):
        await _route(batch, FakeDirectory([CBO_A]), publisher, audit=audit, sequencer=sequencer)
    await _route(batch, FakeDirectory([CBO_A]), publisher, audit=audit, sequencer=sequencer)
    assert 2 == len(audit.records)
    assert ["1", "2"] == [h["ce_sequence"] for *_, h in publisher.published]


async def test_an_event_that_skipped_normalize_is_dead_lettered() -> None:
    publisher = FakePublisher()
    await _route([record_of(EVENTS.name, hub_event(), cloud_event("e1"))], FakeDirectory([CBO_A]), publisher)
    [(topic, *_, headers)] = publisher.published
    assert (DLQ.name, "route") == (topic, headers["hub_dlq_stage"])


def test_cloud_event_headers_round_trip() -> None:
    ce = cloud_event("abc").model_copy(update={"subject": "Patient/hp-1", "sequence": 4})
    pairs = [(k, v.encode()) for k, v in ce.to_headers().items()]
    assert ce == CloudEvent.from_headers(pairs)


@pytest.mark.parametrize("missing", ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time"])
def test_cloud_event_without_a_required_header_is_rejected(missing: str) -> None:
    headers = {k: v for k, v in cloud_event().to_headers().items() if k != missing}
    with pytest.raises(InvalidInput, match=missing):
        CloudEvent.from_headers(headers)


def test_event_id_is_stable_for_the_same_sender_and_bytes_and_differs_otherwise() -> None:
    assert events.event_id("h", "ServiceRequest", b"{}") == events.event_id("h", "ServiceRequest", b"{}")
    assert events.event_id("h", "ServiceRequest", b"{}") != events.event_id("g", "ServiceRequest", b"{}")
    assert events.event_id("h", "ServiceRequest", b"{}") != events.event_id("h", "ServiceRequest", b"{ }")
