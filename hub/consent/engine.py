"""The consent engine: ``decide(facts, recipient, policies, consents) -> Decision`` (pure, total, default deny).

Order of questions (the first that settles it wins; ``docs/adr/0002-consent-decisions.md`` says why):

1. **Can the engine decide at all?** No hub patient id, or a consent of another patient in the set:
   deny (``engine:*``). Any unexpected failure: deny (``engine:error``); ``decide`` never raises.
2. **Operator ceiling.** Break-glass purposes never go to a CBO. The recipient's partner kind needs a
   sharing rule for this event kind, purpose and relationship (a referral addressed to it, a patient on
   its roster, ...): otherwise deny (``policy:*``). A patient consent cannot widen this ceiling.
3. **Patient consents** (:func:`evaluate_consents`, LEAP's combination). Each consent is read twice, the
   LEAP way and the literal R4 way, and permits only when both readings permit (the stricter answer where
   they disagree). Only active patient-privacy consents count: revoked (inactive), rejected, draft,
   proposed and entered-in-error ones are no consent, as in LEAP, and so are consents of another scope
   (research, treatment, adr); of the rest the most recent applicable one decides (ties: deny). A deny
   on a security label in force in any *other* active consent is never bypassed by that consent's permit
   (``consent:<id>:<path>``).
4. **Specific consent.** Data labelled 42 CFR Part 2 (or with an operator's specific-consent label)
   needs, besides a permitting outcome, an active consent whose permitting provisions name this
   recipient in a recipient role, cover the label and state a purpose (42 CFR 2.31). Such a permit
   carries the 42 CFR 2.32 notice and the consent's reference as obligations (``part2:*`` otherwise).
5. **No consent applies.** Labels that need consent (R, V, any sensitivity): deny. Otherwise the
   jurisdiction default: opt-in denies, opt-out permits under the sharing rule (``policy:<rule id>``).

Every permit carries the sharing rule's redaction profile as an obligation. Reasons name partners,
consent ids, rule paths and label codes (``SUD``, ``R``), never clinical codes or the patient.

Speed: consents and policies are precompiled values; ``decide`` memoises the consents' outcome per consent
set on exactly what that set can depend on, and interns Decision values, so a warm call costs a few
dictionary lookups. The caches are memoisation only: they never change an answer (a property test checks
it).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Final

from hub.consent import labels as lbl
from hub.consent.decision import Decision, Obligation, Recipient, Verdict
from hub.consent.model import (
    CARE_COORDINATION,
    CONSENT_SCOPE_SYSTEM,
    PATIENT_PRIVACY,
    Consent,
    ConsentStatus,
    Jurisdiction,
    Policies,
    Provision,
    ProvisionType,
    Relationship,
    SharingRule,
    flip,
)
from hub.consent.redaction import redaction_obligation
from hub.events import RoutingFacts

PERMIT: Final = ProvisionType.PERMIT
DENY: Final = ProvisionType.DENY

RULE_ENGINE_ERROR: Final = "engine:error"
RULE_NO_PATIENT: Final = "engine:no-patient"
RULE_FOREIGN_CONSENT: Final = "engine:consent-of-another-patient"
RULE_BREAK_GLASS_CBO: Final = "policy:break-glass-never-cbo"
RULE_NO_SHARING_RULE: Final = "policy:no-sharing-rule"
RULE_NEEDS_CONSENT: Final = "policy:sensitive-data-needs-consent"
RULE_OPT_IN: Final = "policy:opt-in-without-consent"
RULE_PART2: Final = "part2:no-consent-names-recipient"
RULE_SPECIFIC: Final = "policy:no-consent-names-recipient"

PART2_NOTICE_OBLIGATION: Final = "part2-redisclosure-notice"
PART2_CONSENT_OBLIGATION: Final = "part2-consent"

#: 42 CFR 2.32(a)(1), Statement 1, as amended by the 2024 final rule (89 FR 12472, Feb. 16, 2024).
PART2_NOTICE: Final = (
    "This record which has been disclosed to you is protected by Federal confidentiality rules "
    "(42 CFR part 2). These rules prohibit you from using or disclosing this record, or testimony that "
    "describes the information contained in this record, in any civil, criminal, administrative, or "
    "legislative proceedings by any Federal, State, or local authority, against the patient, unless "
    "authorized by the consent of the patient, except as provided at 42 CFR 2.12(c)(5) or as authorized by "
    "a court in accordance with 42 CFR 2.64 or 2.65. In addition, the Federal rules prohibit you from "
    "making any other use or disclosure of this record unless at least one of the following applies: "
    "(i) Further use or disclosure is expressly permitted by the written consent of the individual whose "
    "information is being disclosed in this record or as otherwise permitted by 42 CFR part 2. "
    "(ii) You are a covered entity or business associate and have received the record for treatment, "
    "payment, or health care operations, or "
    "(iii) You have received the record from a covered entity or business associate as permitted by "
    "45 CFR part 164, subparts A and E. "
    "A general authorization for the release of medical or other information is NOT sufficient to meet "
    "the required elements of written consent to further use or redisclose the record (see 42 CFR 2.31)."
)
PART2_NOTICE_OBLIGATION_VALUE: Final = Obligation(kind=PART2_NOTICE_OBLIGATION, value=PART2_NOTICE)

#: consentaction codes that describe handing data to a recipient (the hub discloses, the recipient accesses).
DISCLOSURE_ACTIONS: Final = frozenset({"access", "use", "disclose"})
#: v3 PurposeOfUse specialisations: a deny on the parent also covers the child.
PURPOSE_PARENTS: Final = {"ETREAT": "TREAT", "COC": "TREAT", "CAREMGT": "HOPERAT"}
PRIVACY_CATEGORIES: Final = frozenset({f"{CONSENT_SCOPE_SYSTEM}|{PATIENT_PRIVACY}"})


class ConsentVerdict(StrEnum):
    """What the patient's consents say on their own (LEAP: CONSENT_PERMIT, CONSENT_DENY, NO_CONSENT)."""

    PERMIT = "permit"
    DENY = "deny"
    NOT_APPLICABLE = "not-applicable"


