"""The partner-isolation checks (``tests/e2e/isolation_oracle``) fail on leaky answers: each check is shown a
fake answer with exactly one leak or hint and must flag it, and must pass the same answer without it."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.e2e.isolation_oracle import (
    Answer,
    beyond_cbo_profile,
    difference,
    leaked,
    shown_resources,
    without_meta,
)

HIDDEN, UNUSED = "7c1f0e44-0b7e-4f55-9d55-2f1a3e1c9a01", "b2a0c6d1-53c4-4f0e-8f1d-0a9e8c7b6a55"
ISSUE: dict[str, Any] = {
    "severity": "error", "code": "not-found", "diagnostics": "there is no ServiceRequest with that id",
}
NOT_FOUND: dict[str, Any] = {"resourceType": "OperationOutcome", "issue": [ISSUE]}
FHIR = {"content-type": "application/fhir+json", "cache-control": "no-store", "date": "Fri, 04 Dec 2026 10:00:00 GMT"}


def answer(status: int, body: object, **headers: str) -> Answer:
    return Answer(status, {**FHIR, **headers}, orjson.dumps(body).decode())


def test_two_answers_that_differ_only_in_the_names_asked_about_are_the_same() -> None:
    def outcome(resource_id: str) -> Answer:
        body = {**NOT_FOUND, "issue": [{**ISSUE, "expression": [f"ServiceRequest/{resource_id}"]}]}
        return answer(404, body, date=resource_id)  # the date header is not compared

    assert difference(outcome(HIDDEN), {"id": HIDDEN}, outcome(UNUSED), {"id": UNUSED}) is None


def test_a_different_status_is_an_existence_hint() -> None:
    hint = difference(answer(403, NOT_FOUND), {"id": HIDDEN}, answer(405, NOT_FOUND), {"id": UNUSED})
    assert (hint or "").startswith("status"), hint


def test_a_header_only_the_existing_resource_gets_is_an_existence_hint() -> None:
    hint = difference(answer(404, NOT_FOUND, etag='W/"1"'), {"id": HIDDEN}, answer(404, NOT_FOUND), {"id": UNUSED})
    assert (hint or "").startswith("headers"), hint


def test_a_message_that_says_more_about_the_existing_resource_is_an_existence_hint() -> None:
    telling = {**NOT_FOUND, "issue": [{**ISSUE, "diagnostics": "you may not read this one"}]}
    hint = difference(answer(404, telling), {"id": HIDDEN}, answer(404, NOT_FOUND), {"id": UNUSED})
    assert (hint or "").startswith("body"), hint


def test_a_response_bundles_own_id_and_time_are_random_but_its_entries_are_compared() -> None:
    def bundle(own_id: str, status: str) -> Answer:
        return answer(200, {"resourceType": "Bundle", "id": own_id, "timestamp": own_id, "type": "batch-response",
                            "entry": [{"response": {"status": status}}]})

    assert difference(bundle("1", "404 Not Found"), {}, bundle("2", "404 Not Found"), {}) is None
    assert difference(bundle("1", "405 Method Not Allowed"), {}, bundle("2", "404 Not Found"), {}) is not None


@settings(max_examples=200, derandomize=True, database=None)
@given(body=st.text(min_size=1, max_size=40), position=st.integers(0, 39), extra=st.characters(codec="utf-8"))
def test_any_change_to_a_body_besides_the_names_is_found(body: str, position: int, extra: str) -> None:
    """Property: the comparison only forgives the names swapped; one inserted character anywhere is a hint."""
    first = Answer(404, FHIR, f"{body[:position]}{HIDDEN}{body[position:]}")
    same = Answer(404, FHIR, f"{body[:position]}{UNUSED}{body[position:]}")
    changed = Answer(404, FHIR, f"{body[:position]}{UNUSED}{extra}{body[position:]}")
    assert difference(first, {"id": HIDDEN}, same, {"id": UNUSED}) is None
    assert difference(first, {"id": HIDDEN}, changed, {"id": UNUSED}) is not None


def test_a_marker_in_the_body_or_a_header_is_a_leak_unless_allowed_or_sent_by_the_caller() -> None:
    secrets = {"SECRET-note", "MRN-1"}
    in_body = answer(200, {"resourceType": "ServiceRequest", "note": [{"text": "SECRET-note"}]})
    in_header = answer(404, NOT_FOUND, **{"x-hub-part2-notice": "about MRN-1"})
    assert {"SECRET-note"} == leaked(in_body, secrets=secrets, allowed=set())
    assert {"MRN-1"} == leaked(in_header, secrets=secrets, allowed=set())
    assert set() == leaked(in_body, secrets=secrets, allowed={"SECRET-note"})
    assert set() == leaked(in_header, secrets=secrets, allowed=set(), request_text="GET /fhir/Consent?patient=MRN-1")
    assert set() == leaked(answer(404, NOT_FOUND), secrets=secrets, allowed=set())


def test_a_cbo_view_with_any_free_text_or_clinical_element_is_beyond_its_profile() -> None:
    referral = {"resourceType": "ServiceRequest", "id": "1", "meta": {}, "status": "active", "subject": {},
                "performer": [], "code": {}}
    assert set() == beyond_cbo_profile(referral)
    for element in ("note", "patientInstruction", "reasonCode", "supportingInfo", "text", "extension"):
        assert {element} == beyond_cbo_profile({**referral, element: "x"})
    assert {"description", "note"} == beyond_cbo_profile({"resourceType": "Task", "description": "x", "note": []})
    assert {"reasonCode"} == beyond_cbo_profile({"resourceType": "Encounter", "reasonCode": []})
    assert {"patient"} == beyond_cbo_profile({"resourceType": "Consent", "patient": {}})  # no Consent for a CBO


def test_every_resource_an_answer_shows_is_found_and_outcomes_are_not_resources() -> None:
    read = {"resourceType": "Task", "id": "t"}
    bundle = {"resourceType": "Bundle", "entry": [
        {"resource": {"resourceType": "ServiceRequest", "id": "s"}},
        {"response": {"status": "404", "outcome": NOT_FOUND}},
        {"resource": {"resourceType": "Bundle", "entry": [{"resource": read}]}},
    ]}
    assert [read] == list(shown_resources(read))
    assert ["s", "t"] == [r["id"] for r in shown_resources(bundle)]
    assert [] == list(shown_resources(NOT_FOUND))
    assert [] == list(shown_resources("not json"))
    assert {"resourceType": "Task"} == without_meta({**read, "meta": {"versionId": "1"}})
