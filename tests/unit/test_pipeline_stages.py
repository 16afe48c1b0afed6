"""Unit tests of the normalize and route stages and the stage wrapper, on in-memory fakes."""

from __future__ import annotations

import pytest

from hub import events
from hub.consent.decision import Recipient
from hub.consent.interim import decide
from hub.errors import BrokerUnavailable, InvalidInput, StoreUnavailable
from hub.events import CloudEvent
from hub.pipeline import normalize, route, stage
from hub.topics.registry import DLQ, EVENTS, INGRESS
from tests.fakes import FakeAuditLog, FakeDirectory, FakePatientIndex, FakePublisher, FakeSequencer
from tests.records import Record, cloud_event, hub_event, record_of

CBO_A = Recipient(partner_id="cbo-a", kind="cbo", organization="Organization/cbo-a")
CBO_B = Recipient(partner_id="cbo-b", kind="cbo", organization="Organization/cbo-b")


@pytest.fixture(autouse=True)
def no_retry_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage, "RETRY_PAUSE_S", 0)


async def test_normalize_keys_the_event_by_hub_patient_id_and_keeps_body_and_id() -> None:
    publisher, patients = FakePublisher(), FakePatientIndex()
    event = hub_event()
    await normalize.normalize(record_of(INGRESS.name, event, cloud_event("e1")), patients=patients,
                              publisher=publisher)
    [(topic, key, value, headers)] = publisher.published
    out = events.decode(value)
    assert EVENTS.name == topic
    assert b"hp-1" == key
    assert "hp-1" == out.facts.hub_patient_id
    assert event.body == out.body
    assert "e1" == headers["ce_id"]
    assert "Patient/hp-1" == headers["ce_subject"]


async def test_the_same_patient_from_two_events_gets_one_hub_id() -> None:
    publisher, patients = FakePublisher(), FakePatientIndex()
    for i in range(2):
        await normalize.normalize(record_of(INGRESS.name, hub_event(), cloud_event(f"e{i}")), patients=patients,
                                  publisher=publisher)
    assert [b"hp-1", b"hp-1"] == [key for _, key, _, _ in publisher.published]


async def _route(record: Record, directory: FakeDirectory, publisher: FakePublisher,
                 audit: FakeAuditLog | None = None) -> FakeAuditLog:
    audit = audit or FakeAuditLog()
    await route.route(record, decide=decide, directory=directory, audit=audit, sequencer=FakeSequencer(),
                      publisher=publisher)
    return audit


async def test_route_delivers_only_to_the_addressed_performer_and_audits_every_decision() -> None:
    publisher = FakePublisher()
    event = hub_event(hub_patient_id="hp-9")
    audit = await _route(record_of(EVENTS.name, event, cloud_event("e1")), FakeDirectory([CBO_A, CBO_B]), publisher)
    assert ["partner.cbo-a"] == [topic for topic, *_ in publisher.published]
    _, key, value, headers = publisher.published[0]
    assert b"hp-9" == key
    assert event.body.encode() == value
    assert ("e1", "1", "application/fhir+json") == (headers["ce_id"], headers["ce_sequence"], headers["content-type"])
    assert {("cbo-a", "permit"), ("cbo-b", "deny")} == {(r.recipient_id, r.verdict) for r in audit.records}


async def test_route_numbers_each_partners_events_consecutively() -> None:
    publisher, sequencer = FakePublisher(), FakeSequencer()
    for i in range(3):
        record = record_of(EVENTS.name, hub_event(hub_patient_id="hp-1"), cloud_event(f"e{i}"))
        await route.route(record, decide=decide, directory=FakeDirectory([CBO_A]), audit=FakeAuditLog(),
                          sequencer=sequencer, publisher=publisher)
    assert ["1", "2", "3"] == [h["ce_sequence"] for *_, h in publisher.published]


async def test_route_never_delivers_a_referral_to_its_sender() -> None:
    sender = Recipient(partner_id="hosp-a", kind="hospital", organization="Organization/hosp-a")
    publisher = FakePublisher()
    event = hub_event(performer="Organization/hosp-a", sender="hosp-a", hub_patient_id="hp-1")
    audit = await _route(record_of(EVENTS.name, event, cloud_event()), FakeDirectory([sender]), publisher)
    assert [] == publisher.published
    assert [] == audit.records


