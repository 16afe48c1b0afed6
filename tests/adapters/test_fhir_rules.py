"""The pure rules behind the FHIR edge, as tables: access, Task and Encounter facts, headers, FHIRPath rebasing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from hub.adapters.fhir_access import (
    check_may_update,
    check_update_as_create,
    owner_of,
    read_plan,
    task_update_issues,
)
from hub.adapters.fhir_facts import (
    encounter_event_kind,
    encounter_facts,
    encounter_view,
    identifier_tokens,
    patient_identifier_sources,
    task_facts,
)
from hub.adapters.fhir_intake import parse_if_match, parse_if_none_exist
from hub.adapters.fhir_store import StoredVersion, render, stored_content
from hub.adapters.fhir_validation import FhirIssue, FhirValidationError, rebase_issues, validate_resource
from hub.adapters.operation_outcome import ResourceConflict, UpdateCreateRefused
from hub.errors import InvalidInput, NotAuthorized
from hub.ports import Principal
from tests.adapters import fhir_samples as samples

HOSPITAL = Principal(kind="hospital", partner_id="hosp-a", organization="Organization/hosp-a")
OTHER_HOSPITAL = Principal(kind="hospital", partner_id="hosp-b", organization="Organization/hosp-b")
OWNER = Principal(kind="cbo", partner_id="food-bank", organization="Organization/food-bank")
OTHER_CBO = Principal(kind="cbo", partner_id="housing", organization="Organization/housing")
OPERATOR = Principal(kind="operator")


def version(n: int, sender: str = "hosp-a", data: dict[str, Any] | None = None) -> StoredVersion:
    """Version ``n`` of task-1, sent by ``sender``, with event ``e<n>``."""
    return StoredVersion(
        resource_type="Task", resource_id="task-1", version_id=n, last_updated=datetime(2025, 1, n, tzinfo=UTC),
        sender=sender, content=orjson.dumps(data or samples.task()).decode(), content_hash=f"h{n}", event_id=f"e{n}",
    )


VERSIONS = [version(1), version(2, "food-bank"), version(3)]


@pytest.mark.parametrize(
    ("principal", "delivered", "expected"),
    [
        (OPERATOR, frozenset(), [(1, True), (2, True), (3, True)]),
        (HOSPITAL, frozenset(), [(1, True), (2, True), (3, True)]),  # the creator
        (OWNER, frozenset(), [(2, True)]),  # only what it sent itself: the others' versions were not delivered
        (OWNER, frozenset({"e1"}), [(1, False), (2, True)]),  # v1 only through the read gate
        (OTHER_HOSPITAL, frozenset(), []),
        (OTHER_CBO, frozenset({"e1"}), [(1, False)]),
        (OTHER_CBO, frozenset({"e1", "e3"}), [(1, False), (3, False)]),
        (OTHER_CBO, frozenset({"e9"}), []),
    ],
)
def test_who_reads_which_versions_and_which_only_through_the_read_gate(
    principal: Principal, delivered: frozenset[str], expected: list[tuple[int, bool]]
) -> None:
    assert expected == [(v.version_id, whole) for v, whole in read_plan(principal, VERSIONS, delivered)]


@pytest.mark.parametrize(
    ("principal", "versions", "error"),
    [
        (HOSPITAL, [], None),
        (OPERATOR, [], None),
        (OWNER, [], NotAuthorized),
        (HOSPITAL, [version(1)], None),
        (OPERATOR, [version(1)], None),
        (OWNER, [version(1)], None),
        (OTHER_CBO, [version(1)], NotAuthorized),
        (OTHER_HOSPITAL, [version(1)], NotAuthorized),
    ],
)
def test_who_may_store_a_new_version_of_a_task_it_may_know_of(
    principal: Principal, versions: list[StoredVersion], error: type[Exception] | None
) -> None:
    new = samples.task(status="accepted")
    if error is None:
        check_may_update(principal, "Task", versions, new)
        return
    with pytest.raises(error):
        check_may_update(principal, "Task", versions, new)


@pytest.mark.parametrize(
    ("principal", "resource_id", "stored", "error"),
    [
        (OPERATOR, "anything", False, None),
        (OPERATOR, "anything", True, None),
        (HOSPITAL, "hosp-a.ref-1", False, None),
        (HOSPITAL, "hosp-a.ref-1", True, ResourceConflict),  # only the operator can have put it there
        (HOSPITAL, "ref-1", False, UpdateCreateRefused),
        (HOSPITAL, "ref-1", True, UpdateCreateRefused),  # the same answer: existence is not revealed
        (HOSPITAL, "hosp-b.ref-1", True, UpdateCreateRefused),
        (HOSPITAL, "hosp-a.", False, UpdateCreateRefused),
        (HOSPITAL, "hosp-ab.x", False, UpdateCreateRefused),
        (OWNER, "food-bank.t", False, NotAuthorized),
        (OWNER, "t", True, NotAuthorized),
    ],
)
def test_update_as_create_answers_alike_for_unused_ids_and_ids_the_caller_cannot_see(
    principal: Principal, resource_id: str, stored: bool, error: type[Exception] | None
) -> None:
    if error is None:
        check_update_as_create(principal, "Task", resource_id, stored=stored, known=False)
        return
    with pytest.raises(error):
        check_update_as_create(principal, "Task", resource_id, stored=stored, known=False)


def test_only_tasks_have_owners_who_may_update() -> None:
    """The food bank named as performer of a referral still may not change the referral."""
    referral = StoredVersion(
        resource_type="ServiceRequest", resource_id="sr", version_id=1, last_updated=datetime(2025, 1, 1, tzinfo=UTC),
        sender="hosp-a", content=orjson.dumps({"owner": {"reference": "Organization/food-bank"}}).decode(),
        content_hash="h", event_id="e1",
    )
    with pytest.raises(NotAuthorized):
        check_may_update(OWNER, "ServiceRequest", [referral], {})


@pytest.mark.parametrize(
    ("owner", "expected"),
    [
        ({"reference": "Organization/food-bank"}, "Organization/food-bank"),
        ({"reference": "https://x.example/fhir/Organization/1/_history/3"}, "https://x.example/fhir/Organization/1"),
        ({"identifier": {"system": "urn:npi", "value": "1"}}, "urn:npi|1"),
        ({"identifier": {"value": "1"}}, "|1"),
        ({"reference": "#contained"}, None),
        ({"display": "Food Bank"}, None),
        ("Organization/food-bank", None),
    ],
)
def test_owner_forms_match_how_partners_are_registered(owner: Any, expected: str | None) -> None:
    assert expected == owner_of({"owner": owner})


@pytest.mark.parametrize(
    ("current", "new", "expressions"),
    [
        ({"status": "requested"}, {"status": "accepted"}, []),
        ({"status": "accepted"}, {"status": "in-progress"}, []),
        ({"status": "in-progress"}, {"status": "completed"}, []),
        ({"status": "requested"}, {"status": "rejected"}, []),
        ({"status": "requested"}, {"status": "cancelled"}, ["Task.status"]),
        ({"status": "accepted"}, {"status": "requested"}, ["Task.status"]),
        ({"status": "completed"}, {"status": "completed"}, []),
        ({"status": "completed"}, {"status": "in-progress"}, ["Task.status"]),
        ({"status": "failed"}, {"status": "requested"}, ["Task.status"]),
        ({"status": "requested", "owner": 1}, {"status": "requested", "owner": 2}, ["Task.owner"]),
        ({"for": 1, "focus": 1}, {"for": 2, "focus": 2}, ["Task.for", "Task.focus"]),
        ({"basedOn": [1]}, {}, ["Task.basedOn"]),
    ],
)
def test_gravity_rules_for_an_owners_task_update(
    current: dict[str, Any], new: dict[str, Any], expressions: list[str]
) -> None:
    assert expressions == [i.expression for i in task_update_issues(current, new)]


# --- facts -------------------------------------------------------------------------------------------


def view(status: str, *, end: bool = False, locations: tuple[str, ...] = ("Location/1",)) -> dict[str, Any]:
    """An Encounter view as :func:`encounter_view` makes it."""
    return {"status": status, "period_end": end, "locations": sorted(locations)}


@pytest.mark.parametrize(
    ("previous", "current", "kind"),
    [
        (None, view("in-progress"), "admit"),
        (None, view("arrived"), "admit"),
        (None, view("planned"), "encounter-update"),
        (None, view("finished"), "discharge"),
        (None, view("in-progress", end=True), "discharge"),
        (None, view("cancelled"), "encounter-update"),
        (view("planned"), view("in-progress"), "admit"),
        (view("arrived"), view("in-progress"), "encounter-update"),
        (view("in-progress"), view("in-progress"), "encounter-update"),
        (view("in-progress"), view("in-progress", locations=("Location/2",)), "transfer"),
        (view("onleave"), view("in-progress", locations=("Location/2",)), "transfer"),
        (view("in-progress"), view("finished"), "discharge"),
        (view("in-progress"), view("in-progress", end=True), "discharge"),
        (view("finished"), view("finished"), "encounter-update"),
        (view("finished"), view("entered-in-error"), "encounter-update"),
        (view("finished"), view("in-progress"), "admit"),
    ],
)
def test_what_an_encounter_version_says_happened(
    previous: dict[str, Any] | None, current: dict[str, Any], kind: str
) -> None:
    assert kind == encounter_event_kind(previous, current)


def test_the_view_of_a_stored_encounter_matches_the_view_of_its_model() -> None:
    """Stored JSON and validated model are compared the same way (only active locations count)."""
    data = samples.encounter(
        location=[
            {"location": {"reference": "Location/2"}, "status": "completed"},
            {"location": {"reference": "Location/1"}},
        ],
        period={"start": "2025-01-01", "end": "2025-01-02"},
    )
    model = validate_resource(data, expected_type="Encounter")
    assert {"status": "in-progress", "period_end": True, "locations": ["Location/1"]} == encounter_view(data)
    assert "discharge" == encounter_facts(model, sender="h", resource_id="e").event_kind


def test_task_facts_of_a_task_without_patient_or_focus() -> None:
    data = {k: v for k, v in samples.task().items() if k not in {"for", "focus", "owner"}}
    facts = task_facts(validate_resource(data, expected_type="Task"), sender="hosp-a", resource_id="t1")
    assert ("urn:carehub:partner:hosp-a:unidentified|t1", (), (), "task") == (
        facts.patient_source, facts.performers, facts.focus, facts.event_kind
    )


def test_a_bundle_local_patient_is_named_by_its_first_linkable_identifier() -> None:
    patient = validate_resource(
        samples.patient(identifier=[{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "1"},
                                    {"value": "local-9"}, {"system": "urn:mrn", "value": "7"}]),
        expected_type="Patient",
    )
    task = validate_resource(samples.task(**{"for": {"reference": "Patient/p"}}), expected_type="Task")
    facts = task_facts(task, sender="hosp-a", resource_id="t", local_patients={"Patient/p": patient})
    assert "urn:carehub:partner:hosp-a|local-9" == facts.patient_source
    assert ("urn:carehub:partner:hosp-a|local-9", "urn:mrn|7") == patient_identifier_sources(patient, sender="hosp-a")
    assert (("http://hl7.org/fhir/sid/us-ssn", "1"), ("", "local-9"), ("urn:mrn", "7")) == identifier_tokens(patient)


# --- headers and stored content --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("identifier=urn:mrn|7", ("urn:mrn", "7")),
        ("identifier=7", (None, "7")),
        ("identifier=|7", ("", "7")),
        ("?identifier=urn%3Amrn%7C7", ("urn:mrn", "7")),
        ("identifier=http://x.example/a|b|c", ("http://x.example/a", "b|c")),
        ("identifier=urn:x|a+b", ("urn:x", "a+b")),
    ],
)
def test_if_none_exist_forms(header: str, expected: tuple[str | None, str]) -> None:
    assert expected == parse_if_none_exist(header)


@pytest.mark.parametrize(
    "header", ["", "identifier=", "identifier=urn:x|", "name=x", "identifier=a&identifier=b", "identifier"]
)
def test_if_none_exist_the_hub_cannot_evaluate_is_refused(header: str) -> None:
    with pytest.raises(InvalidInput):
        parse_if_none_exist(header)


@pytest.mark.parametrize(("header", "expected"), [('W/"3"', 3), ('"12"', 12), ("4", 4), (' W/"1" ', 1)])
def test_if_match_forms(header: str, expected: int) -> None:
    assert expected == parse_if_match(header)


@pytest.mark.parametrize("header", ["", 'W/"0"', 'W/"x"', "²", "1" * 5000, 'W/"-1"', "1.5"])
def test_if_match_garbage_is_refused_not_crashed_on(header: str) -> None:
    with pytest.raises(InvalidInput):
        parse_if_match(header)


def test_stored_content_drops_the_servers_meta_and_render_puts_it_back() -> None:
    meta = {"versionId": "9", "lastUpdated": "2020-01-01T00:00:00Z", "tag": [{"code": "t"}]}
    content = stored_content(samples.task(id="client", meta=meta), "server-id")
    prefix = '{"resourceType":"Task","id":"server-id","meta":{"tag":[{"code":"t"}]},'
    assert prefix == content[: len(prefix)]
    rendered = render(version(4, data=orjson.loads(content)))
    assert {"versionId": "4", "lastUpdated": "2025-01-04T00:00:00.000Z", "tag": [{"code": "t"}]} == rendered["meta"]
    assert "meta" not in orjson.loads(stored_content(samples.task(meta={"versionId": "1"}), "x"))


def test_rebased_issues_name_their_place_in_the_bundle() -> None:
    issues = [
        FhirIssue("required", "Task.status: a required element is missing", "Task.status"),
        FhirIssue("required", "resourceType is missing", "resourceType"),
        FhirIssue("invalid", "the Task could not be validated", None),
        FhirIssue("structure", "Task[0]: odd", "Task[0]"),
    ]
    moved = rebase_issues(issues, "Task", "Bundle.entry[2].resource")
    assert [
        ("Bundle.entry[2].resource.status", "Bundle.entry[2].resource.status: a required element is missing"),
        ("Bundle.entry[2].resource.resourceType", "Bundle.entry[2].resource.resourceType is missing"),
        ("Bundle.entry[2].resource", "the Task could not be validated"),
        ("Bundle.entry[2].resource[0]", "Bundle.entry[2].resource[0]: odd"),
    ] == [(i.expression, i.diagnostics) for i in moved]
    with pytest.raises(FhirValidationError):
        raise FhirValidationError(moved)
