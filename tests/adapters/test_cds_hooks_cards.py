"""The CDS Hooks consult, pure: LEAP request variants -> ConsultRequest, and consents -> the LEAP card."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.adapters.cds_hooks import audit_record, consult_event_id
from hub.adapters.cds_hooks_model import discovery, parse_request
from hub.consent import labels as lbl
from hub.consent.cds_cards import (
    HIDDEN_REASON,
    CardDecision,
    ConsultAnswer,
    ConsultRequest,
    card,
    consult,
    shown_to_caller,
)
from hub.consent.engine import PART2_NOTICE
from hub.consent.model import CONSENT_SCOPE_SYSTEM, OPTOUT, ConsentStatus
from hub.control.audit import validate_record
from hub.errors import InvalidInput
from tests.consent.helpers import (
    AT,
    DENY,
    PATIENT,
    PERMIT,
    consent,
    optin,
    optout,
    part2_consent,
    prov,
)

PRIVACY = {"system": CONSENT_SCOPE_SYSTEM, "code": "patient-privacy"}
AT_TS = AT.timestamp()
CBO_A = frozenset({"Organization/cbo-a", "urn:oid:2.16.840.1.113883.20.5|cbo-a"})
ACT = lbl.ACT_CODE_SYSTEM
CONF = lbl.CONFIDENTIALITY_SYSTEM
DEEP: Any = []
for _ in range(20):
    DEEP = [DEEP]
PART2_CODES = [{"system": ACT, "code": code} for code in ("42CFRPart2", "ETH", "ETHUD", "OPIOIDUD", "SUD")]


def body(**context: Any) -> bytes:
    request: dict[str, Any] = {
        "hook": "patient-consent-consult",
        "hookInstance": "hook-instance-123",
        "context": {"patientId": [{"system": "urn:oid:1.2.3", "value": "MRN-1"}], **context},
    }
    return orjson.dumps(request)


def ask(purposes: tuple[str, ...] = ("CAREMGT",), classes: tuple[str, ...] = ()) -> ConsultRequest:
    return ConsultRequest("h-1", ("urn:oid:1.2.3|MRN-1",), ("urn:oid:2.16.840.1.113883.20.5|cbo-a",),
                          frozenset(), purposes, classes)


def answer_card(consents: list[Any], request: ConsultRequest | None = None, *,
                patients: tuple[str, ...] = (PATIENT,), actor: frozenset[str] = CBO_A) -> dict[str, Any]:
    answer = consult(request or ask(), consents, patients=patients, recipient_ids=actor, at=AT_TS)
    return card(answer, source_label="CareHub", source_url="http://hub/cds-services", consent_base="http://hub/fhir/")


# --- request parsing: the LEAP generations ---------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        pytest.param(  # later LEAP: lists, category, purpose list, class with "value" (as LEAP's README)
            {"category": [PRIVACY], "purposeOfUse": ["TREAT"],
             "actor": [{"system": "urn:ietf:rfc:3986", "value": "2.16.840.1.113883.20.5"}],
             "class": [{"system": "http://hl7.org/fhir/resource-types", "value": "MedicationStatement"}]},
            ConsultRequest(
                "hook-instance-123", ("urn:oid:1.2.3|MRN-1",), ("urn:ietf:rfc:3986|2.16.840.1.113883.20.5",),
                frozenset({f"{CONSENT_SCOPE_SYSTEM}|patient-privacy"}), ("TREAT",), ("MedicationStatement",),
            ),
            id="leap-2-category",
        ),
        pytest.param(  # first LEAP: one identifier objects, scope as a bare code, purpose as a string
            {"patientId": {"system": "urn:oid:1.2.3", "value": "MRN-1"}, "scope": "patient-privacy",
             "purposeOfUse": "TREAT", "actor": {"system": "sample-system", "value": "sample-id"}},
            ConsultRequest("hook-instance-123", ("urn:oid:1.2.3|MRN-1",), ("sample-system|sample-id",),
                           frozenset({f"{CONSENT_SCOPE_SYSTEM}|patient-privacy"}), ("TREAT",), ()),
            id="leap-1-scope",
        ),
        pytest.param(
            {}, ConsultRequest("hook-instance-123", ("urn:oid:1.2.3|MRN-1",)), id="nothing-but-the-patient",
        ),
        pytest.param(  # a system-less identifier is the calling partner's own
            {"actor": [{"value": "me"}], "class": [{"code": "Observation"}, {"system": "urn:x", "code": "lab"}]},
            ConsultRequest("hook-instance-123", ("urn:oid:1.2.3|MRN-1",), ("urn:carehub:partner:cbo-a|me",),
                           frozenset(), (), ("Observation", "urn:x|lab")),
            id="local-identifiers-and-classes",
        ),
    ],
)
def test_both_leap_request_generations_parse_to_the_same_query(
    context: dict[str, Any], expected: ConsultRequest
) -> None:
    assert expected == parse_request(body(**context), sender="cbo-a")


@pytest.mark.parametrize(
    ("raw", "expression"),
    [
        (b"{not json", "$"),
        (b"[]", "$"),
        (orjson.dumps({"hookInstance": "1", "context": {}}), "hook"),
        (orjson.dumps({"hook": "wrongName", "hookInstance": "1", "context": {}}), "hook"),
        (orjson.dumps({"hook": "patient-consent-consult", "context": {}}), "hookInstance"),
        (orjson.dumps({"hook": "patient-consent-consult", "hookInstance": "1"}), "context"),
        (orjson.dumps({"hook": "patient-consent-consult", "hookInstance": "1", "context": {}}), "context.patientId"),
        (body(patientId=[]), "context.patientId"),
        (body(patientId=[{"system": "urn:x"}]), "context.patientId[0].value"),
        (body(patientId="MRN-1"), "context.patientId"),
        (body(purposeOfUse=[]), "context.purposeOfUse"),
        (body(purposeOfUse=[7]), "context.purposeOfUse[0]"),
        (body(category=[{"system": "urn:x"}]), "context.category[0].code"),
        (body(actor=[{"system": "a|b", "value": "c"}]), "context.actor[0]"),
        (body(actor=[{"value": "x\u0000"}]), "context.actor[0].value"),
        (orjson.dumps({"hook": "patient-consent-consult", "hookInstance": "1", "context": {"a": DEEP}}), "$"),
    ],
)
def test_bad_requests_name_the_path_of_the_problem(raw: bytes, expression: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_request(raw, sender="cbo-a")
    assert expression == raised.value.expression
    assert str(raised.value).startswith("Invalid request: ")


def test_the_wrong_hook_message_names_the_right_one_as_leap_does() -> None:
    with pytest.raises(InvalidInput, match="patient-consent-consult"):
        parse_request(orjson.dumps({"hook": "wrongName", "hookInstance": "1", "context": {}}), sender=None)


def test_the_operator_must_give_identifier_systems() -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_request(body(patientId=[{"value": "MRN-1"}]), sender=None)
    assert "context.patientId[0].system" == raised.value.expression


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(["hook", "hookInstance", "context", "patientId", "actor", "value", "system",
                                         "code", "scope", "category", "purposeOfUse", "class", "coding"]),
                        inner, max_size=4), max_leaves=20))
def test_parsing_any_json_either_succeeds_or_raises_invalid_input(value: Any) -> None:
    for candidate in (value, {"hook": "patient-consent-consult", "hookInstance": "x", "context": value}):
        with contextlib.suppress(InvalidInput):
            parse_request(json.dumps(candidate).encode(), sender="cbo-a")


def test_discovery_lists_the_consult_service_without_prefetch() -> None:
    [service] = discovery()["services"]
    assert ("patient-consent-consult", "patient-consent-consult") == (service["id"], service["hook"])
    assert service["title"]
    assert service["description"]
    assert "prefetch" not in service


# --- the answer: consents -> card ------------------------------------------------------------------


def test_no_consent_on_file_is_a_leap_no_consent_card() -> None:
    assert {
        "summary": "NO_CONSENT",
        "detail": "No applicable consent was found.",
        "indicator": "warning",
        "source": {"label": "CareHub", "url": "http://hub/cds-services"},
        "extension": {"decision": "NO_CONSENT", "obligations": [], "rule": "consent:none",
                      "reason": "none of the patient's 0 consents applies to this disclosure"},
    } == answer_card([])


def test_an_opt_in_permits_and_withholds_part2_data_no_consent_names_the_actor_for() -> None:
    answer = answer_card([optin("c1")])
    assert ("CONSENT_PERMIT", "info") == (answer["summary"], answer["indicator"])
    assert "There is a patient consent permitting this action." == answer["detail"]
    extension = answer["extension"]
    assert "CONSENT_PERMIT" == extension["decision"]
    assert "http://hub/fhir/Consent/c1" == extension["basedOn"]
    assert [{"id": {"system": ACT, "code": "REDACT"}, "parameters": {"codes": PART2_CODES}}] == extension["obligations"]


def test_an_opt_out_denies_with_no_obligations() -> None:
    answer = answer_card([optout("c1")])
    assert ("CONSENT_DENY", "critical", "There is a patient consent denying this action.") == (
        answer["summary"], answer["indicator"], answer["detail"])
    assert {"decision": "CONSENT_DENY", "obligations": [], "basedOn": "http://hub/fhir/Consent/c1"} == {
        key: answer["extension"][key] for key in ("decision", "obligations", "basedOn")}


@pytest.mark.parametrize(
    ("consents", "request_", "decision", "rule"),
    [
        ([optin("c1", prov(actor="Organization/cbo-a"))], None, "CONSENT_DENY", "consent:c1:provision.provision[0]"),
        ([optin("c1", prov(actor="Organization/other"))], None, "CONSENT_PERMIT", "consent:c1:policyRule"),
        ([optout("c1", prov(actor="Organization/cbo-a"))], None, "CONSENT_PERMIT", "consent:c1:provision.provision[0]"),
        ([optin("c1", prov(purpose="TREAT"))], ask(("TREAT",)), "CONSENT_DENY", "consent:c1:provision.provision[0]"),
        ([optin("c1", prov(purpose="TREAT"))], ask(("CAREMGT",)), "CONSENT_PERMIT", "consent:c1:policyRule"),
        # several purposes: the answer must hold for each, so the strictest wins
        ([optin("c1", prov(purpose="TREAT"))], ask(("CAREMGT", "TREAT")), "CONSENT_DENY",
         "consent:c1:provision.provision[0]"),
        # no purpose given: a purpose-bound permit cannot be shown to apply, a purpose-bound deny can
        ([consent("c1", root=prov(PERMIT, purpose="TREAT"))], ask(()), "NO_CONSENT", "consent:none"),
        ([optin("c1", prov(purpose="TREAT"))], ask(()), "CONSENT_DENY", "consent:c1:provision.provision[0]"),
        # the most recent applicable consent decides (LEAP); a revoked consent is no consent (LEAP)
        ([optout("old", date="2024-01-01"), optin("new", date="2025-01-01")], None, "CONSENT_PERMIT",
         "consent:new:policyRule"),
        ([optin("old", date="2024-01-01"), optout("new", date="2025-01-01")], None, "CONSENT_DENY",
         "consent:new:policyRule"),
        ([consent("c1", status=ConsentStatus.INACTIVE)], None, "NO_CONSENT", "consent:none"),
        ([consent("c1", status=ConsentStatus.ENTERED_IN_ERROR)], None, "NO_CONSENT", "consent:none"),
        # a requested class the consent withholds denies (LEAP adjustDecision)
        ([optin("c1", prov(cls="Observation"))], ask(classes=("Observation",)), "CONSENT_DENY",
         "consent:c1:provision.provision[0]"),
    ],
)
def test_decision_table(consents: list[Any], request_: ConsultRequest | None, decision: str, rule: str) -> None:
    extension = answer_card(consents, request_)["extension"]
    assert (decision, rule) == (extension["decision"], extension["rule"])


def test_a_label_exception_in_an_opt_in_becomes_a_redact_codes_obligation() -> None:
    [obligation] = answer_card([optin("c1", prov(label=lbl.R))])["extension"]["obligations"]
    assert {"system": CONF, "code": "R"} in obligation["parameters"]["codes"]


def test_a_class_exception_without_a_requested_class_becomes_a_redact_obligation() -> None:
    [obligation] = answer_card([optin("c1", prov(cls="Observation"))])["extension"]["obligations"]
    assert {"system": "http://hl7.org/fhir/resource-types", "code": "Observation"} in obligation["parameters"]["codes"]


def test_a_part2_consent_naming_the_actor_permits_only_part2_data_with_the_notice() -> None:
    answer = answer_card([part2_consent("p2", actor="Organization/cbo-a")])
    extension = answer["extension"]
    assert "CONSENT_PERMIT" == extension["decision"]
    assert "http://hub/fhir/Consent/p2" == extension["basedOn"]
    redact, notice = extension["obligations"]
    assert {"id": {"system": ACT, "code": "REDACT"}, "parameters": {"exceptAnyOfCodes": PART2_CODES}} == redact
    assert {"system": ACT, "code": "NORDSCLCD"} == notice["id"]
    assert {"codes": PART2_CODES, "notice": PART2_NOTICE, "consent": "Consent/p2"} == notice["parameters"]


def test_a_part2_consent_naming_someone_else_releases_nothing() -> None:
    extension = answer_card([part2_consent("p2", actor="Organization/cbo-b")])["extension"]
    assert ("CONSENT_DENY", []) == (extension["decision"], extension["obligations"])


def test_a_general_permit_plus_a_part2_consent_lifts_the_part2_redaction_and_adds_the_notice() -> None:
    extension = answer_card([optin("c1", date="2025-01-01"),
                             consent("p2", base=None, date="2024-01-01", root=prov(
                                 PERMIT, actor="Organization/cbo-a", label=lbl.SUD, purpose="CAREMGT"))])["extension"]
    assert "CONSENT_PERMIT" == extension["decision"]
    assert ["NORDSCLCD"] == [obligation["id"]["code"] for obligation in extension["obligations"]]


def test_a_label_deny_in_another_consent_is_kept_as_a_redaction() -> None:
    extension = answer_card([optin("new", date="2025-06-01"),
                             optin("old", prov(DENY, label=lbl.HIV), date="2024-01-01")])["extension"]
    assert "CONSENT_PERMIT" == extension["decision"]
    assert {"system": ACT, "code": "HIV"} in extension["obligations"][0]["parameters"]["codes"]


def test_an_unknown_patient_is_no_consent_and_an_ambiguous_one_is_denied() -> None:
    unknown = answer_card([], patients=())["extension"]
    assert ("NO_CONSENT", "cds:unknown-patient") == (unknown["decision"], unknown["rule"])
    assert "basedOn" not in unknown
    ambiguous = answer_card([optin()], patients=("hp-1", "hp-2"))["extension"]
    assert ("CONSENT_DENY", "cds:ambiguous-patient") == (ambiguous["decision"], ambiguous["rule"])


def test_an_actor_known_by_none_of_its_names_is_treated_as_anyone() -> None:
    denied_for_cbo_a = [optin("c1", prov(actor="Organization/cbo-a"))]
    assert "CONSENT_PERMIT" == answer_card(denied_for_cbo_a, actor=frozenset({"urn:x|stranger"}))["summary"]


def test_the_audit_record_is_storable_and_stable_per_caller_and_hook_instance() -> None:
    answer = consult(ask(), [optout("c1")], patients=(PATIENT,), recipient_ids=CBO_A, at=AT_TS)
    record = audit_record(answer, ask(), caller="cbo-a", patient=PATIENT, recipient="cbo-a")
    validate_record(record)
    assert ("deny", "cds:consent:c1:policyRule", "CAREMGT", "any") == (
        record.verdict, record.rule, record.purpose, record.resource_type)
    assert record.event_id == consult_event_id("cbo-a", "h-1") != consult_event_id("cbo-b", "h-1")
    assert "CONSENT_DENY" in record.reason
    unknown = consult(ask(), [], patients=(), recipient_ids=CBO_A, at=AT_TS)
    validate_record(audit_record(unknown, ask(), caller="operator", patient=None, recipient=None))


def test_card_decisions_are_leaps_three() -> None:
    assert {"CONSENT_PERMIT", "CONSENT_DENY", "NO_CONSENT"} == {decision.value for decision in CardDecision}


def test_a_provision_restricting_a_label_and_a_class_withholds_both() -> None:
    """LEAP lists every code of a matching provision in one REDACT obligation: a provision restricting HIV
    and Observation withholds HIV-labelled data too (today's engine asked about the label without the class,
    so the label fell out)."""
    both = optin("c1", prov(label=lbl.HIV, cls="Observation"))
    [redact] = answer_card([both])["extension"]["obligations"]
    withheld = redact["parameters"]["codes"]
    assert {"system": ACT, "code": "HIV"} in withheld
    assert {"system": "http://hl7.org/fhir/resource-types", "code": "Observation"} in withheld


def test_a_label_restricted_only_for_a_class_the_request_does_not_ask_for_is_not_withheld() -> None:
    """The other half of LEAP's matchClass: a request naming another class does not match the provision."""
    both = optin("c1", prov(label=lbl.HIV, cls="Observation"))
    [redact] = answer_card([both], ask(classes=("ServiceRequest",)))["extension"]["obligations"]
    assert {"system": ACT, "code": "HIV"} not in redact["parameters"]["codes"]


