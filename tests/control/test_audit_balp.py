"""The BALP mapping: every audited decision becomes a FHIR R4 AuditEvent that the R4B models accept.

Permits are disclosures (IHE.BasicAudit.PrivacyDisclosure.Source, claimed and its required elements
present); denies follow the AuthZconsent pattern without claiming it. Pure: no database.
"""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.admin.accounting import searchset_bundle
from hub.control.audit import DecisionRecord
from hub.control.balp import (
    PROFILE_DISCLOSURE_SOURCE,
    HubIdentity,
    audit_event,
    audit_event_id,
    consent_id,
    describe_resource,
    is_tpo,
    purpose_display,
)
from hub.control.partners import Partner

CREATED = datetime(2025, 1, 1, tzinfo=UTC)
FOODBANK = Partner("foodbank", "cbo", "Food Bank", "Organization/foodbank", True, CREATED)
GENERAL = Partner("general", "hospital", "General Hospital", "urn:oid:2.16.840.1.113883.3.1|GH", True, CREATED)
CLINIC = Partner("clinic", "hospital", "Clinic", "https://ehr.example.org/fhir/Organization/7", True, CREATED)
PERMIT = DecisionRecord(
    event_id="0f8fad5b-d9cb-469f-a165-70867728950e",
    hub_patient_id="hp-" + "c" * 32,
    recipient_id="foodbank",
    verdict="permit",
    rule="cbo-referral-addressed",
    reason="The referral names Food Bank as performer.",
    purpose="CAREMGT",
    resource_type="ServiceRequest",
    decided_at=datetime(2025, 6, 1, 8, 0, 0, 250000, tzinfo=timezone(timedelta(hours=-4))),
)
POLICY_DENY = replace(PERMIT, verdict="deny", recipient_id="housing", rule="policy:no-sharing-rule",
                      reason="No sharing rule lets Housing receive this referral.")
CONSENT_DENY = replace(PERMIT, verdict="deny", recipient_id="general", rule="consent:c-17:provision.provision[0]",
                       reason="Consent c-17 denies General Hospital.")

CASES = [
    pytest.param(PERMIT, FOODBANK, "ServiceRequest/sr-1/_history/2", id="permit-cbo"),
    pytest.param(PERMIT, None, None, id="permit-partner-gone-no-resource"),
    pytest.param(replace(PERMIT, recipient_id="general", purpose="TREAT"), GENERAL, None, id="permit-hospital-ident"),
    pytest.param(replace(PERMIT, event_id="not-a-uuid", resource_type="Encounter"), CLINIC, None,
                 id="permit-encounter"),
    pytest.param(POLICY_DENY, None, None, id="deny-policy"),
    pytest.param(CONSENT_DENY, GENERAL, "ServiceRequest/sr-1/_history/1", id="deny-consent-hospital"),
    pytest.param(replace(CONSENT_DENY, recipient_id="clinic"), CLINIC, None, id="deny-consent-url-organization"),
    pytest.param(replace(CONSENT_DENY, recipient_id="foodbank"), FOODBANK, None, id="deny-consent-cbo"),
]


def parsed(event: dict[str, Any]) -> AuditEvent:
    """The AuditEvent as the R4B models read it (raises on anything FHIR R4 does not allow)."""
    return AuditEvent.model_validate(json.loads(json.dumps(event)))


@pytest.mark.parametrize(("record", "partner", "resource"), CASES)
def test_every_mapped_decision_is_a_valid_r4_audit_event(
    record: DecisionRecord, partner: Partner | None, resource: str | None
) -> None:
    event = audit_event(record, partner, resource=resource)
    model = parsed(event)
    assert audit_event_id(record) == model.id
    assert record.reason == model.outcomeDesc


def _codes(codings: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(coding["system"], coding["code"]) for coding in codings]


def _agent(event: dict[str, Any], code: str) -> dict[str, Any]:
    matching: list[dict[str, Any]] = [a for a in event["agent"] if a["type"]["coding"][0]["code"] == code]
    [agent] = matching
    return agent


