"""The Consent API on the FHIR edge: create, update (revocation), read, search; broken input; who may write."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from hub import events
from hub.adapters.fhir_rest import search_patient_source
from hub.errors import InvalidInput
from tests.adapters.conftest import (
    CBO_TOKEN,
    FHIR_JSON,
    HOSPITAL_B_TOKEN,
    HOSPITAL_TOKEN,
    OPERATOR_TOKEN,
    Edge,
    auth,
    valid_service_request,
)

SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
PRIVACY = {"coding": [{"system": SCOPE, "code": "patient-privacy"}]}
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ROLE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
MRN = {"system": "urn:oid:1.2.3", "value": "MRN-9"}

OPT_OUT: dict[str, Any] = {
    "resourceType": "Consent",
    "status": "active",
    "scope": PRIVACY,
    "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
    "patient": {"reference": "Patient/123"},
    "dateTime": "2026-01-01T00:00:00Z",
    "policyRule": {"coding": [{"system": ACT_CODE, "code": "OPTOUT"}]},
    "provision": {"type": "deny"},
}


def consent(**changes: Any) -> dict[str, Any]:
    """The opt-out Consent with ``changes`` (``...`` deletes the element)."""
    data = copy.deepcopy(OPT_OUT)
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return data


def nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "deny"}
    for _ in range(depth):
        node = {"type": "deny", "provision": [node]}
    return node


async def post(edge: Edge, body: Any, token: str = HOSPITAL_TOKEN) -> Any:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return await edge.client.post("/fhir/Consent", content=content, headers=auth(token))


# --- happy paths ----------------------------------------------------------------------------------


async def test_a_hospital_records_an_opt_out_for_its_patient_as_a_consent_change_event(edge: Edge) -> None:
    answer = await post(edge, consent())

    assert 201 == answer.status_code, answer.text
    stored = answer.json()
    assert "Consent" == stored["resourceType"]
    assert "1" == stored["meta"]["versionId"]
    assert answer.headers["location"] == f"/fhir/Consent/{stored['id']}/_history/1"
    [(key, value, headers)] = edge.ingress.written
    event = events.decode(value)
    assert "consent-change" == event.facts.event_kind
    assert "Consent" == event.facts.resource_type
    assert "active" == event.facts.status
    assert "urn:carehub:partner:hosp-a:Patient/123" == event.facts.patient_source
    assert b"hosp-a|urn:carehub:partner:hosp-a:Patient/123" == key
    assert "org.carehub.consent.submitted" == headers["ce_type"]
    assert stored["id"] == headers["ce_id"]


async def test_revocation_by_status_is_a_new_version_and_a_new_event(edge: Edge) -> None:
    created = (await post(edge, consent())).json()
    revoked = consent(id=created["id"], status="inactive")

    answer = await edge.client.put(f"/fhir/Consent/{created['id']}", content=orjson.dumps(revoked), headers=auth())

    assert 200 == answer.status_code, answer.text
    assert "2" == answer.json()["meta"]["versionId"]
    assert ["active", "inactive"] == [events.decode(v).facts.status for _, v, _ in edge.ingress.written]
    assert "inactive" == (await edge.client.get(f"/fhir/Consent/{created['id']}", headers=auth())).json()["status"]


async def test_put_creates_a_consent_with_the_clients_id_and_a_repeat_writes_nothing(edge: Edge) -> None:
    body = orjson.dumps(consent(id="hosp-a.optout-1"))
    first = await edge.client.put("/fhir/Consent/hosp-a.optout-1", content=body, headers=auth())
    again = await edge.client.put("/fhir/Consent/hosp-a.optout-1", content=body, headers=auth())
    assert (201, 200) == (first.status_code, again.status_code)
    assert 1 == len(edge.ingress.written)


async def test_the_operator_records_a_consent_for_any_patient(edge: Edge) -> None:
    body = consent(patient={"identifier": MRN})
    answer = await post(edge, body, OPERATOR_TOKEN)
    assert 201 == answer.status_code, answer.text
    assert "urn:oid:1.2.3|MRN-9" == events.decode(edge.ingress.written[0][1]).facts.patient_source


async def test_search_by_reference_and_by_identifier_finds_the_current_consents(edge: Edge) -> None:
    by_reference = (await post(edge, consent())).json()
    by_identifier = (await post(edge, consent(patient={"identifier": MRN}), OPERATOR_TOKEN)).json()
    other = consent(patient={"reference": "Patient/456"})
    await post(edge, other)

    found = await edge.client.get("/fhir/Consent", params={"patient": "Patient/123"}, headers=auth())
    assert 200 == found.status_code, found.text
    bundle = found.json()
    assert ("Bundle", "searchset", 1) == (bundle["resourceType"], bundle["type"], bundle["total"])
    [entry] = bundle["entry"]
    assert by_reference["id"] == entry["resource"]["id"]
    assert entry["fullUrl"].endswith(f"/fhir/Consent/{by_reference['id']}")
    assert {"mode": "match"} == entry["search"]

    for params in ({"patient": "urn:oid:1.2.3|MRN-9"}, {"patient:identifier": "urn:oid:1.2.3|MRN-9"}):
        answer = (await edge.client.get("/fhir/Consent", params=params, headers=auth(OPERATOR_TOKEN))).json()
        assert [by_identifier["id"]] == [e["resource"]["id"] for e in answer["entry"]]


async def test_search_follows_the_crosswalk_links_of_a_patient(edge: Edge) -> None:
    """A Consent naming the patient by MRN is found by the hospital's Patient reference once they are linked."""
    edge.store.linked.append(("urn:carehub:partner:hosp-a:Patient/123", "urn:oid:1.2.3|MRN-9"))
    created = (await post(edge, consent(patient={"identifier": MRN}))).json()
    answer = (await edge.client.get("/fhir/Consent?patient=Patient/123", headers=auth())).json()
    assert [created["id"]] == [e["resource"]["id"] for e in answer["entry"]]