def test_a_consent_of_another_scope_is_ignored_even_when_the_request_names_no_category() -> None:
    """A research opt-out is kept but never decides a privacy question (a request without category
    considers every patient-privacy consent, not every consent)."""
    research = consent("r1", base=OPTOUT, scope=(f"{CONSENT_SCOPE_SYSTEM}|research",))
    extension = answer_card([research])["extension"]
    assert ("NO_CONSENT", "consent:none") == (extension["decision"], extension["rule"])


def test_the_part2_obligation_is_the_ds4p_refrain_policy_on_redisclosure() -> None:
    """The 42 CFR Part 2 obligation is v3-ActCode NORDSCLCD (RefrainPolicy "no redisclosure without consent
    directive", in the DS4P IG's security-label value sets), listing the v3-ActCode Part 2 labels."""
    [_, nordsclcd] = answer_card([part2_consent()])["extension"]["obligations"]
    assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "NORDSCLCD"} == nordsclcd["id"]
    assert {"system": ACT, "code": "42CFRPart2"} in nordsclcd["parameters"]["codes"]


# --- what the caller is shown: no id of a Consent it may not read (ADR 0007 decision 7) -------------------

OWN = "8d0f3c52-0d6b-4c1e-9a41-3f1a7e2b9c01"
OTHERS = "2b7e4a18-6f3d-4d0a-8c55-91e0b6a4d7f2"


