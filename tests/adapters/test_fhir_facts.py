"""Routing facts extracted once from a validated ServiceRequest, and the hub's referral rules."""



from __future__ import annotations

from typing import Any

import pytest

from hub.adapters.fhir_facts import partner_namespace, patient_source, referral_issues, servicerequest_facts
from hub.adapters.fhir_validation import validate_resource
from hub.events import RoutingFacts
from tests.adapters.conftest import valid_service_request


def referral(**changes: Any) -> Any:
    """The valid referral with ``changes`` applied (``...`` deletes), validated into an R4B model."""
    data = valid_service_request()
    for key, value in changes.items():
        if value is ...:
            data.pop(key, None)
        else:
            data[key] = value
    return validate_resource(data, expected_type="ServiceRequest")


def test_facts_of_the_valid_referral() -> None:
    """Every fact, in its documented form."""
    facts = servicerequest_facts(referral(), sender="hosp-a", resource_id="id-1")
    assert (
        RoutingFacts(
            resource_type="ServiceRequest",
            resource_id="id-1",
            sender="hosp-a",
            patient_source="urn:carehub:partner:hosp-a:Patient/123",
            requester="Practitioner/9",
            performers=("Organization/food-bank",),
            categories=(
                "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes|food-insecurity",
            ),
            codes=("http://snomed.info/sct|467771000124109",),
            security_labels=("http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R",),
            status="active",
            intent="order",
            event_kind="referral",
        )
        == facts
    )


def test_a_later_version_of_a_referral_is_a_referral_update() -> None:
    """The first version of a ServiceRequest is a referral; every later version an update of it."""
    facts = servicerequest_facts(referral(), sender="hosp-a", resource_id="id-1", first_version=False)
    assert "referral-update" == facts.event_kind


def test_two_hospitals_patient_1_never_collide() -> None:
    """The same bare reference from two senders names two different patients."""
    a = servicerequest_facts(referral(), sender="hosp-a", resource_id=None).patient_source
    b = servicerequest_facts(referral(), sender="hosp-b", resource_id=None).patient_source
    assert "urn:carehub:partner:hosp-a:Patient/123" == a
    assert "urn:carehub:partner:hosp-b:Patient/123" == b


PATIENT_SUBJECTS = [
    pytest.param({"reference": "Patient/1"}, "urn:carehub:partner:hosp-a:Patient/1", id="bare-reference"),
    pytest.param(
        {"reference": "Patient/1/_history/3"}, "urn:carehub:partner:hosp-a:Patient/1", id="versioned"
    ),
    pytest.param(
        {"reference": "https://ehr.example/fhir/Patient/1"},
        "https://ehr.example/fhir/Patient/1",
        id="absolute-url",
    ),
    pytest.param(
        {"reference": "urn:uuid:6f1c0e7a-5b0f-4d55-9a53-6c1a2f0c4e11"},
        "urn:uuid:6f1c0e7a-5b0f-4d55-9a53-6c1a2f0c4e11",
        id="urn-uuid",
    ),
    pytest.param(
        {"identifier": {"system": "http://hospital.example/mrn", "value": "MRN-1"}},
        "http://hospital.example/mrn|MRN-1",
        id="identifier",
    ),
    pytest.param(
        {"identifier": {"value": "MRN-1"}},
        "urn:carehub:partner:hosp-a|MRN-1",
        id="identifier-without-system",
    ),
    pytest.param(
        {"reference": "Patient/1", "identifier": {"system": "http://hospital.example/mrn", "value": "MRN-1"}},
        "http://hospital.example/mrn|MRN-1",
        id="identifier-wins-over-reference",
    ),
    pytest.param(
        {"reference": "Patient/1", "identifier": {"system": "http://hospital.example/mrn"}},
        "urn:carehub:partner:hosp-a:Patient/1",
        id="identifier-without-value-ignored",
    ),
    pytest.param({"display": "Jane Doe"}, None, id="display-only"),
]


@pytest.mark.parametrize(("subject", "expected"), PATIENT_SUBJECTS)
def test_patient_source_forms(subject: dict[str, Any], expected: str | None) -> None:
    """Identifier first (system|value), else the reference, namespaced when it is local to the sender."""
    facts = servicerequest_facts(referral(subject=subject), sender="hosp-a", resource_id=None)
    assert expected == facts.patient_source


