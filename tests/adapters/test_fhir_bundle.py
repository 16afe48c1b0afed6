"""transaction and batch Bundles at the FHIR base: a Gravity referral arrives as Patient + ServiceRequest + Task.

Semantics first (references resolved, all or nothing, idempotent, per-entry batch answers), then a
table of broken Bundles (each with its status, issue code and ``Bundle.entry[n]...`` path, nothing
written) and a property test over thousands of mutated Bundles.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.control.resources import StoredVersion
from hub.events import decode
from tests.adapters import fhir_samples as samples
from tests.adapters.conftest import CBO_TOKEN, FHIR_JSON, HOSPITAL_B_TOKEN, Edge, auth
from tests.adapters.fuzzing import ReusableEdge, assert_operation_outcome, mutations
from tests.adapters.resource_fakes import FakeResourceStore

PATIENT_URL, REFERRAL_URL, TASK_URL = (e["fullUrl"] for e in samples.referral_transaction()["entry"])


async def post_bundle(edge: Edge, bundle: dict[str, Any], token: str = "hospital-a-token") -> Any:
    """POST the Bundle to the FHIR base."""
    return await edge.client.post("/fhir", content=orjson.dumps(bundle), headers=auth(token))


def locations(response: Any) -> list[str]:
    """The ``Type/id`` of every entry of a response Bundle."""
    return [e["response"]["location"].split("/_history/")[0] for e in response.json()["entry"]]


async def test_a_gravity_referral_transaction_is_created_with_its_references_resolved(edge: Edge) -> None:
    response = await post_bundle(edge, samples.referral_transaction())
    assert 200 == response.status_code, response.text
    answer = response.json()
    Bundle.model_validate(answer)
    assert "transaction-response" == answer["type"]
    assert ["201 Created"] * 3 == [e["response"]["status"] for e in answer["entry"]]
    patient, referral, task = locations(response)
    assert ("Patient", "ServiceRequest", "Task") == tuple(loc.split("/")[0] for loc in (patient, referral, task))

    stored_referral = (await edge.client.get(f"/fhir/{referral}", headers=auth())).json()
    stored_task = (await edge.client.get(f"/fhir/{task}", headers=auth())).json()
    assert {"reference": patient} == stored_referral["subject"]
    assert ({"reference": referral}, {"reference": patient}) == (stored_task["focus"], stored_task["for"])

    events = [decode(value) for _, value, _ in edge.ingress.written]
    assert [("ServiceRequest", "referral"), ("Task", "referral-task")] == [
        (e.facts.resource_type, e.facts.event_kind) for e in events
    ]
    mrn = f"{samples.MRN_SYSTEM}|MRN-1"
    assert [mrn, mrn] == [e.facts.patient_source for e in events]
    assert (referral,) == events[1].facts.focus
    assert {"reference": patient} == orjson.loads(events[0].body)["subject"]
    assert [(f"urn:carehub:partner:hosp-a:{patient}", mrn)] == edge.store.linked


async def test_resending_the_same_transaction_writes_nothing_new_and_answers_the_same(edge: Edge) -> None:
    first = await post_bundle(edge, samples.referral_transaction())
    again = await post_bundle(edge, samples.referral_transaction())
    assert locations(first) == locations(again)
    assert 2 == len(edge.ingress.written)
    assert 3 == len(edge.store.all_versions())


async def test_the_referral_event_precedes_its_task_whatever_the_entry_order(edge: Edge) -> None:
    bundle = samples.referral_transaction()
    bundle["entry"].reverse()
    response = await post_bundle(edge, bundle)
    assert ["Task", "ServiceRequest", "Patient"] == [loc.split("/")[0] for loc in locations(response)]
    assert ["ServiceRequest", "Task"] == [decode(v).facts.resource_type for _, v, _ in edge.ingress.written]


async def test_if_none_exist_reuses_the_known_patient_and_points_references_at_it(edge: Edge) -> None:
    known = await edge.client.post("/fhir/Patient", content=samples.dumps(samples.patient()), headers=auth())
    bundle = samples.referral_transaction()
    bundle["entry"][0]["request"]["ifNoneExist"] = f"identifier={samples.MRN_SYSTEM}|MRN-1"
    response = await post_bundle(edge, bundle)
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert ["200 OK", "201 Created", "201 Created"] == statuses
    patient = f"Patient/{known.json()['id']}"
    assert patient == locations(response)[0]
    referral = (await edge.client.get(f"/fhir/{locations(response)[1]}", headers=auth())).json()
    assert {"reference": patient} == referral["subject"]


async def test_put_and_get_entries_update_and_read_in_the_same_transaction(edge: Edge) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "GET", "url": "Task/hosp-a.task-1"}},
            {"resource": samples.task(), "request": {"method": "PUT", "url": "Task/hosp-a.task-1"}},
        ],
    }
    response = await post_bundle(edge, bundle)
    first, second = response.json()["entry"]
    assert ("200 OK", "201 Created") == (first["response"]["status"], second["response"]["status"])
    assert ("hosp-a.task-1", "1") == (first["resource"]["id"], first["resource"]["meta"]["versionId"])


async def test_absolute_restful_full_urls_resolve_their_relative_references(edge: Edge) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "http://ehr.example/fhir/Patient/77", "resource": samples.patient(id="77"),
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": samples.task(**{"for": {"reference": "Patient/77"}}),
             "request": {"method": "PUT", "url": "Task/hosp-a.task-1"}},
        ],
    }
    response = await post_bundle(edge, bundle)
    assert 200 == response.status_code, response.text
    task = (await edge.client.get("/fhir/Task/hosp-a.task-1", headers=auth())).json()
    assert {"reference": locations(response)[0]} == task["for"]


async def test_a_transaction_with_one_bad_entry_writes_nothing(edge: Edge) -> None:
    bundle = samples.referral_transaction()
    bundle["entry"][2]["resource"]["status"] = "bogus"
    bundle["entry"][1]["resource"]["intent"] = 12
    response = await post_bundle(edge, bundle)
    assert 422 == response.status_code
    assert [
        ("structure", ["Bundle.entry[1].resource.intent"]),
        ("code-invalid", ["Bundle.entry[2].resource.status"]),
    ] == [(i["code"], i["expression"]) for i in response.json()["issue"]]
    assert [] == edge.ingress.written
    assert [] == edge.store.all_versions()


async def test_a_transaction_that_may_not_touch_one_resource_writes_nothing(edge: Edge) -> None:
    """Hospital B's Task is invisible to A: A's PUT of its id is refused as for any id outside A's space."""
    others = samples.task(id="hosp-b.task-1")
    await edge.client.put("/fhir/Task/hosp-b.task-1", content=samples.dumps(others), headers=auth(HOSPITAL_B_TOKEN))
    bundle = samples.referral_transaction()
    bundle["entry"][2] = {"resource": others, "request": {"method": "PUT", "url": "Task/hosp-b.task-1"}}
    response = await post_bundle(edge, bundle)
    assert (405, "not-supported", ["Bundle.entry[2].resource.id"]) == (
        response.status_code, response.json()["issue"][0]["code"], response.json()["issue"][0]["expression"]
    )
    assert 1 == len(edge.ingress.written)
    assert 1 == len(edge.store.all_versions())


