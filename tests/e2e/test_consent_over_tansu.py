"""Consent end to end over the embedded broker: an operator's opt-out stops delivery of the patient's next
referral (the denial audited with the consent's rule), its revocation lets the following one through, and
SUD-labelled data without a 42 CFR Part 2 consent is never delivered."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from hub import events
from hub.consent.engine import RULE_PART2
from hub.topics.registry import EVENTS
from tests.e2e.conftest import HubClient, read_topic

pytestmark = pytest.mark.broker

MRN = {"system": "urn:oid:1.2.3", "value": "MRN-OPTOUT"}


def referral(performer: str, note: str, *, identifier: dict[str, str] = MRN, **extra: Any) -> bytes:
    return orjson.dumps({
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "subject": {"identifier": identifier},
        "performer": [{"reference": performer}],
        "note": [{"text": note}],
        **extra,
    })


def opt_out(status: str = "active", resource_id: str | None = None) -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        **({"id": resource_id} if resource_id else {}),
        "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": MRN},
        "dateTime": "2026-01-01T00:00:00Z",
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
        "provision": {"type": "deny"},
    }


async def on_events(hub_client: HubClient, event_id: str, *, timeout_s: float = 20.0) -> None:
    """Wait until ``event_id`` was normalized onto ``hub.events``: every event of the patient accepted after
    this point is behind it on the patient's partition, so the route stage decides it under the change."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        records = await read_topic(hub_client.hub.bootstrap, EVENTS.name, expect=10_000, timeout_s=1.0)
        if any(dict(r.headers).get("ce_id") == event_id.encode() for r in records):
            return
    pytest.fail(f"event {event_id} never reached {EVENTS.name}")


async def audit_of(hub_client: HubClient, event_id: str, *, timeout_s: float = 20.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows: list[dict[str, Any]] = (
            await hub_client.http.get("/admin/v1/audit", params={"event": event_id}, headers=hub_client.admin)
        ).json()
        if rows:
            return rows
        await asyncio.sleep(0.1)
    pytest.fail(f"no decision was audited for event {event_id}")


def event_id_of(answer: Any) -> str:
    return str(answer.headers["location"].split("/")[3])


async def test_an_opt_out_stops_delivery_and_its_revocation_resumes_it(hub_client: HubClient) -> None:
    _, hospital_token = await hub_client.add_partner("hosp", "hospital")
    food, _ = await hub_client.add_partner("food", "cbo")
    admin_token = hub_client.admin["Authorization"].removeprefix("Bearer ")
    performer = f"Organization/{food}"

    before = await hub_client.post_fhir("ServiceRequest", referral(performer, "before"), hospital_token)
    assert 201 == before.status_code, before.text
    assert 1 == len(await read_topic(hub_client.hub.bootstrap, f"partner.{food}", expect=1))

    posted = await hub_client.post_fhir("Consent", orjson.dumps(opt_out()), admin_token)
    assert 201 == posted.status_code, posted.text
    consent_id = posted.json()["id"]
    await on_events(hub_client, event_id_of(posted))

    during = await hub_client.post_fhir("ServiceRequest", referral(performer, "during"), hospital_token)
    assert 201 == during.status_code, during.text
    [denied] = await audit_of(hub_client, event_id_of(during))
    assert (food, "deny") == (denied["recipient"], denied["verdict"])
    assert denied["rule"].startswith(f"consent:{consent_id}")
    assert consent_id in denied["reason"]

    revocation = orjson.dumps(opt_out("inactive", consent_id))
    revoked = await hub_client.http.put(
        f"/fhir/Consent/{consent_id}", content=revocation,
        headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/fhir+json"},
    )
    assert 200 == revoked.status_code, revoked.text
    assert 'W/"2"' == revoked.headers["etag"]
    await on_events(hub_client, events.event_id("operator", f"Consent/{consent_id}/_history/2", revocation))

    after = await hub_client.post_fhir("ServiceRequest", referral(performer, "after"), hospital_token)
    assert 201 == after.status_code, after.text
    [permitted] = await audit_of(hub_client, event_id_of(after))
    assert "permit" == permitted["verdict"]

    records = await read_topic(hub_client.hub.bootstrap, f"partner.{food}", expect=2, settle_s=1.0)
    assert [event_id_of(before), event_id_of(after)] == [dict(r.headers)["ce_id"].decode() for r in records]
    # minimum necessary: a CBO gets no free-text notes
    assert all("note" not in orjson.loads(r.value) for r in records)


async def test_sud_labelled_data_without_a_part2_consent_is_denied(hub_client: HubClient) -> None:
    _, hospital_token = await hub_client.add_partner("hosp", "hospital")
    food, _ = await hub_client.add_partner("food", "cbo")
    sud = {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "SUD"}]}
    body = referral(f"Organization/{food}", "sud", identifier={"system": "urn:oid:1.2.3", "value": "MRN-SUD"},
                    meta=sud)

    answer = await hub_client.post_fhir("ServiceRequest", body, hospital_token)

    assert 201 == answer.status_code, answer.text
    [denied] = await audit_of(hub_client, event_id_of(answer))
    assert (food, "deny", RULE_PART2) == (denied["recipient"], denied["verdict"], denied["rule"])
    assert [] == await read_topic(hub_client.hub.bootstrap, f"partner.{food}", expect=0, settle_s=1.0)