@dataclass(frozen=True, slots=True)
class ConsentQuery:
    """What the consents are asked about. ``decide`` builds one; the CDS Hooks service can too.

    ``categories`` selects the consents (any of their ``scope``/``category`` codings must be listed;
    empty: every patient-privacy consent, as LEAP does for a request without category; a consent of
    another scope is never used). ``at`` is a POSIX timestamp;
    ``None`` means unknown: then no time-bounded permit can be shown to be in force, and time-bounded
    denies apply.
    """

    recipient_ids: frozenset[str]
    purpose: str
    resource_type: str
    labels: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()
    resource_ref: str | None = None
    source_ids: frozenset[str] = frozenset()
    at: float | None = None
    categories: frozenset[str] = PRIVACY_CATEGORIES
    patient: str | None = None


@dataclass(frozen=True, slots=True)
class ConsentOutcome:
    """The patient's consents' answer: verdict, deciding rule and reason; plus, when asked for labels that
    need specific consent, the rule of the consent that names the recipient for them (else ``None``)."""

    verdict: ConsentVerdict
    rule: str
    reason: str
    specific_rule: str | None = None
    specific_consent: str | None = None
    hash_value: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "hash_value", hash((self.verdict, self.rule, self.reason, self.specific_rule, self.specific_consent))
        )

    def __hash__(self) -> int:
        return self.hash_value



# Enum members bound once: attribute access on an Enum class costs ~0.2 us on CPython 3.11.
_C_PERMIT: Final = ConsentVerdict.PERMIT
_C_DENY: Final = ConsentVerdict.DENY
_C_NA: Final = ConsentVerdict.NOT_APPLICABLE
_ADDRESSED: Final = Relationship.ADDRESSED
_ON_ROSTER: Final = Relationship.ON_ROSTER
_REQUESTER: Final = Relationship.REQUESTER
_ACTIVE: Final = ConsentStatus.ACTIVE
_PERMIT_VERDICT: Final = Verdict.PERMIT
_DENY_VERDICT: Final = Verdict.DENY
_OPT_IN: Final = Jurisdiction.OPT_IN


