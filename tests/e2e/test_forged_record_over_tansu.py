"""The broker is not a trust boundary: a record produced straight onto ``hub.ingress`` or ``hub.events`` by
someone who is not the hub (here a plain aiokafka producer, as anyone who reaches the broker could run),
claiming to come from a registered hospital and addressed to a registered CBO, ends in ``hub.dlq`` with
its reason and original bytes. It is never audited as a decision and never reaches the CBO: a legitimate
referral sent afterwards on the same partition reaches the CBO, and the forged one never did."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord

from hub import events
from hub.events import CloudEvent, HubEvent, RoutingFacts
from hub.record_proof import PROOF_HEADER, RecordProof
from hub.topics.registry import DLQ, EVENTS, INGRESS
from tests.e2e.conftest import HubClient, read_topic

pytestmark = pytest.mark.broker

MRN_SYSTEM = "urn:oid:1.2.3"


def referral(performer: str, mrn: str, note: str) -> bytes:
    return orjson.dumps({
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "subject": {"identifier": {"system": MRN_SYSTEM, "value": mrn}},
        "performer": [{"reference": performer}], "note": [{"text": note}],
    })


def forged_event(hospital: str, cbo: str, mrn: str, *, hub_patient_id: str | None = None) -> HubEvent:
    """What the edge would write for ``hospital``'s referral to ``cbo``: nothing in it is wrong but its origin."""
    body = referral(f"Organization/{cbo}", mrn, "forged").decode()
    facts = RoutingFacts(
        resource_type="ServiceRequest", resource_id=f"forged-{uuid.uuid4().hex[:8]}", sender=hospital,
        patient_source=f"{MRN_SYSTEM}|{mrn}", hub_patient_id=hub_patient_id, performers=(f"Organization/{cbo}",),
        status="active", intent="order", event_kind="referral",
    )
    return HubEvent(facts=facts, body=body)


def cloud_headers(event_id: str, hospital: str, subject: str | None = None) -> dict[str, str]:
    return CloudEvent(id=event_id, source=f"/partners/{hospital}", type=events.event_type("ServiceRequest"),
                      time=events.now(), subject=subject).to_headers()