async def test_search_shows_a_revoked_consent_at_its_current_version(edge: Edge) -> None:
    created = (await post(edge, consent())).json()
    await edge.client.put(
        f"/fhir/Consent/{created['id']}", content=orjson.dumps(consent(id=created["id"], status="inactive")),
        headers=auth(),
    )
    answer = (await edge.client.get("/fhir/Consent?patient=123", headers=auth())).json()
    found = [(e["resource"]["status"], e["resource"]["meta"]["versionId"]) for e in answer["entry"]]
    assert [("inactive", "2")] == found


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("patient", "Patient/1")], "urn:carehub:partner:h:Patient/1"),
        ([("patient", "1")], "urn:carehub:partner:h:Patient/1"),
        ([("patient", "Patient/1/_history/2")], "urn:carehub:partner:h:Patient/1"),
        ([("patient", "https://ehr.example/fhir/Patient/1")], "https://ehr.example/fhir/Patient/1"),
        ([("patient", "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0")],
         "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"),
        ([("patient", "urn:oid:1.2.3|MRN-1")], "urn:oid:1.2.3|MRN-1"),
        ([("patient", "|MRN-1")], "urn:carehub:partner:h|MRN-1"),
        ([("patient:identifier", "MRN-1")], "urn:carehub:partner:h|MRN-1"),
        ([("patient", "Patient/1"), ("_format", "json")], "urn:carehub:partner:h:Patient/1"),
    ],
)
def test_search_patient_forms(params: list[tuple[str, str]], expected: str) -> None:
    assert expected == search_patient_source(params, sender="h")


@pytest.mark.parametrize(
    "params",
    [
        [],
        [("patient", "")],
        [("patient", "Patient/1"), ("patient", "Patient/2")],
        [("subject", "Patient/1")],
        [("patient", "Patient/1"), ("status", "active")],
        [("patient", "Group/1")],
        [("patient", "urn:oid:1.2.3|")],
        [("patient", "Patient/not an id")],
    ],
)
def test_search_patient_refuses_what_it_cannot_evaluate(params: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidInput):
        search_patient_source(params, sender="h")


async def test_a_bad_search_is_answered_400_with_an_operation_outcome(edge: Edge) -> None:
    answer = await edge.client.get("/fhir/Consent?subject=Patient/1", headers=auth())
    assert 400 == answer.status_code
    assert "OperationOutcome" == answer.json()["resourceType"]
    assert 401 == (await edge.client.get("/fhir/Consent?patient=Patient/1")).status_code


# --- broken input: the precise answer, and nothing written ---------------------------------------


