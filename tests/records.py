"""Builders of Kafka records and events for pipeline tests (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from hub import events
from hub.events import CloudEvent, HubEvent, RoutingFacts
from hub.record_proof import RecordProof

#: The record key of every test that builds hub records itself (``hub.record_proof``).
TEST_RECORD_KEY = b"carehub-test-record-key-32-bytes"
TEST_PROOF = RecordProof(TEST_RECORD_KEY)


@dataclass
class Record:
    """The attributes of an aiokafka ConsumerRecord that the stages read."""

    topic: str
    value: bytes
    key: bytes = b"k"
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int = 0
    offset: int = 0


def referral_body(performer: str = "Organization/cbo-a", mrn: str = "MRN-1") -> str:
    return orjson.dumps({
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "subject": {"identifier": {"system": "urn:mrn", "value": mrn}},
        "performer": [{"reference": performer}],
    }).decode()


def hub_event(*, performer: str = "Organization/cbo-a", sender: str = "hosp-a", hub_patient_id: str | None = None,
              resource_type: str = "ServiceRequest", mrn: str = "MRN-1") -> HubEvent:
    facts = RoutingFacts(
        resource_type=resource_type, sender=sender, patient_source=f"urn:mrn|{mrn}",
        performers=(performer,), hub_patient_id=hub_patient_id, status="active", intent="order",
    )
    return HubEvent(facts=facts, body=referral_body(performer, mrn))


def cloud_event(event_id: str = "evt-1", sender: str = "hosp-a") -> CloudEvent:
    return CloudEvent(id=event_id, source=f"/partners/{sender}", type=events.event_type("ServiceRequest"),
                      time=events.now())


def record_of(
    topic: str, event: HubEvent, ce: CloudEvent, *, offset: int = 0, proof: RecordProof | None = TEST_PROOF
) -> Record:
    """The record as the hub writes it to ``topic``: signed with ``proof`` (None: unsigned, as a forger would)."""
    value = events.encode(event)
    headers = ce.to_headers()
    if proof is not None:
        headers = proof.stamp(topic, key=b"k", value=value, headers=headers)
    return Record(topic=topic, value=value, headers=[(k, v.encode()) for k, v in headers.items()], offset=offset)


def signed_headers(topic: str, *, key: bytes, value: bytes, headers: dict[str, str]) -> list[tuple[str, bytes]]:
    """Headers (as aiokafka takes them) for a record a test produces onto ``topic``, proven with :data:`TEST_PROOF`."""
    stamped = TEST_PROOF.stamp(topic, key=key, value=value, headers=headers)
    return [(name, header_value.encode()) for name, header_value in stamped.items()]
