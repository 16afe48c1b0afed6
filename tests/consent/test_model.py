"""Reading FHIR R4 Consent JSON into values: both LEAP generations, dates, and one clear error per bad input."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from hub.consent import labels as lbl
from hub.consent.model import (
    Consent,
    ConsentStatus,
    Jurisdiction,
    Policies,
    ProvisionType,
    Relationship,
    SharingRule,
    consent_from_fhir,
)
from hub.errors import ConfigurationError, InvalidInput

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ROLES = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ACTIONS = "http://terminology.hl7.org/CodeSystem/consentaction"
SCOPES = "http://terminology.hl7.org/CodeSystem/consentscope"
SCOPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]}


def leap_first_generation() -> dict[str, Any]:
    """An R4 consent as LEAP's first generation wrote it: base from policyRule, untyped root."""
    return {
        "resourceType": "Consent",
        "id": "gen1",
        "status": "active",
        "scope": SCOPE,
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/52/_history/3"},
        "dateTime": "2019-11-01",
        "policyRule": {"coding": [{"system": ACT, "code": "OPTIN"}]},
        "provision": {
            "period": {"start": "2019-11-01", "end": "2022-01-01"},
            "provision": [
                {
                    "type": "deny",
                    "actor": [
                        {
                            "role": {"coding": [{"system": ROLES, "code": "IRCP"}]},
                            "reference": {"reference": "Organization/54"},
                        },
                    ],
                    "action": [{"coding": [{"system": ACTIONS, "code": "access"}]}],
                    "securityLabel": [{"system": "http://hl7.org/fhir/v3/Confidentiality", "code": "R"}],
                    "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}],
                    "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "ServiceRequest"}],
                    "code": [{"coding": [{"system": "http://loinc.org", "code": "34133-9"}]}],
                    "data": [{"meaning": "instance", "reference": {"reference": "ServiceRequest/1"}}],
                },
            ],
        },
    }


def leap_second_generation() -> dict[str, Any]:
    """An R4 consent as LEAP's later fixtures write it: privacy scope in category, typed root."""
    return {
        "resourceType": "Consent",
        "status": "active",
        "category": [{"coding": [{"system": SCOPES, "code": "patient-privacy"}]}],
        "patient": {"identifier": {"system": "http://hl7.org/fhir/sid/us-medicare", "value": "0000-000-0000"}},
        "dateTime": "2019-11-01T10:00:00-05:00",
        "policyRule": {"coding": [{"system": ACT, "code": "hipaa-self-pay"}]},
        "provision": {
            "type": "permit",
            "provision": [{"type": "deny", "securityLabel": [{"system": ACT, "code": "PSY"}]}],
        },
    }


def test_first_generation_takes_its_base_from_policy_rule() -> None:
    """OPTIN without a root type permits by policyRule; every condition is read, references unversioned."""
    consent = consent_from_fhir(leap_first_generation())
    assert (ProvisionType.PERMIT, "policyRule") == (consent.base, consent.base_path)
    assert "Patient/52" == consent.patient
    assert consent.is_privacy
    assert consent.provision is not None
    nested = consent.provision.provisions[0]
    assert ProvisionType.DENY is nested.type
    assert frozenset({"Organization/54"}) == nested.c_recipient_ids
    assert frozenset({lbl.R}) == nested.c_labels
    assert frozenset({"TREAT"}) == nested.c_purposes
    assert frozenset({"access"}) == nested.c_actions
    assert frozenset({"ServiceRequest"}) == nested.c_classes
    assert frozenset({"http://loinc.org|34133-9"}) == nested.c_codes
    assert "ServiceRequest/1" == nested.data[0].reference
    assert (("provision.provision[0]", nested),) == consent.label_denies


def test_second_generation_takes_its_base_from_the_root_type() -> None:
    """A typed root decides; privacy scope may sit in category; a logical patient reference is kept."""
    consent = consent_from_fhir(leap_second_generation())
    assert (ProvisionType.PERMIT, "provision") == (consent.base, consent.base_path)
    assert consent.is_privacy
    assert "http://hl7.org/fhir/sid/us-medicare|0000-000-0000" == consent.patient
    assert datetime(2019, 11, 1, 15, tzinfo=UTC) == consent.date_time