def shown(consents: list[Any], hidden: frozenset[str], request: ConsultRequest | None = None) -> dict[str, Any]:
    answer = consult(request or ask(), consents, patients=(PATIENT,), recipient_ids=CBO_A, at=AT_TS)
    return card(shown_to_caller(answer, hidden), source_label="CareHub", source_url="http://hub/cds-services",
                consent_base="http://hub/fhir/")


def without_consent_parameters(obligations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**o, "parameters": {k: v for k, v in o["parameters"].items() if k != "consent"}} for o in obligations]


def test_the_operator_and_the_recording_partner_see_the_deciding_consents_id() -> None:
    """Nothing hidden (the operator; a partner that recorded every consent): the card is the full answer's."""
    answer = consult(ask(), [optout(OWN)], patients=(PATIENT,), recipient_ids=CBO_A, at=AT_TS)
    assert answer == shown_to_caller(answer, frozenset())
    assert answer == shown_to_caller(answer, frozenset({"some-other-consent"}))
    extension = shown([optout(OWN)], frozenset())["extension"]
    assert (f"http://hub/fhir/Consent/{OWN}", f"consent:{OWN}:policyRule") == (extension["basedOn"], extension["rule"])
    assert OWN in extension["reason"]


def test_a_partner_that_may_not_read_the_deciding_consent_gets_the_same_decision_without_its_id() -> None:
    full = shown([optout(OTHERS)], frozenset())
    hidden = shown([optout(OTHERS)], frozenset({OTHERS}))
    assert OTHERS not in orjson.dumps(hidden).decode()
    assert "basedOn" not in hidden["extension"]
    assert {k: v for k, v in full.items() if k != "extension"} == {k: v for k, v in hidden.items() if k != "extension"}
    assert (full["extension"]["decision"], full["extension"]["obligations"]) == (
        hidden["extension"]["decision"], hidden["extension"]["obligations"])
    assert "consent:(another-organization):policyRule" == hidden["extension"]["rule"]
    assert ("the patient's most recent applicable consent recorded by another organization (opt-out) denies by its "
            "base rule") == hidden["extension"]["reason"]


