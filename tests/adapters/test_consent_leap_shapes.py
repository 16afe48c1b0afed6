"""LEAP-style consent shapes, end to end in memory: POST through the Consent API (FHIR edge on the fakes),
then consult through the CDS Hooks service, which reads the consents the edge stored.

The table is written for this test (not copied from LEAP or the FHIR examples): each row is a shape a
LEAP-era or R5-era writer sends, the answer the edge gives (201, and the FHIRPaths its warning
OperationOutcome names), and the card the consult answers. Rows marked "today: 422" or with a changed
decision failed before issue 9 item 8.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from fhir.resources.R4B.consent import Consent as Consent_R4

from hub.adapters.cds_hooks import build_cds_router
from hub.adapters.cds_hooks_store import ResolvedActor
from hub.adapters.fhir_rest import build_fhir_router, install_fhir_error_handlers
from hub.consent.model import Consent, consent_from_fhir
from hub.control.audit import DecisionRecord
from tests.adapters.conftest import OPERATOR_TOKEN, auth, make_authenticator
from tests.adapters.resource_fakes import FakeResourceStore
from tests.fakes import FakeIngressWriter

SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
POU = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ROLE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
TYPES = "http://hl7.org/fhir/resource-types"
SNOMED = "http://snomed.info/sct"
PRIVACY = {"system": SCOPE, "code": "patient-privacy"}
LOINC_CONSENT = {"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}
MRN = {"system": "urn:oid:1.2.3", "value": "MRN-9"}
ORG_IDS = "urn:oid:2.16.840.1.113883.20.5"
CBO = {"system": ORG_IDS, "value": "cbo-1"}
HUB_PATIENT = "hp-1"
ALCOHOL = {"system": SNOMED, "code": "7200002"}


def leap(**elements: Any) -> dict[str, Any]:
    """A Consent of MRN-9 with the given elements (``...`` deletes one): the R4 opt-in by default."""
    data: dict[str, Any] = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [PRIVACY]},
        "category": [LOINC_CONSENT],
        "patient": {"identifier": MRN},
        "dateTime": "2025-06-01T00:00:00Z",
        "policyRule": {"coding": [{"system": ACT, "code": "OPTIN"}]},
    }
    for key, value in elements.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return data


def cbo_actor() -> dict[str, Any]:
    return {"reference": {"identifier": CBO}, "role": {"coding": [{"system": ROLE, "code": "IRCP"}]}}


@dataclass(frozen=True)
class Shape:
    """One LEAP-style consent: what the edge answers and what the consult then says."""

    consent: dict[str, Any]
    warnings: tuple[str, ...]
    decision: str
    redacted: tuple[dict[str, str], ...] = ()
    context: dict[str, Any] = field(default_factory=dict)


SHAPES: dict[str, Shape] = {
    "R5 / LEAP: the scope only in category, no scope (today: 422)": Shape(
        leap(scope=..., category=[{"coding": [PRIVACY]}], policyRule=..., provision={"type": "deny"}),
        ("Consent.scope",),
        "CONSENT_DENY",
    ),
    "scope in category beside LOINC Patient Consent (today: 422)": Shape(
        leap(scope=..., category=[LOINC_CONSENT, {"coding": [PRIVACY]}], provision={"type": "deny"}, policyRule=...),
        ("Consent.scope",),
        "CONSENT_DENY",
    ),
    "R4 scope without category: the category LEAP reads is filled in (today: 422)": Shape(
        leap(category=...), ("Consent.category",), "CONSENT_PERMIT",
    ),
    "LEAP: a nested provision whose code is one CodeableConcept (today: 422)": Shape(
        leap(provision={"provision": [{"code": {"coding": [ALCOHOL]}}]}),
        ("Consent.provision.provision[0].code",),
        "CONSENT_PERMIT",
        redacted=(ALCOHOL,),
    ),
    "LEAP: securityLabel, class and actor as single objects (today: 422)": Shape(
        leap(provision={"provision": [{"securityLabel": {"system": ACT, "code": "PSY"}}]}),
        ("Consent.provision.provision[0].securityLabel",),
        "CONSENT_PERMIT",
        redacted=({"system": ACT, "code": "PSY"},),
    ),
    "a nested deny for the asking CBO, actor and provision given as objects (today: 422)": Shape(
        leap(provision={"provision": {"actor": cbo_actor()}}),
        ("Consent.provision.provision", "Consent.provision.provision[0].actor"),
        "CONSENT_DENY",
    ),
    "a provision restricting a label and a class redacts both (today: the label was dropped)": Shape(
        leap(provision={"provision": [{"securityLabel": [{"system": ACT, "code": "HIV"}],
                                       "class": [{"system": TYPES, "code": "Observation"}]}]}),
        (),
        "CONSENT_PERMIT",
        redacted=({"system": ACT, "code": "HIV"}, {"system": TYPES, "code": "Observation"}),
    ),
    "a permit root listing several purposes, the request's among them": Shape(
        leap(policyRule=..., provision={"type": "permit", "purpose": [
            {"system": POU, "code": "TREAT"}, {"system": POU, "code": "CAREMGT"}, {"system": POU, "code": "HPAYMT"}]}),
        (),
        "CONSENT_PERMIT",
    ),
    "a permit root whose purposes come as one CodeableConcept (today: 422)": Shape(
        leap(policyRule=..., provision={"type": "permit", "purpose": {"coding": [
            {"system": POU, "code": "TREAT"}, {"system": POU, "code": "CAREMGT"}]}}),
        ("Consent.provision.purpose", "Consent.provision.purpose[0]"),
        "CONSENT_PERMIT",
    ),
    "a permit root for other purposes only does not apply": Shape(
        leap(policyRule=..., provision={"type": "permit", "purpose": [{"system": POU, "code": "TREAT"}]}),
        (),
        "NO_CONSENT",
    ),
    "R5: decision at the root and the root provision in an array (today: 422)": Shape(
        leap(policyRule=..., decision="deny", provision=[{"purpose": [{"system": POU, "code": "CAREMGT"}]}]),
        ("Consent.provision", "Consent.provision.type"),
        "CONSENT_DENY",
    ),
    "a revoked (inactive) opt-in is no consent, as in LEAP (today: CONSENT_DENY)": Shape(
        leap(status="inactive"), (), "NO_CONSENT",
    ),
    "a rejected opt-out is no consent": Shape(
        leap(status="rejected", policyRule={"coding": [{"system": ACT, "code": "OPTOUT"}]}), (), "NO_CONSENT",
    ),
    "a research consent is kept and ignored, even by a consult without category (today: 422)": Shape(
        leap(scope={"coding": [{"system": SCOPE, "code": "research"}]},
             policyRule={"coding": [{"system": ACT, "code": "OPTOUT"}]}),
        ("Consent.scope",),
        "NO_CONSENT",
        context={"category": ...},
    ),
}


@dataclass
class StoreConsults:
    """The consult's gather port over the edge's fake store: MRN-9 is ``hp-1``; consents as stored."""

    store: FakeResourceStore
    recorded: list[DecisionRecord] = field(default_factory=list)

    async def patients(self, identifiers: Sequence[str]) -> tuple[str, ...]:
        return (HUB_PATIENT,) if f"{MRN['system']}|{MRN['value']}" in identifiers else ()

    async def actor(self, names: Sequence[str]) -> ResolvedActor:
        return ResolvedActor(frozenset(names))

    async def consents(self, hub_patient_id: str) -> tuple[Consent, ...]:
        return tuple(
            consent_from_fhir(orjson.loads(versions[-1].content), patient=hub_patient_id)
            for (kind, _), versions in sorted(self.store.resources.items())
            if kind == "Consent"
        )

    async def consent_senders(self, consent_ids: Sequence[str]) -> dict[str, frozenset[str]]:
        stored = self.store.resources
        return {item: frozenset(v.sender for v in stored.get(("Consent", item), ())) for item in consent_ids}

    async def knows(self, partner_id: str, hub_patient_id: str) -> bool:
        return True

    async def record(self, record: DecisionRecord) -> None:
        self.recorded.append(record)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    store = FakeResourceStore()
    app = FastAPI()
    app.include_router(
        build_fhir_router(
            authenticator=make_authenticator(), ingress=FakeIngressWriter(), store=store, max_body_bytes=64 * 1024
        ),
        prefix="/fhir",
    )
    install_fhir_error_handlers(app)
    app.include_router(build_cds_router(authenticator=make_authenticator(), store=StoreConsults(store),
                                        max_body_bytes=64 * 1024))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub.test") as http:
        yield http


def consult_body(**changes: Any) -> bytes:
    context: dict[str, Any] = {
        "patientId": [MRN],
        "category": [PRIVACY],
        "purposeOfUse": "CAREMGT",
        "actor": [CBO],
    }
    for key, value in changes.items():
        if value is ...:
            del context[key]
        else:
            context[key] = value
    return orjson.dumps({"hook": "patient-consent-consult", "hookInstance": str(uuid.uuid4()), "context": context})


async def post(client: httpx.AsyncClient, data: dict[str, Any], **headers: str) -> httpx.Response:
    return await client.post("/fhir/Consent", content=orjson.dumps(data), headers={**auth(OPERATOR_TOKEN), **headers})


@pytest.mark.parametrize("name", list(SHAPES))
async def test_leap_style_consent_through_the_consent_api_and_the_cds_hooks_service(
    client: httpx.AsyncClient, name: str
) -> None:
    shape = SHAPES[name]
    created = await post(client, shape.consent)
    assert 201 == created.status_code, created.text
    assert created.headers["location"].startswith("/fhir/Consent/")
    body = created.json()
    if shape.warnings:
        assert "OperationOutcome" == body["resourceType"], body
        assert {"warning"} == {entry["severity"] for entry in body["issue"]}
        assert sorted(shape.warnings) == sorted(entry["expression"][0] for entry in body["issue"])
    else:
        assert "Consent" == body["resourceType"], body

    await consult(client, shape)


async def test_the_stored_consent_is_the_r4_form_and_reads_back_so(client: httpx.AsyncClient) -> None:
    """The warning answer keeps Location and ETag; a read returns the normalised R4 Consent."""
    created = await post(client, leap(scope=..., category=[{"coding": [PRIVACY]}]))
    assert (201, 'W/"1"') == (created.status_code, created.headers["etag"])
    read = await client.get(created.headers["location"], headers=auth(OPERATOR_TOKEN))
    assert 200 == read.status_code, read.text
    assert {"coding": [PRIVACY]} == read.json()["scope"]


@pytest.mark.parametrize(
    ("prefer", "expected"),
    [
        ("return=representation", "Consent"),
        ("return=OperationOutcome", "OperationOutcome"),
        ("return=minimal", None),
    ],
)
async def test_the_clients_return_preference_is_honoured(
    client: httpx.AsyncClient, prefer: str, expected: str | None
) -> None:
    created = await post(client, leap(category=...), Prefer=prefer)
    assert 201 == created.status_code, created.text
    assert created.headers["location"].startswith("/fhir/Consent/")
    if expected is None:
        assert b"" == created.content
    else:
        assert expected == created.json()["resourceType"]


async def test_an_r4_consent_asked_for_an_outcome_gets_an_informational_one(client: httpx.AsyncClient) -> None:
    created = await post(client, leap(), Prefer="return=OperationOutcome")
    [entry] = created.json()["issue"]
    assert ("information", "informational") == (entry["severity"], entry["code"])


async def test_an_update_that_needed_normalising_answers_200_with_the_warnings(client: httpx.AsyncClient) -> None:
    created = (await post(client, leap())).json()
    revised = leap(id=created["id"], scope=..., category=[{"coding": [PRIVACY]}], status="inactive")
    updated = await client.put(f"/fhir/Consent/{created['id']}", content=orjson.dumps(revised),
                               headers=auth(OPERATOR_TOKEN))
    assert 200 == updated.status_code, updated.text
    assert ["Consent.scope"] == [entry["expression"][0] for entry in updated.json()["issue"]]
    assert 'W/"2"' == updated.headers["etag"]


async def test_a_consent_without_any_scope_is_still_refused(client: httpx.AsyncClient) -> None:
    """Liberal, not lax: a LOINC Patient Consent category is no scope, so nothing says what kind of consent."""
    refused = await post(client, leap(scope=...))
    assert 422 == refused.status_code
    assert ["Consent.scope"] == [entry["expression"][0] for entry in refused.json()["issue"]]


async def test_the_warnings_never_quote_what_the_client_sent(client: httpx.AsyncClient) -> None:
    created = await post(client, leap(category=..., provision={"provision": [{"code": {"coding": [ALCOHOL]}}]}))
    assert "OperationOutcome" == created.json()["resourceType"]
    assert ALCOHOL["code"] not in created.text
    assert MRN["value"] not in created.text


# --- the same shapes inside transaction and batch Bundles ---------------------------------------------------


def bundle_of(kind: str, consent: dict[str, Any]) -> dict[str, Any]:
    """A ``kind`` Bundle: a Patient entry (never normalised), then the Consent entry."""
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.9", "value": "P-7"}]}
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {"resource": patient, "request": {"method": "POST", "url": "Patient"}},
            {"resource": consent, "request": {"method": "POST", "url": "Consent"}},
        ],
    }


async def post_bundle(client: httpx.AsyncClient, bundle: dict[str, Any]) -> httpx.Response:
    return await client.post("/fhir", content=orjson.dumps(bundle), headers=auth(OPERATOR_TOKEN))


def at_entry(expression: str, index: int = 1) -> str:
    """A ``Consent...`` FHIRPath as the Bundle names it: ``Bundle.entry[n].resource...``."""
    return f"Bundle.entry[{index}].resource{expression.removeprefix('Consent')}"


async def consult(client: httpx.AsyncClient, shape: Shape) -> None:
    """The consult of the CDS Hooks service decides (and redacts) as the shape says."""
    answer = await client.post(
        "/cds-services/patient-consent-consult", content=consult_body(**shape.context),
        headers=auth(OPERATOR_TOKEN, "application/json"),
    )
    assert 200 == answer.status_code, answer.text
    extension = answer.json()["cards"][0]["extension"]
    assert shape.decision == extension["decision"], extension["reason"]
    redact = [o for o in extension["obligations"] if o["id"]["code"] == "REDACT"]
    withheld = redact[0]["parameters"].get("codes", []) if redact else []
    for code in shape.redacted:
        assert code in withheld, withheld


@pytest.mark.parametrize("kind", ["transaction", "batch"])
@pytest.mark.parametrize("name", list(SHAPES))
async def test_leap_style_consent_in_a_bundle_is_normalised_with_the_warnings_in_its_entrys_outcome(
    client: httpx.AsyncClient, name: str, kind: str
) -> None:
    """Each LEAP shape inside a transaction and a batch: the entry is 201, its ``response.outcome`` names each
    normalisation at ``Bundle.entry[1].resource...`` (no outcome when nothing was read differently, none on the
    Patient entry), the stored Consent is valid R4, and the consult decides as through the Consent API."""
    shape = SHAPES[name]
    answered = await post_bundle(client, bundle_of(kind, shape.consent))
    assert 200 == answered.status_code, answered.text
    assert f"{kind}-response" == answered.json()["type"]
    patient_entry, consent_entry = answered.json()["entry"]
    assert ("201 Created", "201 Created") == (
        patient_entry["response"]["status"], consent_entry["response"]["status"]
    ), consent_entry
    assert "outcome" not in patient_entry["response"]
    if shape.warnings:
        issues = consent_entry["response"]["outcome"]["issue"]
        assert "OperationOutcome" == consent_entry["response"]["outcome"]["resourceType"]
        assert {("warning", "informational")} == {(entry["severity"], entry["code"]) for entry in issues}
        assert sorted(at_entry(w) for w in shape.warnings) == sorted(entry["expression"][0] for entry in issues)
    else:
        assert "outcome" not in consent_entry["response"], consent_entry
    stored = await client.get(f"/fhir/{consent_entry['response']['location']}", headers=auth(OPERATOR_TOKEN))
    assert 200 == stored.status_code, stored.text
    Consent_R4.model_validate({k: v for k, v in stored.json().items() if k != "meta"})
    await consult(client, shape)


async def test_a_transaction_with_a_consent_without_any_scope_is_refused_and_writes_nothing(
    client: httpx.AsyncClient,
) -> None:
    """Liberal, not lax, in a transaction too: the unusable Consent is named at its entry, the Patient not written."""
    bundle = bundle_of("transaction", leap(scope=...))
    patient = {**bundle["entry"][0]["resource"], "id": "op.p-7"}
    bundle["entry"][0] = {"resource": patient, "request": {"method": "PUT", "url": "Patient/op.p-7"}}
    refused = await post_bundle(client, bundle)
    assert 422 == refused.status_code, refused.text
    assert [at_entry("Consent.scope")] == [entry["expression"][0] for entry in refused.json()["issue"]]
    assert 404 == (await client.get("/fhir/Patient/op.p-7", headers=auth(OPERATOR_TOKEN))).status_code


async def test_a_batch_normalises_one_consent_and_refuses_another_each_in_its_own_entry(
    client: httpx.AsyncClient,
) -> None:
    bundle = bundle_of("batch", leap(scope=..., category=[{"coding": [PRIVACY]}]))
    bundle["entry"][0] = {"resource": leap(scope=...), "request": {"method": "POST", "url": "Consent"}}
    refused, accepted = (await post_bundle(client, bundle)).json()["entry"]
    assert "422 Unprocessable Entity" == refused["response"]["status"]
    assert [at_entry("Consent.scope", 0)] == [e["expression"][0] for e in refused["response"]["outcome"]["issue"]]
    assert {"error"} == {e["severity"] for e in refused["response"]["outcome"]["issue"]}
    assert "201 Created" == accepted["response"]["status"]
    assert [at_entry("Consent.scope")] == [e["expression"][0] for e in accepted["response"]["outcome"]["issue"]]


async def test_a_put_entry_normalises_too_and_its_warnings_never_quote_what_was_sent(
    client: httpx.AsyncClient,
) -> None:
    consent = leap(id="op-consent-1", category=..., provision={"provision": [{"code": {"coding": [ALCOHOL]}}]})
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": consent, "request": {"method": "PUT", "url": "Consent/op-consent-1"}}]}
    answered = await post_bundle(client, bundle)
    assert 200 == answered.status_code, answered.text
    [entry] = answered.json()["entry"]
    assert "201 Created" == entry["response"]["status"]
    assert sorted(at_entry(w, 0) for w in ("Consent.category", "Consent.provision.provision[0].code")) == sorted(
        issue["expression"][0] for issue in entry["response"]["outcome"]["issue"]
    )
    assert ALCOHOL["code"] not in answered.text
    assert MRN["value"] not in answered.text
    stored = (await client.get("/fhir/Consent/op-consent-1", headers=auth(OPERATOR_TOKEN))).json()
    assert [{"coding": [ALCOHOL]}] == stored["provision"]["provision"][0]["code"]


async def test_the_capability_statement_tells_a_consent_writer_what_the_api_does_with_these_shapes(
    client: httpx.AsyncClient,
) -> None:
    """The Consent documentation names the normalisation and its warnings (Consent API and Bundle entries),
    that research/treatment/adr consents are stored and ignored, and refuses with 422 only what is still
    unusable after normalisation."""
    statement = (await client.get("/fhir/metadata")).json()
    [consent] = [r for r in statement["rest"][0]["resource"] if r["type"] == "Consent"]
    documentation = consent["documentation"]
    for fact in (
        "normalised to R4", "warning OperationOutcome", "response.outcome", "research, treatment, adr",
        "ignored for privacy decisions", "still cannot use after normalisation", "422",
    ):
        assert fact in documentation, fact
