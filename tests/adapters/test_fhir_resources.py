"""FHIR REST breadth: create, update-as-create, read and vread of the six types, with their rules.

Unit level: the router over the in-memory ingress writer and resource store. What is pinned here:
statuses and headers per FHIR, which types become events (and their facts), broker before store,
idempotent retries, conditional create, who may read and change what.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from hub.events import decode, event_id
from tests.adapters import fhir_samples as samples
from tests.adapters.conftest import (
    CBO_TOKEN,
    FHIR_JSON,
    HOSPITAL_B_TOKEN,
    OPERATOR_TOKEN,
    Edge,
    auth,
    created_id,
    valid_body,
    valid_service_request,
)

CREATABLE: list[Any] = [
    pytest.param("ServiceRequest", valid_service_request(), True, id="ServiceRequest"),
    pytest.param("Task", samples.task(), True, id="Task"),
    pytest.param("Encounter", samples.encounter(), True, id="Encounter"),
    pytest.param("Patient", samples.patient(), False, id="Patient"),
    pytest.param("Organization", samples.organization(), False, id="Organization"),
    pytest.param("Practitioner", samples.practitioner(), False, id="Practitioner"),
]


async def put(edge: Edge, data: dict[str, Any], token: str = "hospital-a-token", **headers: str) -> Any:
    """PUT ``data`` to its own type and id."""
    return await edge.client.put(
        f"/fhir/{data['resourceType']}/{data['id']}", content=orjson.dumps(data), headers={**auth(token), **headers}
    )


def kinds(edge: Edge) -> list[tuple[str, str | None]]:
    """(resource type, event kind) of every event written so far."""
    return [(e.facts.resource_type, e.facts.event_kind) for e in (decode(v) for _, v, _ in edge.ingress.written)]


# --- create and read ----------------------------------------------------------------------------


@pytest.mark.parametrize(("resource_type", "data", "routed"), CREATABLE)
async def test_each_type_is_created_stored_and_read_back(
    edge: Edge, resource_type: str, data: dict[str, Any], routed: bool
) -> None:
    """201 with Location/ETag; a read right after finds the same resource; only routed types make events."""
    posted = orjson.dumps(data)
    created = await edge.client.post(f"/fhir/{resource_type}", content=posted, headers=auth())
    assert 201 == created.status_code, created.text
    new_id = created_id("hosp-a", resource_type, posted)
    assert f"/fhir/{resource_type}/{new_id}/_history/1" == created.headers["location"]

    read = await edge.client.get(f"/fhir/{resource_type}/{new_id}", headers=auth())
    assert 200 == read.status_code
    assert (FHIR_JSON, 'W/"1"') == (read.headers["content-type"], read.headers["etag"])
    assert created.json() == read.json()
    assert {**data, "id": new_id, "meta": read.json()["meta"]} == read.json()
    assert {**data.get("meta", {}), "versionId": "1"} == {
        k: v for k, v in read.json()["meta"].items() if k != "lastUpdated"
    }
    assert (1 if routed else 0) == len(edge.ingress.written)
    if routed:
        _, value, headers = edge.ingress.written[0]
        action = "admit" if resource_type == "Encounter" else "submitted"
        assert (new_id, f"org.carehub.{resource_type.lower()}.{action}") == (headers["ce_id"], headers["ce_type"])
        assert (resource_type, new_id) == (decode(value).facts.resource_type, decode(value).facts.resource_id)
        assert posted == decode(value).body.encode()


async def test_a_patient_links_its_identifiers_and_reference_in_the_crosswalk_but_not_its_ssn(edge: Edge) -> None:
    """Later events naming the patient by MRN or by Patient/<id> resolve to the same hub patient."""
    created = await edge.client.post("/fhir/Patient", content=orjson.dumps(samples.patient()), headers=auth())
    new_id = created.json()["id"]
    assert [(f"urn:carehub:partner:hosp-a:Patient/{new_id}", f"{samples.MRN_SYSTEM}|MRN-1")] == edge.store.linked


async def test_a_patient_put_by_the_operator_of_a_hospitals_patient_keeps_the_hospitals_namespace(
    edge: Edge,
) -> None:
    """Relative references mean what the creator meant: the operator's update links the hospital's name."""
    await put(edge, samples.patient(id="hosp-a.p1"))
    await put(edge, samples.patient(id="hosp-a.p1", birthDate="1970-01-02"), OPERATOR_TOKEN)
    assert 2 == len(edge.store.linked)
    assert {"urn:carehub:partner:hosp-a:Patient/hosp-a.p1"} == {group[0] for group in edge.store.linked}


async def test_task_facts_name_owner_focus_status_and_a_referral_task(edge: Edge) -> None:
    """owner -> performers, focus, status, intent; the first version is a referral-task."""
    response = await put(edge, samples.task())
    assert 201 == response.status_code, response.text
    facts = decode(edge.ingress.written[0][1]).facts
    assert (
        ("Organization/food-bank",), ("ServiceRequest/sr-1",), "requested", "order", "referral-task",
        "urn:carehub:partner:hosp-a:Patient/123", "Organization/hosp-a",
    ) == (
        facts.performers, facts.focus, facts.status, facts.intent, facts.event_kind, facts.patient_source,
        facts.requester,
    )


async def test_a_task_whose_focus_is_not_a_referral_is_a_plain_task(edge: Edge) -> None:
    await put(edge, samples.task(focus={"reference": "MedicationRequest/m1"}))
    assert [("Task", "task")] == kinds(edge)


async def test_a_task_without_for_takes_the_patient_of_the_referral_its_sender_sent(edge: Edge) -> None:
    """Gravity Tasks carry ``for``; a Task that omits it is keyed by its ServiceRequest's patient."""
    referral = await edge.client.post("/fhir/ServiceRequest", content=valid_body(), headers=auth())
    focus = {"reference": f"ServiceRequest/{referral.json()['id']}"}
    await put(edge, {k: v for k, v in samples.task(focus=focus).items() if k != "for"})
    other = {k: v for k, v in samples.task(id="hosp-b.t-b", focus=focus).items() if k != "for"}
    await put(edge, other, HOSPITAL_B_TOKEN)
    sources = [decode(v).facts.patient_source for _, v, _ in edge.ingress.written]
    assert "urn:carehub:partner:hosp-a:Patient/123" == sources[0] == sources[1]
    assert "urn:carehub:partner:hosp-b:unidentified|hosp-b.t-b" == sources[2]