def test_a_hidden_part2_consent_keeps_its_obligations_codes_and_notice_but_not_its_reference() -> None:
    """The released-Part 2 case: CONSENT_PERMIT with REDACT exceptAnyOfCodes and NORDSCLCD; the rule named in
    the reason (``(consent:<id>:...)``) is hidden too."""
    full = shown([part2_consent(OTHERS)], frozenset())["extension"]
    hidden = shown([part2_consent(OTHERS)], frozenset({OTHERS}))["extension"]
    assert OTHERS not in orjson.dumps(hidden).decode()
    assert ("CONSENT_PERMIT", "consent:(another-organization):provision.provision[0]") == (
        hidden["decision"], hidden["rule"])
    redact, notice = hidden["obligations"]
    assert full["obligations"][0] == redact
    assert {"codes": PART2_CODES, "notice": PART2_NOTICE} == notice["parameters"]
    assert without_consent_parameters(full["obligations"]) == hidden["obligations"]


def test_a_partner_sees_its_own_consents_id_and_not_anothers_in_the_same_card() -> None:
    """Its own opt-in decides (named); another organization's Part 2 consent adds the notice (not named)."""
    consents = [optin(OWN, date="2025-06-01"), consent(OTHERS, base=None, date="2024-01-01", root=prov(
        PERMIT, actor="Organization/cbo-a", label=lbl.SUD, purpose="CAREMGT"))]
    extension = shown(consents, frozenset({OTHERS}))["extension"]
    assert OTHERS not in orjson.dumps(extension).decode()
    assert (f"http://hub/fhir/Consent/{OWN}", f"consent:{OWN}:policyRule") == (extension["basedOn"], extension["rule"])
    [notice] = extension["obligations"]
    assert ("NORDSCLCD", None) == (notice["id"]["code"], notice["parameters"].get("consent"))
    mine = shown([optin(OTHERS, date="2025-06-01"), consent(OWN, base=None, date="2024-01-01", root=prov(
        PERMIT, actor="Organization/cbo-a", label=lbl.SUD, purpose="CAREMGT"))], frozenset({OTHERS}))["extension"]
    assert ("basedOn" not in mine, f"Consent/{OWN}") == (True, mine["obligations"][0]["parameters"]["consent"])