def decide(
    facts: RoutingFacts,
    recipient: Recipient,
    policies: Policies,
    consents: Sequence[Consent],
    *,
    purpose: str = CARE_COORDINATION,
    at: datetime | None = None,
) -> Decision:
    """Decide whether ``recipient`` may receive the event described by ``facts``, for ``purpose``, at ``at``.

    Pure and total: the same input gives the same Decision, and no input raises. ``at`` should be the
    event time; without it, time-bounded permits cannot be shown to be in force.
    """
    if not isinstance(purpose, str):
        return Decision(
            verdict=Verdict.DENY, rule=RULE_ENGINE_ERROR, reason="the purpose of use is not a code; denied", purpose=""
        )
    try:
        return _decide(facts, recipient, policies, consents, purpose=purpose, at=at)
    except Exception as exc:  # noqa: BLE001 - totality: every input gets a Decision, and it fails closed
        return Decision(
            verdict=_DENY_VERDICT,
            rule=RULE_ENGINE_ERROR,
            reason=f"the consent engine could not evaluate this request ({type(exc).__name__}); denied by default",
            purpose=purpose,
        )


def _decide(
    facts: RoutingFacts,
    recipient: Recipient,
    policies: Policies,
    consents: Sequence[Consent],
    *,
    purpose: str,
    at: datetime | None,
) -> Decision:
    if not facts.hub_patient_id:
        return _deny(RULE_NO_PATIENT, "the event carries no hub patient id, so no consent can be evaluated", purpose)
    if recipient.kind == "cbo" and purpose in policies.break_glass_purposes:
        return _deny(
            RULE_BREAK_GLASS_CBO,
            f"break-glass purpose {purpose} is never allowed to a community-based organization "
            f"({recipient.partner_id})",
            purpose,
        )
    ids = _recipient_ids(recipient)
    event_kind = facts.event_kind or policies.event_kind_of.get(facts.resource_type)
    sharing = _sharing_rule(policies, recipient, ids, facts, event_kind=event_kind, purpose=purpose)
    if sharing is None:
        addressed = not ids.isdisjoint(facts.performers)
        requested = facts.requester is not None and facts.requester in ids
        return _no_rule(
            policies,
            recipient,
            event_kind=event_kind,
            resource_type=facts.resource_type,
            purpose=purpose,
            related=(addressed, requested),
        )
    labels = lbl.effective_labels(facts)
    specific = labels & policies.specific_labels if labels else _EMPTY
    outcome = (
        _consents_outcome(consents, facts, ids=ids, purpose=purpose, labels=labels, at=at, specific=specific)
        if consents
        else _NO_CONSENTS
    )
    if outcome.verdict is _C_DENY:
        return _deny(outcome.rule, outcome.reason, purpose)
    if outcome.verdict is _C_PERMIT:
        if not specific:
            return _consent_permit(outcome, sharing, purpose)
        if outcome.specific_rule is None:
            return _specific_denied(specific, recipient.partner_id, purpose, consented=True)
        return _specific_permit(outcome, sharing, purpose, specific, recipient.partner_id)
    if specific:
        return _specific_denied(specific, recipient.partner_id, purpose, consented=False)
    needs_consent = labels & policies.consent_labels if labels else _EMPTY
    if needs_consent:
        return _deny(
            RULE_NEEDS_CONSENT,
            f"{outcome.reason}, and the data is labelled {_label_names(needs_consent)}, which only a patient "
            f"consent can release",
            purpose,
        )
    if policies.jurisdiction is _OPT_IN:
        return _deny(
            RULE_OPT_IN,
            f"{outcome.reason}, and the jurisdiction is opt-in: nothing is shared until the patient opts in",
            purpose,
        )
    return _policy_permit(outcome.reason, sharing, recipient, purpose)


_EMPTY: Final[frozenset[str]] = frozenset()
_NO_CONSENTS: Final = ConsentOutcome(
    _C_NA, "consent:none", "the patient has no consent on file that applies"
)


# Decisions are values: the same question gets the same (interned) Decision object, which saves building
# one per call. These caches are memoisation only; they never change an answer.


@lru_cache(maxsize=4096)
def _deny(rule: str, reason: str, purpose: str) -> Decision:
    return Decision(verdict=_DENY_VERDICT, rule=rule, reason=reason, purpose=purpose)


@lru_cache(maxsize=4096)
def _consent_permit(outcome: ConsentOutcome, sharing: SharingRule, purpose: str) -> Decision:
    reason = f"{outcome.reason}; within policy {sharing.id} ({sharing.description})"
    return Decision(_PERMIT_VERDICT, outcome.rule, reason, purpose, (redaction_obligation(sharing.redaction_profile),))