async def test_a_transaction_whose_get_entry_finds_nothing_writes_nothing(edge: Edge) -> None:
    """GET entries are answered after the writes (FHIR's order), but one that cannot be answered is known
    before anything is written: all or nothing holds for reads too (it used to store the referral, then 404)."""
    bundle = samples.referral_transaction()
    bundle["entry"].append({"request": {"method": "GET", "url": "Patient/nobody"}})
    response = await post_bundle(edge, bundle)
    assert (404, "not-found", ["Bundle.entry[3]"]) == (
        response.status_code, response.json()["issue"][0]["code"], response.json()["issue"][0]["expression"]
    )
    assert ([], []) == (edge.ingress.written, edge.store.all_versions())


async def test_a_transaction_may_not_vread_the_version_it_writes_and_then_writes_nothing(edge: Edge) -> None:
    """A vread entry of a resource the transaction writes must name a version that exists before it (the new
    one is read with ``Type/id``); one that does not is refused before anything is written."""
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": samples.task(), "request": {"method": "PUT", "url": "Task/hosp-a.task-1"}},
            {"request": {"method": "GET", "url": "Task/hosp-a.task-1/_history/1"}},
        ],
    }
    response = await post_bundle(edge, bundle)
    assert (422, "not-supported", ["Bundle.entry[1].request.url"]) == (
        response.status_code, response.json()["issue"][0]["code"], response.json()["issue"][0]["expression"]
    )
    assert ([], []) == (edge.ingress.written, edge.store.all_versions())
    await post_bundle(edge, {**bundle, "entry": bundle["entry"][:1]})
    bundle["entry"][0]["resource"] = samples.task(status="accepted")
    response = await post_bundle(edge, bundle)
    assert 200 == response.status_code, response.text
    written, read = response.json()["entry"]
    assert ("200 OK", "1") == (written["response"]["status"], read["resource"]["meta"]["versionId"])


