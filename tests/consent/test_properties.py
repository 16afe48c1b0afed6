"""Properties of ``decide`` over generated consents, facts, recipients and policies (hypothesis)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hub.consent import engine
from hub.consent import labels as lbl
from hub.consent.decision import Decision, Recipient, Verdict
from hub.consent.engine import ConsentVerdict, decide, evaluate_consents
from hub.consent.model import (
    OPTIN,
    OPTOUT,
    Actor,
    Consent,
    ConsentStatus,
    DataReference,
    Jurisdiction,
    Policies,
    Provision,
    ProvisionType,
)
from hub.events import RoutingFacts
from tests.consent.helpers import (
    ACTION,
    AT,
    CBO_A,
    NPP,
    PATIENT,
    POU,
    PRIVACY,
    RESEARCH,
    ROLE,
    consent,
    optin,
    optout,
    part2_consent,
    period,
    prov,
    referral,
)

ORGS = ("Organization/cbo-a", "Organization/cbo-b", "Organization/hosp-a", "Organization/hosp-b")
LABELS = (lbl.N, lbl.R, lbl.V, lbl.PSY, lbl.SUD, lbl.HIV, lbl.ETHUD)
PURPOSES = ("CAREMGT", "TREAT", "HOPERAT", "ETREAT", "HPAYMT")
CODES = ("http://snomed.info/sct|467771000124109", "http://hl7.org/fhir/sid/icd-10-cm|F11.20", "http://loinc.org|1-8")
TIMES = (
    None,
    datetime(2024, 6, 1, tzinfo=UTC),
    datetime(2026, 1, 15, 12, tzinfo=UTC),
    datetime(2030, 1, 1, tzinfo=UTC),
)
PERIODS = (
    None,
    period("2025-01-01", "2027-01-01"),
    period("2020-01-01", "2025-01-01"),
    period("2026-01-15T12:00:00", None),
    period(None, "2024-06-01"),
)

policies_st = st.sampled_from(
    [Policies(), Policies(jurisdiction=Jurisdiction.OPT_IN), Policies(specific_consent_labels=frozenset({lbl.PSY}))]
)
recipients_st = st.builds(
    Recipient,
    partner_id=st.sampled_from(["cbo-a", "cbo-b", "hosp-a", "hosp-b"]),
    kind=st.sampled_from(["cbo", "hospital"]),
    organization=st.sampled_from(ORGS),
    identifiers=st.sampled_from([(), ("http://example.org/npi|1",)]),
    on_roster=st.booleans(),
)
facts_st = st.builds(
    RoutingFacts,
    resource_type=st.sampled_from(["ServiceRequest", "Encounter", "Task"]),
    resource_id=st.sampled_from([None, "r-1", "r-2"]),
    sender=st.just("hosp-a"),
    hub_patient_id=st.sampled_from([PATIENT, PATIENT, None]),
    requester=st.sampled_from([None, *ORGS]),
    performers=st.lists(st.sampled_from(ORGS), max_size=2).map(tuple),
    codes=st.lists(st.sampled_from(CODES), max_size=2).map(tuple),
    security_labels=st.lists(st.sampled_from(LABELS), max_size=2).map(tuple),
    event_kind=st.sampled_from([None, "referral", "admit", "discharge", "task-update", "transfer"]),
)


ROLES = ("IRCP", "PRCP", "CST", "AUT")
PATIENTS = (PATIENT, PATIENT, PATIENT, None, "urn:carehub:patient:other")
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
ACTIONS = (None, None, "access", "correct", "disclose")
DATA = (None, None, None, ("instance", "ServiceRequest/r-1"), ("related", "Task/x"), ("instance", "Task/x"))


def _pick(options: tuple[Any, ...], byte: int) -> Any:
    return options[byte % len(options)]


def _subset(options: tuple[str, ...], byte: int) -> tuple[str, ...]:
    """Mostly empty, sometimes one or two of ``options``: what a condition lists."""
    if byte % 3:
        return ()
    return tuple(option for bit, option in enumerate(options) if byte >> (bit + 2) & 1)[:2]


def _provision(spec: bytes, children: tuple[Provision, ...], *, sparse: bool = False) -> Provision:
    """A provision from 10 random bytes (cheap to generate, easy to shrink); ``sparse``: no period or action
    condition, so that actor, label, code and data conditions decide more often."""
    actors = tuple(
        Actor(reference=_pick(ORGS, spec[1] >> shift), role=(f"{ROLE}|{_pick(ROLES, spec[2] >> shift)}",))
        for shift in range(spec[1] % 3 // 2 + (spec[1] % 3 == 1))
    )
    action = None if sparse else _pick(ACTIONS, spec[3])
    data = _pick(DATA, spec[9])
    return Provision(
        type=_pick((None, ProvisionType.PERMIT, ProvisionType.DENY), spec[0]),
        period=None if sparse else _pick(PERIODS, spec[4]),
        actors=actors,
        actions=(f"{ACTION}|{action}",) if action else (),
        security_labels=_subset(LABELS, spec[5]),
        purposes=tuple(f"{POU}|{p}" for p in _subset(PURPOSES, spec[6])),
        classes=tuple(f"{RESOURCE_TYPES}|{c}" for c in _subset(("ServiceRequest", "Encounter"), spec[7])),
        codes=_subset(CODES, spec[8]),
        data=(DataReference(meaning=data[0], reference=data[1]),) if data else (),
        provisions=children,
    )


def _provisions(depth: int, *, sparse: bool = False) -> st.SearchStrategy[Provision]:
    children = st.just(()) if depth >= 2 else st.lists(_provisions(depth + 1, sparse=sparse), max_size=2).map(tuple)
    specs = st.binary(min_size=10, max_size=10)
    return st.builds(lambda spec, kids: _provision(spec, kids, sparse=sparse), specs, children)


@st.composite
def consents_st(
    draw: st.DrawFn, *, max_size: int = 3, active_optin: bool = False, sparse: bool = False
) -> tuple[Consent, ...]:
    """Consents with distinct ids, mostly of the test patient (``active_optin``: the first is an active,
    in-scope opt-in of the patient, so that permits are common; ``sparse``: all of the patient, with
    sparse provisions)."""
    count = draw(st.integers(min_value=1 if active_optin else 0, max_value=max_size))
    consents = []
    for index in range(count):
        spec = draw(st.binary(min_size=5, max_size=5))
        forced = active_optin and index == 0
        consents.append(
            Consent(
                id=f"c{index}",
                status=ConsentStatus.ACTIVE if forced or spec[0] % 2 else _pick(tuple(ConsentStatus), spec[0] >> 1),
                patient=PATIENT if forced or sparse else _pick(PATIENTS, spec[1]),
                date_time=_pick((None, datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)), spec[2]),
                scope=(PRIVACY,) if forced else _pick(((PRIVACY,), (PRIVACY,), (RESEARCH,), ()), spec[3]),
                policy_rules=(OPTIN,) if forced else _pick(((OPTIN,), (OPTOUT,), (NPP,), ()), spec[4]),
                provision=draw(st.none() | _provisions(0, sparse=sparse)),
            )
        )
    return tuple(consents)


def _decide(args: tuple[Any, ...]) -> Decision:
    facts, recipient, policies, consents, purpose, at = args
    return decide(facts, recipient, policies, consents, purpose=purpose, at=at)


inputs = st.tuples(
    facts_st, recipients_st, policies_st, consents_st(), st.sampled_from(PURPOSES), st.sampled_from(TIMES)
)
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _query(args: tuple[Any, ...]) -> engine.ConsentQuery:
    facts, recipient, _, _, purpose, at = args
    return engine._query(
        facts, engine._recipient_ids(recipient), purpose, lbl.effective_labels(facts), engine._at_ts(at)
    )


@FAST
@given(inputs)
def test_decide_is_deterministic_and_independent_of_consent_order(args: tuple[Any, ...]) -> None:
    """The same question gets the same answer, whatever order the consents come in."""
    first = _decide(args)
    assert first == _decide(args)
    reordered = (*args[:3], tuple(reversed(args[3])), *args[4:])
    again = _decide(reordered)
    assert (first.verdict, first.rule, first.obligations) == (again.verdict, again.rule, again.obligations)


permitting_inputs = st.tuples(
    facts_st.map(
        lambda f: f.model_copy(
            update={
                "hub_patient_id": PATIENT,
                "event_kind": "referral",
                "performers": ("Organization/cbo-a", "Organization/cbo-b"),
            }
        )
    ),
    st.sampled_from([Recipient("cbo-a", "cbo", "Organization/cbo-a"), Recipient("cbo-b", "cbo", "Organization/cbo-b")]),
    policies_st,
    consents_st(active_optin=True),
    st.just("CAREMGT"),
    st.sampled_from(TIMES),
)


TWO_CBOS = (Recipient("cbo-a", "cbo", "Organization/cbo-a"), Recipient("cbo-b", "cbo", "Organization/cbo-b"))
memo_facts_st = st.builds(
    RoutingFacts,
    resource_type=st.just("ServiceRequest"),
    resource_id=st.sampled_from([None, "r-1", "r-2"]),
    sender=st.just("hosp-a"),
    hub_patient_id=st.just(PATIENT),
    requester=st.sampled_from([None, *ORGS]),
    performers=st.just(("Organization/cbo-a", "Organization/cbo-b")),
    codes=st.lists(st.sampled_from([CODES[0], CODES[2]]), max_size=2).map(tuple),
    security_labels=st.lists(st.sampled_from([lbl.N, lbl.R, lbl.PSY]), max_size=2).map(tuple),
    event_kind=st.just("referral"),
)
memo_inputs = st.tuples(
    memo_facts_st,
    st.sampled_from(TWO_CBOS),
    policies_st,
    consents_st(active_optin=True, sparse=True),
    st.just("CAREMGT"),
    st.sampled_from(TIMES),
)
FACETS = ("security_labels", "codes", "resource_id", "requester", "performers", "at", "recipient", "policies")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(memo_inputs, permitting_inputs, inputs),
    st.one_of(memo_facts_st, facts_st),
    st.sampled_from(TIMES),
    st.one_of(st.sampled_from(TWO_CBOS), recipients_st),
    policies_st,
)
def test_the_memo_never_changes_an_answer(
    args: tuple[Any, ...],
    other_facts: RoutingFacts,
    other_at: datetime | None,
    other_recipient: Recipient,
    other_policies: Policies,
) -> None:
    """An answer computed cold equals the answer given after a question differing in one facet (each in
    turn) filled the memo: the memo key holds everything a consent's answer depends on."""
    engine._MEMO.clear()
    cold = _decide(args)
    for facet in FACETS:
        facts, recipient, policies, consents, purpose, at = args
        if facet == "at":
            at = other_at
        elif facet == "recipient":
            recipient = other_recipient
        elif facet == "policies":
            policies = other_policies
        else:
            facts = facts.model_copy(update={facet: getattr(other_facts, facet)})
        engine._MEMO.clear()
        _decide((facts, recipient, policies, consents, purpose, at))
        assert cold == _decide(args), facet


