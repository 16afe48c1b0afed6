"""Every FHIR REST path that shows a partner a resource shows exactly what delivery showed it, on the running
hub over the embedded broker: read, vread and the GET entries of transaction and batch Bundles give a CBO the
minimum-necessary view its topic carried (no diagnoses, notes or instructions), a hospital recipient the
whole resource, each read audited as a disclosure (``read:`` rule); a consent revoked after delivery closes
the REST path too (audited deny); a partner the referral was never delivered to learns nothing, not even
that it exists."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest

from hub.adapters.fhir_disclosure import READ_RULE_PREFIX
from hub.consent.redaction import REDACTED_LABEL
from tests.e2e.conftest import HubClient, read_topic

pytestmark = pytest.mark.broker

MRN_SYSTEM = "urn:oid:1.2.3"
#: What a CBO must never read: a diagnosis, free-text notes, the patient's instructions.
CLINICAL = ("reasonCode", "note", "patientInstruction")


def referral(performer: str, mrn: str) -> bytes:
    return orjson.dumps({
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "subject": {"identifier": {"system": MRN_SYSTEM, "value": mrn}},
        "performer": [{"reference": performer}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "467771000124109"}]},
        "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "Z59.41"}]}],
        "note": [{"text": "lives with an abusive partner"}],
        "patientInstruction": "call after 6 pm only",
    })


def opt_out(mrn: str) -> bytes:
    return orjson.dumps({
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": {"system": MRN_SYSTEM, "value": mrn}},
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
        "provision": {"type": "deny"},
    })


def without_meta(resource: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in resource.items() if key not in {"meta", "id"}}


async def every_read(http: httpx.AsyncClient, token: str, resource_id: str) -> dict[str, httpx.Response]:
    """The same resource through each FHIR read path a partner has."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    url = f"ServiceRequest/{resource_id}"

    def bundle(kind: str) -> bytes:
        return orjson.dumps({"resourceType": "Bundle", "type": kind,
                             "entry": [{"request": {"method": "GET", "url": url}}]})

    return {
        "read": await http.get(f"/fhir/{url}", headers=headers),
        "vread": await http.get(f"/fhir/{url}/_history/1", headers=headers),
        "transaction": await http.post("/fhir", content=bundle("transaction"), headers=headers),
        "batch": await http.post("/fhir", content=bundle("batch"), headers=headers),
    }


def resource_of(path: str, answer: httpx.Response) -> dict[str, Any] | None:
    """The resource an answer shows, or None when it shows none (a 404, an error entry)."""
    if answer.status_code != 200:
        return None
    body: dict[str, Any] = answer.json()
    if path in {"read", "vread"}:
        return body
    entry = body["entry"][0]
    shown: dict[str, Any] | None = entry.get("resource")
    return shown