@lru_cache(maxsize=4096)
def _specific_permit(
    outcome: ConsentOutcome, sharing: SharingRule, purpose: str, specific: frozenset[str], partner: str
) -> Decision:
    obligations: tuple[Obligation, ...] = (redaction_obligation(sharing.redaction_profile),)
    if specific & lbl.PART2_LABELS:
        obligations = (
            *obligations,
            PART2_NOTICE_OBLIGATION_VALUE,
            Obligation(kind=PART2_CONSENT_OBLIGATION, value=f"Consent/{outcome.specific_consent}"),
        )
    reason = (
        f"{outcome.reason}; consent {outcome.specific_consent} names partner {partner} for the "
        f"{_label_names(specific)} data ({outcome.specific_rule}); within policy {sharing.id} ({sharing.description})"
    )
    return Decision(_PERMIT_VERDICT, outcome.specific_rule or outcome.rule, reason, purpose, obligations)


@lru_cache(maxsize=4096)
def _policy_permit(prefix: str, sharing: SharingRule, recipient: Recipient, purpose: str) -> Decision:
    reason = (
        f"{prefix}, and the jurisdiction is opt-out; within policy {sharing.id} ({sharing.description}): "
        f"{_relationship_text(sharing, recipient)}"
    )
    return Decision(
        _PERMIT_VERDICT, f"policy:{sharing.id}", reason, purpose, (redaction_obligation(sharing.redaction_profile),)
    )


@lru_cache(maxsize=4096)
def _specific_denied(specific: frozenset[str], partner: str, purpose: str, *, consented: bool) -> Decision:
    part2 = bool(specific & lbl.PART2_LABELS)
    law = "42 CFR Part 2 " if part2 else ""
    lead = "the patient's consents permit in general, but " if consented else ""
    return _deny(
        RULE_PART2 if part2 else RULE_SPECIFIC,
        f"{lead}the data is labelled {_label_names(specific)} and {law}data is disclosed only under an active "
        f"consent that names partner {partner} as recipient for that data and states a purpose; none does",
        purpose,
    )


@lru_cache(maxsize=4096)
def _no_rule(
    policies: Policies,
    recipient: Recipient,
    *,
    event_kind: str | None,
    resource_type: str,
    purpose: str,
    related: tuple[bool, bool],
) -> Decision:
    """Why no sharing rule lets ``recipient`` receive this event (``related``: addressed, requester)."""
    rules = policies.rules_by_kind.get((recipient.kind, event_kind)) if event_kind else None
    if not rules:
        reason = (
            f"no sharing policy lets a {recipient.kind} partner ({recipient.partner_id}) receive "
            f"{event_kind or 'unclassified'} events ({resource_type})"
        )
        return _deny(RULE_NO_SHARING_RULE, reason, purpose)
    met = {
        _ADDRESSED: related[0],
        _REQUESTER: related[1],
        _ON_ROSTER: recipient.on_roster,
    }
    allowed = sorted({p for rule in rules if met[rule.relationship] for p in rule.purposes})
    if allowed:
        reason = f"{recipient.kind} partners receive {event_kind} events only for {', '.join(allowed)}, not {purpose}"
    else:
        reason = "; ".join(
            f"policy {rule.id} does not apply: {_relationship_text(rule, recipient, met=False)}" for rule in rules
        )
    return _deny(RULE_NO_SHARING_RULE, reason, purpose)


def _label_names(labels: frozenset[str]) -> str:
    return "/".join(sorted(label.rpartition("|")[2] for label in labels))


@lru_cache(maxsize=4096)
def _recipient_ids(recipient: Recipient) -> frozenset[str]:
    return frozenset((recipient.organization, *recipient.identifiers))


def _sharing_rule(
    policies: Policies,
    recipient: Recipient,
    ids: frozenset[str],
    facts: RoutingFacts,
    *,
    event_kind: str | None,
    purpose: str,
) -> SharingRule | None:
    """The first sharing rule that lets ``recipient`` receive this event for ``purpose``, if any."""
    for rule in policies.rules_by_kind.get((recipient.kind, event_kind), ()) if event_kind else ():
        if purpose not in rule.purposes:
            continue
        relationship = rule.relationship
        if relationship is _ADDRESSED:
            if not ids.isdisjoint(facts.performers):
                return rule
        elif relationship is _ON_ROSTER:
            if recipient.on_roster:
                return rule
        elif facts.requester is not None and facts.requester in ids:
            return rule
    return None