@FAST
@given(inputs)
def test_no_permit_without_an_active_matching_consent_or_policy(args: tuple[Any, ...]) -> None:
    """A permit names either an active consent that permits on its own, or the opt-out default with no
    applicable consent; and it always lies within a sharing rule of the recipient's kind."""
    facts, recipient, policies, consents, purpose, _ = args
    decision = _decide(args)
    if not decision.permitted:
        return
    assert decision.obligations
    assert recipient.kind != "cbo" or purpose == "CAREMGT"
    query = _query(args)
    family, _, rest = decision.rule.partition(":")
    if family == "policy":
        assert Jurisdiction.OPT_OUT is policies.jurisdiction
        assert ConsentVerdict.NOT_APPLICABLE is evaluate_consents(consents, query).verdict
        assert not (lbl.effective_labels(facts) & policies.consent_labels)
    else:
        assert "consent" == family
        chosen = next(c for c in consents if c.id == rest.split(":")[0])
        assert ConsentStatus.ACTIVE is chosen.status
        assert ConsentVerdict.PERMIT is evaluate_consents([chosen], query).verdict


@FAST
@given(permitting_inputs)
def test_a_revoked_consent_counts_as_no_consent(args: tuple[Any, ...]) -> None:
    """Revoked means no consent (LEAP): when a consent permitted, the answer after its revocation is exactly
    the answer without it, and never names it."""
    facts, recipient, policies, consents, purpose, at = args
    decision = _decide(args)
    assume(decision.permitted and decision.rule.startswith("consent:"))
    cid = decision.rule.split(":")[1]
    revoked = tuple(
        dataclasses.replace(c, status=ConsentStatus.INACTIVE) if c.id == cid else c for c in consents
    )
    without = tuple(c for c in consents if c.id != cid)
    after = decide(facts, recipient, policies, revoked, purpose=purpose, at=at)
    assert decide(facts, recipient, policies, without, purpose=purpose, at=at).verdict is after.verdict
    assert not after.rule.startswith(f"consent:{cid}:")


