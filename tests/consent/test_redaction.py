"""Minimum necessary: redaction profiles applied to FHIR JSON, and the obligation that names them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from hub.consent.engine import decide
from hub.consent.model import Policies
from hub.consent.redaction import ALWAYS_KEPT, PROFILES, REDACTED_LABEL, redact
from hub.errors import ConfigurationError
from tests.consent.helpers import AT, CBO_A, HOSPITAL, encounter, on_roster, referral

REFERRAL: dict[str, Any] = {
    "resourceType": "ServiceRequest",
    "id": "sr-1",
    "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}]},
    "text": {"status": "generated", "div": "<div>Food pantry referral; history of opioid use</div>"},
    "extension": [{"url": "http://example.org/x", "valueString": "internal"}],
    "modifierExtension": [{"url": "http://example.org/m", "valueBoolean": True}],
    "contained": [
        {
            "resourceType": "Patient",
            "id": "p",
            "name": [{"family": "Doe"}],
            "telecom": [{"system": "phone", "value": "555-0100"}],
            "maritalStatus": {"text": "divorced"},
        },
        {"resourceType": "Condition", "id": "c", "code": {"text": "Opioid dependence"}},
    ],
    "identifier": [{"system": "urn:hosp", "value": "R-1"}],
    "status": "active",
    "intent": "order",
    "doNotPerform": False,
    "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "410606002"}]}],
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "467771000124109"}]},
    "subject": {"reference": "#p"},
    "occurrencePeriod": {"start": "2026-01-20"},
    "authoredOn": "2026-01-15",
    "requester": {"reference": "Organization/hosp-a"},
    "performer": [{"reference": "Organization/cbo-a"}],
    "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F11.20"}]}],
    "reasonReference": [{"reference": "#c"}],
    "note": [{"text": "Patient in recovery, prefers morning calls"}],
    "patientInstruction": "Bring ID",
    "supportingInfo": [{"reference": "Observation/1"}],
}


def test_the_cbo_profile_keeps_what_a_cbo_needs_and_nothing_clinical() -> None:
    """Subject, need, service, dates and parties stay; diagnoses, free text, narrative and extensions go."""
    redacted = redact(REFERRAL, "cbo")
    assert [
        "resourceType", "id", "meta", "modifierExtension", "contained", "identifier", "status", "intent",
        "doNotPerform", "category", "code", "subject", "occurrencePeriod", "authoredOn", "requester", "performer",
    ] == list(redacted)
    assert [{"resourceType": "Patient", "id": "p", "name": [{"family": "Doe"}],
             "telecom": [{"system": "phone", "value": "555-0100"}],
             "meta": {"security": [REDACTED_LABEL]}}] == redacted["contained"]
    assert REDACTED_LABEL in redacted["meta"]["security"]
    assert REFERRAL["meta"]["security"][0] in redacted["meta"]["security"]


def test_redaction_does_not_touch_its_input() -> None:
    """The caller's JSON is left as it was."""
    before = copy.deepcopy(REFERRAL)
    redact(REFERRAL, "cbo")
    assert before == REFERRAL


def test_nothing_removed_means_no_redacted_label() -> None:
    """A resource the profile fully allows comes back unchanged."""
    minimal = {"resourceType": "ServiceRequest", "id": "1", "status": "active", "intent": "order",
               "subject": {"reference": "Patient/1"}}
    assert minimal == redact(minimal, "cbo")


def test_an_encounter_keeps_when_and_where_not_why() -> None:
    """A CBO learns that and when the client was admitted or discharged, not why or to which ward."""
    visit = {
        "resourceType": "Encounter", "id": "e", "status": "finished",
        "class": {"code": "IMP"}, "subject": {"reference": "Patient/1"},
        "period": {"start": "2026-01-10", "end": "2026-01-15"}, "serviceProvider": {"reference": "Organization/h"},
        "hospitalization": {"dischargeDisposition": {"coding": [{"code": "alc-drug"}]}},
        "location": [{"location": {"display": "Detox unit"}}], "reasonCode": [{"text": "withdrawal"}],
        "type": [{"text": "psychiatric admission"}],
    }
    assert ["resourceType", "id", "status", "class", "subject", "period", "serviceProvider", "meta"] == list(
        redact(visit, "cbo")
    )


def test_an_unlisted_resource_type_keeps_only_the_always_kept_elements() -> None:
    """Types the profile does not list are reduced to their identity and meta."""
    observation = {"resourceType": "Observation", "id": "o", "status": "final", "valueString": "positive"}
    assert {"resourceType": "Observation", "id": "o", "meta": {"security": [REDACTED_LABEL]}} == redact(
        observation, "cbo"
    )


def test_the_full_profile_is_a_copy() -> None:
    """Hospitals (treatment disclosures, exempt from minimum necessary) get everything."""
    copied = redact(REFERRAL, "full")
    assert REFERRAL == copied
    assert copied is not REFERRAL


def test_an_unknown_profile_is_a_configuration_error() -> None:
    """A profile name nobody defined is refused loudly."""
    with pytest.raises(ConfigurationError):
        redact(REFERRAL, "everything-please")


def test_every_profile_keeps_the_modifiers_of_the_types_it_lists() -> None:
    """Dropping a modifier element would change the meaning of the copy."""
    modifiers = {"ServiceRequest": {"status", "intent", "doNotPerform"}, "Encounter": {"status"},
                 "Task": {"status", "intent"}, "Patient": {"active", "link"}}
    for profile in PROFILES.values():
        for resource_type, elements in (profile.elements or {}).items():
            assert modifiers.get(resource_type, set()) <= elements | ALWAYS_KEPT, (profile.name, resource_type)


@pytest.mark.parametrize(
    ("facts", "recipient", "profile"),
    [
        pytest.param(referral(), CBO_A, "cbo", id="referral to a CBO"),
        pytest.param(encounter("discharge"), on_roster(CBO_A), "cbo", id="discharge to a roster CBO"),
        pytest.param(referral(performers=("Organization/hosp-a",)), HOSPITAL, "full", id="referral to a hospital"),
    ],
)
def test_the_decision_names_the_profile_for_delivery(facts: Any, recipient: Any, profile: str) -> None:
    """The permit's redaction obligation names the profile of the recipient's partner kind."""
    decision = decide(facts, recipient, Policies(), (), at=AT)
    assert [("redaction-profile", profile)] == [(o.kind, o.value) for o in decision.obligations]


@pytest.mark.corpus
def test_corpus_referrals_and_tasks_redacted_for_a_cbo_keep_only_allowed_elements(corpus_dir: Path) -> None:
    """Every ServiceRequest and Task example (Gravity SDOH, FHIR R4), redacted for a CBO, holds only the
    elements the profile allows, at the top level and in contained resources."""
    paths = [*corpus_dir.glob("sdoh-clinicalcare/json-*/**/*.json"), *corpus_dir.glob("fhir-r4-core-examples/*.json")]
    elements = PROFILES["cbo"].elements or {}
    checked = 0
    for path in sorted(paths):
        resource = json.loads(path.read_text())
        if resource.get("resourceType") not in ("ServiceRequest", "Task"):
            continue
        redacted = redact(resource, "cbo")
        assert set(redacted) <= ALWAYS_KEPT | elements[resource["resourceType"]] | {"contained"}, path.name
        for inner in redacted.get("contained", ()):
            assert set(inner) <= ALWAYS_KEPT | elements[inner["resourceType"]], path.name
        checked += 1
    assert checked >= 10