async def test_a_batch_vread_entry_reads_that_version(edge: Edge) -> None:
    """``GET Type/id/_history/vid`` entries are served (their ``_history`` segment used to fail the id check)."""
    await edge.client.put("/fhir/Task/hosp-a.task-1", content=samples.dumps(samples.task()), headers=auth())
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Task/hosp-a.task-1/_history/1"}},
        {"request": {"method": "GET", "url": "Task/hosp-a.task-1/_history/²"}},
    ]}
    read, refused = (await post_bundle(edge, bundle)).json()["entry"]
    assert ("200 OK", "1") == (read["response"]["status"], read["resource"]["meta"]["versionId"])
    assert "422 Unprocessable Entity" == refused["response"]["status"]


async def test_a_broker_failure_midway_is_503_stores_nothing_and_the_retry_keeps_the_event_ids(edge: Edge) -> None:
    original = edge.ingress.write
    calls = 0

    async def second_write_fails(*, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            edge.ingress.fail = True
        try:
            await original(key=key, value=value, headers=headers)
        finally:
            edge.ingress.fail = False

    edge.ingress.write = second_write_fails  # type: ignore[method-assign]
    failed = await post_bundle(edge, samples.referral_transaction())
    assert (503, []) == (failed.status_code, edge.store.all_versions())
    retried = await post_bundle(edge, samples.referral_transaction())
    assert 200 == retried.status_code
    ids = [headers["ce_id"] for _, _, headers in edge.ingress.written]
    assert 3 == len(ids)
    assert ids[0] == ids[1]


async def test_a_batch_answers_each_entry_on_its_own(edge: Edge) -> None:
    """Entries are independent: a bad one fails alone, and batch entries cannot refer to each other."""
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": samples.patient(), "request": {"method": "POST", "url": "Patient"}},
            {"resource": samples.task(status="bogus"), "request": {"method": "PUT", "url": "Task/hosp-a.task-1"}},
            {"resource": samples.task(id="task-2", **{"for": {"reference": "urn:uuid:nobody"}}),
             "request": {"method": "PUT", "url": "Task/task-2"}},
            {"resource": samples.encounter(), "request": {"method": "PUT", "url": "Encounter/hosp-a.enc-1"}},
            {"request": {"method": "GET", "url": "Task/nothing"}},
        ],
    }
    response = await post_bundle(edge, bundle)
    assert 200 == response.status_code
    entries = response.json()["entry"]
    assert ["201 Created", "422 Unprocessable Entity", "422 Unprocessable Entity", "201 Created", "404 Not Found"] == [
        e["response"]["status"] for e in entries
    ]
    assert ["Bundle.entry[1].resource.status"] == entries[1]["response"]["outcome"]["issue"][0]["expression"]
    assert ["Bundle.entry[2].resource.for.reference"] == entries[2]["response"]["outcome"]["issue"][0]["expression"]
    assert "batch-response" == response.json()["type"]
    assert ["Encounter"] == [decode(v).facts.resource_type for _, v, _ in edge.ingress.written]