async def test_encounter_versions_say_admit_transfer_discharge_then_update(edge: Edge) -> None:
    """The event kind follows the status (and the locations while in progress) from version to version."""
    admitted = samples.encounter()
    moved = samples.encounter(location=[{"location": {"reference": "Location/ward-2"}, "status": "active"}])
    discharged = {**moved, "status": "finished", "period": {"start": "2025-01-15T10:00:00Z", "end": "2025-01-20"}}
    corrected = {**discharged, "type": [{"text": "inpatient stay"}]}
    for version in (admitted, moved, discharged, corrected):
        response = await put(edge, version)
        assert response.status_code in {200, 201}, response.text
    assert [
        ("Encounter", "admit"), ("Encounter", "transfer"), ("Encounter", "discharge"), ("Encounter", "encounter-update")
    ] == kinds(edge)
    assert f"{samples.ACT_CODE}|IMP" == decode(edge.ingress.written[0][1]).facts.encounter_class


# --- idempotency and versions -------------------------------------------------------------------


async def test_put_creates_then_updates_and_identical_content_is_a_no_op(edge: Edge) -> None:
    """201 then 200 with a new version; the same content again (even reformatted) is 200, no event."""
    first = await put(edge, samples.task())
    second = await put(edge, samples.task(status="received"))
    again = await edge.client.put(
        "/fhir/Task/hosp-a.task-1", content=orjson.dumps(samples.task(status="received"), option=orjson.OPT_INDENT_2),
        headers=auth(),
    )
    assert (201, 200, 200) == (first.status_code, second.status_code, again.status_code)
    assert ('W/"1"', 'W/"2"', 'W/"2"') == tuple(r.headers["etag"] for r in (first, second, again))
    assert "/fhir/Task/hosp-a.task-1/_history/2" == second.headers["location"]
    assert 2 == len(edge.ingress.written)
    assert [("Task", "referral-task"), ("Task", "task-update")] == kinds(edge)
    ids = [h["ce_id"] for _, _, h in edge.ingress.written]
    assert event_id("hosp-a", "Task/hosp-a.task-1/_history/2", orjson.dumps(samples.task(status="received"))) == ids[1]


async def test_going_back_to_an_earlier_content_is_a_new_version_with_a_new_event(edge: Edge) -> None:
    """A -> B -> A: the third PUT is a change (version 3), and its ce_id differs from the first's."""
    for status in ("requested", "received", "requested"):
        await put(edge, samples.task(status=status))
    ids = [h["ce_id"] for _, _, h in edge.ingress.written]
    assert 3 == len(set(ids))
    assert 3 == len(edge.store.resources[("Task", "hosp-a.task-1")])


