"""A referral travels hospital → hub → CBO over TCP to the embedded Tansu broker, and the admin API."""

from __future__ import annotations

import orjson
import pytest

from hub.topics.registry import DLQ, INGRESS
from tests.e2e.conftest import HubClient, read_topic

pytestmark = pytest.mark.broker


def referral(performer: str, mrn: str = "MRN-77") -> bytes:
    return orjson.dumps({
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "subject": {"identifier": {"system": "urn:oid:1.2.3", "value": mrn}},
        "requester": {"reference": "Organization/somewhere"},
        "performer": [{"reference": performer}],
    })


async def test_a_referral_reaches_the_addressed_cbo_and_no_other(hub_client: HubClient) -> None:
    hospital, hospital_token = await hub_client.add_partner("hosp", "hospital")
    food, _ = await hub_client.add_partner("food", "cbo")
    housing, _ = await hub_client.add_partner("housing", "cbo")
    body = referral(f"Organization/{food}")

    answer = await hub_client.post_fhir("ServiceRequest", body, hospital_token)

    assert 201 == answer.status_code, answer.text
    [record] = await read_topic(hub_client.hub.bootstrap, f"partner.{food}", expect=1)
    headers = {k: v.decode() for k, v in record.headers}
    assert body == record.value
    assert "1" == headers["ce_sequence"]
    assert f"/partners/{hospital}" == headers["ce_source"]
    assert "application/fhir+json" == headers["content-type"]
    assert answer.headers["location"].split("/")[3] == headers["ce_id"]
    assert headers["ce_subject"].startswith("Patient/hp-")
    assert [] == await read_topic(hub_client.hub.bootstrap, f"partner.{housing}", expect=0, settle_s=1.0)

    audit = (await hub_client.http.get("/admin/v1/audit", params={"event": headers["ce_id"]},
                                       headers=hub_client.admin)).json()
    assert {(food, "permit"), (housing, "deny")} == {(row["recipient"], row["verdict"]) for row in audit}


async def test_the_same_patient_from_one_hospital_keeps_one_hub_id_and_partner_numbers_count_up(
    hub_client: HubClient,
) -> None:
    _, token = await hub_client.add_partner("hosp", "hospital")
    food, _ = await hub_client.add_partner("food", "cbo")
    for n in range(3):
        body = orjson.dumps({**orjson.loads(referral(f"Organization/{food}")), "note": [{"text": f"#{n}"}]})
        assert 201 == (await hub_client.post_fhir("ServiceRequest", body, token)).status_code
    records = await read_topic(hub_client.hub.bootstrap, f"partner.{food}", expect=3)
    headers = [{k: v.decode() for k, v in r.headers} for r in records]
    assert ["1", "2", "3"] == [h["ce_sequence"] for h in headers]
    assert 1 == len({h["ce_subject"] for h in headers})


async def test_a_poison_record_on_ingress_is_dead_lettered_and_the_next_referral_still_delivered(
    hub_client: HubClient,
) -> None:
    _, token = await hub_client.add_partner("hosp", "hospital")
    food, _ = await hub_client.add_partner("food", "cbo")
    poison = b"\x00\x01 not an event " + hub_client.prefix.encode()
    proof = await hub_client.record_proof()  # written as the hub would write it: the proof holds, the bytes do not
    headers = proof.stamp(INGRESS.name, key=b"poison", value=poison,
                          headers={"ce_id": hub_client.prefix, "content-type": "application/octet-stream"})
    await hub_client.hub.broker.publish(poison, INGRESS.name, key=b"poison", headers=headers)

    assert 201 == (await hub_client.post_fhir("ServiceRequest", referral(f"Organization/{food}"), token)).status_code

    assert 1 == len(await read_topic(hub_client.hub.bootstrap, f"partner.{food}", expect=1))
    dead = [r for r in await read_topic(hub_client.hub.bootstrap, DLQ.name, expect=10_000, timeout_s=3)
            if dict(r.headers).get("ce_id") == hub_client.prefix.encode()]
    assert 1 == len(dead)
    assert poison == dead[0].value
    reasons = {k: v.decode() for k, v in dead[0].headers}
    assert "normalize" == reasons["hub_dlq_stage"]
    assert "ce_specversion" in reasons["hub_dlq_reason"]


async def test_admin_api_registers_partners_with_a_token_shown_once(hub_client: HubClient) -> None:
    partner_id = f"{hub_client.prefix}-cbo"
    payload = {"id": partner_id, "kind": "cbo", "name": "A CBO", "organization": f"Organization/{partner_id}"}
    created = await hub_client.http.post("/admin/v1/partners", json=payload, headers=hub_client.admin)
    assert 201 == created.status_code
    assert {"id", "kind", "name", "organization", "token"} <= set(created.json())
    listed = (await hub_client.http.get("/admin/v1/partners", headers=hub_client.admin)).json()
    assert [] == [p for p in listed if "token" in p]
    again = await hub_client.http.post("/admin/v1/partners", json=payload, headers=hub_client.admin)
    assert 409 == again.status_code


@pytest.mark.parametrize(
    ("headers", "payload", "status"),
    [
        ({}, {"id": "x-ok", "kind": "cbo", "name": "n", "organization": "Organization/x-ok"}, 401),
        ({"Authorization": "Bearer wrong"}, {"id": "x-ok", "kind": "cbo", "name": "n",
                                             "organization": "Organization/x-ok"}, 401),
        (None, {"id": "Bad Id!", "kind": "cbo", "name": "n", "organization": "Organization/x"}, 422),
        (None, {"id": "x-ok", "kind": "pharmacy", "name": "n", "organization": "Organization/x"}, 422),
        (None, {"id": "x-ok", "kind": "cbo", "name": "n"}, 422),
        (None, {"id": "x-ok", "kind": "cbo", "name": "n", "organization": "nonsense"}, 422),
    ],
)
async def test_admin_api_refuses_bad_requests_precisely(
    hub_client: HubClient, headers: dict[str, str] | None, payload: dict[str, str], status: int
) -> None:
    answer = await hub_client.http.post("/admin/v1/partners", json=payload,
                                        headers=hub_client.admin if headers is None else headers)
    assert status == answer.status_code, answer.text
    assert answer.json()["detail"]


async def test_a_partner_token_cannot_use_the_admin_api(hub_client: HubClient) -> None:
    _, token = await hub_client.add_partner("hosp", "hospital")
    answer = await hub_client.http.get("/admin/v1/partners", headers={"Authorization": f"Bearer {token}"})
    assert 403 == answer.status_code