# --- broken Bundles ----------------------------------------------------------------------------------


def bundle_with(change: Any) -> bytes:
    """The referral transaction after ``change(bundle)`` mutated it."""
    bundle = samples.referral_transaction()
    change(bundle)
    return orjson.dumps(bundle)


def entry(n: int, **changes: Any) -> Any:
    """A change that updates entry ``n`` (``...`` deletes a key)."""

    def apply(bundle: dict[str, Any]) -> None:
        for key, value in changes.items():
            if value is ...:
                del bundle["entry"][n][key]
            else:
                bundle["entry"][n][key] = value

    return apply


def resource(n: int, **changes: Any) -> Any:
    """A change that updates the resource of entry ``n`` (``...`` deletes a key)."""

    def apply(bundle: dict[str, Any]) -> None:
        for key, value in changes.items():
            if value is ...:
                del bundle["entry"][n]["resource"][key]
            else:
                bundle["entry"][n]["resource"][key] = value

    return apply


def top(**changes: Any) -> Any:
    """A change of the Bundle itself (``...`` deletes a key)."""

    def apply(bundle: dict[str, Any]) -> None:
        for key, value in changes.items():
            if value is ...:
                del bundle[key]
            else:
                bundle[key] = value

    return apply


GOOD = orjson.dumps(samples.referral_transaction())


@dataclass
class Broken:
    """One broken Bundle request and the exact answer it must get."""

    status: int
    code: str
    expression: str | None = None
    body: bytes = GOOD
    headers: dict[str, str] = field(default_factory=auth)
    broker_down: bool = False
    seed_foreign_task: bool = False


def p(case: Broken, name: str) -> Any:
    """A named table row."""
    return pytest.param(case, id=name)


