"""Truth table of ``decide``: every provision kind, alone and combined, each row named for what it proves.

Defaults of a row: a referral from hospital hosp-a addressed to CBO cbo-a, purpose CAREMGT, event time
2026-01-15, opt-out jurisdiction, no consent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import pytest

from hub.consent import labels as lbl
from hub.consent.decision import Recipient, Verdict
from hub.consent.engine import decide
from hub.consent.model import OPTOUT, Consent, ConsentStatus, Jurisdiction, Policies
from hub.events import RoutingFacts
from tests.consent.helpers import (
    AT,
    CBO_A,
    CBO_B,
    DENY,
    HOSPITAL,
    ICD_OPIOID,
    ICD_SCHIZOPHRENIA,
    NPP,
    OTHER_HOSPITAL,
    PATIENT,
    PERMIT,
    PRIVACY,
    RESEARCH,
    case_update,
    consent,
    encounter,
    on_roster,
    optin,
    optout,
    part2_consent,
    period,
    prov,
    referral,
)

OPT_OUT = Policies()
OPT_IN = Policies(jurisdiction=Jurisdiction.OPT_IN)
HIV_SPECIFIC = Policies(specific_consent_labels=frozenset({lbl.HIV}))
ROOT_SCOPED_PART2 = consent(
    "p2", base=None, date="2025-03-01",
    root=prov(PERMIT, actor="Organization/cbo-a", label=lbl.SUD, purpose="CAREMGT"),
)
P = Verdict.PERMIT
D = Verdict.DENY


@dataclass(frozen=True)
class Row:
    """One line of the table: the inputs that differ from the defaults, and the expected verdict and rule."""

    verdict: Verdict
    rule: str
    consents: tuple[Consent, ...] = ()
    facts: RoutingFacts = field(default_factory=referral)
    recipient: Recipient = CBO_A
    policies: Policies = OPT_OUT
    purpose: str = "CAREMGT"
    at: datetime | None = AT


ROWS: dict[str, Row] = {
    # --- the operator's ceiling and the jurisdiction default -------------------------------------
    "opt-out default shares a referral with the CBO it addresses": Row(P, "policy:cbo-referral-addressed"),
    "opt-in default shares nothing without a consent": Row(D, "policy:opt-in-without-consent", policies=OPT_IN),
    "a CBO the referral does not address gets nothing": Row(D, "policy:no-sharing-rule", recipient=CBO_B),
    "a CBO gets the discharge of a client on its roster": Row(
        P, "policy:cbo-adt-roster", facts=encounter("discharge"), recipient=on_roster(CBO_A)
    ),
    "a CBO gets the admission of a client on its roster": Row(
        P, "policy:cbo-adt-roster", facts=encounter("admit"), recipient=on_roster(CBO_A)
    ),
    "a CBO gets no discharge of a patient not on its roster": Row(
        D, "policy:no-sharing-rule", facts=encounter("discharge")
    ),
    "a CBO gets no transfer even for a client on its roster": Row(
        D, "policy:no-sharing-rule", facts=encounter("transfer"), recipient=on_roster(CBO_A)
    ),
    "break-glass is never for a CBO": Row(D, "policy:break-glass-never-cbo", purpose="ETREAT"),
    "a CBO receives for care coordination only": Row(D, "policy:no-sharing-rule", purpose="TREAT"),
    "a hospital may receive an addressed referral for emergency treatment": Row(
        P, "policy:hospital-referral-addressed", facts=referral(performers=("Organization/hosp-b",)),
        recipient=OTHER_HOSPITAL, purpose="ETREAT",
    ),
    "the requesting hospital gets the case update": Row(
        P, "policy:hospital-case-update-requester", facts=case_update(), recipient=HOSPITAL
    ),
    "another hospital gets no case update": Row(
        D, "policy:no-sharing-rule", facts=case_update(), recipient=OTHER_HOSPITAL
    ),
    "an event without a hub patient id is denied": Row(D, "engine:no-patient", facts=referral(patient=None)),
    "a consent of another patient in the set denies everything": Row(
        D, "engine:consent-of-another-patient", consents=(consent(patient="urn:carehub:patient:other"),)
    ),
    "a consent cannot widen the ceiling": Row(D, "policy:no-sharing-rule", consents=(optin(),), recipient=CBO_B),
    # --- the base decision: policyRule (LEAP 1st generation) or root type (2nd) -------------------
    "OPTIN policyRule permits": Row(P, "consent:c1:policyRule", consents=(optin(),)),
    "OPTOUT policyRule denies": Row(D, "consent:c1:policyRule", consents=(optout(),)),
    "root type permit permits": Row(P, "consent:c1:provision", consents=(consent(base=None, root=prov(PERMIT)),)),
    "root type deny denies": Row(D, "consent:c1:provision", consents=(consent(base=None, root=prov(DENY)),)),
    "root permit with an OPTOUT policyRule: the deny wins": Row(
        D, "consent:c1:policyRule", consents=(consent(base=OPTOUT, root=prov(PERMIT)),)
    ),
    "a consent with no base decision does not apply": Row(
        P, "policy:cbo-referral-addressed", consents=(consent(base=NPP),)
    ),
    "an OPTIN consent permits in an opt-in jurisdiction": Row(
        P, "consent:c1:policyRule", consents=(optin(),), policies=OPT_IN
    ),
    # --- status: revoked, rejected, never valid ---------------------------------------------------
    "a revoked opt-in is no consent, so the opt-out default decides (LEAP)": Row(
        P, "policy:cbo-referral-addressed", consents=(consent(status=ConsentStatus.INACTIVE),)
    ),
    "a revoked opt-in is no consent, so nothing is shared in an opt-in jurisdiction": Row(
        D, "policy:opt-in-without-consent", consents=(consent(status=ConsentStatus.INACTIVE),), policies=OPT_IN
    ),
    "a rejected opt-in is no consent": Row(
        D, "policy:opt-in-without-consent", consents=(consent(status=ConsentStatus.REJECTED),), policies=OPT_IN
    ),
    "a revoked opt-in never releases sensitive data": Row(
        D, "policy:sensitive-data-needs-consent", facts=referral(codes=(ICD_SCHIZOPHRENIA,)),
        consents=(consent(status=ConsentStatus.INACTIVE),),
    ),
    "an entered-in-error opt-in never permits": Row(
        D, "policy:opt-in-without-consent", consents=(consent(status=ConsentStatus.ENTERED_IN_ERROR),),
        policies=OPT_IN,
    ),
    "a draft opt-in never permits": Row(
        D, "policy:opt-in-without-consent", consents=(consent(status=ConsentStatus.DRAFT),), policies=OPT_IN
    ),
    "a proposed opt-in never permits": Row(
        D, "policy:opt-in-without-consent", consents=(consent(status=ConsentStatus.PROPOSED),), policies=OPT_IN
    ),
    "revoking an opt-out lifts it": Row(
        P, "policy:cbo-referral-addressed", consents=(consent(base=OPTOUT, status=ConsentStatus.INACTIVE),)
    ),
    # --- scope --------------------------------------------------------------------------------------
    "a research consent says nothing about sharing": Row(
        P, "policy:cbo-referral-addressed", consents=(consent(base=OPTOUT, scope=(RESEARCH,)),)
    ),
    "privacy scope in category (LEAP R4 fixtures) counts": Row(
        D, "consent:c1:policyRule", consents=(consent(base=OPTOUT, scope=(), categories=(PRIVACY,)),)
    ),
    # --- root period ------------------------------------------------------------------------------
    "an opt-in in force permits": Row(
        P, "consent:c1:policyRule", consents=(consent(root=prov(when=period("2025-01-01", "2027-01-01"))),)
    ),
    "an expired opt-in does not apply": Row(
        D, "policy:opt-in-without-consent", policies=OPT_IN,
        consents=(consent(root=prov(when=period("2020-01-01", "2021-01-01"))),),
    ),
    "a future opt-in does not apply yet": Row(
        D, "policy:opt-in-without-consent", policies=OPT_IN,
        consents=(consent(root=prov(when=period("2027-01-01", None))),),
    ),
    "without an event time a bounded opt-in cannot be shown in force": Row(
        D, "policy:opt-in-without-consent", policies=OPT_IN, at=None,
        consents=(consent(root=prov(when=period("2025-01-01", "2027-01-01"))),),
    ),
    "without an event time a bounded opt-out applies": Row(
        D, "consent:c1:policyRule", at=None,
        consents=(consent(base=OPTOUT, root=prov(when=period("2025-01-01", "2027-01-01"))),),
    ),
    "the period end is exclusive": Row(
        D, "policy:opt-in-without-consent", policies=OPT_IN,
        consents=(consent(root=prov(when=period("2025-01-01", "2026-01-15T12:00:00"))),),
    ),
    # --- nested exceptions to an opt-in -----------------------------------------------------------
    "a nested deny naming the recipient denies": Row(
        D, "consent:c1:provision.provision[0]", consents=(optin("c1", prov(DENY, actor="Organization/cbo-a")),)
    ),
    "a nested deny naming someone else does not": Row(
        P, "consent:c1:policyRule", consents=(optin("c1", prov(DENY, actor="Organization/cbo-b")),)
    ),
    "a nested deny for the purpose denies": Row(
        D, "consent:c1:provision.provision[0]", consents=(optin("c1", prov(DENY, purpose="CAREMGT")),)
    ),
    "a nested deny for the parent purpose denies (R4; LEAP compares exactly)": Row(
        D, "consent:c1:provision.provision[0]", consents=(optin("c1", prov(DENY, purpose="HOPERAT")),)
    ),
    "a nested deny for another purpose does not": Row(
        P, "consent:c1:policyRule", consents=(optin("c1", prov(DENY, purpose="TREAT")),)
    ),
    "a nested deny on the resource type denies": Row(
        D, "consent:c1:provision.provision[0]", consents=(optin("c1", prov(DENY, cls="ServiceRequest")),)
    ),
    "a nested deny on another resource type does not": Row(
        P, "consent:c1:policyRule", consents=(optin("c1", prov(DENY, cls="Observation")),)
    ),
    "a nested deny on the resource's code denies": Row(
        D, "consent:c1:provision.provision[0]",
        consents=(optin("c1", prov(DENY, code="http://snomed.info/sct|467771000124109")),),
    ),
    "a nested deny on another code does not": Row(
        P, "consent:c1:policyRule", consents=(optin("c1", prov(DENY, code="http://snomed.info/sct|1")),)
    ),
    "a nested deny on label R denies R data": Row(
        D, "consent:c1:provision.provision[0]", facts=referral(labels=(lbl.R,)),
        consents=(optin("c1", prov(DENY, label=lbl.R)),),
    ),
    "a nested deny on label R lets unlabelled data through": Row(
        P, "consent:c1:policyRule", consents=(optin("c1", prov(DENY, label=lbl.R)),)
    ),
    "a deny on R covers V": Row(
        D, "consent:c1:provision.provision[0]", facts=referral(labels=(lbl.V,)),
        consents=(optin("c1", prov(DENY, label=lbl.R)),),
    ),
    "a deny on SUD covers data the codes label SUD": Row(
        D, "consent:c1:provision.provision[0]", facts=referral(codes=(ICD_OPIOID,)),
        consents=(optin("c1", prov(DENY, label=lbl.SUD)),),
    ),
    "a deny on action 'correct' still denies (LEAP ignores action)": Row(
        D, "consent:c1:provision.provision[0]", consents=(optin("c1", prov(DENY, action="correct")),)
    ),
    "a deny on action 'access' denies": Row(
        D, "consent:c1:provision.provision[0]", consents=(optin("c1", prov(DENY, action="access")),)
    ),
    "a deny on this very resource denies": Row(
        D, "consent:c1:provision.provision[0]",
        consents=(optin("c1", prov(DENY, data=("instance", "ServiceRequest/sr-1"))),),
    ),
    "a deny on another resource still denies (LEAP ignores data)": Row(
        D, "consent:c1:provision.provision[0]",
        consents=(optin("c1", prov(DENY, data=("instance", "ServiceRequest/other"))),),
    ),
    "a nested deny in force denies": Row(
        D, "consent:c1:provision.provision[0]",
        consents=(optin("c1", prov(DENY, when=period("2026-01-01", "2026-02-01"))),),
    ),
    "a nested deny out of its period still denies (LEAP ignores nested periods)": Row(
        D, "consent:c1:provision.provision[0]",
        consents=(optin("c1", prov(DENY, when=period("2020-01-01", "2020-02-01"))),),
    ),
    "an untyped nested rule is the opposite of an opt-in": Row(
        D, "consent:c1:provision.provision[0]", consents=(optin("c1", prov(actor="Organization/cbo-a")),)
    ),
    "a typed permit nested in an opt-in denies (LEAP flips it; stricter)": Row(
        D, "consent:c1:provision.provision[0]", consents=(optin("c1", prov(PERMIT, actor="Organization/cbo-a")),)
    ),
    "a depth-2 permit cannot undo a depth-1 deny": Row(
        D, "consent:c1:provision.provision[0]",
        consents=(optin("c1", prov(DENY, actor="Organization/cbo-a", children=(prov(PERMIT, purpose="CAREMGT"),))),),
    ),
    # --- nested exceptions to an opt-out ----------------------------------------------------------
    "a nested permit naming the recipient permits": Row(
        P, "consent:c1:provision.provision[0]", consents=(optout("c1", prov(PERMIT, actor="Organization/cbo-a")),)
    ),
    "a nested permit naming someone else does not": Row(
        D, "consent:c1:policyRule", consents=(optout("c1", prov(PERMIT, actor="Organization/cbo-b")),)
    ),
    "a nested permit for the purpose permits": Row(
        P, "consent:c1:provision.provision[0]", consents=(optout("c1", prov(PERMIT, purpose="CAREMGT")),)
    ),
    "a nested permit for another purpose does not": Row(
        D, "consent:c1:policyRule", consents=(optout("c1", prov(PERMIT, purpose="TREAT")),)
    ),
    "a nested permit for the parent purpose does not (permits match exactly)": Row(
        D, "consent:c1:policyRule", consents=(optout("c1", prov(PERMIT, purpose="HOPERAT")),)
    ),
    "a label-bound permit on an opt-out releases data with that label": Row(
        P, "consent:c1:provision.provision[0]", facts=referral(labels=(lbl.N,)),
        consents=(optout("c1", prov(PERMIT, actor="Organization/cbo-a", label=lbl.N)),),
    ),
    "a label-bound permit on an opt-out releases nothing else": Row(
        D, "consent:c1:policyRule",
        consents=(optout("c1", prov(PERMIT, actor="Organization/cbo-a", label=lbl.N)),),
    ),
    "a label-bound permit narrows a code-free one beside it (LEAP's obligation union; stricter)": Row(
        D, "consent:c1:policyRule",
        consents=(
            optout(
                "c1", prov(PERMIT, actor="Organization/cbo-a"), prov(PERMIT, actor="Organization/cbo-a", label=lbl.N)
            ),
        ),
    ),
    "a permit on a resource type releases that type": Row(
        P, "consent:c1:provision.provision[0]", consents=(optout("c1", prov(PERMIT, cls="ServiceRequest")),)
    ),
    "a permit on another resource type releases nothing": Row(
        D, "consent:c1:policyRule", consents=(optout("c1", prov(PERMIT, cls="Observation")),)
    ),
    "a permit naming the custodian does not make the recipient one (LEAP)": Row(
        D, "consent:c1:policyRule",
        consents=(optout("c1", prov(PERMIT, actor="Organization/hosp-a", role="CST")),),
    ),
    "a permit out of its period does not apply": Row(
        D, "consent:c1:policyRule",
        consents=(optout("c1", prov(PERMIT, actor="Organization/cbo-a", when=period("2020-01-01", "2021-01-01"))),),
    ),
    "a depth-2 deny inside a permit denies (R4; LEAP ignores depth 2)": Row(
        D, "consent:c1:provision.provision[0].provision[0]", facts=referral(codes=(ICD_SCHIZOPHRENIA,)),
        consents=(optout("c1", prov(PERMIT, actor="Organization/cbo-a", children=(prov(DENY, label=lbl.PSY),))),),
    ),
    "the same depth-2 deny lets other data through": Row(
        P, "consent:c1:provision.provision[0]",
        consents=(optout("c1", prov(PERMIT, actor="Organization/cbo-a", children=(prov(DENY, label=lbl.PSY),))),),
    ),
    "a matching sibling deny beats a matching sibling permit": Row(
        D, "consent:c1:provision.provision[1]",
        consents=(optout("c1", prov(PERMIT, actor="Organization/cbo-a"), prov(DENY, purpose="CAREMGT")),),
    ),
    # --- several consents -------------------------------------------------------------------------
    "a newer opt-in overrides an older opt-out": Row(
        P, "consent:new:policyRule", consents=(optout("old", date="2024-01-01"), optin("new", date="2025-01-01"))
    ),
    "a newer opt-out overrides an older opt-in": Row(
        D, "consent:new:policyRule", consents=(optin("old", date="2024-01-01"), optout("new", date="2025-01-01"))
    ),
    "same date: the deny wins": Row(
        D, "consent:b:policyRule", consents=(optin("a", date="2025-01-01"), optout("b", date="2025-01-01"))
    ),
    "an older label deny is not bypassed by a newer broad opt-in": Row(
        D, "consent:old:provision.provision[0]", facts=referral(codes=(ICD_SCHIZOPHRENIA,)),
        consents=(optin("old", prov(DENY, label=lbl.PSY), date="2024-01-01"), optin("new", date="2025-01-01")),
    ),
    "the older label deny leaves unlabelled data to the newer opt-in": Row(
        P, "consent:new:policyRule",
        consents=(optin("old", prov(DENY, label=lbl.PSY), date="2024-01-01"), optin("new", date="2025-01-01")),
    ),
    "an older active opt-in decides again once a newer one is revoked (LEAP: revoked is no consent)": Row(
        P, "consent:old:policyRule",
        consents=(optin("old", date="2024-01-01"), consent("new", date="2025-01-01", status=ConsentStatus.INACTIVE)),
    ),
    "an older active opt-out decides again once a newer opt-in is revoked": Row(
        D, "consent:old:policyRule",
        consents=(optout("old", date="2024-01-01"), consent("new", date="2025-01-01", status=ConsentStatus.INACTIVE)),
    ),
    "a newer active opt-in beats an older revoked one": Row(
        P, "consent:new:policyRule",
        consents=(consent("old", date="2024-01-01", status=ConsentStatus.INACTIVE), optin("new", date="2025-01-01")),
    ),
    "revoking a consent lifts its label deny": Row(
        P, "consent:other:policyRule", facts=referral(codes=(ICD_SCHIZOPHRENIA,)),
        consents=(
            consent("old", root=prov(children=(prov(DENY, label=lbl.PSY),)), status=ConsentStatus.INACTIVE),
            optin("other", date="2024-01-01"),
        ),
    ),
    # --- sensitive data and 42 CFR Part 2 ---------------------------------------------------------
    "restricted data needs a consent": Row(D, "policy:sensitive-data-needs-consent", facts=referral(labels=(lbl.R,))),
    "a general opt-in releases restricted data": Row(
        P, "consent:c1:policyRule", facts=referral(labels=(lbl.R,)), consents=(optin(),)
    ),
    "psychiatric codes need a consent": Row(
        D, "policy:sensitive-data-needs-consent", facts=referral(codes=(ICD_SCHIZOPHRENIA,))
    ),
    "element-level labels make the payload restricted": Row(
        D, "policy:sensitive-data-needs-consent", facts=referral(labels=(lbl.PROCESS_INLINE_LABEL,))
    ),
    "an integrity label restricts nothing": Row(
        P, "policy:cbo-referral-addressed",
        facts=referral(labels=("http://terminology.hl7.org/CodeSystem/v3-ObservationValue|PATRPT",)),
    ),
    "Part 2 data without consent is denied": Row(
        D, "part2:no-consent-names-recipient", facts=referral(codes=(ICD_OPIOID,))
    ),
    "Part 2 data under a general opt-in is denied": Row(
        D, "part2:no-consent-names-recipient", facts=referral(codes=(ICD_OPIOID,)), consents=(optin(),)
    ),
    "Part 2 data under a consent naming the recipient for SUD is shared": Row(
        P, "consent:p2:provision.provision[0]", facts=referral(codes=(ICD_OPIOID,)), consents=(part2_consent(),)
    ),
    "a Part 2 consent naming another recipient does not do": Row(
        D, "consent:p2:policyRule", facts=referral(codes=(ICD_OPIOID,)),
        consents=(part2_consent(actor="Organization/cbo-b"),),
    ),
    "a Part 2 consent naming another recipient, beside a general opt-in, does not do": Row(
        D, "part2:no-consent-names-recipient", facts=referral(codes=(ICD_OPIOID,)),
        consents=(part2_consent(actor="Organization/cbo-b"), optin(date="2025-09-01")),
    ),
    "a Part 2 consent without a purpose does not do": Row(
        D, "part2:no-consent-names-recipient", facts=referral(codes=(ICD_OPIOID,)),
        consents=(part2_consent(purpose=None),),
    ),
    "a Part 2 consent on ETH covers SUD data": Row(
        P, "consent:p2:provision.provision[0]", facts=referral(labels=(lbl.SUD,)),
        consents=(part2_consent(label=lbl.ETH),),
    ),
    "a Part 2 consent on alcohol only does not cover opioid data": Row(
        D, "consent:p2:policyRule", facts=referral(codes=(ICD_OPIOID,)), consents=(part2_consent(label=lbl.ETHUD),)
    ),
    "a Part 2 consent naming the recipient as custodian does not do": Row(
        D, "consent:p2:policyRule", facts=referral(codes=(ICD_OPIOID,)), consents=(part2_consent(role="CST"),)
    ),
    "an older Part 2 consent and a newer opt-in together share": Row(
        P, "consent:p2:provision.provision[0]", facts=referral(codes=(ICD_OPIOID,)),
        consents=(part2_consent(date="2024-01-01"), optin("general", date="2025-09-01")),
    ),
    "a root-scoped Part 2 consent composes with an older general opt-in": Row(
        P, "consent:p2:provision", facts=referral(codes=(ICD_OPIOID,)),
        consents=(optin("general", date="2024-01-01"), ROOT_SCOPED_PART2),
    ),
    "a root-scoped Part 2 consent leaves other data to the general opt-in": Row(
        P, "consent:general:policyRule", consents=(optin("general", date="2024-01-01"), ROOT_SCOPED_PART2)
    ),
    "a newer opt-out-based Part 2 consent denies other data (most recent wins)": Row(
        D, "consent:p2:policyRule", consents=(optin("general", date="2024-01-01"), part2_consent(date="2025-03-01"))
    ),
    "a newer opt-out overrides a Part 2 consent": Row(
        D, "consent:out:policyRule", facts=referral(codes=(ICD_OPIOID,)),
        consents=(part2_consent(date="2024-01-01"), optout("out", date="2025-09-01")),
    ),
    "a revoked Part 2 consent releases no Part 2 data": Row(
        D, "part2:no-consent-names-recipient", facts=referral(codes=(ICD_OPIOID,)),
        consents=(part2_consent(status=ConsentStatus.INACTIVE),),
    ),
    "the DS4P 42CFRPart2 basis alone marks Part 2 data": Row(
        D, "part2:no-consent-names-recipient", facts=referral(labels=(lbl.R, lbl.PART2_BASIS)), consents=(optin(),)
    ),
    "an operator's specific-consent label needs a naming consent": Row(
        D, "policy:no-consent-names-recipient", facts=referral(labels=(lbl.HIV,)), consents=(optin(),),
        policies=HIV_SPECIFIC,
    ),
    "a naming consent releases the operator's specific-consent label": Row(
        P, "consent:p2:provision.provision[0]", facts=referral(labels=(lbl.HIV,)),
        consents=(part2_consent(label=lbl.HIV),), policies=HIV_SPECIFIC,
    ),
}


@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
def test_truth_table(row: Row) -> None:
    """Each row names the case it proves; expected verdict and deciding rule first."""
    decision = decide(row.facts, row.recipient, row.policies, row.consents, purpose=row.purpose, at=row.at)
    assert (row.verdict, row.rule) == (decision.verdict, decision.rule), decision.reason
    assert decision.reason
    assert PATIENT not in decision.reason
    for code in row.facts.codes:
        assert code.rpartition("|")[2] not in decision.reason
    assert row.purpose == decision.purpose


@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
def test_permits_carry_the_redaction_profile_and_denies_carry_nothing(row: Row) -> None:
    """A permit always tells delivery which profile to apply; a deny obliges nothing."""
    decision = decide(row.facts, row.recipient, row.policies, row.consents, purpose=row.purpose, at=row.at)
    if decision.permitted:
        expected = "cbo" if row.recipient.kind == "cbo" else "full"
        assert ("redaction-profile", expected) == (decision.obligations[0].kind, decision.obligations[0].value)
    else:
        assert () == decision.obligations


def test_the_table_covers_both_verdicts_and_every_rule_family() -> None:
    """The table exercises permits and denies from the engine, the policies, the consents and Part 2."""
    families = {row.rule.split(":")[0] for row in ROWS.values()}
    assert {"engine", "policy", "consent", "part2"} == families
    assert {P, D} == {row.verdict for row in ROWS.values()}