def test_contained_patient_is_named_by_its_identifier() -> None:
    """``#p`` means nothing outside this resource; the contained Patient's identifier does."""
    contained = [
        {"resourceType": "Patient", "id": "p", "identifier": [{"system": "http://mrn.example", "value": "7"}]}
    ]
    facts = servicerequest_facts(
        referral(contained=contained, subject={"reference": "#p"}), sender="hosp-a", resource_id=None
    )
    assert "http://mrn.example|7" == facts.patient_source


def test_contained_patient_without_identifier_names_no_one() -> None:
    """A contained Patient with no identifier cannot be routed."""
    contained = [{"resourceType": "Patient", "id": "p", "gender": "female"}]
    facts = servicerequest_facts(
        referral(contained=contained, subject={"reference": "#p"}), sender="hosp-a", resource_id=None
    )
    assert facts.patient_source is None


def test_patient_source_of_no_subject_is_none() -> None:
    """No subject object at all gives None (the caller decides whether that is acceptable)."""
    assert patient_source(None, sender="hosp-a") is None
    assert "urn:carehub:partner:x" == partner_namespace("x")


def test_requester_and_performers_forms() -> None:
    """References as given (minus history), identifiers as system|value, display-only entries skipped."""
    contained = [
        {"resourceType": "Organization", "id": "o", "identifier": [{"system": "urn:npi", "value": "99"}]},
    ]
    facts = servicerequest_facts(
        referral(
            contained=contained,
            requester={"identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}},
            performer=[
                {"reference": "Organization/food-bank/_history/2"},
                {"display": "Some pantry"},
                {"identifier": {"value": "local-7"}},
                {"reference": "#o"},
                {"reference": "Organization/food-bank"},
            ],
        ),
        sender="hosp-a",
        resource_id=None,
    )
    assert "http://hl7.org/fhir/sid/us-npi|1234567893" == facts.requester
    assert ("Organization/food-bank", "|local-7", "urn:npi|99") == facts.performers


def test_display_only_requester_is_none() -> None:
    """A requester named only in text has no identity to route on."""
    facts = servicerequest_facts(referral(requester={"display": "Dr X"}), sender="hosp-a", resource_id=None)
    assert facts.requester is None


def test_codes_keep_order_drop_duplicates_and_mark_missing_systems() -> None:
    """Codings become system|code (|code without a system); codings without a code are skipped."""
    facts = servicerequest_facts(
        referral(
            category=[
                {"coding": [{"system": "http://a", "code": "1"}, {"code": "2"}]},
                {
                    "coding": [
                        {"system": "http://a", "code": "1"},
                        {"system": "http://a", "display": "no code"},
                    ]
                },
                {"text": "free text only"},
            ],
            meta={"security": [{"system": "http://s", "code": "R"}, {"system": "http://s", "code": "ETH"}]},
            code=...,
        ),
        sender="hosp-a",
        resource_id=None,
    )
    assert ("http://a|1", "|2") == facts.categories
    assert () == facts.codes
    assert ("http://s|R", "http://s|ETH") == facts.security_labels


# --- referral rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({}, [], id="patient-reference"),
        pytest.param(
            {"subject": {"identifier": {"system": "http://mrn", "value": "1"}, "type": "Patient"}},
            [],
            id="patient-identifier-typed",
        ),
        pytest.param(
            {"subject": {"reference": "Group/1"}},
            [("business-rule", "ServiceRequest.subject.reference")],
            id="group",
        ),
        pytest.param(
            {"subject": {"identifier": {"system": "http://x", "value": "1"}, "type": "Device"}},
            [("business-rule", "ServiceRequest.subject.type")],
            id="declared-device",
        ),
        pytest.param({"subject": {"display": "Jane"}}, [], id="display-only-is-accepted"),
        pytest.param(
            {"subject": {"reference": "#loc"}, "contained": [{"resourceType": "Location", "id": "loc"}]},
            [("business-rule", "ServiceRequest.subject.reference")],
            id="contained-location",
        ),
        pytest.param(
            {"subject": {"reference": "#missing"}},
            [("required", "ServiceRequest.subject")],
            id="dangling-contained-reference",
        ),
    ],
)
def test_referral_rules(changes: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    """A referral must be about a Patient the hub can identify; anything else is a precise 422 issue."""
    resource = referral(**changes)
    facts = servicerequest_facts(resource, sender="hosp-a", resource_id=None)
    assert expected == [(i.code, i.expression) for i in referral_issues(resource, facts)]
