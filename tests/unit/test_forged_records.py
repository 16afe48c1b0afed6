"""The stages trust no record the hub did not write: a forged or altered record on ``hub.ingress`` or
``hub.events`` is dead-lettered with its reason and original bytes, and is never resolved, decided,
audited, applied as a consent change or delivered. Valid records of the same batch flow in place."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import orjson

from hub import events
from hub.consent.decision import Recipient
from hub.consent.model import Policies
from hub.events import HubEvent, RoutingFacts
from hub.pipeline import normalize, route
from hub.record_proof import PROOF_HEADER, RecordProof
from hub.topics.registry import DLQ, EVENTS, INGRESS
from tests.fakes import FakeAuditLog, FakeConsentSource, FakeDirectory, FakePatientIndex, FakePublisher, FakeSequencer
from tests.records import TEST_PROOF, Record, cloud_event, hub_event, record_of

CBO_A = Recipient(partner_id="cbo-a", kind="cbo", organization="Organization/cbo-a")
HOSP_A = Recipient(partner_id="hosp-a", kind="hospital", organization="Organization/hosp-a")
decide = route.engine_decider(Policies())
FORGER = RecordProof(b"f" * 32)


def _with(record: Record, **changes: object) -> Record:
    fields = {"topic": record.topic, "value": record.value, "key": record.key, "headers": list(record.headers),
              "offset": record.offset}
    fields.update(changes)
    return Record(**fields)  # type: ignore[arg-type]


async def _normalize(batch: list[Record]) -> tuple[FakePublisher, FakePatientIndex]:
    publisher, patients = FakePublisher(), FakePatientIndex()
    await normalize.normalize(batch, patients=patients, publisher=publisher, proof=TEST_PROOF)
    return publisher, patients


async def test_an_unsigned_record_claiming_a_hospital_is_dead_lettered_by_normalize_with_its_bytes() -> None:
    forged = record_of(INGRESS.name, hub_event(sender="hosp-a"), cloud_event("forged", sender="hosp-a"), offset=4,
                       proof=None)
    publisher, patients = await _normalize([forged])
    [(topic, key, value, headers)] = publisher.published
    assert (DLQ.name, forged.key, forged.value) == (topic, key, value)
    assert "record proof missing" in headers["hub_dlq_reason"]
    assert ("normalize", INGRESS.name, "4") == (
        headers["hub_dlq_stage"], headers["hub_dlq_source_topic"], headers["hub_dlq_source_offset"]
    )
    assert {} == patients.ids, "a forged record must not even create a crosswalk entry"


async def test_a_record_signed_with_another_key_is_dead_lettered_as_invalid() -> None:
    forged = record_of(INGRESS.name, hub_event(), cloud_event("forged"), proof=FORGER)
    publisher, _ = await _normalize([forged])
    [(topic, _, _, headers)] = publisher.published
    assert DLQ.name == topic
    assert "record proof invalid" in headers["hub_dlq_reason"]


async def test_a_genuine_record_whose_sender_was_rewritten_is_dead_lettered() -> None:
    genuine = record_of(INGRESS.name, hub_event(sender="hosp-a"), cloud_event("e1"))
    altered = _with(genuine, value=genuine.value.replace(b'"hosp-a"', b'"hosp-b"'))
    assert altered.value != genuine.value
    publisher, _ = await _normalize([altered])
    assert [DLQ.name] == [t for t, *_ in publisher.published]


async def test_a_hub_events_record_replayed_onto_hub_ingress_is_dead_lettered() -> None:
    on_events = record_of(EVENTS.name, hub_event(), cloud_event("e1"))
    publisher, _ = await _normalize([_with(on_events, topic=INGRESS.name)])
    assert [DLQ.name] == [t for t, *_ in publisher.published]


async def test_forged_records_mid_batch_are_dead_lettered_in_place_and_genuine_ones_flow() -> None:
    batch = [
        record_of(INGRESS.name, hub_event(), cloud_event("e0")),
        record_of(INGRESS.name, hub_event(), cloud_event("forged"), proof=None),
        record_of(INGRESS.name, hub_event(), cloud_event("e2")),
    ]
    publisher, _ = await _normalize(batch)
    assert [(EVENTS.name, "e0"), (DLQ.name, "forged"), (EVENTS.name, "e2")] == [
        (t, h["ce_id"]) for t, _, _, h in publisher.published
    ]


async def _route(batch: list[Record], consents: FakeConsentSource | None = None) -> tuple[FakePublisher, FakeAuditLog]:
    publisher, audit = FakePublisher(), FakeAuditLog()
    await route.route(batch, decide=decide, directory=FakeDirectory([CBO_A, HOSP_A]), audit=audit,
                      consents=consents or FakeConsentSource(), sequencer=FakeSequencer(), publisher=publisher,
                      proof=TEST_PROOF)
    return publisher, audit


async def test_a_forged_hub_events_record_is_never_decided_audited_or_delivered() -> None:
    event = hub_event(sender="hosp-a", hub_patient_id="hp-1")
    batch = [
        record_of(EVENTS.name, event, cloud_event("forged"), proof=None),
        record_of(EVENTS.name, event, cloud_event("genuine")),
    ]
    publisher, audit = await _route(batch)
    assert ["genuine"] == sorted({r.event_id for r in audit.records})
    assert ["genuine"] == [h["ce_id"] for t, _, _, h in publisher.published if t == "partner.cbo-a"]
    [(_, key, value, dead)] = publisher.to(DLQ.name)
    assert (batch[0].key, batch[0].value) == (key, value)
    assert ("forged", "route") == (dead["ce_id"], dead["hub_dlq_stage"])
    assert "record proof missing" in dead["hub_dlq_reason"]


async def test_a_hub_ingress_record_copied_onto_hub_events_is_dead_lettered_by_route() -> None:
    on_ingress = record_of(INGRESS.name, hub_event(hub_patient_id="hp-1"), cloud_event("copied"))
    publisher, audit = await _route([_with(on_ingress, topic=EVENTS.name)])
    assert ([], [DLQ.name]) == (audit.records, [t for t, *_ in publisher.published])


async def test_a_forged_consent_change_is_not_applied() -> None:
    """A forged revocation (or grant) would otherwise change what every later event of the patient may do."""
    consent = {"resourceType": "Consent", "status": "inactive", "patient": {"reference": "Patient/hp-1"}}
    facts = RoutingFacts(resource_type="Consent", sender="hosp-a", hub_patient_id="hp-1", event_kind="consent-change")
    change = HubEvent(facts=facts, body=orjson.dumps(consent).decode())
    consents = FakeConsentSource()
    publisher, _ = await _route([record_of(EVENTS.name, change, cloud_event("forged-consent"), proof=FORGER)],
                                consents)
    assert [] == consents.changes
    assert [DLQ.name] == [t for t, *_ in publisher.published]


async def test_a_dead_letter_keeps_the_original_proof_so_it_can_be_checked_later() -> None:
    """The copy on ``hub.dlq`` verifies against its source topic when the original was genuine."""
    genuine = record_of(EVENTS.name, hub_event(), cloud_event("e1"))  # no hub patient id: route refuses it
    publisher, _ = await _route([genuine])
    [(_, key, value, dead)] = publisher.to(DLQ.name)
    assert PROOF_HEADER in dead
    TEST_PROOF.verify(dead["hub_dlq_source_topic"], key=key, value=value, headers=dead)
    assert events.decode(value) == events.decode(genuine.value)