async def test_vread_returns_each_version(edge: Edge) -> None:
    await put(edge, samples.task())
    await put(edge, samples.task(status="received"))
    first = await edge.client.get("/fhir/Task/hosp-a.task-1/_history/1", headers=auth())
    second = await edge.client.get("/fhir/Task/hosp-a.task-1/_history/2", headers=auth())
    missing = await edge.client.get("/fhir/Task/hosp-a.task-1/_history/3", headers=auth())
    assert ("requested", "received") == (first.json()["status"], second.json()["status"])
    assert ("1", "2") == (first.json()["meta"]["versionId"], second.json()["meta"]["versionId"])
    assert (404, "not-found") == (missing.status_code, missing.json()["issue"][0]["code"])


async def test_if_match_guards_an_update(edge: Edge) -> None:
    """If-Match naming the current version updates; another version is 412 and writes nothing."""
    await put(edge, samples.task())
    stale = await put(edge, samples.task(status="received"), **{"If-Match": 'W/"7"'})
    fresh = await put(edge, samples.task(status="received"), **{"If-Match": 'W/"1"'})
    assert (412, "conflict") == (stale.status_code, stale.json()["issue"][0]["code"])
    assert 200 == fresh.status_code
    assert 2 == len(edge.ingress.written)


async def test_broker_down_answers_503_and_stores_nothing(edge: Edge) -> None:
    edge.ingress.fail = True
    response = await put(edge, samples.task())
    assert (503, "transient") == (response.status_code, response.json()["issue"][0]["code"])
    assert "retry-after" in response.headers
    assert [] == edge.store.all_versions()


async def test_store_down_after_the_broker_acknowledged_is_503_and_the_retry_keeps_the_event_id(edge: Edge) -> None:
    """Broker first, then store: the retry re-sends the same ce_id (downstream de-duplicates) and is then readable."""
    edge.store.fail_saves = 1
    failed = await edge.client.post("/fhir/ServiceRequest", content=valid_body(), headers=auth())
    retried = await edge.client.post("/fhir/ServiceRequest", content=valid_body(), headers=auth())
    read = await edge.client.get(retried.headers["location"].removesuffix("/_history/1"), headers=auth())
    assert (503, 201, 200) == (failed.status_code, retried.status_code, read.status_code)
    ids = [h["ce_id"] for _, _, h in edge.ingress.written]
    assert 2 == len(ids)
    assert ids[0] == ids[1]


async def test_a_failed_update_does_not_consume_its_version_so_the_retry_has_the_same_event_id(edge: Edge) -> None:
    await put(edge, samples.task())
    edge.store.fail_saves = 1
    failed = await put(edge, samples.task(status="received"))
    retried = await put(edge, samples.task(status="received"))
    assert (503, 200) == (failed.status_code, retried.status_code)
    assert edge.ingress.written[1][2]["ce_id"] == edge.ingress.written[2][2]["ce_id"]


# --- conditional create -------------------------------------------------------------------------


async def test_if_none_exist_returns_the_match_and_writes_nothing(edge: Edge) -> None:
    condition = {"If-None-Exist": f"identifier={samples.MRN_SYSTEM}|MRN-1"}
    first = await edge.client.post("/fhir/Patient", content=orjson.dumps(samples.patient()), headers=auth())
    changed = orjson.dumps(samples.patient(birthDate="1980-02-02"))
    matched = await edge.client.post("/fhir/Patient", content=changed, headers={**auth(), **condition})
    by_value = await edge.client.post(
        "/fhir/Patient", content=changed, headers={**auth(), "If-None-Exist": "identifier=MRN-1"}
    )
    encoded = await edge.client.post(
        "/fhir/Patient", content=changed,
        headers={**auth(), "If-None-Exist": "identifier=http%3A%2F%2Fhospital-a.example%2Fmrn%7CMRN-1"},
    )
    assert (201, 200, 200, 200) == tuple(r.status_code for r in (first, matched, by_value, encoded))
    assert first.json() == matched.json()
    assert 1 == len(edge.store.all_versions())


async def test_if_none_exist_without_a_match_creates(edge: Edge) -> None:
    condition = {"If-None-Exist": "identifier=urn:x|nobody"}
    response = await edge.client.post(
        "/fhir/Task", content=orjson.dumps(samples.task()), headers={**auth(), **condition}
    )
    assert 201 == response.status_code
    assert 1 == len(edge.ingress.written)