async def test_route_delivers_nothing_when_nobody_is_addressed() -> None:
    publisher = FakePublisher()
    event = hub_event(performer="Organization/unknown", hub_patient_id="hp-1")
    audit = await _route(record_of(EVENTS.name, event, cloud_event()), FakeDirectory([CBO_A]), publisher)
    assert [] == publisher.published
    assert ["deny"] == [r.verdict for r in audit.records]


async def test_a_retried_route_audits_once_and_keeps_the_event_number() -> None:
    publisher, audit, sequencer = FakePublisher(fail_times=1), FakeAuditLog(), FakeSequencer()
    record = record_of(EVENTS.name, hub_event(hub_patient_id="hp-1"), cloud_event("e1"))
    kwargs = {"decide": decide, "directory": FakeDirectory([CBO_A]), "audit": audit, "sequencer": sequencer,
              "publisher": publisher}
    with pytest.raises(BrokerUnavailable):
        await route.route(record, **kwargs)  # type: ignore[arg-type]
    await route.route(record, **kwargs)  # type: ignore[arg-type]
    assert 1 == len(audit.records)
    assert ["1"] == [h["ce_sequence"] for *_, h in publisher.published]


async def test_stage_dead_letters_a_poison_record_with_reason_and_original_bytes() -> None:
    publisher = FakePublisher()
    poison = Record(topic=INGRESS.name, value=b"\xff not json", key=b"key-1", offset=7,
                    headers=[("ce_id", b"x1")])

    async def work(record: object) -> None:
        await normalize.normalize(record, patients=FakePatientIndex(), publisher=publisher)

    await stage.run_stage("normalize", poison, work, publisher)
    [(topic, key, value, headers)] = publisher.published
    assert (DLQ.name, b"key-1", b"\xff not json") == (topic, key, value)
    assert "normalize" == headers["hub_dlq_stage"]
    assert "7" == headers["hub_dlq_source_offset"]
    assert "x1" == headers["ce_id"]
    assert "ce_specversion" in headers["hub_dlq_reason"]


async def test_stage_reason_names_the_malformed_field_without_echoing_values() -> None:
    publisher = FakePublisher()
    ce = cloud_event()
    record = Record(topic=INGRESS.name, value=b'{"facts": {"resource_type": "ServiceRequest"}, "body": "SECRET-MRN"}',
                    headers=[(k, v.encode()) for k, v in ce.to_headers().items()])

    async def work(r: object) -> None:
        await normalize.normalize(r, patients=FakePatientIndex(), publisher=publisher)

    await stage.run_stage("normalize", record, work, publisher)
    reason = publisher.to(DLQ.name)[0][3]["hub_dlq_reason"]
    assert "facts.sender" in reason
    assert "SECRET-MRN" not in reason


async def test_stage_reraises_transient_failures_so_the_record_is_consumed_again() -> None:
    publisher = FakePublisher()
    patients = FakePatientIndex(fail_times=1)
    record = record_of(INGRESS.name, hub_event(), cloud_event())

    async def work(r: object) -> None:
        await normalize.normalize(r, patients=patients, publisher=publisher)

    with pytest.raises(StoreUnavailable):
        await stage.run_stage("normalize", record, work, publisher)
    assert [] == publisher.published


async def test_an_event_without_patient_is_dead_lettered_not_dropped() -> None:
    publisher = FakePublisher()
    event = hub_event().model_copy(update={"facts": hub_event().facts.model_copy(update={"patient_source": None})})
    record = record_of(INGRESS.name, event, cloud_event())

    async def work(r: object) -> None:
        await normalize.normalize(r, patients=FakePatientIndex(), publisher=publisher)

    await stage.run_stage("normalize", record, work, publisher)
    assert 1 == len(publisher.to(DLQ.name))
    assert "names no patient" in publisher.to(DLQ.name)[0][3]["hub_dlq_reason"]


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