BROKEN: list[tuple[str, Any, int, str, str | None]] = [
    ("not json", b"{nope", 400, "structure", None),
    ("an array", b"[]", 400, "structure", None),
    ("another type", {**valid_service_request()}, 422, "invalid", "resourceType"),
    ("no status", consent(status=...), 422, "required", "Consent.status"),
    ("unknown status", consent(status="maybe"), 422, "code-invalid", "Consent.status"),
    ("no scope", consent(scope=...), 422, "required", "Consent.scope"),
    ("no patient", consent(patient=...), 422, "required", "Consent.patient"),
    ("patient display only", consent(patient={"display": "Jane Doe"}), 422, "required", "Consent.patient"),
    ("patient is a Group", consent(patient={"reference": "Group/1"}), 422, "value", "Consent.patient.reference"),
    (
        "patient name too long",
        consent(patient={"identifier": {"system": "urn:x", "value": "a" * 600}}),
        422, "value", "Consent.patient",
    ),
    ("provision type unknown", consent(provision={"type": "maybe"}), 422, "code-invalid", "Consent.provision.type"),
    (
        "no base decision",
        consent(policyRule=..., provision={"purpose": [{"system": ACT_CODE, "code": "HRESCH"}]}),
        422, "business-rule", "Consent.provision.type",
    ),
    (
        "provision is an array of two",  # one root provision in an array is read as R4's (R5 shape)
        consent(provision=[{"type": "deny"}, {"type": "permit"}]), 422, "structure", "Consent.provision",
    ),
    ("provisions nest too deep", consent(provision=nested(20)), 422, "business-rule", None),
    ("bad dateTime", consent(dateTime="yesterday"), 422, "value", "Consent.dateTime"),
    (
        "bad period",
        consent(provision={"type": "deny", "period": {"start": "2026-13-01"}}),
        422, "value", "Consent.provision.period.start",
    ),
    (
        "actor without reference",
        consent(provision={"type": "deny", "actor": [{"role": {"coding": [{"system": ROLE, "code": "IRCP"}]}}]}),
        422, "required", "Consent.provision.actor[0].reference",
    ),
    (
        "actor without role",
        consent(provision={"type": "deny", "actor": [{"reference": {"reference": "Organization/x"}}]}),
        422, "required", "Consent.provision.actor[0].role",
    ),
    (
        "security label without code",
        consent(provision={"type": "deny", "securityLabel": [{"system": ACT_CODE}]}),
        422, "business-rule", "Consent.provision.securityLabel[0].code",
    ),
    (
        "class without code",
        consent(provision={"type": "deny", "class": [{"system": "http://hl7.org/fhir/resource-types"}]}),
        422, "business-rule", "Consent.provision.class[0].code",
    ),
    (
        "data meaning unknown",
        consent(provision={"type": "deny", "data": [{"meaning": "bogus", "reference": {"reference": "X/1"}}]}),
        422, "code-invalid", "Consent.provision.data[0].meaning",
    ),
    ("unknown element", consent(foo=1), 422, "structure", "Consent.foo"),
]


@pytest.mark.parametrize(
    ("name", "body", "status", "code", "expression"), BROKEN, ids=[case[0] for case in BROKEN]
)
async def test_a_broken_consent_gets_its_precise_operation_outcome_and_nothing_is_written(
    edge: Edge, name: str, body: Any, status: int, code: str, expression: str | None
) -> None:
    answer = await post(edge, body, OPERATOR_TOKEN)

    assert status == answer.status_code, (name, answer.text)
    assert FHIR_JSON == answer.headers["content-type"]
    outcome = answer.json()
    assert "OperationOutcome" == outcome["resourceType"]
    first = outcome["issue"][0]
    assert code == first["code"], first
    if expression is not None:
        assert [expression] == first["expression"], first
    assert [] == edge.ingress.written
    assert [] == edge.store.all_versions()


@pytest.mark.parametrize(
    ("name", "path", "body", "status"),
    [
        ("id missing on PUT", "/fhir/Consent/c1", consent(), 400),
        ("id differs on PUT", "/fhir/Consent/c1", consent(id="c2"), 400),
        ("url id not a FHIR id", "/fhir/Consent/bad%20id", consent(id="bad id"), 400),
    ],
)
async def test_broken_updates(edge: Edge, name: str, path: str, body: Any, status: int) -> None:
    answer = await edge.client.put(path, content=orjson.dumps(body), headers=auth(OPERATOR_TOKEN))
    assert status == answer.status_code, (name, answer.text)
    assert [] == edge.ingress.written


async def test_a_consent_in_another_media_type_is_415(edge: Edge) -> None:
    answer = await edge.client.post(
        "/fhir/Consent", content=orjson.dumps(consent()), headers=auth(content_type="text/plain")
    )
    assert 415 == answer.status_code


