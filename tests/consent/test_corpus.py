"""The FHIR R4 Consent examples and the DS4P IG examples from ``$HUB_CORPUS_DIR``, read and evaluated.

The Consent examples' narratives often say more (or the opposite of) what their codes say: an engine can
only read the codes, so each expectation below follows the codes and says why; where the narrative
disagrees, the comment says so. Setting: a referral from Good Health (``Organization/f001``) about the
patient, addressed to CBO ``cbo-a``, to hospital ``f001`` and to the partners of ``Practitioner/13`` and
``Practitioner/f204``, decided on 2016-01-01 in an opt-in jurisdiction (so "no consent applies" shows up as
``policy:opt-in-without-consent``).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hub.consent import labels as lbl
from hub.consent.decision import Recipient, Verdict
from hub.consent.engine import PART2_NOTICE, decide
from hub.consent.model import Consent, Jurisdiction, Policies, consent_from_fhir
from hub.events import RoutingFacts
from tests.consent.helpers import CBO_A, optin, part2_consent

pytestmark = pytest.mark.corpus

PATIENT = "urn:carehub:patient:f001"
AT = datetime(2016, 1, 1, 12, tzinfo=UTC)
OPT_IN = Policies(jurisdiction=Jurisdiction.OPT_IN)
NONE_APPLIES = "policy:opt-in-without-consent"
F001 = Recipient("f001", "hospital", "Organization/f001")
PRACTITIONER_13 = Recipient("clinic-13", "hospital", "Organization/clinic-13", ("Practitioner/13",))
PRACTITIONER_F204 = Recipient("ghh", "hospital", "Organization/ghh", ("Practitioner/f204",))
RECIPIENTS = {"cbo-a": CBO_A, "f001": F001, "practitioner-13": PRACTITIONER_13, "practitioner-f204": PRACTITIONER_F204}
PERFORMERS = ("Organization/cbo-a", "Organization/f001", "Organization/clinic-13", "Organization/ghh")


def referral(**update: Any) -> RoutingFacts:
    """A referral from Good Health about the patient, addressed to every test recipient."""
    facts = RoutingFacts(
        resource_type="ServiceRequest",
        resource_id="sr-1",
        sender="good-health",
        hub_patient_id=PATIENT,
        requester="Organization/f001",
        performers=PERFORMERS,
        event_kind="referral",
    )
    return facts.model_copy(update=update)


def example(corpus_dir: Path, name: str) -> Consent:
    """A Consent example, its patient resolved to the hub patient (as the store will do)."""
    data = json.loads((corpus_dir / "fhir-r4-core-examples" / f"Consent-consent-example-{name}.json").read_text())
    return consent_from_fhir(data, patient=PATIENT)


def test_every_consent_example_parses(corpus_dir: Path) -> None:
    """All twelve R4 Consent examples are usable values."""
    paths = sorted((corpus_dir / "fhir-r4-core-examples").glob("Consent-*.json"))
    assert 12 == len(paths)
    for path in paths:
        consent = consent_from_fhir(json.loads(path.read_text()))
        assert consent.is_privacy, path.name
        assert consent.base is not None, path.name


P, D = Verdict.PERMIT, Verdict.DENY

# name -> {recipient: (verdict, rule suffix)}; the same for recipients not listed.
EXPECTED: dict[str, tuple[str, dict[str, tuple[Verdict, str]]]] = {
    "basic": (
        "OPTIN in force 1964-01-01..2016-01-01 (the end day included): permits everyone on 2016-01-01.",
        {"*": (P, "policyRule")},
    ),
    "Out": (
        "OPTOUT with the custodian f001 as the root actor: LEAP applies the base to every request, and a "
        "literal R4 reading cannot rule out that the data is f001's; denies everyone.",
        {"*": (D, "policyRule")},
    ),
    "Emergency": (
        "The root is scoped to purpose ETREAT, so for care coordination neither reading applies it. The "
        "narrative promises an emergency permit at Good Health that the codes never state.",
        {"*": (D, NONE_APPLIES)},
    ),
    "grantor": (
        "OPTOUT (the narrative's read-only grant to Patient/example is not encoded as a permit): denies.",
        {"*": (D, "policyRule")},
    ),
    "notAuthor": (
        "OPTIN scoped to custodian f001: the referral comes from f001, so both readings permit. The narrative "
        "wants f001's records withheld; the codes say opt-in.",
        {"*": (P, "policyRule")},
    ),
    "notOrg": (
        "Root type deny (second generation) beats policyRule OPTIN; LEAP applies it to every recipient, R4 "
        "only to f001 as recipient; the stricter reading denies everyone.",
        {"*": (D, "provision")},
    ),
    "notThem": (
        "OPTIN scoped to Practitioner/f204 as primary recipient: only f204's partner is permitted (the "
        "narrative wants f204 denied, but no deny is encoded); for everyone else the consent does not apply.",
        {"*": (D, NONE_APPLIES), "practitioner-f204": (P, "policyRule")},
    ),
    "notThis": (
        "OPTIN scoped to data related to Task/example3: a referral cannot be shown to relate to it, so the "
        "permit does not apply.",
        {"*": (D, NONE_APPLIES)},
    ),
    "notTime": ("OPTIN limited to January 2015: not in force on 2016-01-01.", {"*": (D, NONE_APPLIES)}),
    "pkb": (
        "OPTOUT scoped to f001 and N data, with permits for f001 on N/PSY/SPI/SEX data: unlabelled data "
        "carries none of those labels, so it stays denied.",
        {"*": (D, "policyRule")},
    ),
    "signature": (
        "OPTIN for Practitioner/13 as primary recipient, in force 2015-10-10..2016-10-10; its nested permit "
        "(a CDA author) does not concern a referral.",
        {"*": (D, NONE_APPLIES), "practitioner-13": (P, "policyRule")},
    ),
    "smartonfhir": (
        "OPTIN for thirty minutes on 2016-06-23: not in force on 2016-01-01.",
        {"*": (D, NONE_APPLIES)},
    ),
}


@pytest.mark.parametrize("name", list(EXPECTED), ids=list(EXPECTED))
@pytest.mark.parametrize("recipient", list(RECIPIENTS), ids=list(RECIPIENTS))
def test_consent_examples_decide_as_their_codes_say(corpus_dir: Path, name: str, recipient: str) -> None:
    """Each example's expectation is justified in EXPECTED."""
    why, table = EXPECTED[name]
    verdict, rule = table.get(recipient, table["*"])
    expected_rule = rule if rule.startswith("policy:") else f"consent:consent-example-{name}:{rule}"
    decision = decide(referral(), RECIPIENTS[recipient], OPT_IN, [example(corpus_dir, name)], at=AT)
    assert (verdict, expected_rule) == (decision.verdict, decision.rule), f"{why} / {decision.reason}"


