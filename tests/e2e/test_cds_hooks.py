"""The CDS Hooks consent service on a running hub (HTTP over TCP, SQLite, the session's broker): discovery,
consults answered from consents posted through the FHIR API, revocation seen at once, every consult audited,
and the unhappy paths (401, 400, 404, 415, unknown patient)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from hub.control import audit
from tests.e2e.conftest import ADMIN_TOKEN, HubClient

pytestmark = pytest.mark.broker

CONSULT = "/cds-services/patient-consent-consult"
SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ORG_IDS = "urn:oid:2.16.840.1.113883.20.5"


def patient(mrn: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.3", "value": mrn}]}


def consent(mrn: str, policy: str, *, status: str = "active", resource_id: str | None = None,
            provision: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "resourceType": "Consent", **({"id": resource_id} if resource_id else {}),
        "status": status,
        "scope": {"coding": [{"system": SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": {"system": "urn:oid:1.2.3", "value": mrn}},
        "dateTime": "2026-01-01T00:00:00Z",
        "policyRule": {"coding": [{"system": ACT, "code": policy}]},
        **({"provision": provision} if provision else {}),
    }


def request(mrn: str, *, actor: list[dict[str, str]] | None = None, **context: Any) -> dict[str, Any]:
    return {
        "hook": "patient-consent-consult",
        "hookInstance": str(uuid.uuid4()),
        "context": {
            "patientId": [{"system": "urn:oid:1.2.3", "value": mrn}],
            "category": [{"system": SCOPE, "code": "patient-privacy"}],
            "purposeOfUse": ["CAREMGT"],
            **({"actor": actor} if actor is not None else {}),
            **context,
        },
    }


async def consult(hub_client: HubClient, body: Any, token: str = ADMIN_TOKEN) -> httpx.Response:
    return await hub_client.http.post(CONSULT, content=orjson.dumps(body), headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})


async def fhir(hub_client: HubClient, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = await hub_client.http.request(method, f"/fhir/{path}", content=orjson.dumps(body), headers={
        **hub_client.admin, "Content-Type": "application/fhir+json"})
    assert answer.status_code in (200, 201), answer.text
    result: dict[str, Any] = answer.json()
    return result


def decision(answer: httpx.Response) -> dict[str, Any]:
    assert 200 == answer.status_code, answer.text
    [card] = answer.json()["cards"]
    assert card["summary"] == card["extension"]["decision"]
    extension: dict[str, Any] = card["extension"]
    return extension


async def test_discovery_lists_the_consult_service_without_a_token(hub_client: HubClient) -> None:
    answer = await hub_client.http.get("/cds-services")
    assert 200 == answer.status_code
    assert [("patient-consent-consult", "patient-consent-consult")] == [
        (service["id"], service["hook"]) for service in answer.json()["services"]]


async def test_consults_follow_the_consents_posted_through_the_fhir_api(hub_client: HubClient) -> None:
    """Opt-in permits, an exception naming the CBO denies it, revocation withdraws at once; all audited."""
    mrn = f"MRN-{hub_client.prefix}"
    cbo_id, cbo_token = await hub_client.add_partner("foodbank", "cbo")
    organization = await fhir(hub_client, "PUT", f"Organization/{cbo_id}", {
        "resourceType": "Organization", "id": cbo_id, "name": "Food Bank",
        "identifier": [{"system": ORG_IDS, "value": cbo_id}]})
    assert cbo_id == organization["id"]
    await fhir(hub_client, "POST", "Patient", patient(mrn))
    by_identifier = [{"system": ORG_IDS, "value": cbo_id}]

    assert "NO_CONSENT" == decision(await consult(hub_client, request(mrn, actor=by_identifier)))["decision"]

    optin = await fhir(hub_client, "POST", "Consent", consent(mrn, "OPTIN"))
    permitted = decision(await consult(hub_client, request(mrn, actor=by_identifier)))
    assert "CONSENT_PERMIT" == permitted["decision"]
    assert permitted["basedOn"].endswith(f"/fhir/Consent/{optin['id']}")

    # the CBO asks about itself (no actor: its own organization) and is named in a deny exception
    excepted = consent(mrn, "OPTIN", resource_id=optin["id"], provision={"provision": [
        {"actor": [{"reference": {"reference": f"Organization/{cbo_id}"}, "role": {"coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]}}]}]})
    await fhir(hub_client, "PUT", f"Consent/{optin['id']}", excepted)
    # a CBO consults only about its clients: a stranger is refused, however the consents read
    stranger = await consult(hub_client, request(mrn), token=cbo_token)
    assert (403, "forbidden") == (stranger.status_code, stranger.json()["error"])
    rostered = await hub_client.http.post(f"/admin/v1/partners/{cbo_id}/roster", headers=hub_client.admin,
                                          json={"patient": f"urn:oid:1.2.3|{mrn}"})
    assert rostered.status_code in {200, 201}, rostered.text
    denied = decision(await consult(hub_client, request(mrn), token=cbo_token))
    # the operator recorded the Consent: the CBO may not read it, so its card does not name it (ADR 0007)
    assert ("CONSENT_DENY", "consent:(another-organization):provision.provision[0]") == (
        denied["decision"], denied["rule"])
    assert optin["id"] not in orjson.dumps(denied).decode()
    assert "basedOn" not in denied
    # found through the Organization resource's identifier, too
    assert "CONSENT_DENY" == decision(await consult(hub_client, request(mrn, actor=by_identifier)))["decision"]

    revoked = consent(mrn, "OPTIN", status="inactive", resource_id=optin["id"])
    await fhir(hub_client, "PUT", f"Consent/{optin['id']}", revoked)
    withdrawn = decision(await consult(hub_client, request(mrn, actor=by_identifier)))
    # revoked is no consent (LEAP): NO_CONSENT, which permits nothing (audited as deny)
    assert ("NO_CONSENT", "consent:none") == (withdrawn["decision"], withdrawn["rule"])

    async with hub_client.hub.sessions() as session:
        recorded = [r for r in await audit.list_decisions(session, recipient_id=cbo_id) if r.rule.startswith("cds:")]
    assert ["deny", "permit", "deny", "deny", "deny"] == [r.verdict for r in recorded]
    assert all(r.event_id.startswith("cds-consult:") and r.hub_patient_id.startswith("hp-") for r in recorded)


async def test_an_opt_out_denies_and_an_unknown_patient_has_no_consent(hub_client: HubClient) -> None:
    mrn = f"MRN-OUT-{hub_client.prefix}"
    await fhir(hub_client, "POST", "Patient", patient(mrn))
    await fhir(hub_client, "POST", "Consent", consent(mrn, "OPTOUT", provision={"type": "deny"}))
    actor = [{"system": ORG_IDS, "value": "anyone"}]
    assert "CONSENT_DENY" == decision(await consult(hub_client, request(mrn, actor=actor)))["decision"]
    unknown = decision(await consult(hub_client, request(f"NOBODY-{hub_client.prefix}", actor=actor)))
    assert ("NO_CONSENT", "cds:unknown-patient") == (unknown["decision"], unknown["rule"])


async def test_a_first_generation_leap_request_is_answered(hub_client: HubClient) -> None:
    mrn = f"MRN-V1-{hub_client.prefix}"
    await fhir(hub_client, "POST", "Patient", patient(mrn))
    await fhir(hub_client, "POST", "Consent", consent(mrn, "OPTIN"))
    first = {"hook": "patient-consent-consult", "hookInstance": "1", "context": {
        "patientId": {"system": "urn:oid:1.2.3", "value": mrn}, "scope": "patient-privacy",
        "purposeOfUse": "CAREMGT", "actor": {"system": "sample-system", "value": "sample-id"}}}
    assert "CONSENT_PERMIT" == decision(await consult(hub_client, first))["decision"]


@pytest.mark.parametrize(
    ("headers", "content", "status", "error"),
    [
        ({}, b"{}", 401, "unauthorized"),
        ({"Authorization": "Bearer not-a-token"}, b"{}", 401, "unauthorized"),
        ({"Authorization": "Basic abc"}, b"{}", 401, "unauthorized"),
        ({"Authorization": f"Bearer {ADMIN_TOKEN}"}, b"{broken", 400, "bad_request"),
        ({"Authorization": f"Bearer {ADMIN_TOKEN}"}, b"", 400, "bad_request"),
        ({"Authorization": f"Bearer {ADMIN_TOKEN}"}, orjson.dumps({"hook": "order-sign", "hookInstance": "1",
                                                                    "context": {}}), 400, "bad_request"),
        ({"Authorization": f"Bearer {ADMIN_TOKEN}"}, orjson.dumps(request("X") | {"context": {"patientId": []}}),
         400, "bad_request"),
        ({"Authorization": f"Bearer {ADMIN_TOKEN}"}, orjson.dumps(request("X")), 400, "bad_request"),  # no actor
        ({"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "text/plain"}, b"{}", 415,
         "unsupported_media_type"),
        ({"Authorization": f"Bearer {ADMIN_TOKEN}"}, b" " * 2_000_000, 413, "payload_too_large"),
    ],
)
async def test_unhappy_paths_get_a_clear_json_error(
    hub_client: HubClient, headers: dict[str, str], content: bytes, status: int, error: str
) -> None:
    answer = await hub_client.http.post(CONSULT, content=content, headers={"Content-Type": "application/json",
                                                                           **headers})
    assert status == answer.status_code, answer.text
    assert error == answer.json()["error"]
    assert answer.json()["errorMessage"]
    if status == 401:
        assert answer.headers["www-authenticate"].startswith("Bearer")


async def test_another_service_id_is_not_found(hub_client: HubClient) -> None:
    answer = await hub_client.http.post("/cds-services/order-sign", content=b"{}", headers=hub_client.admin)
    assert (404, "not_found") == (answer.status_code, answer.json()["error"])


@pytest.mark.corpus
async def test_a_fhir_spec_consent_example_answers_through_the_service(
    hub_client: HubClient, corpus_dir: Path
) -> None:
    """The R4 spec's 'notThem' example (opt-in for Practitioner/f204 as primary recipient), posted as is but
    for its patient: f204, named by its identifier, is permitted; for anyone else the consent does not apply."""
    data = orjson.loads((corpus_dir / "fhir-r4-core-examples" / "Consent-consent-example-notThem.json").read_bytes())
    mrn = f"F001-{hub_client.prefix}"
    await fhir(hub_client, "POST", "Patient", patient(mrn))
    data.pop("id", None)
    data["patient"] = {"identifier": {"system": "urn:oid:1.2.3", "value": mrn}}
    await fhir(hub_client, "POST", "Consent", data)
    npi = "http://hl7.org/fhir/sid/us-npi"
    await fhir(hub_client, "PUT", "Practitioner/f204", {
        "resourceType": "Practitioner", "id": "f204", "identifier": [{"system": npi, "value": "1234567893"}]})
    named = decision(await consult(hub_client, request(mrn, actor=[{"system": npi, "value": "1234567893"}])))
    other = decision(await consult(hub_client, request(mrn, actor=[{"system": npi, "value": "1111111112"}])))
    assert ("CONSENT_PERMIT", "NO_CONSENT") == (named["decision"], other["decision"])