def _relationship_text(rule: SharingRule, recipient: Recipient, *, met: bool = True) -> str:
    org, partner = recipient.organization, recipient.partner_id
    if rule.relationship is _ADDRESSED:
        return f"the event {'names' if met else 'does not name'} {org} as performer"
    if rule.relationship is _ON_ROSTER:
        return f"the patient {'is' if met else 'is not'} on the roster of partner {partner}"
    return f"the event {'names' if met else 'does not name'} {org} as requester"


def _at_ts(at: datetime | None) -> float | None:
    return None if at is None else (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def _query(
    facts: RoutingFacts, ids: frozenset[str], purpose: str, labels: frozenset[str], at: float | None
) -> ConsentQuery:
    return ConsentQuery(
        recipient_ids=ids,
        purpose=purpose,
        resource_type=facts.resource_type,
        labels=labels,
        codes=frozenset((*facts.codes, *facts.categories)),
        resource_ref=f"{facts.resource_type}/{facts.resource_id}" if facts.resource_id else None,
        source_ids=frozenset(source for source in (facts.requester, facts.sender) if source),
        at=at,
        patient=facts.hub_patient_id,
    )


@lru_cache(maxsize=256)
def _purpose_family(purpose: str) -> frozenset[str]:
    family = {purpose}
    while purpose in PURPOSE_PARENTS and PURPOSE_PARENTS[purpose] not in family:
        purpose = PURPOSE_PARENTS[purpose]
        family.add(purpose)
    return frozenset(family)


# --- consents -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reading:
    kind: ProvisionType
    path: str
    nodes: tuple[Provision, ...] = ()
    note: str = ""


@dataclass(frozen=True, slots=True)
class _ConsentResult:
    """What one consent says about one query: its outcome (None: not applicable), the permitting reading
    (for the specific-consent check) and a label deny in force, if any."""

    outcome: ConsentOutcome | None
    reading: _Reading | None
    label_deny: ConsentOutcome | None


_NOT_APPLICABLE: Final = _ConsentResult(None, None, None)


@dataclass(frozen=True, slots=True)
class _SetShape:
    """What a set of consents can depend on, besides recipient, purpose and resource type."""

    labels: bool
    codes: bool
    reference: bool
    sources: bool
    bounds: tuple[float, ...]


def _shape(consents: tuple[Consent, ...]) -> _SetShape:
    return _SetShape(
        labels=any(consent.reads_labels for consent in consents),
        codes=any(consent.reads_codes for consent in consents),
        reference=any(consent.reads_reference for consent in consents),
        sources=any(consent.reads_sources for consent in consents),
        bounds=tuple(sorted({bound for consent in consents for bound in consent.time_bounds})),
    )


#: consent set -> (its shape, its memo of outcomes); bounded by clearing (memoisation only).
_MEMO: dict[tuple[Consent, ...], tuple[_SetShape, dict[tuple[object, ...], ConsentOutcome]]] = {}
_MEMO_SETS: Final = 1 << 14
_MEMO_PER_SET: Final = 1 << 12


def _consents_outcome(
    consents: Sequence[Consent],
    facts: RoutingFacts,
    *,
    ids: frozenset[str],
    purpose: str,
    labels: frozenset[str],
    at: datetime | None,
    specific: frozenset[str],
) -> ConsentOutcome:
    """``evaluate_consents`` for ``decide``, memoised on exactly what the consent set can depend on.

    The answer of a set of consents depends on the recipient, purpose, resource type and patient; on the
    labels, codes, resource id and sources only when some provision tests them; and on the time only
    through which of the set's period bounds ``at`` falls between. That is the memo key, so one patient's
    consents are evaluated once per recipient and shape of event, not once per event. (The store should
    hand out the same consent tuple for a patient until it changes; equal values also hit.)
    """
    group = consents if type(consents) is tuple else tuple(consents)
    entry = _MEMO.get(group)
    if entry is None:
        if len(_MEMO) >= _MEMO_SETS:
            _MEMO.clear()
        entry = _MEMO[group] = (_shape(group), {})
    shape, memo = entry
    at_ts = _at_ts(at)
    key = (
        ids,
        purpose,
        facts.resource_type,
        facts.hub_patient_id,
        specific,
        labels if shape.labels else None,
        (facts.codes, facts.categories) if shape.codes else None,
        facts.resource_id if shape.reference else None,
        (facts.requester, facts.sender) if shape.sources else None,
        -1 if at_ts is None else bisect_right(shape.bounds, at_ts),
    )
    outcome = memo.get(key)
    if outcome is None:
        outcome = evaluate_consents(group, _query(facts, ids, purpose, labels, at_ts), specific_labels=specific)
        if len(memo) >= _MEMO_PER_SET:
            memo.clear()
        memo[key] = outcome
    return outcome


def evaluate_consents(
    consents: Sequence[Consent], query: ConsentQuery, *, specific_labels: frozenset[str] = frozenset()
) -> ConsentOutcome:
    """What the patient's consents say about ``query`` (pure; LEAP combination, stricter where R4 differs).

    For the CDS Hooks consent service; ``decide`` calls it through a memo.
    """
    results: list[tuple[Consent, _ConsentResult]] = []
    for consent in consents:
        if query.patient is not None and consent.patient is not None and consent.patient != query.patient:
            return _foreign(consent)
        if not consent.is_privacy or (query.categories and query.categories.isdisjoint(consent.scope_codes)):
            continue  # a research, treatment or adr consent is kept, never used for privacy decisions
        results.append((consent, _consent_result(consent, query)))
    return _combine(results, query.recipient_ids, specific_labels, len(consents))


def _foreign(consent: Consent) -> ConsentOutcome:
    return ConsentOutcome(
        _C_DENY,
        RULE_FOREIGN_CONSENT,
        f"consent {consent.label} belongs to another patient; the consent set is not trustworthy, so nothing "
        f"is shared",
    )


def _consent_result(consent: Consent, query: ConsentQuery) -> _ConsentResult:
    status = consent.status
    if status is _ACTIVE:
        label_deny = _label_deny(consent, query) if query.labels and consent.label_denies else None
        reading = _evaluate(consent, query)
        if reading is None:
            return _ConsentResult(None, None, label_deny) if label_deny else _NOT_APPLICABLE
        return _ConsentResult(_outcome(consent, reading), reading, label_deny)
    # inactive (revoked), rejected, draft, proposed, entered-in-error: no consent, as in LEAP (ADR 0002)
    return _NOT_APPLICABLE


def _combine(
    results: list[tuple[Consent, _ConsentResult]],
    recipient_ids: frozenset[str],
    specific_labels: frozenset[str],
    count: int,
) -> ConsentOutcome:
    """The most recent applicable consent decides (ties: deny, then id), except that a label deny in force
    in any *other* active consent is never bypassed by its permit (within one consent, its own structure
    decides: a narrower exception nested in a label deny may carve out of it)."""
    best: tuple[float, bool, str, ConsentOutcome] | None = None
    label_denies: list[tuple[float, str, ConsentOutcome]] = []
    specific: tuple[float, str, str] | None = None
    for consent, result in results:
        if result.label_deny is not None:
            label_denies.append((consent.date_ts, consent.label, result.label_deny))
        outcome = result.outcome
        if outcome is None:
            continue
        reading = result.reading
        if specific_labels and reading is not None and reading.kind is PERMIT:
            recency = (consent.date_ts, consent.label)
            if (specific is None or recency > specific[:2]) and _names_recipient_for(
                reading, recipient_ids, specific_labels
            ):
                specific = (*recency, outcome.rule)
        order = (consent.date_ts, outcome.verdict is _C_DENY, consent.label)
        if best is None or order > best[:3]:
            best = (*order, outcome)
    if best is not None and best[3].verdict is _C_DENY:
        return best[3]
    deciding = best[2] if best is not None else None
    overriding = [deny for deny in label_denies if deny[1] != deciding]
    if overriding:
        return max(overriding, key=lambda deny: deny[:2])[2]
    if best is None:
        return ConsentOutcome(
            _C_NA,
            "consent:none",
            f"none of the patient's {count} consent{'s' if count != 1 else ''} applies to this disclosure",
        )
    outcome = best[3]
    if specific is not None:
        return ConsentOutcome(outcome.verdict, outcome.rule, outcome.reason, specific[2], specific[1])
    return outcome


def _outcome(consent: Consent, reading: _Reading) -> ConsentOutcome:
    rule = f"consent:{consent.label}:{reading.path}"
    kind = "permits" if reading.kind is PERMIT else "denies"
    base = "opt-in" if consent.base is PERMIT else "opt-out"
    where = "its base rule" if reading.path in ("provision", "policyRule") else reading.path
    verdict = _C_PERMIT if reading.kind is PERMIT else _C_DENY
    reason = f"the patient's most recent applicable consent {consent.label} ({base}) {kind} by {where}{reading.note}"
    return ConsentOutcome(verdict, rule, reason)


def _evaluate(consent: Consent, query: ConsentQuery) -> _Reading | None:
    """One consent: deny if either reading denies; permit only if both permit; otherwise not applicable."""
    leap = _leap(consent, query)
    r4 = _r4(consent, query)
    if r4 is not None and r4.kind is DENY:
        if leap is None or leap.kind is PERMIT:
            return _Reading(DENY, r4.path, r4.nodes, _R4_STRICTER)
        return r4
    if leap is not None and leap.kind is DENY:
        return _Reading(DENY, leap.path, leap.nodes, _LEAP_STRICTER if r4 is not None else _LEAP_WIDER)
    if leap is None or r4 is None:
        return None
    return r4


_R4_STRICTER: Final = " (a literal R4 reading denies where LEAP's would not; the stricter reading wins)"
_LEAP_STRICTER: Final = (
    " (LEAP reads that provision as an exception to the base, where a literal R4 reading permits;"
    " the stricter reading wins)"
)
_LEAP_WIDER: Final = (
    " (LEAP applies the base rule whatever the root provision's actor, action, labels or data; a literal R4"
    " reading would limit it to them; the stricter reading wins)"
)


def _leap(consent: Consent, query: ConsentQuery) -> _Reading | None:
    """LEAP CDS on one resource: base from the root (type, else policyRule); the root's period and purpose
    gate the consent; first-level provisions are exceptions, matched on purpose, actor (any role) and class.

    A matching exception without codes flips the whole decision. One with codes (securityLabel, class,
    code) becomes a REDACT obligation instead: on a permit base the resource is withheld when it carries
    one of them (``codes``); on a deny base only resources carrying one of them are released
    (``exceptAnyOfCodes``), and that restriction also narrows a code-free exception matched beside it.
    """
    base = consent.base
    if base is None:
        return None
    root = consent.provision
    if root is None:
        return _Reading(base, consent.base_path)
    if root.period is not None:
        if query.at is None:
            if base is PERMIT:
                return None
        elif not root.period.contains(query.at):
            return None
    if root.c_purposes and query.purpose not in root.c_purposes:
        return None
    code_free: str | None = None
    code_bound = False
    carried: str | None = None
    for index, child in enumerate(root.provisions):
        if not _leap_conditions(child, query):
            continue
        if not child.c_has_codes:
            code_free = code_free or f"provision.provision[{index}]"
            continue
        code_bound = True
        if carried is None and _carries(child, query, deny=base is PERMIT):
            carried = f"provision.provision[{index}]"
    if base is PERMIT:
        hit = code_free or carried
        return _Reading(DENY, hit) if hit else _Reading(PERMIT, consent.base_path)
    if code_bound:
        return _Reading(PERMIT, carried) if carried else _Reading(DENY, consent.base_path)
    return _Reading(PERMIT, code_free) if code_free else _Reading(DENY, consent.base_path)


def _leap_conditions(provision: Provision, query: ConsentQuery) -> bool:
    """LEAP's provision match: purpose (exact code), actor (any role, the recipient), class (resource type)."""
    if provision.c_purposes and query.purpose not in provision.c_purposes:
        return False
    if provision.c_actor_ids and provision.c_actor_ids.isdisjoint(query.recipient_ids):
        return False
    return not provision.c_classes or query.resource_type in provision.c_classes


def _carries(provision: Provision, query: ConsentQuery, *, deny: bool) -> bool:
    """Whether the resource is associated with one of the provision's codes: a label (DS4P hierarchy, read
    widely for a deny), its resource type among the classes, or one of its codes."""
    scope = provision.c_deny_scope if deny else provision.c_permit_scope
    return (
        not scope.isdisjoint(query.labels)
        or query.resource_type in provision.c_classes
        or not provision.c_codes.isdisjoint(query.codes)
    )


def _r4(consent: Consent, query: ConsentQuery) -> _Reading | None:
    """Literal R4: the root's conditions scope the base rule; nested provisions are typed exceptions (an
    untyped one is the opposite of its parent), recursively; a deny among matching siblings wins."""
    base = consent.base
    if base is None:
        return None
    root = consent.provision
    if root is None:
        return _Reading(base, consent.base_path)
    if not _r4_applies(root, query, deny=base is DENY):
        return None
    return _r4_node(root, base, query, where="provision", rule_path=consent.base_path, nodes=(root,))


def _r4_node(
    provision: Provision,
    kind: ProvisionType,
    query: ConsentQuery,
    *,
    where: str,
    rule_path: str,
    nodes: tuple[Provision, ...],
) -> _Reading:
    chosen: _Reading | None = None
    for index, child in enumerate(provision.provisions):
        child_kind = child.type or flip(kind)
        if _r4_applies(child, query, deny=child_kind is DENY):
            child_where = f"{where}.provision[{index}]"
            result = _r4_node(child, child_kind, query, where=child_where, rule_path=child_where, nodes=(*nodes, child))
            if result.kind is DENY:
                return result
            chosen = chosen or result
    return chosen or _Reading(kind, rule_path, nodes)


def _r4_applies(provision: Provision, query: ConsentQuery, *, deny: bool) -> bool:
    """Whether every condition of ``provision`` holds; a condition the routing facts cannot settle holds
    for a deny and fails for a permit (so it can only ever make the answer stricter)."""
    period = provision.period
    if period is not None:
        if query.at is None:
            if not deny:
                return False
        elif not period.contains(query.at):
            return False
    if provision.data_period is not None and not deny:
        return False
    if provision.c_purposes:
        if deny:
            if provision.c_purposes.isdisjoint(_purpose_family(query.purpose)):
                return False
        elif query.purpose not in provision.c_purposes:
            return False
    if provision.c_actions and provision.c_actions.isdisjoint(DISCLOSURE_ACTIONS):
        return False
    if provision.c_labels and (provision.c_deny_scope if deny else provision.c_permit_scope).isdisjoint(query.labels):
        return False
    if provision.c_classes and query.resource_type not in provision.c_classes:
        return False
    if provision.c_codes and provision.c_codes.isdisjoint(query.codes):
        return False
    if provision.actors and not _r4_actor(provision, query, deny=deny):
        return False
    return not provision.data or _r4_data(provision, query, deny=deny)


def _r4_actor(provision: Provision, query: ConsentQuery, *, deny: bool) -> bool:
    if not provision.c_recipient_ids.isdisjoint(query.recipient_ids):
        return True
    if not provision.c_other_ids.isdisjoint(query.recipient_ids):
        return True
    if deny and not provision.c_other_ids.isdisjoint(query.source_ids):
        return True
    if provision.c_source_ids:
        # Custodian/author roles name where the data comes from; the facts name only the sender and
        # requester, so a deny cannot be ruled out and a permit needs one of them to match.
        return deny or not provision.c_source_ids.isdisjoint(query.source_ids)
    return False


def _r4_data(provision: Provision, query: ConsentQuery, *, deny: bool) -> bool:
    ref = query.resource_ref
    if ref is not None and any(data.reference == ref for data in provision.data):
        return True
    # "related", "dependents" and "authoredby" need the resource graph, which routing facts do not carry.
    return deny and (ref is None or any(data.meaning != "instance" for data in provision.data))


def _label_deny(consent: Consent, query: ConsentQuery) -> ConsentOutcome | None:
    """A deny provision on a label of the data, in force for this request (either reading)."""
    root = consent.provision
    if root is not None:
        if root.period is not None and query.at is not None and not root.period.contains(query.at):
            return None
        if root.c_purposes and root.c_purposes.isdisjoint(_purpose_family(query.purpose)):
            return None
    for path, provision in consent.label_denies:
        if provision.c_deny_scope.isdisjoint(query.labels):
            continue
        if _r4_applies(provision, query, deny=True) or _leap_conditions(provision, query):
            labels = _label_names(provision.c_deny_scope & query.labels)
            return ConsentOutcome(
                _C_DENY,
                f"consent:{consent.label}:{path}",
                f"consent {consent.label} denies data labelled {labels} ({path}); a deny on a label is never "
                f"bypassed by another consent's broader permit",
            )
    return None


def _names_recipient_for(reading: _Reading, recipient_ids: frozenset[str], labels: frozenset[str]) -> bool:
    """Whether the permitting path names the recipient (recipient role), covers ``labels`` and states a purpose."""
    names = any(not node.c_recipient_ids.isdisjoint(recipient_ids) for node in reading.nodes)
    if not names:
        return False
    covered: frozenset[str] = frozenset().union(*(node.c_permit_scope for node in reading.nodes))
    return labels <= covered and any(node.c_purposes for node in reading.nodes)