def test_the_store_can_name_the_hub_patient() -> None:
    """``patient=`` replaces the JSON's reference by the hub patient id."""
    consent = consent_from_fhir(leap_first_generation(), patient="urn:carehub:patient:9")
    assert "urn:carehub:patient:9" == consent.patient


@pytest.mark.parametrize(
    ("policy_rule", "root_type", "base"),
    [
        pytest.param("OPTIN", None, ProvisionType.PERMIT, id="optin"),
        pytest.param("OPTOUT", None, ProvisionType.DENY, id="optout"),
        pytest.param("npp", None, None, id="no base"),
        pytest.param("npp", "deny", ProvisionType.DENY, id="typed root"),
        pytest.param("OPTIN", "deny", ProvisionType.DENY, id="disagreeing: deny wins"),
        pytest.param("OPTOUT", "permit", ProvisionType.DENY, id="disagreeing the other way: deny wins"),
    ],
)
def test_the_base_decision(policy_rule: str, root_type: str | None, base: ProvisionType | None) -> None:
    """Where the base decision comes from, and that a deny from either source wins."""
    data = leap_first_generation()
    data["policyRule"]["coding"][0]["code"] = policy_rule
    if root_type:
        data["provision"]["type"] = root_type
    assert base is consent_from_fhir(data).base


@pytest.mark.parametrize(
    ("value", "start", "until"),
    [
        pytest.param("2016-01-01", datetime(2016, 1, 1, tzinfo=UTC), datetime(2016, 1, 2, tzinfo=UTC), id="day"),
        pytest.param("2016-02", datetime(2016, 2, 1, tzinfo=UTC), datetime(2016, 3, 1, tzinfo=UTC), id="month"),
        pytest.param("2016-12", datetime(2016, 12, 1, tzinfo=UTC), datetime(2017, 1, 1, tzinfo=UTC), id="december"),
        pytest.param("2016", datetime(2016, 1, 1, tzinfo=UTC), datetime(2017, 1, 1, tzinfo=UTC), id="year"),
        pytest.param(
            "2016-06-23T17:02:33+10:00",
            datetime(2016, 6, 23, 7, 2, 33, tzinfo=UTC),
            datetime(2016, 6, 23, 7, 2, 34, tzinfo=UTC),
            id="second",
        ),
        pytest.param(
            "2016-06-23T17:02:33Z", datetime(2016, 6, 23, 17, 2, 33, tzinfo=UTC),
            datetime(2016, 6, 23, 17, 2, 34, tzinfo=UTC), id="zulu",
        ),
        pytest.param(
            "2016-06-23T17:02:33", datetime(2016, 6, 23, 17, 2, 33, tzinfo=UTC),
            datetime(2016, 6, 23, 17, 2, 34, tzinfo=UTC), id="no zone is UTC",
        ),
    ],
)
def test_a_period_covers_the_whole_precision_of_its_bounds(value: str, start: datetime, until: datetime) -> None:
    """A FHIR end date includes its whole day (month, year, second): ``until`` is the first instant after."""
    data = leap_first_generation()
    data["provision"]["period"] = {"start": value, "end": value}
    period = consent_from_fhir(data).provision.period  # type: ignore[union-attr]
    assert (start, until) == (period.start, period.until)  # type: ignore[union-attr]


def _broken(edit: str) -> dict[str, Any]:
    data = copy.deepcopy(leap_first_generation())
    nested = data["provision"]["provision"][0]
    match edit:
        case "resourceType":
            data["resourceType"] = "Patient"
        case "no status":
            del data["status"]
        case "bad status":
            data["status"] = "revoked"
        case "bad type":
            nested["type"] = "maybe"
        case "bad date":
            data["provision"]["period"]["start"] = "2019-13-01"
        case "not a date":
            data["dateTime"] = "yesterday"
        case "start after end":
            data["provision"]["period"] = {"start": "2022-01-01", "end": "2019-01-01"}
        case "actor without reference":
            nested["actor"][0]["reference"] = {"display": "someone"}
        case "label without code":
            nested["securityLabel"] = [{"system": ACT}]
        case "action as text":
            nested["action"] = [{"text": "read"}]
        case "category not a list":
            data["category"] = "privacy"  # a single object is read as a list; a string cannot be
        case "provision as a list":
            data["provision"] = [data["provision"], {"type": "deny"}]  # one root is read as R4's; two cannot
        case "data without reference":
            nested["data"] = [{"meaning": "instance", "reference": {}}]
        case "too deep":
            deep: dict[str, Any] = {"type": "deny"}
            for _ in range(20):
                deep = {"type": "permit", "provision": [deep]}
            data["provision"] = deep
    return data