def test_a_reason_in_a_wording_the_substitution_does_not_know_is_replaced_whole() -> None:
    """Fail closed: an id the substitution left in the reason (here after "consents") takes the reason away."""
    answer = ConsultAnswer(CardDecision.DENY, f"consent:{OTHERS}:policyRule",
                           f"the consents {OTHERS} and {OWN} deny", based_on=f"Consent/{OTHERS}")
    hidden = shown_to_caller(answer, frozenset({OTHERS}))
    assert (CardDecision.DENY, "consent:(another-organization):policyRule", HIDDEN_REASON, None) == (
        hidden.decision, hidden.rule, hidden.reason, hidden.based_on)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("consent c1 (opt-in)", "consent recorded by another organization (opt-in)"),
        ("x (consent:c1:provision.provision[0]).", "x (consent:(another-organization):provision.provision[0])."),
        ("ends with consent c1.", "ends with consent recorded by another organization."),
        ("Consent/c1", "Consent/(another-organization)"),
        ("consent c10 and consent c1.x are others", "consent c10 and consent c1.x are others"),
        ("the consents c1 and c2", HIDDEN_REASON),  # a wording not foreseen: the whole reason goes
        ("provision[c1]", HIDDEN_REASON),
    ],
)
def test_only_whole_hidden_ids_after_the_word_consent_are_replaced(text: str, expected: str) -> None:
    answer = ConsultAnswer(CardDecision.PERMIT, "policy:x", text)
    assert expected == shown_to_caller(answer, frozenset({"c1"})).reason