# --- who may write and read -----------------------------------------------------------------------


async def test_without_a_token_nothing_is_written(edge: Edge) -> None:
    answer = await edge.client.post(
        "/fhir/Consent", content=orjson.dumps(consent()), headers={"Content-Type": FHIR_JSON}
    )
    assert 401 == answer.status_code
    assert [] == edge.ingress.written


async def test_a_cbo_may_not_create_or_update_a_consent(edge: Edge) -> None:
    assert 403 == (await post(edge, consent(), CBO_TOKEN)).status_code
    created = (await post(edge, consent())).json()
    answer = await edge.client.put(
        f"/fhir/Consent/{created['id']}", content=orjson.dumps(consent(id=created["id"], status="inactive")),
        headers=auth(CBO_TOKEN),
    )
    assert 403 == answer.status_code
    assert 1 == len(edge.ingress.written)


async def test_a_hospital_may_not_record_a_consent_for_a_patient_it_never_sent(edge: Edge) -> None:
    answer = await post(edge, consent(patient={"identifier": MRN}))
    assert 403 == answer.status_code
    assert "forbidden" == answer.json()["issue"][0]["code"]
    assert [] == edge.ingress.written


async def test_a_hospital_may_record_a_consent_for_a_patient_it_referred(edge: Edge) -> None:
    referral = {**valid_service_request(), "subject": {"identifier": MRN}}
    sent = await edge.client.post("/fhir/ServiceRequest", content=orjson.dumps(referral), headers=auth())
    assert 201 == sent.status_code
    assert 201 == (await post(edge, consent(patient={"identifier": MRN}))).status_code
    # the other hospital never sent anything about this patient
    assert 403 == (await post(edge, consent(patient={"identifier": MRN}), HOSPITAL_B_TOKEN)).status_code


async def test_another_hospital_neither_reads_nor_changes_nor_finds_a_consent(edge: Edge) -> None:
    created = (await post(edge, consent())).json()
    read = await edge.client.get(f"/fhir/Consent/{created['id']}", headers=auth(HOSPITAL_B_TOKEN))
    assert 404 == read.status_code
    change = await edge.client.put(
        f"/fhir/Consent/{created['id']}", content=orjson.dumps(consent(id=created["id"], status="inactive")),
        headers=auth(HOSPITAL_B_TOKEN),
    )
    unused = await edge.client.put(
        "/fhir/Consent/0f0f0f0f-0000-4000-8000-000000000000",
        content=orjson.dumps(consent(id="0f0f0f0f-0000-4000-8000-000000000000", status="inactive")),
        headers=auth(HOSPITAL_B_TOKEN),
    )
    assert (405, unused.json()) == (change.status_code, change.json())  # no hint that the consent exists
    found = (await edge.client.get("/fhir/Consent?patient=urn:carehub:partner:hosp-a:Patient/123",
                                   headers=auth(HOSPITAL_B_TOKEN))).json()
    assert 0 == found["total"]
    assert 404 == (await edge.client.get(f"/fhir/Consent/{created['id']}", headers=auth(CBO_TOKEN))).status_code


async def test_the_operator_reads_and_revokes_a_hospitals_consent(edge: Edge) -> None:
    created = (await post(edge, consent())).json()
    assert 200 == (await edge.client.get(f"/fhir/Consent/{created['id']}", headers=auth(OPERATOR_TOKEN))).status_code
    answer = await edge.client.put(
        f"/fhir/Consent/{created['id']}", content=orjson.dumps(consent(id=created["id"], status="inactive")),
        headers=auth(OPERATOR_TOKEN),
    )
    assert 200 == answer.status_code, answer.text
    # the patient keeps the creator's namespace: the revocation is keyed on the same patient
    sources = {events.decode(v).facts.patient_source for _, v, _ in edge.ingress.written}
    assert {"urn:carehub:partner:hosp-a:Patient/123"} == sources


async def test_a_consent_in_a_transaction_bundle_is_checked_the_same_way(edge: Edge) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": consent(policyRule=..., provision={"purpose": [{"system": ACT_CODE, "code": "HRESCH"}]}),
             "request": {"method": "POST", "url": "Consent"}},
        ],
    }
    answer = await edge.client.post("/fhir", content=orjson.dumps(bundle), headers=auth(OPERATOR_TOKEN))
    assert answer.status_code in (400, 422), answer.text
    assert [] == edge.ingress.written