@pytest.mark.parametrize(
    ("edit", "expression"),
    [
        ("resourceType", "Consent.resourceType"),
        ("no status", "Consent.status"),
        ("bad status", "Consent.status"),
        ("bad type", "Consent.provision.provision[0].type"),
        ("bad date", "Consent.provision.period.start"),
        ("not a date", "Consent.dateTime"),
        ("start after end", "Consent.provision.period"),
        ("actor without reference", "Consent.provision.provision[0].actor[0].reference"),
        ("label without code", "Consent.provision.provision[0].securityLabel[0].code"),
        ("action as text", "Consent.provision.provision[0].action[0]"),
        ("category not a list", "Consent.category"),
        ("provision as a list", "Consent.provision"),
        ("data without reference", "Consent.provision.provision[0].data[0].reference"),
        ("too deep", "Consent.provision" + ".provision[0]" * 17),
    ],
)
def test_unusable_input_raises_one_error_naming_its_fhirpath(edit: str, expression: str) -> None:
    """Each unusable input gets one InvalidInput whose expression points at the problem."""
    with pytest.raises(InvalidInput) as caught:
        consent_from_fhir(_broken(edit))
    assert expression == caught.value.expression


def test_a_non_object_is_rejected() -> None:
    """Not even a JSON object: the expression is the resource itself."""
    with pytest.raises(InvalidInput) as caught:
        consent_from_fhir([])  # type: ignore[arg-type]
    assert "Consent" == caught.value.expression


def test_consents_are_hashable_values() -> None:
    """Two readings of the same JSON are equal, hash alike and work as dict keys; derived fields do not count."""
    first, second = consent_from_fhir(leap_first_generation()), consent_from_fhir(leap_first_generation())
    assert first == second
    assert hash(first) == hash(second)
    assert 1 == len({first: 1, second: 1})
    other = consent_from_fhir(leap_first_generation() | {"status": "inactive"})
    assert ConsentStatus.INACTIVE is other.status
    assert first != other


def test_a_consent_built_in_code_gets_the_same_precomputation() -> None:
    """Values built directly (not parsed) are compiled the same way."""
    consent = Consent(id="x", status=ConsentStatus.ACTIVE, policy_rules=(f"{ACT}|OPTOUT",))
    assert (ProvisionType.DENY, (), False) == (consent.base, consent.time_bounds, consent.is_privacy)


def test_policies_refuse_break_glass_for_cbos() -> None:
    """A sharing rule that would give a CBO a break-glass purpose is a configuration error."""
    rule = SharingRule("cbo-emergency", "cbo", frozenset({"referral"}), Relationship.ADDRESSED,
                       frozenset({"ETREAT"}), "cbo", "never")
    with pytest.raises(ConfigurationError):
        Policies(rules=(rule,))


def test_policies_refuse_an_unknown_redaction_profile() -> None:
    """A sharing rule must name a redaction profile that exists."""
    rule = SharingRule("r", "hospital", frozenset({"referral"}), Relationship.ADDRESSED,
                       frozenset({"TREAT"}), "nope", "bad")
    with pytest.raises(ConfigurationError):
        Policies(rules=(rule,))


def test_policies_are_hashable_values_and_part2_is_always_specific() -> None:
    """Equal policies hash alike; Part 2 labels need specific consent even when the operator lists none."""
    assert hash(Policies()) == hash(Policies())
    assert Policies(jurisdiction=Jurisdiction.OPT_IN) != Policies()
    assert lbl.PART2_LABELS <= Policies(specific_consent_labels=frozenset()).specific_labels