E0, E1, E2 = "Bundle.entry[0]", "Bundle.entry[1]", "Bundle.entry[2]"
BROKEN: list[Any] = [
    p(Broken(401, "login", headers={"Content-Type": FHIR_JSON}), "no-token"),
    p(Broken(401, "unknown", headers=auth("nope")), "unknown-token"),
    p(Broken(403, "forbidden", E0, headers=auth(CBO_TOKEN),
             body=bundle_with(lambda b: b["entry"][0]["request"].update(ifNoneExist="identifier=x"))),
      "cbo-conditional-create"),
    p(Broken(415, "not-supported", headers=auth(content_type="application/xml")), "xml"),
    p(Broken(415, "not-supported", headers=auth(content_type="application/fhir+json; fhirVersion=3.0")), "stu3"),
    p(Broken(413, "too-long", body=bundle_with(resource(0, text={"status": "generated", "div": "x" * 70_000}))),
      "huge"),
    p(Broken(400, "structure", body=b""), "empty"),
    p(Broken(400, "structure", body=GOOD[: len(GOOD) // 2]), "truncated"),
    p(Broken(400, "structure", body=GOOD.replace(b"Doe", b"D\xf6e")), "bad-utf8"),
    p(Broken(400, "structure", body=b"[" + GOOD + b"]"), "array"),
    p(Broken(400, "structure", body=GOOD.replace(b'"type":"transaction"', b'"type":"transaction","type":"batch"')),
      "duplicate-key"),
    p(Broken(400, "too-costly", body=bundle_with(resource(0, extension=[{"url": "x", "valueString": "y"}])).replace(
        b'"valueString":"y"', b'"valueString":' + b"[" * 70 + b"]" * 70)), "deeply-nested"),
    p(Broken(422, "invalid", "resourceType", body=samples.dumps(samples.patient())), "patient-at-base"),
    p(Broken(422, "invalid", "resourceType", body=bundle_with(top(resourceType=...))), "no-resourceType"),
    p(Broken(422, "not-supported", "Bundle.type", body=bundle_with(top(type="message"))), "message-at-base"),
    p(Broken(422, "not-supported", "Bundle.type", body=bundle_with(top(type="collection"))), "collection"),
    p(Broken(422, "code-invalid", "Bundle.type", body=bundle_with(top(type="transactions"))), "type-typo"),
    p(Broken(422, "required", "Bundle.type", body=bundle_with(top(type=...))), "no-type"),
    p(Broken(422, "structure", "Bundle.entry",
             body=bundle_with(top(entry={"request": {"method": "GET", "url": "Task/t"}}))), "entry-not-array"),
    p(Broken(422, "structure", E0, body=bundle_with(top(entry=["Patient"]))), "entry-string"),
    p(Broken(422, "too-costly", "Bundle.entry",
             body=bundle_with(top(entry=[{"request": {"method": "GET", "url": "Task/t"}}] * 101))), "too-many-entries"),
    p(Broken(422, "required", f"{E0}.request", body=bundle_with(entry(0, request=...))), "no-request"),
    p(Broken(422, "not-supported", f"{E0}.request.method",
             body=bundle_with(entry(0, request={"method": "DELETE", "url": "Patient/1"}))), "delete"),
    p(Broken(422, "code-invalid", f"{E0}.request.method",
             body=bundle_with(entry(0, request={"method": "FETCH", "url": "Patient"}))), "method-typo"),
    p(Broken(422, "not-supported", f"{E0}.request.url",
             body=bundle_with(entry(0, request={"method": "POST", "url": "Patient?name=x"}))), "conditional-url"),
    p(Broken(422, "not-supported", f"{E0}.request.url",
             body=bundle_with(entry(0, request={"method": "POST", "url": "Condition"}))), "unsupported-type"),
    p(Broken(422, "invalid", f"{E0}.request.url",
             body=bundle_with(entry(0, request={"method": "POST", "url": "Patient/1"}))), "post-with-id"),
    p(Broken(422, "invalid", f"{E2}.request.url",
             body=bundle_with(entry(2, request={"method": "PUT", "url": "Task"}))), "put-without-id"),
    p(Broken(422, "invalid", f"{E2}.resource.id",
             body=bundle_with(entry(2, request={"method": "PUT", "url": "Task/other"}))), "put-id-mismatch"),
    p(Broken(422, "required", f"{E0}.resource", body=bundle_with(entry(0, resource=...))), "post-without-resource"),
    p(Broken(422, "invalid", f"{E0}.resource.resourceType",
             body=bundle_with(entry(0, request={"method": "POST", "url": "Practitioner"}))), "type-differs-from-url"),
    p(Broken(422, "code-invalid", f"{E2}.resource.status", body=bundle_with(resource(2, status="bogus"))),
      "task-bad-status"),
    p(Broken(422, "required", f"{E1}.resource.intent", body=bundle_with(resource(1, intent=...))), "no-intent"),
    p(Broken(422, "structure", f"{E0}.resource.nmae", body=bundle_with(resource(0, nmae="x"))), "unknown-element"),
    p(Broken(422, "invalid", f"{E1}.resource.subject.reference",
             body=bundle_with(resource(1, subject={"reference": "urn:uuid:00000000-0000-4000-8000-00000000dead"}))),
      "dangling-urn-uuid"),
    p(Broken(422, "invalid", f"{E1}.fullUrl", body=bundle_with(entry(1, fullUrl=PATIENT_URL))), "duplicate-fullUrl"),
    p(Broken(422, "invalid", f"{E1}.fullUrl",
             body=bundle_with(lambda b: b["entry"].__setitem__(1, copy.deepcopy(b["entry"][0])))),
      "same-resource-twice"),
    p(Broken(422, "not-supported", f"{E2}.request.ifNoneExist",
             body=bundle_with(entry(2, request={"method": "PUT", "url": "Task/t", "ifNoneExist": "identifier=x"}))),
      "if-none-exist-on-put"),
    p(Broken(400, "not-supported", f"{E0}.request.ifNoneExist",
             body=bundle_with(lambda b: b["entry"][0]["request"].update(ifNoneExist="name=Doe"))),
      "if-none-exist-by-name"),
    p(Broken(422, "business-rule", f"{E1}.resource.subject.reference",
             body=bundle_with(resource(1, subject={"reference": "Group/1"}))), "referral-about-a-group"),
    p(Broken(409, "conflict", f"{E2}.resource.id", seed_foreign_task=True,
             body=bundle_with(entry(2, resource=samples.task(),
                                    request={"method": "PUT", "url": "Task/hosp-a.task-1"}))),
      "foreign-id"),
    p(Broken(404, "not-found", E0, body=bundle_with(top(entry=[{"request": {"method": "GET", "url": "Task/none"}}]))),
      "get-unknown"),
    p(Broken(503, "transient", broker_down=True), "broker-down"),
]


@pytest.fixture(scope="module")
def shared() -> ReusableEdge:
    """One app for the module."""
    return ReusableEdge(max_body_bytes=64 * 1024)


def _foreign_task_store() -> FakeResourceStore:
    """A store where hospital B already holds Task/hosp-a.task-1."""
    seed = FakeResourceStore()
    seed.resources[("Task", "hosp-a.task-1")] = [
        StoredVersion(
            resource_type="Task", resource_id="hosp-a.task-1", version_id=1,
            last_updated=datetime(2025, 1, 1, tzinfo=UTC),
            sender="hosp-b", content=orjson.dumps(samples.task()).decode(), content_hash="x", event_id="e-b",
        )
    ]
    return seed


@pytest.mark.parametrize("case", BROKEN)
async def test_each_broken_bundle_gets_its_precise_outcome_and_writes_nothing(
    shared: ReusableEdge, case: Broken
) -> None:
    seed = _foreign_task_store() if case.seed_foreign_task else None
    shared.reset(seed=seed)
    shared.ingress.fail = case.broker_down
    async with shared.client() as client:
        response = await client.post("/fhir", content=case.body, headers=case.headers)
    assert case.status == response.status_code, response.text
    assert_operation_outcome(response)
    first = response.json()["issue"][0]
    assert (case.code, [case.expression] if case.expression else None) == (first["code"], first.get("expression"))
    assert shared.wrote_nothing(seed)


def test_the_table_is_broad() -> None:
    assert len(BROKEN) >= 30


# --- property: thousands of mutated Bundles -------------------------------------------------------

bundles = st.one_of(
    mutations(samples.referral_transaction()).map(lambda body: ("transaction", body)),
    mutations(samples.referral_transaction("batch")).map(lambda body: ("batch", body)),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=bundles)
async def test_mutated_bundles_never_cause_a_5xx_and_a_refused_transaction_writes_nothing(
    shared: ReusableEdge, case: tuple[str, bytes]
) -> None:
    kind, body = case
    shared.reset()
    async with shared.client() as client:
        response = await client.post("/fhir", content=body, headers=auth())
        assert response.status_code < 500, response.text
        if response.status_code != 200:
            assert_operation_outcome(response)
            assert shared.wrote_nothing()
            return
        answer = response.json()
        Bundle.model_validate(answer)
        statuses = [int(e["response"]["status"].split()[0]) for e in answer["entry"]]
        assert all(status < 500 for status in statuses)
        if answer["type"] == "transaction-response":
            assert all(status in {200, 201} for status in statuses)
        for item in answer["entry"]:
            if "location" in item["response"]:
                read = await client.get("/fhir/" + item["response"]["location"].split("/_history/")[0], headers=auth())
                assert 200 == read.status_code
    assert kind in {"transaction", "batch"}
