"""The liberal Consent reader: LEAP and R5-era shapes normalised into R4, each change named by its FHIRPath."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hub.consent.consent_reading import NormalizedConsent, normalize_consent
from hub.consent.model import ProvisionType, consent_from_fhir

SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
POU = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SNOMED = "http://snomed.info/sct"
PRIVACY_CODING = {"system": SCOPE, "code": "patient-privacy"}
LOINC_CONSENT = {"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}

#: An R4 opt-in that needs no normalisation (written for this test).
R4: dict[str, Any] = {
    "resourceType": "Consent",
    "id": "r4",
    "status": "active",
    "scope": {"coding": [PRIVACY_CODING]},
    "category": [LOINC_CONSENT],
    "patient": {"reference": "Patient/1"},
    "dateTime": "2025-06-01",
    "provision": {"type": "permit", "provision": [{"securityLabel": [{"system": ACT, "code": "PSY"}]}]},
}


def shaped(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(R4)
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return data


def paths(normalized: NormalizedConsent) -> list[str]:
    return [note.expression for note in normalized.notes]


def test_an_r4_consent_is_returned_unchanged_and_without_notes() -> None:
    normalized = normalize_consent(R4)
    assert (R4, (), False) == (normalized.data, normalized.notes, normalized.changed)


def test_the_input_is_never_mutated() -> None:
    data = shaped(scope=..., category=[{"coding": [PRIVACY_CODING]}])
    before = copy.deepcopy(data)
    normalize_consent(data)
    assert before == data


def test_scope_carried_in_category_becomes_the_scope_and_says_where_it_came_from() -> None:
    data = shaped(scope=..., category=[LOINC_CONSENT, {"coding": [PRIVACY_CODING]}])
    normalized = normalize_consent(data)
    assert {"coding": [PRIVACY_CODING]} == normalized.data["scope"]
    [note] = normalized.notes
    assert "Consent.scope" == note.expression
    assert "Consent.category[1]" in note.message
    assert consent_from_fhir(data).is_privacy


def test_a_loinc_patient_consent_category_is_never_taken_for_a_scope() -> None:
    normalized = normalize_consent(shaped(scope=..., category=[LOINC_CONSENT]))
    assert ("scope" not in normalized.data, ()) == (True, normalized.notes)
    assert not consent_from_fhir(normalized.data).is_privacy


def test_a_missing_category_is_filled_with_the_scope_where_leap_reads_it() -> None:
    normalized = normalize_consent(shaped(category=...))
    assert [{"coding": [PRIVACY_CODING]}] == normalized.data["category"]
    assert ["Consent.category"] == paths(normalized)


def test_a_single_category_object_and_a_coding_as_scope_are_wrapped() -> None:
    normalized = normalize_consent(shaped(scope=PRIVACY_CODING, category=LOINC_CONSENT))
    assert ({"coding": [PRIVACY_CODING]}, [LOINC_CONSENT]) == (normalized.data["scope"], normalized.data["category"])
    assert ["Consent.category", "Consent.scope"] == paths(normalized)


@pytest.mark.parametrize(
    ("element", "given", "expected"),
    [
        ("code", {"coding": [{"system": SNOMED, "code": "7200002"}]},
         [{"coding": [{"system": SNOMED, "code": "7200002"}]}]),
        ("class", {"system": "http://hl7.org/fhir/resource-types", "code": "Observation"},
         [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}]),
        ("securityLabel", {"system": ACT, "code": "HIV"}, [{"system": ACT, "code": "HIV"}]),
        ("purpose", {"system": POU, "code": "TREAT"}, [{"system": POU, "code": "TREAT"}]),
        ("actor", {"reference": {"reference": "Organization/x"}}, [{"reference": {"reference": "Organization/x"}}]),
        ("action", {"coding": [{"code": "access"}]}, [{"coding": [{"code": "access"}]}]),
        ("provision", {"type": "deny"}, [{"type": "deny"}]),
    ],
)
def test_a_single_object_where_r4_repeats_is_read_as_a_one_element_array(
    element: str, given: Any, expected: Any
) -> None:
    data = shaped(provision={"type": "permit", "provision": [{element: given}]})
    normalized = normalize_consent(data)
    assert expected == normalized.data["provision"]["provision"][0][element]
    assert f"Consent.provision.provision[0].{element}" == normalized.notes[0].expression
    consent_from_fhir(data)  # and the engine reads it


def test_codings_and_concepts_given_in_each_others_place_are_converted() -> None:
    nested = {
        "purpose": [{"coding": [{"system": POU, "code": "TREAT"}, {"system": POU, "code": "CAREMGT"}]}],
        "code": [{"system": SNOMED, "code": "7200002"}],
        "actor": [{"role": {"code": "IRCP"}, "reference": {"reference": "Organization/x"}}],
    }
    normalized = normalize_consent(shaped(provision={"type": "permit", "provision": [nested]}))
    child = normalized.data["provision"]["provision"][0]
    assert [{"system": POU, "code": "TREAT"}, {"system": POU, "code": "CAREMGT"}] == child["purpose"]
    assert [{"coding": [{"system": SNOMED, "code": "7200002"}]}] == child["code"]
    assert {"coding": [{"code": "IRCP"}]} == child["actor"][0]["role"]
    assert [
        "Consent.provision.provision[0].purpose[0]",
        "Consent.provision.provision[0].code[0]",
        "Consent.provision.provision[0].actor[0].role",
    ] == paths(normalized)


def test_an_r5_decision_and_a_one_element_root_provision_array_become_the_r4_root() -> None:
    data = shaped(decision="deny", provision=[{"provision": [{"purpose": [{"system": POU, "code": "TREAT"}]}]}])
    normalized = normalize_consent(data)
    assert "decision" not in normalized.data
    assert "deny" == normalized.data["provision"]["type"]
    assert ["Consent.provision", "Consent.provision.type"] == sorted(paths(normalized))
    assert ProvisionType.DENY is consent_from_fhir(data).base


def test_a_research_consent_is_kept_unchanged_with_a_warning_that_it_is_ignored() -> None:
    research = {"coding": [{"system": SCOPE, "code": "research"}]}
    normalized = normalize_consent(shaped(scope=research))
    [note] = normalized.notes
    assert ("Consent.scope", False, False) == (note.expression, note.rewrites, normalized.changed)
    assert "'research' consent is stored but ignored for privacy decisions" in note.message
    assert not consent_from_fhir(normalized.data).is_privacy


def test_a_scope_code_the_hub_does_not_know_is_never_quoted() -> None:
    odd = {"coding": [{"system": SCOPE, "code": "MRN-12345"}]}
    [note] = normalize_consent(shaped(scope=odd)).notes
    assert "MRN-12345" not in note.message


def test_deep_nesting_normalises_every_level() -> None:
    node: dict[str, Any] = {"purpose": {"system": POU, "code": "TREAT"}}
    for _ in range(3):
        node = {"provision": node}
    normalized = normalize_consent(shaped(provision={"type": "deny", "provision": [node]}))
    assert "Consent.provision.provision[0].provision[0].provision[0].provision[0].purpose" in paths(normalized)