@pytest.mark.parametrize(
    ("name", "at", "verdict"),
    [
        pytest.param("basic", datetime(2016, 6, 1, tzinfo=UTC), D, id="basic expired"),
        pytest.param("notTime", datetime(2015, 1, 15, tzinfo=UTC), P, id="notTime in its month"),
        pytest.param("smartonfhir", datetime(2016, 6, 23, 7, 10, tzinfo=UTC), P, id="smartonfhir in its half hour"),
        pytest.param("smartonfhir", datetime(2016, 6, 23, 7, 40, tzinfo=UTC), D, id="smartonfhir ten minutes late"),
    ],
)
def test_consent_examples_follow_their_periods(corpus_dir: Path, name: str, at: datetime, verdict: Verdict) -> None:
    """The time-limited examples permit inside their period only (second precision for smartonfhir)."""
    assert verdict is decide(referral(), CBO_A, OPT_IN, [example(corpus_dir, name)], at=at).verdict


def test_not_author_does_not_apply_to_another_custodians_data(corpus_dir: Path) -> None:
    """notAuthor's opt-in is scoped to custodian f001: a referral from elsewhere is not covered."""
    consents = [example(corpus_dir, "notAuthor")]
    decision = decide(referral(requester="Organization/other"), CBO_A, OPT_IN, consents, at=AT)
    assert (D, NONE_APPLIES) == (decision.verdict, decision.rule)


def test_emergency_denies_emergency_treatment_too(corpus_dir: Path) -> None:
    """For ETREAT the Emergency example applies, and its only nested rule is a deny for custodian f001."""
    decision = decide(referral(), F001, OPT_IN, [example(corpus_dir, "Emergency")], purpose="ETREAT", at=AT)
    assert (D, "consent:consent-example-Emergency:provision.provision[0]") == (decision.verdict, decision.rule)