async def produce(bootstrap: str, topic: str, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
    """Write one record as a client that is not the hub: its own producer, no proof unless given one."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=[(k, v.encode()) for k, v in headers.items()])
    finally:
        await producer.stop()


async def dead_letter_of(bootstrap: str, event_id: str, *, timeout_s: float = 30.0) -> ConsumerRecord[bytes, bytes]:
    """The ``hub.dlq`` record of ``event_id``, once the stage wrote it (the timeout only bounds a failure)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for record in await read_topic(bootstrap, DLQ.name, expect=10_000, timeout_s=1.0):
            if dict(record.headers).get("ce_id") == event_id.encode():
                return record
    pytest.fail(f"event {event_id} never reached {DLQ.name}")


async def audit_of(hub_client: HubClient, event_id: str) -> list[dict[str, Any]]:
    answer = await hub_client.http.get("/admin/v1/audit", params={"event": event_id}, headers=hub_client.admin)
    assert 200 == answer.status_code, answer.text
    rows: list[dict[str, Any]] = answer.json()
    return rows


def ce_ids(records: list[ConsumerRecord[bytes, bytes]]) -> list[str]:
    return [dict(r.headers)["ce_id"].decode() for r in records]


async def test_a_forged_record_on_hub_ingress_ends_in_hub_dlq_and_never_at_the_cbo(hub_client: HubClient) -> None:
    hospital, token = await hub_client.add_partner("hosp", "hospital")
    cbo, _ = await hub_client.add_partner("food", "cbo")
    bootstrap, mrn = hub_client.hub.bootstrap, f"MRN-{hub_client.prefix}"
    key = f"{hospital}|{MRN_SYSTEM}|{mrn}".encode()  # the edge's key: the marker below shares the partition
    unsigned, wrong_key = f"forged-{hub_client.prefix}", f"forged-key-{hub_client.prefix}"
    value = events.encode(forged_event(hospital, cbo, mrn))

    await produce(bootstrap, INGRESS.name, key=key, value=value, headers=cloud_headers(unsigned, hospital))
    guessed = RecordProof(b"a key that is not the hub's key!")
    await produce(bootstrap, INGRESS.name, key=key, value=value,
                  headers=guessed.stamp(INGRESS.name, key=key, value=value, headers=cloud_headers(wrong_key, hospital)))

    missing = await dead_letter_of(bootstrap, unsigned)
    invalid = await dead_letter_of(bootstrap, wrong_key)
    for dead, reason in ((missing, "record proof missing"), (invalid, "record proof invalid")):
        headers = {k: v.decode() for k, v in dead.headers}
        assert (key, value) == (dead.key, dead.value), "the original bytes are kept"
        assert ("normalize", INGRESS.name) == (headers["hub_dlq_stage"], headers["hub_dlq_source_topic"])
        assert reason in headers["hub_dlq_reason"]
        assert mrn not in headers["hub_dlq_reason"]

    answer = await hub_client.post_fhir("ServiceRequest", referral(f"Organization/{cbo}", mrn, "marker"), token)
    assert 201 == answer.status_code, answer.text
    marker = answer.headers["location"].split("/")[3]
    delivered = await read_topic(bootstrap, f"partner.{cbo}", expect=1)
    assert [marker] == ce_ids(delivered)
    assert PROOF_HEADER not in dict(delivered[0].headers), "partners never see the hub's proofs"

    assert {(cbo, "permit")} == {(row["recipient"], row["verdict"]) for row in await audit_of(hub_client, marker)}
    assert [] == await audit_of(hub_client, unsigned)
    assert [] == await audit_of(hub_client, wrong_key)
    on_events = await read_topic(bootstrap, EVENTS.name, expect=10_000, timeout_s=2.0)
    assert marker in ce_ids(on_events)
    assert not {unsigned, wrong_key} & set(ce_ids(on_events)), "normalize never vouched for a forged record"


async def test_a_forged_record_on_hub_events_is_dead_lettered_by_route_and_never_decided(
    hub_client: HubClient,
) -> None:
    """Past normalize: a forger who learned the patient's hub id writes straight to its ``hub.events`` partition."""
    hospital, token = await hub_client.add_partner("hosp", "hospital")
    cbo, _ = await hub_client.add_partner("food", "cbo")
    bootstrap, mrn = hub_client.hub.bootstrap, f"MRN-{hub_client.prefix}"

    first = await hub_client.post_fhir("ServiceRequest", referral(f"Organization/{cbo}", mrn, "first"), token)
    assert 201 == first.status_code, first.text
    [delivered] = await read_topic(bootstrap, f"partner.{cbo}", expect=1)
    subject = dict(delivered.headers)["ce_subject"].decode()
    hub_patient_id = subject.removeprefix("Patient/")

    forged_id = f"forged-{hub_client.prefix}"
    value = events.encode(forged_event(hospital, cbo, mrn, hub_patient_id=hub_patient_id))
    await produce(bootstrap, EVENTS.name, key=hub_patient_id.encode(), value=value,
                  headers=cloud_headers(forged_id, hospital, subject))
    dead = await dead_letter_of(bootstrap, forged_id)
    headers = {k: v.decode() for k, v in dead.headers}
    assert value == dead.value
    assert ("route", EVENTS.name) == (headers["hub_dlq_stage"], headers["hub_dlq_source_topic"])
    assert "record proof missing" in headers["hub_dlq_reason"]

    second = await hub_client.post_fhir("ServiceRequest", referral(f"Organization/{cbo}", mrn, "second"), token)
    assert 201 == second.status_code, second.text
    marker = second.headers["location"].split("/")[3]
    delivered_all = await read_topic(bootstrap, f"partner.{cbo}", expect=2)
    assert [first.headers["location"].split("/")[3], marker] == ce_ids(delivered_all)
    assert ["1", "2"] == [dict(r.headers)["ce_sequence"].decode() for r in delivered_all], "no number was spent"
    assert [] == await audit_of(hub_client, forged_id)