async def test_if_none_exist_does_not_see_another_partners_resources(edge: Edge) -> None:
    """Hospital B's identical MRN is its own patient: B's conditional create creates B's resource."""
    condition = {"If-None-Exist": f"identifier={samples.MRN_SYSTEM}|MRN-1"}
    await edge.client.post("/fhir/Patient", content=orjson.dumps(samples.patient()), headers=auth())
    other = await edge.client.post(
        "/fhir/Patient", content=orjson.dumps(samples.patient()), headers={**auth(HOSPITAL_B_TOKEN), **condition}
    )
    assert 201 == other.status_code
    assert 2 == len(edge.store.all_versions())


async def test_if_none_exist_with_several_matches_is_412(edge: Edge) -> None:
    condition = {"If-None-Exist": f"identifier={samples.MRN_SYSTEM}|MRN-1"}
    await edge.client.post("/fhir/Patient", content=orjson.dumps(samples.patient()), headers=auth())
    await edge.client.post("/fhir/Patient", content=orjson.dumps(samples.patient(gender="female")), headers=auth())
    response = await edge.client.post(
        "/fhir/Patient", content=orjson.dumps(samples.patient(gender="male")), headers={**auth(), **condition}
    )
    assert (412, "multiple-matches") == (response.status_code, response.json()["issue"][0]["code"])
    assert 2 == len(edge.store.all_versions())


# --- who may read and change what ---------------------------------------------------------------


async def test_a_hospital_reads_what_it_sent_and_nothing_else(edge: Edge) -> None:
    await put(edge, samples.task())
    own = await edge.client.get("/fhir/Task/hosp-a.task-1", headers=auth())
    other = await edge.client.get("/fhir/Task/hosp-a.task-1", headers=auth(HOSPITAL_B_TOKEN))
    operator = await edge.client.get("/fhir/Task/hosp-a.task-1", headers=auth(OPERATOR_TOKEN))
    cbo = await edge.client.get("/fhir/Task/hosp-a.task-1", headers=auth(CBO_TOKEN))
    assert (200, 404, 200, 404) == tuple(r.status_code for r in (own, other, operator, cbo))
    assert other.json() == (await edge.client.get("/fhir/Task/nothing", headers=auth())).json() | {
        "issue": other.json()["issue"]
    }


async def test_a_cbo_reads_the_newest_version_delivered_to_it(edge: Edge) -> None:
    """Delivery (the audit's permit) decides: version 1 was delivered, version 2 not (yet)."""
    await put(edge, samples.task())
    await put(edge, samples.task(status="received"))
    first_event = edge.store.resources[("Task", "hosp-a.task-1")][0].event_id
    assert first_event is not None
    edge.store.permitted.add(("food-bank", first_event))
    current = await edge.client.get("/fhir/Task/hosp-a.task-1", headers=auth(CBO_TOKEN))
    second = await edge.client.get("/fhir/Task/hosp-a.task-1/_history/2", headers=auth(CBO_TOKEN))
    assert (200, "1") == (current.status_code, current.json()["meta"]["versionId"])
    assert 404 == second.status_code


async def test_the_owner_cbo_updates_its_task_and_the_hospital_reads_the_update(edge: Edge) -> None:
    """The food bank accepts; the event comes from it, keyed by the hospital's patient; the hospital sees it."""
    await put(edge, samples.task())
    accepted = await put(edge, samples.task(status="accepted"), CBO_TOKEN)
    seen = await edge.client.get("/fhir/Task/hosp-a.task-1", headers=auth())
    assert (200, "accepted") == (accepted.status_code, seen.json()["status"])
    _, value, headers = edge.ingress.written[1]
    event = decode(value)
    assert ("/partners/food-bank", "food-bank", "task-update") == (
        headers["ce_source"], event.facts.sender, event.facts.event_kind
    )
    assert "urn:carehub:partner:hosp-a:Patient/123" == event.facts.patient_source