def test_pkb_permits_f001_the_labelled_data(corpus_dir: Path) -> None:
    """pkb's nested permits release N-labelled data to f001 (LEAP: exceptAnyOfCodes; R4: exceptions); the
    first one on N is provision[2] (0 and 1 are PSY and SPI)."""
    facts = referral(security_labels=(lbl.N,))
    consent = example(corpus_dir, "pkb")
    decision = decide(facts, F001, OPT_IN, [consent], at=AT)
    assert (P, "consent:consent-example-pkb:provision.provision[2]") == (decision.verdict, decision.rule)
    assert D is decide(facts, CBO_A, OPT_IN, [consent], at=AT).verdict


# --- DS4P IG examples -----------------------------------------------------------------------------

PATRPT = f"{lbl.OBSERVATION_VALUE_SYSTEM}|PATRPT"
DS4P: dict[str, tuple[frozenset[str], Verdict, str]] = {
    # file: (effective labels, decision without consent (opt-out), rule)
    "extension-display-observation": (frozenset(), P, "policy:cbo-referral-addressed"),
    "extension-display-patient": (frozenset(), P, "policy:cbo-referral-addressed"),
    "extension-inline-sec-label-immunization": (
        frozenset({lbl.PROCESS_INLINE_LABEL, lbl.R}), D, "policy:sensitive-data-needs-consent"
    ),
    "extension-inline-sec-label-patient": (
        frozenset({lbl.PROCESS_INLINE_LABEL, lbl.R}), D, "policy:sensitive-data-needs-consent"
    ),
    "extension-sec-label-basis": (frozenset({lbl.R, lbl.PART2_BASIS}), D, "part2:no-consent-names-recipient"),
    "extension-sec-label-related-artifact-consent": (frozenset({lbl.R}), D, "policy:sensitive-data-needs-consent"),
    "extension-sec-label-related-artifact-provenance": (frozenset({PATRPT}), P, "policy:cbo-referral-addressed"),
    "extensions-sec-label-classifier": (frozenset({lbl.R}), D, "policy:sensitive-data-needs-consent"),
}


def ds4p_facts(corpus_dir: Path, name: str) -> RoutingFacts:
    """The example's labels (with their DS4P basis, as the edge should extract them) and codes, on a referral
    addressed to cbo-a (the examples are Observations, Patients and Immunizations, which the hub does not
    route; their labels are what is under test)."""
    resource = json.loads((corpus_dir / "ds4p-ig" / f"{name}.json").read_text())
    codes = tuple(
        f"{coding.get('system', '')}|{coding['code']}"
        for concept in (resource.get("code"), resource.get("vaccineCode"))
        if concept
        for coding in concept.get("coding", ())
    )
    return referral(
        security_labels=lbl.security_labels_from_meta(resource), codes=codes, performers=("Organization/cbo-a",)
    )


@pytest.mark.parametrize("name", list(DS4P), ids=list(DS4P))
def test_ds4p_examples_are_labelled_and_decided(corpus_dir: Path, name: str) -> None:
    """R (from meta.security or inline labels) needs a consent, the 42CFRPart2 basis needs a Part 2 consent,
    integrity labels (PATRPT) and display extensions restrict nothing."""
    labels, verdict, rule = DS4P[name]
    facts = ds4p_facts(corpus_dir, name)
    assert labels == lbl.effective_labels(facts)
    decision = decide(facts, CBO_A, Policies(), [], at=AT)
    assert (verdict, rule) == (decision.verdict, decision.rule)


@pytest.mark.parametrize("name", list(DS4P), ids=list(DS4P))
def test_ds4p_examples_under_consents(corpus_dir: Path, name: str) -> None:
    """A general opt-in releases everything but Part 2 data; an older consent naming cbo-a for SUD beside it
    releases that too, with the 42 CFR 2.32 notice and the consent's reference."""
    facts = ds4p_facts(corpus_dir, name)
    part2 = lbl.PART2_BASIS in lbl.effective_labels(facts)
    general = dataclasses.replace(optin("general", date="2015-06-01"), patient=PATIENT)
    decision = decide(facts, CBO_A, Policies(), [general], at=AT)
    assert (D if part2 else P) is decision.verdict
    named = dataclasses.replace(part2_consent("p2", date="2015-01-01"), patient=PATIENT)
    decision = decide(facts, CBO_A, Policies(), [general, named], at=AT)
    assert P is decision.verdict
    part2_obligations = [(o.kind, o.value) for o in decision.obligations if o.kind.startswith("part2")]
    expected = [("part2-redisclosure-notice", PART2_NOTICE), ("part2-consent", "Consent/p2")] if part2 else []
    assert expected == part2_obligations