@FAST
@given(inputs)
def test_nothing_but_active_consents_ever_permits_in_an_opt_in_jurisdiction(args: tuple[Any, ...]) -> None:
    """Revoked, rejected, entered-in-error, draft and proposed consents never permit."""
    facts, recipient, _, consents, purpose, at = args
    not_active = tuple(
        dataclasses.replace(c, status=ConsentStatus.INACTIVE) if c.status is ConsentStatus.ACTIVE else c
        for c in consents
    )
    decision = decide(facts, recipient, Policies(jurisdiction=Jurisdiction.OPT_IN), not_active, purpose=purpose, at=at)
    assert Verdict.DENY is decision.verdict


@FAST
@given(
    inputs,
    st.sampled_from(LABELS),
    st.sampled_from([None, ProvisionType.PERMIT]),
    st.sampled_from([OPTIN, OPTOUT]),
    st.sampled_from([None, datetime(2023, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC)]),
)
def test_a_deny_on_a_label_is_never_bypassed_by_a_broader_permit(
    args: tuple[Any, ...], label: str, root_type: ProvisionType | None, base: str, signed: datetime | None
) -> None:
    """Data carrying a label that an active consent denies is denied, whatever other (newer) consents permit."""
    facts, recipient, policies, consents, purpose, at = args
    labelled = facts.model_copy(update={"security_labels": (*facts.security_labels, label)})
    deny_label = Consent(
        id="deny-label",
        status=ConsentStatus.ACTIVE,
        patient=PATIENT,
        date_time=signed,
        scope=(PRIVACY,),
        policy_rules=(base,),
        provision=Provision(type=root_type, provisions=(Provision(type=ProvisionType.DENY, security_labels=(label,)),)),
    )
    broad_permit = Consent(
        id="broad", status=ConsentStatus.ACTIVE, patient=PATIENT, date_time=datetime(2030, 1, 1, tzinfo=UTC),
        scope=(PRIVACY,), policy_rules=(OPTIN,),
    )
    for others in (consents, (*consents, broad_permit)):
        decision = decide(labelled, recipient, policies, (deny_label, *others), purpose=purpose, at=at)
        assert Verdict.DENY is decision.verdict


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.none(), st.integers(), st.text(), facts_st),
    st.one_of(st.none(), st.text(), recipients_st),
    st.one_of(st.none(), st.just(object()), policies_st),
    st.one_of(st.none(), st.integers(), st.lists(st.one_of(st.none(), st.text())), consents_st()),
    st.one_of(st.none(), st.integers(), st.sampled_from(PURPOSES)),
    st.one_of(st.none(), st.text(), st.sampled_from(TIMES)),
)
def test_decide_is_total_and_fails_closed(facts: Any, recipient: Any, policies: Any, consents: Any,
                                          purpose: Any, at: Any) -> None:
    """Any input at all gets a Decision, never an exception; garbage is denied."""
    decision = decide(facts, recipient, policies, consents, purpose=purpose, at=at)
    assert isinstance(decision, Decision)
    assert decision.verdict in (Verdict.PERMIT, Verdict.DENY)
    assert isinstance(decision.purpose, str)
    well_formed = (
        isinstance(facts, RoutingFacts)
        and isinstance(recipient, Recipient)
        and isinstance(policies, Policies)
        and isinstance(consents, tuple)
        and isinstance(purpose, str)
        and (at is None or isinstance(at, datetime))
    )
    if not well_formed:
        assert Verdict.DENY is decision.verdict