_IDS = (OWN, OTHERS, "5c9e1f70-3a2b-4e8d-b6f4-0d7c2a9e8b13")
_CONSENT_KINDS = st.sampled_from(("optin", "optout", "part2", "deny-label", "deny-actor", "revoked"))


@st.composite
def consent_sets(draw: st.DrawFn) -> list[Any]:
    made: list[Any] = []
    for index, cid in enumerate(_IDS[: draw(st.integers(1, len(_IDS)))]):
        kind = draw(_CONSENT_KINDS)
        date = f"202{index}-0{draw(st.integers(1, 9))}-01"
        if kind == "optin":
            made.append(optin(cid, date=date))
        elif kind == "optout":
            made.append(optout(cid, date=date))
        elif kind == "part2":
            made.append(part2_consent(cid, date=date))
        elif kind == "deny-label":
            made.append(optin(cid, prov(DENY, label=lbl.HIV), date=date))
        elif kind == "deny-actor":
            made.append(optin(cid, prov(actor="Organization/cbo-a"), date=date))
        else:
            made.append(consent(cid, status=ConsentStatus.INACTIVE, date=date))
    return made


@settings(max_examples=200, deadline=None)
@given(consents=consent_sets(), hidden=st.frozensets(st.sampled_from(_IDS)),
       purposes=st.sampled_from((("CAREMGT",), (), ("TREAT", "CAREMGT"))))
def test_a_shown_card_names_no_hidden_consent_and_decides_as_the_full_one(
    consents: list[Any], hidden: frozenset[str], purposes: tuple[str, ...]
) -> None:
    full = shown(consents, frozenset(), ask(purposes))["extension"]
    seen = shown(consents, hidden, ask(purposes))["extension"]
    text = orjson.dumps(seen).decode()
    assert set() == {cid for cid in hidden if cid in text}
    assert full["decision"] == seen["decision"]
    assert without_consent_parameters(full["obligations"]) == without_consent_parameters(seen["obligations"])
    for obligation in full["obligations"]:
        named = obligation["parameters"].get("consent")
        if named and named.removeprefix("Consent/") not in hidden:
            assert obligation in seen["obligations"]
    if "basedOn" in full and full["basedOn"].rpartition("/")[2] not in hidden:
        assert (full["basedOn"], full["rule"], full["reason"]) == (seen["basedOn"], seen["rule"], seen["reason"])