@pytest.mark.parametrize(
    ("current", "change", "expression"),
    [
        ({}, {"focus": {"reference": "ServiceRequest/other"}}, "Task.focus"),
        ({}, {"for": {"reference": "Patient/999"}}, "Task.for"),
        ({}, {"owner": {"reference": "Organization/someone-else"}}, "Task.owner"),
        ({}, {"status": "cancelled"}, "Task.status"),
        ({}, {"status": "draft"}, "Task.status"),
        ({"status": "completed"}, {"status": "in-progress"}, "Task.status"),
        ({"status": "rejected"}, {"status": "accepted"}, "Task.status"),
    ],
)
async def test_the_owner_may_not_change_what_belongs_to_the_requester(
    edge: Edge, current: dict[str, Any], change: dict[str, Any], expression: str
) -> None:
    await put(edge, samples.task(**current))
    response = await put(edge, samples.task(**{**current, **change}), CBO_TOKEN)
    assert (422, "business-rule", [expression]) == (
        response.status_code, response.json()["issue"][0]["code"], response.json()["issue"][0]["expression"]
    )
    assert 1 == len(edge.ingress.written)


async def test_the_requester_may_cancel_and_the_operator_may_do_anything(edge: Edge) -> None:
    await put(edge, samples.task(status="completed"))
    reopened = await put(edge, samples.task(status="cancelled"))
    operator = await put(
        edge, samples.task(status="entered-in-error", owner={"reference": "Organization/x"}), OPERATOR_TOKEN
    )
    assert (200, 200) == (reopened.status_code, operator.status_code)


async def test_another_hospital_cannot_take_over_an_id_nor_learn_that_it_exists(edge: Edge) -> None:
    """While B cannot see A's Task, B's PUT of its id is answered exactly as a PUT of an unused id outside
    B's id space (405); once the Task was delivered to B, B may know of it and gets 403."""
    await put(edge, samples.task())
    refused = await put(edge, samples.task(status="received"), HOSPITAL_B_TOKEN)
    unused = await put(edge, samples.task(id="hosp-a.never-used", status="received"), HOSPITAL_B_TOKEN)
    assert (405, "not-supported", ["Task.id"]) == (
        refused.status_code, refused.json()["issue"][0]["code"], refused.json()["issue"][0]["expression"]
    )
    assert (unused.status_code, unused.json()) == (refused.status_code, refused.json())
    event = edge.store.resources[("Task", "hosp-a.task-1")][0].event_id
    assert event is not None
    edge.store.permitted.add(("hosp-b", event))
    forbidden = await put(edge, samples.task(status="received"), HOSPITAL_B_TOKEN)
    assert (403, "forbidden") == (forbidden.status_code, forbidden.json()["issue"][0]["code"])
    assert 1 == len(edge.ingress.written)


@pytest.mark.parametrize("resource_type", ["ServiceRequest", "Task", "Encounter", "Patient", "Organization"])
async def test_a_cbo_creates_nothing(edge: Edge, resource_type: str) -> None:
    data = {"ServiceRequest": valid_service_request(), "Task": samples.task(), "Encounter": samples.encounter(),
            "Patient": samples.patient(), "Organization": samples.organization()}[resource_type]
    posted = await edge.client.post(f"/fhir/{resource_type}", content=orjson.dumps(data), headers=auth(CBO_TOKEN))
    assert (403, "forbidden") == (posted.status_code, posted.json()["issue"][0]["code"])
    if "id" in data:
        created = await put(edge, data, CBO_TOKEN)
        assert 403 == created.status_code
    assert [] == edge.ingress.written
    assert [] == edge.store.all_versions()


async def test_reads_that_fail_on_the_store_are_503_not_404(edge: Edge) -> None:
    await put(edge, samples.task())
    edge.store.fail_reads = 1
    response = await edge.client.get("/fhir/Task/hosp-a.task-1", headers=auth())
    assert (503, "transient") == (response.status_code, response.json()["issue"][0]["code"])


async def test_every_version_with_the_same_subject_is_keyed_by_the_same_patient(edge: Edge) -> None:
    """A Task created in a transaction (patient named by the Bundle's Patient) keeps that patient when
    its owner updates it on its own, where the Bundle is long gone."""
    bundle = samples.referral_transaction()
    bundle["entry"][2]["request"] = {"method": "PUT", "url": "Task/hosp-a.task-1"}
    bundle["entry"][2]["resource"]["id"] = "hosp-a.task-1"
    created = await edge.client.post("/fhir", content=orjson.dumps(bundle), headers=auth())
    assert 200 == created.status_code, created.text
    current = (await edge.client.get("/fhir/Task/hosp-a.task-1", headers=auth())).json()
    accepted = {k: v for k, v in current.items() if k != "meta"} | {"status": "accepted"}
    response = await put(edge, accepted, CBO_TOKEN)
    assert 200 == response.status_code, response.text
    sources = [decode(v).facts.patient_source for _, v, _ in edge.ingress.written]
    assert [f"{samples.MRN_SYSTEM}|MRN-1"] * 3 == sources