def test_a_permit_is_a_privacy_disclosure_at_the_source_with_the_profiles_required_elements() -> None:
    event = audit_event(PERMIT, FOODBANK, resource="ServiceRequest/sr-1/_history/2", hub=HubIdentity(site="hub-1"))
    assert [PROFILE_DISCLOSURE_SOURCE] == event["meta"]["profile"]
    assert {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110106", "display": "Export"} \
        == event["type"]
    assert [("http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle", "disclose")] == _codes(event["subtype"])
    assert ("R", "0") == (event["action"], event["outcome"])
    assert "2025-06-01T12:00:00.250000Z" == event["recorded"]
    assert [("http://terminology.hl7.org/CodeSystem/v3-ActReason", "CAREMGT")] == _codes(
        event["purposeOfEvent"][0]["coding"])
    source, recipient = _agent(event, "110153"), _agent(event, "110152")
    assert event["source"]["observer"] == source["who"]  # BALP invariant val-audit-source
    assert "hub-1" == event["source"]["site"] == source["network"]["address"]
    assert {"system": "urn:carehub:partner", "value": "foodbank"} == recipient["who"]["identifier"]
    assert ("Food Bank", "urn:carehub:topic:partner.foodbank") == (recipient["name"], recipient["network"]["address"])
    patient, data = event["entity"]
    assert ("1", "1") == (patient["type"]["code"], patient["role"]["code"])
    assert {"type": "Patient", "identifier": {"system": "urn:carehub:hub-patient-id", "value": PERMIT.hub_patient_id}} \
        == patient["what"]
    assert "ServiceRequest/sr-1/_history/2" == data["what"]["reference"]
    assert {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{PERMIT.event_id}"} == data["what"]["identifier"]
    assert [{"type": "rule", "valueString": "cbo-referral-addressed"}] == data["detail"]


def test_a_consent_deny_is_an_authz_consent_security_alert_naming_the_consent() -> None:
    event = audit_event(CONSENT_DENY, GENERAL)
    assert "meta" not in event  # the pattern is followed, the profile (closed entity slicing) not claimed
    assert ("110113", "E", "4") == (event["type"]["code"], event["action"], event["outcome"])
    assert [("https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType", "AuthZ-Consent")] == _codes(event["subtype"])
    assert event["source"]["observer"] == _agent(event, "authserver")["who"]
    user = _agent(event, "IRCP")
    assert (True, "General Hospital") == (user["requestor"], user["who"]["display"])
    organization = _agent(event, "PROV")
    assert {"system": "urn:oid:2.16.840.1.113883.3.1", "value": "GH"} == organization["who"]["identifier"]
    assert {"reference": "Consent/c-17"} == event["entity"][2]["what"]


def test_a_policy_deny_is_a_role_decision_and_a_cbo_gets_no_provider_agent() -> None:
    event = audit_event(replace(POLICY_DENY, recipient_id="foodbank"), FOODBANK)
    assert [("https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType", "AuthZ-Role")] == _codes(event["subtype"])
    assert ["authserver", "110150", "IRCP"] == [a["type"]["coding"][0]["code"] for a in event["agent"]]
    assert 2 == len(event["entity"])


def test_the_audit_event_id_is_stable_and_distinct_per_audited_decision() -> None:
    assert audit_event_id(PERMIT) == audit_event_id(replace(PERMIT, reason="other words", decided_at=CREATED))
    ids = {audit_event_id(record) for record in (PERMIT, POLICY_DENY, CONSENT_DENY, replace(PERMIT, event_id="e2"))}
    assert 4 == len(ids)


def test_the_export_names_the_patient_only_by_the_opaque_hub_patient_id() -> None:
    text = json.dumps(audit_event(PERMIT, FOODBANK))
    assert PERMIT.hub_patient_id in text
    assert "MRN" not in text
    assert "urn:oid" not in text


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("consent:c-17:provision", "c-17"), ("consent:(unsaved):provision", None), ("policy:opt-in", None),
     ("consent:", None), ("cbo-referral-addressed", None)],
)
def test_consent_id_reads_only_consent_rules(rule: str, expected: str | None) -> None:
    assert expected == consent_id(rule)


def test_code_tables_say_what_was_shared_and_why() -> None:
    assert "referral for a service (ServiceRequest)" == describe_resource("ServiceRequest")
    assert "Observation" == describe_resource("Observation")
    assert ("care management", "XYZ") == (purpose_display("CAREMGT"), purpose_display("XYZ"))
    assert (True, True, False) == (is_tpo("TREAT"), is_tpo("CAREMGT"), is_tpo("PUBHLTH"))


def test_a_page_of_audit_events_is_a_valid_searchset_bundle() -> None:
    events = [audit_event(record, FOODBANK) for record in (PERMIT, POLICY_DENY, CONSENT_DENY)]
    bundle = searchset_bundle(events, self_url="http://hub/admin/v1/audit/AuditEvent",
                              next_url="http://hub/admin/v1/audit/AuditEvent?cursor=x", now=CREATED)
    Bundle.model_validate(bundle)
    assert ("searchset", 3) == (bundle["type"], len(bundle["entry"]))
    assert ["self", "next"] == [link["relation"] for link in bundle["link"]]
    assert f"urn:uuid:{audit_event_id(PERMIT)}" == bundle["entry"][0]["fullUrl"]


_text = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF, exclude_characters="|"), min_size=1,
                max_size=40)


@settings(max_examples=60, deadline=None)
@given(
    event_id=_text, recipient_id=st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True),
    verdict=st.sampled_from(["permit", "deny"]), rule=_text, reason=st.text(min_size=1, max_size=80).filter(str.strip),
    purpose=st.sampled_from(["TREAT", "CAREMGT", "ETREAT", "PUBHLTH", "X-LOCAL"]),
    resource_type=st.sampled_from(["ServiceRequest", "Task", "Encounter", "Consent"]),
    seconds=st.integers(min_value=0, max_value=4_000_000_000),
    partner=st.sampled_from([None, FOODBANK, GENERAL, CLINIC]),
)
def test_any_storable_decision_maps_to_a_valid_audit_event(
    event_id: str, recipient_id: str, verdict: str, rule: str, reason: str, purpose: str, resource_type: str,
    seconds: int, partner: Partner | None,
) -> None:
    record = DecisionRecord(
        event_id=event_id, hub_patient_id="hp-" + "d" * 32, recipient_id=recipient_id,
        verdict="permit" if verdict == "permit" else "deny", rule=rule, reason=reason, purpose=purpose,
        resource_type=resource_type, decided_at=datetime.fromtimestamp(seconds, tz=UTC),
    )
    parsed(audit_event(record, partner))