MEMO_CASES: dict[str, tuple[Consent, dict[str, Any], dict[str, Any]]] = {
    # facet: (consent, one question, the question differing in that facet)
    "labels": (optin("c", prov(ProvisionType.DENY, label=lbl.PSY)), {"labels": (lbl.PSY,)}, {"labels": ()}),
    "codes": (optin("c", prov(ProvisionType.DENY, code=CODES[2])), {"codes": (CODES[2],)}, {"codes": ()}),
    "resource id": (
        optout("c", prov(ProvisionType.PERMIT, data=("instance", "ServiceRequest/r-1"))),
        {"resource_id": "r-1"},
        {"resource_id": "r-2"},
    ),
    "sources": (
        consent("c", root=prov(actor="Organization/hosp-a", role="CST")),
        {"requester": "Organization/hosp-a"},
        {"requester": "Organization/hosp-b"},
    ),
}


@pytest.mark.parametrize("facet", list(MEMO_CASES), ids=list(MEMO_CASES))
def test_the_memo_keys_on_each_facet_a_consent_reads(facet: str) -> None:
    """Two questions differing in one facet that the consent tests get their own answers from a warm memo."""
    held, first, second = MEMO_CASES[facet]
    one, other = referral(**first), referral(**second)
    engine._MEMO.clear()
    cold = decide(one, CBO_A, Policies(jurisdiction=Jurisdiction.OPT_IN), (held,), at=AT)
    engine._MEMO.clear()
    warm_other = decide(other, CBO_A, Policies(jurisdiction=Jurisdiction.OPT_IN), (held,), at=AT)
    assert cold.verdict is not warm_other.verdict
    assert cold == decide(one, CBO_A, Policies(jurisdiction=Jurisdiction.OPT_IN), (held,), at=AT)


def test_the_memo_keys_on_the_operators_specific_consent_labels() -> None:
    """Two operators differing only in specific-consent labels get their own answers from a warm memo."""
    facts = referral(labels=(lbl.PSY,))
    named = (part2_consent(label=lbl.PSY),)
    plain, specific = Policies(), Policies(specific_consent_labels=frozenset({lbl.PSY}))
    engine._MEMO.clear()
    cold = decide(facts, CBO_A, specific, named, at=AT)
    engine._MEMO.clear()
    decide(facts, CBO_A, plain, named, at=AT)
    assert (Verdict.PERMIT, "consent:p2:provision.provision[0]") == (cold.verdict, cold.rule)
    assert cold == decide(facts, CBO_A, specific, named, at=AT)