async def audited_reads(hub_client: HubClient, event_id: str, recipient: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (
        await hub_client.http.get("/admin/v1/audit", params={"event": event_id}, headers=hub_client.admin)
    ).json()
    return [r for r in rows if r["recipient"] == recipient and r["rule"].startswith(READ_RULE_PREFIX)]


async def test_a_cbo_reads_on_every_path_exactly_the_redacted_view_its_topic_carried(hub_client: HubClient) -> None:
    _, hospital_token = await hub_client.add_partner("hosp", "hospital")
    cbo, cbo_token = await hub_client.add_partner("food", "cbo")
    created = await hub_client.post_fhir("ServiceRequest", referral(f"Organization/{cbo}", "MRN-R1"), hospital_token)
    assert 201 == created.status_code, created.text
    resource_id = created.json()["id"]
    [record] = await read_topic(hub_client.hub.bootstrap, f"partner.{cbo}", expect=1)
    delivered = orjson.loads(record.value)
    assert not set(CLINICAL) & set(delivered)

    answers = await every_read(hub_client.http, cbo_token, resource_id)
    for path, answer in answers.items():
        shown = resource_of(path, answer)
        assert shown is not None, (path, answer.status_code, answer.text)
        assert not set(CLINICAL) & set(shown), path
        assert without_meta(delivered) == without_meta(shown), path
        assert REDACTED_LABEL in shown["meta"]["security"], path
        assert "no-store" in answer.headers.get("cache-control", ""), path

    reads = await audited_reads(hub_client, resource_id, cbo)
    assert {"permit"} == {r["verdict"] for r in reads}
    # The hospital that sent it still reads it whole.
    own = await hub_client.http.get(f"/fhir/ServiceRequest/{resource_id}",
                                    headers={"Authorization": f"Bearer {hospital_token}"})
    assert set(CLINICAL) <= set(own.json())


async def test_a_consent_revoked_after_delivery_closes_every_read_path_and_the_denial_is_audited(
    hub_client: HubClient,
) -> None:
    _, hospital_token = await hub_client.add_partner("hosp", "hospital")
    cbo, cbo_token = await hub_client.add_partner("food", "cbo")
    created = await hub_client.post_fhir("ServiceRequest", referral(f"Organization/{cbo}", "MRN-R2"), hospital_token)
    resource_id = created.json()["id"]
    await read_topic(hub_client.hub.bootstrap, f"partner.{cbo}", expect=1)
    before = await hub_client.http.get(f"/fhir/ServiceRequest/{resource_id}",
                                       headers={"Authorization": f"Bearer {cbo_token}"})
    assert 200 == before.status_code

    consent = await hub_client.post_fhir("Consent", opt_out("MRN-R2"), hospital_token)
    assert 201 == consent.status_code, consent.text
    answers = await every_read(hub_client.http, cbo_token, resource_id)
    assert dict.fromkeys(answers) == {path: resource_of(path, a) for path, a in answers.items()}
    assert 404 == answers["read"].status_code
    reads = await audited_reads(hub_client, resource_id, cbo)
    assert {"permit", "deny"} == {r["verdict"] for r in reads}


async def test_a_hospital_recipient_reads_the_whole_referral_as_its_topic_carried_it(hub_client: HubClient) -> None:
    _, sender_token = await hub_client.add_partner("hosp", "hospital")
    receiver, receiver_token = await hub_client.add_partner("clinic", "hospital")
    created = await hub_client.post_fhir("ServiceRequest", referral(f"Organization/{receiver}", "MRN-R3"), sender_token)
    resource_id = created.json()["id"]
    [record] = await read_topic(hub_client.hub.bootstrap, f"partner.{receiver}", expect=1)
    answers = await every_read(hub_client.http, receiver_token, resource_id)
    for path, answer in answers.items():
        shown = resource_of(path, answer)
        assert shown is not None, (path, answer.text)
        assert without_meta(orjson.loads(record.value)) == without_meta(shown), path
        assert set(CLINICAL) <= set(shown), path


async def test_a_partner_the_referral_never_reached_cannot_tell_it_from_an_unused_id(hub_client: HubClient) -> None:
    _, hospital_token = await hub_client.add_partner("hosp", "hospital")
    cbo, _ = await hub_client.add_partner("food", "cbo")
    _, other_token = await hub_client.add_partner("housing", "cbo")
    _, other_hospital_token = await hub_client.add_partner("other", "hospital")
    created = await hub_client.post_fhir("ServiceRequest", referral(f"Organization/{cbo}", "MRN-R4"), hospital_token)
    resource_id = created.json()["id"]
    await read_topic(hub_client.hub.bootstrap, f"partner.{cbo}", expect=1)  # delivered (to someone else)
    unused = str(uuid.uuid4())
    for token in (other_token, other_hospital_token):
        existing = await every_read(hub_client.http, token, resource_id)
        missing = await every_read(hub_client.http, token, unused)
        for path in existing:
            assert existing[path].status_code == missing[path].status_code, path
            assert scrub(existing[path].json(), resource_id) == scrub(missing[path].json(), unused), path


def scrub(body: Any, resource_id: str) -> Any:
    """An answer with the id it names and the Bundle's own id and time taken out, to compare two answers."""
    text = orjson.dumps(body).decode().replace(resource_id, "<id>")
    data = orjson.loads(text)
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        data.pop("id", None)
        data.pop("timestamp", None)
    return data
