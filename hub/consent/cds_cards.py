"""The CDS Hooks consent consult, pure: a parsed LEAP request + the patient's consents -> a LEAP card.

Holds :class:`ConsultRequest` (what a ``patient-consent-consult`` call asks, already validated by the edge,
``hub.adapters.cds_hooks_model``), :func:`consult` (the answer: CONSENT_PERMIT / CONSENT_DENY / NO_CONSENT
with LEAP obligations), :func:`shown_to_caller` (the answer without the ids of the Consents the caller may
not read) and :func:`card` (the answer as the LEAP card JSON). No I/O: the edge
(``hub.adapters.cds_hooks``) resolves the patient and the actor's names and loads the consents first.
``docs/adr/0007-cds-hooks-consent-service.md`` records how we read LEAP and where we are stricter.

How :func:`consult` answers (every step asks :func:`hub.consent.engine.evaluate_consents`, the engine the
router uses, so the consult and the hub's own routing never disagree about a consent):

1. **No patient**: identifiers matching no hub patient -> NO_CONSENT; identifiers naming two different hub
   patients -> CONSENT_DENY (the identity is ambiguous: fail closed).
2. **The general answer**: the consents evaluated for the actor (every name the edge found for it), each
   requested purpose and each requested content class, for data with no security label. Several purposes
   or classes: the answer must hold for all of them, so the strictest wins (DENY > NO_CONSENT > PERMIT).
   No purpose given: every purpose any consent names, plus one none names (an unknown purpose can only
   make the answer stricter).
3. **Obligations** (LEAP's ``REDACT`` with ``codes`` / ``exceptAnyOfCodes``): every security label,
   content class and code the patient's consents mention (and always the 42 CFR Part 2 labels) is asked
   about on its own. On a permit, those whose answer is not a permit go in ``codes`` (withhold resources
   carrying them). On a deny or no consent, those whose answer is a permit make the card CONSENT_PERMIT
   with ``exceptAnyOfCodes`` (release only resources carrying one of them), as LEAP's README documents.
4. **42 CFR Part 2**: a Part 2 label counts as released only when an active consent names the actor as
   recipient for it with a purpose (the engine's specific-consent rule); released Part 2 labels add a
   ``NORDSCLCD`` obligation carrying the 42 CFR 2.32 notice and the consent's reference.

Reasons name consent ids, rule paths and label codes, never the patient or a clinical code's meaning.

**Which Consent ids a caller sees** (ADR 0007 decision 7): the FHIR API lets a partner read only the Consents
it recorded (``hub.adapters.fhir_access``), so the card answering it names no other. :func:`shown_to_caller`
takes the full answer (the audit keeps it) and the ids the caller may not read: ``basedOn`` and a Part 2
obligation's ``consent`` are left out for those, and in ``rule`` and ``reason`` each such id becomes
:data:`OTHER_ORGANIZATION` (rules: ``consent:(another-organization):<path>``) or the words "consent recorded by
another organization". Decision and obligations (codes, notice) stay exactly as they were.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final

from hub.consent import labels as lbl
from hub.consent.engine import (
    PART2_NOTICE,
    ConsentOutcome,
    ConsentQuery,
    ConsentVerdict,
    evaluate_consents,
)
from hub.consent.model import RESOURCE_TYPES_SYSTEM, Consent, Provision

HOOK: Final = "patient-consent-consult"
SERVICE_ID: Final = "patient-consent-consult"
ACT_CODE_SYSTEM: Final = lbl.ACT_CODE_SYSTEM
#: The LEAP obligation id (v3-ActCode ObligationPolicy REDACT).
REDACT: Final = {"system": ACT_CODE_SYSTEM, "code": "REDACT"}
#: DS4P RefrainPolicy "prohibition on redisclosure without consent directive": the 42 CFR Part 2 obligation.
NO_REDISCLOSURE: Final = {"system": ACT_CODE_SYSTEM, "code": "NORDSCLCD"}

RULE_UNKNOWN_PATIENT: Final = "cds:unknown-patient"
RULE_AMBIGUOUS_PATIENT: Final = "cds:ambiguous-patient"
RULE_PART2_NOT_NAMED: Final = "part2:no-consent-names-recipient"
#: What a rule shown to a partner has in place of the id of a Consent that partner may not read.
OTHER_ORGANIZATION: Final = "(another-organization)"
#: What a reason shown to a partner says after "consent" in place of such an id.
OTHER_ORGANIZATION_TEXT: Final = "recorded by another organization"
#: A reason that still named a hidden id after the substitution (a wording the substitution does not know) is
#: replaced by this, which names none.
HIDDEN_REASON: Final = (
    "the decision rests on a consent recorded for this patient by another organization; its details are not shown"
)


class CardDecision(StrEnum):
    """LEAP's three answers (the card's ``summary`` and ``extension.decision``)."""

    PERMIT = "CONSENT_PERMIT"
    DENY = "CONSENT_DENY"
    NO_CONSENT = "NO_CONSENT"


#: LEAP's fixed card texts and indicators (``lib/consent-decision-card.js``).
_CARD_TEXT: Final[Mapping[CardDecision, tuple[str, str]]] = {
    CardDecision.NO_CONSENT: ("No applicable consent was found.", "warning"),
    CardDecision.PERMIT: ("There is a patient consent permitting this action.", "info"),
    CardDecision.DENY: ("There is a patient consent denying this action.", "critical"),
}


@dataclass(frozen=True, slots=True)
class ConsultRequest:
    """A validated ``patient-consent-consult`` request.

    Identifiers are ``'system|value'``; ``categories`` are ``'system|code'`` (empty: every consent, as
    LEAP does without ``category``); ``purposes`` are bare v3 PurposeOfUse codes (empty: not given);
    ``classes`` are content classes, resource types as bare codes (empty: not given).
    """

    hook_instance: str
    patient_ids: tuple[str, ...]
    actors: tuple[str, ...] = ()
    categories: frozenset[str] = frozenset()
    purposes: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CardObligation:
    """One LEAP obligation: ``id`` (a v3 ObligationPolicy/RefrainPolicy code) and its parameters."""

    code: str
    codes: tuple[str, ...] = ()
    except_any_of_codes: tuple[str, ...] = ()
    notice: str | None = None
    consent: str | None = None


@dataclass(frozen=True, slots=True)
class ConsultAnswer:
    """The consult's answer: decision, the engine rule that decided, a reason, obligations, the consent."""

    decision: CardDecision
    rule: str
    reason: str
    obligations: tuple[CardObligation, ...] = ()
    based_on: str | None = None


_STRICTNESS: Final = {ConsentVerdict.PERMIT: 0, ConsentVerdict.NOT_APPLICABLE: 1, ConsentVerdict.DENY: 2}


def consult(
    request: ConsultRequest,
    consents: Sequence[Consent],
    *,
    patients: Sequence[str],
    recipient_ids: frozenset[str],
    at: float,
) -> ConsultAnswer:
    """Answer ``request`` from the consents of the one hub patient in ``patients`` (pure, total on values).

    ``patients``: the distinct hub patient ids the request's identifiers resolved to; ``recipient_ids``:
    every name of the actor (its identifiers, the references of the Organization/Practitioner resources
    and partners they name); ``at``: the POSIX time of the consult.
    """
    if not patients:
        return ConsultAnswer(
            CardDecision.NO_CONSENT, RULE_UNKNOWN_PATIENT, "no patient known to the hub has these identifiers"
        )
    if len(set(patients)) > 1:
        return ConsultAnswer(
            CardDecision.DENY,
            RULE_AMBIGUOUS_PATIENT,
            "the patient identifiers name more than one patient in the hub; the consents cannot be chosen, so "
            "the consult is denied",
        )
    ask = _Asker(request, tuple(consents), patients[0], recipient_ids, at)
    general = ask()
    candidates = _candidates(consents)
    if general.verdict is ConsentVerdict.PERMIT:
        return _permit(general, ask, candidates)
    return _restricted(general, ask, candidates)


@dataclass(frozen=True, slots=True)
class _Asker:
    """Asks the engine one question about the request, under every requested purpose and class."""

    request: ConsultRequest
    consents: tuple[Consent, ...]
    patient: str
    recipient_ids: frozenset[str]
    at: float

    def __call__(
        self,
        *,
        label: str | None = None,
        code: str | None = None,
        resource_type: str | None = None,
        beside: tuple[str, ...] = (),
    ) -> ConsentOutcome:
        """``beside``: the content classes a provision naming ``label`` or ``code`` restricts with it; asked
        too when the request names no class (data of unknown class may be of any of them, as in LEAP)."""
        purposes = self.request.purposes or _unknown_purposes(self.consents)
        if resource_type is not None:
            classes: tuple[str, ...] = (resource_type,)
        else:
            classes = self.request.classes or ("", *beside)
        labels = frozenset({label}) if label else frozenset()
        specific = labels & lbl.PART2_LABELS
        worst: ConsentOutcome | None = None
        for purpose in purposes:
            for kind in classes:
                query = ConsentQuery(
                    recipient_ids=self.recipient_ids,
                    purpose=purpose,
                    resource_type=kind,
                    labels=labels,
                    codes=frozenset({code}) if code else frozenset(),
                    at=self.at,
                    categories=self.request.categories,
                    patient=self.patient,
                )
                outcome = evaluate_consents(self.consents, query, specific_labels=specific)
                if specific and outcome.verdict is ConsentVerdict.PERMIT and outcome.specific_rule is None:
                    outcome = ConsentOutcome(
                        ConsentVerdict.DENY,
                        RULE_PART2_NOT_NAMED,
                        f"42 CFR Part 2 data ({_code_of(label or '')}) is released only under an active consent "
                        "that names the actor as recipient for it and states a purpose; none does",
                    )
                if worst is None or _STRICTNESS[outcome.verdict] > _STRICTNESS[worst.verdict]:
                    worst = outcome
        assert worst is not None  # purposes and classes are never empty
        return worst


def _permit(general: ConsentOutcome, ask: _Asker, candidates: Iterable[_Candidate]) -> ConsultAnswer:
    """A general permit: withhold (``codes``) what the consents do not release; Part 2 notice if released."""
    withheld: list[str] = []
    part2: list[tuple[str, ConsentOutcome]] = []
    for kind, value, beside in candidates:
        outcome = _ask_about(ask, kind, value, beside)
        if outcome.verdict is not ConsentVerdict.PERMIT:
            withheld.append(_coding_of(kind, value))
        elif kind == "label" and value in lbl.PART2_LABELS:
            part2.append((value, outcome))
    obligations: list[CardObligation] = []
    if withheld:
        obligations.append(CardObligation("REDACT", codes=tuple(withheld)))
    obligations.extend(_part2_obligations(part2))
    return ConsultAnswer(CardDecision.PERMIT, general.rule, general.reason, tuple(obligations), _consent_of(general))


def _restricted(general: ConsentOutcome, ask: _Asker, candidates: Iterable[_Candidate]) -> ConsultAnswer:
    """A general deny or no consent: release only what some consent permits (``exceptAnyOfCodes``)."""
    released: list[str] = []
    part2: list[tuple[str, ConsentOutcome]] = []
    first: ConsentOutcome | None = None
    for kind, value, _ in candidates:
        outcome = _ask_about(ask, kind, value)
        if outcome.verdict is ConsentVerdict.PERMIT:
            released.append(_coding_of(kind, value))
            first = first or outcome
            if kind == "label" and value in lbl.PART2_LABELS:
                part2.append((value, outcome))
    if first is None:
        decision = CardDecision.DENY if general.verdict is ConsentVerdict.DENY else CardDecision.NO_CONSENT
        return ConsultAnswer(decision, general.rule, general.reason, (), _consent_of(general))
    what = "deny" if general.verdict is ConsentVerdict.DENY else "say nothing about"
    reason = (
        f"{general.reason}; the consents {what} data in general, but permit data carrying "
        f"{'/'.join(_code_of(coding) for coding in released)} ({first.specific_rule or first.rule}), so only "
        "that is released"
    )
    obligations = (CardObligation("REDACT", except_any_of_codes=tuple(released)), *_part2_obligations(part2))
    return ConsultAnswer(
        CardDecision.PERMIT, first.specific_rule or first.rule, reason, obligations, _consent_of(first)
    )


def _ask_about(ask: _Asker, kind: str, value: str, beside: tuple[str, ...] = ()) -> ConsentOutcome:
    if kind == "label":
        return ask(label=value, beside=beside)
    if kind == "class":
        return ask(resource_type=value)
    return ask(code=value, beside=beside)


def _part2_obligations(released: Sequence[tuple[str, ConsentOutcome]]) -> tuple[CardObligation, ...]:
    """One NORDSCLCD obligation per naming consent: its Part 2 labels, the 2.32 notice, ``Consent/<id>``."""
    by_consent: dict[str | None, list[str]] = {}
    for label, outcome in released:
        by_consent.setdefault(outcome.specific_consent, []).append(label)
    return tuple(
        CardObligation(
            "NORDSCLCD",
            codes=tuple(sorted(labels)),
            notice=PART2_NOTICE,
            consent=f"Consent/{consent}" if consent else None,
        )
        for consent, labels in sorted(by_consent.items(), key=lambda item: item[0] or "")
    )


#: (kind ``label``/``class``/``code``, value, the classes a provision restricts beside a label or code).
_Candidate = tuple[str, str, tuple[str, ...]]


def _candidates(consents: Sequence[Consent]) -> list[_Candidate]:
    """Every (kind, value) the consents mention, kinds ``label``/``class``/``code``; always the Part 2 labels.

    A label or code comes with the content classes of the provisions that name it beside it: a provision
    restricting a label *and* a class withholds both (LEAP lists every code of a matching provision in one
    REDACT obligation), so on a request without class the label is asked about under those classes too.
    """
    found: dict[tuple[str, str], set[str]] = {("label", label): set() for label in lbl.PART2_LABELS}
    for consent in consents:
        if not consent.is_privacy:
            continue
        for provision in _walk(consent.provision):
            beside = provision.c_classes
            for label in provision.c_labels:
                found.setdefault(("label", label), set()).update(beside)
            for kind in provision.c_classes:
                found.setdefault(("class", kind), set())
            for code in provision.c_codes:
                found.setdefault(("code", code), set()).update(beside)
    return [(kind, value, tuple(sorted(found[kind, value]))) for kind, value in sorted(found)]


def _unknown_purposes(consents: Sequence[Consent]) -> tuple[str, ...]:
    """For a request without purpose: every purpose a consent names, and one none names (``""``)."""
    named = {
        purpose
        for consent in consents
        if consent.is_privacy
        for node in _walk(consent.provision)
        for purpose in node.c_purposes
    }
    return ("", *sorted(named))


def _walk(provision: Provision | None) -> Iterator[Provision]:
    if provision is None:
        return
    yield provision
    for child in provision.provisions:
        yield from _walk(child)


def _coding_of(kind: str, value: str) -> str:
    if kind == "class" and "|" not in value:
        return f"{RESOURCE_TYPES_SYSTEM}|{value}"
    return value


def _code_of(coding: str) -> str:
    return coding.rpartition("|")[2]


def _consent_of(outcome: ConsentOutcome) -> str | None:
    """``Consent/<id>`` of the consent that decided (rules ``consent:<id>:<path>``), if one did."""
    if outcome.specific_consent:
        return f"Consent/{outcome.specific_consent}"
    kind, _, rest = outcome.rule.partition(":")
    consent_id = rest.partition(":")[0]
    if kind != "consent" or not consent_id or consent_id in ("none", "(unsaved)"):
        return None
    return f"Consent/{consent_id}"


# --- what the caller may see ------------------------------------------------------------------------


def shown_to_caller(answer: ConsultAnswer, hidden: Collection[str]) -> ConsultAnswer:
    """``answer`` as a caller that may not read the Consents whose ids are in ``hidden`` is shown it (pure).

    The decision and the obligations' codes and notices are unchanged; ``based_on`` and an obligation's
    ``consent`` naming a hidden Consent are dropped; in ``rule`` and ``reason`` a hidden id becomes
    :data:`OTHER_ORGANIZATION` / :data:`OTHER_ORGANIZATION_TEXT`. A reason that would still contain a
    hidden id (a wording not foreseen here) is replaced whole by :data:`HIDDEN_REASON`: fail closed.
    """
    ids = frozenset(item for item in hidden if item)
    if not ids:
        return answer
    references = {f"Consent/{item}" for item in ids}
    reason = _hide_ids(answer.reason, ids)
    if _id_pattern(ids).search(reason.replace(OTHER_ORGANIZATION_TEXT, "").replace(OTHER_ORGANIZATION, "")):
        reason = HIDDEN_REASON
    return replace(
        answer,
        rule=_hide_rule(answer.rule, ids),
        reason=reason,
        based_on=None if answer.based_on in references else answer.based_on,
        obligations=tuple(
            replace(obligation, consent=None) if obligation.consent in references else obligation
            for obligation in answer.obligations
        ),
    )


def _hide_rule(rule: str, ids: frozenset[str]) -> str:
    """``consent:<id>:<path>`` with a hidden id -> ``consent:(another-organization):<path>`` (ids hold no ``:``)."""
    kind, _, rest = rule.partition(":")
    consent_id, colon, path = rest.partition(":")
    if kind == "consent" and consent_id in ids:
        return f"consent:{OTHER_ORGANIZATION}{colon}{path}"
    return rule


#: Where a FHIR id (``[A-Za-z0-9\-.]{1,64}``) starts and ends: not beside another id character (a ``.`` is
#: part of the id only between id characters, so a sentence may end right after one).
_ID_START: Final = r"(?<![A-Za-z0-9\-])(?<![A-Za-z0-9\-]\.)"
_ID_END: Final = r"(?![A-Za-z0-9\-]|\.[A-Za-z0-9\-])"


def _alternatives(ids: frozenset[str]) -> str:
    return "|".join(re.escape(item) for item in sorted(ids, key=lambda item: (-len(item), item)))


def _id_pattern(ids: frozenset[str]) -> re.Pattern[str]:
    """Any of ``ids`` as a whole id (``c1`` is not found in ``c10`` nor in ``c1.x``)."""
    return re.compile(rf"{_ID_START}(?:{_alternatives(ids)}){_ID_END}")


def _hide_ids(text: str, ids: frozenset[str]) -> str:
    """Replace every ``consent <id>`` and ``consent:<id>`` (any case, also ``Consent/<id>``) of a hidden id."""
    pattern = re.compile(rf"(?<![A-Za-z0-9_\-])(consent)([ :/])({_alternatives(ids)}){_ID_END}", re.IGNORECASE)

    def hidden(match: re.Match[str]) -> str:
        word, separator = match[1], match[2]
        return f"{word} {OTHER_ORGANIZATION_TEXT}" if separator == " " else f"{word}{separator}{OTHER_ORGANIZATION}"

    return pattern.sub(hidden, text)


# --- JSON ------------------------------------------------------------------------------------------


def _coding_json(coding: str) -> dict[str, str]:
    system, bar, code = coding.rpartition("|")
    return {"system": system, "code": code} if bar and system else {"code": code}


def obligation_json(obligation: CardObligation) -> dict[str, Any]:
    """A LEAP obligation: ``{"id": {system, code}, "parameters": {...}}``."""
    parameters: dict[str, Any] = {}
    if obligation.codes:
        parameters["codes"] = [_coding_json(code) for code in obligation.codes]
    if obligation.except_any_of_codes:
        parameters["exceptAnyOfCodes"] = [_coding_json(code) for code in obligation.except_any_of_codes]
    if obligation.notice is not None:
        parameters["notice"] = obligation.notice
    if obligation.consent is not None:
        parameters["consent"] = obligation.consent
    return {"id": {"system": ACT_CODE_SYSTEM, "code": obligation.code}, "parameters": parameters}


def card(answer: ConsultAnswer, *, source_label: str, source_url: str, consent_base: str = "") -> dict[str, Any]:
    """The LEAP card for ``answer``. ``consent_base`` (e.g. ``http://hub/fhir/``) prefixes ``basedOn``.

    ``extension`` carries LEAP's ``decision``, ``obligations`` (always a list) and ``basedOn`` (only when a
    consent decided), plus CareHub's ``rule`` and ``reason`` (extra members, which CDS Hooks allows).
    """
    detail, indicator = _CARD_TEXT[answer.decision]
    extension: dict[str, Any] = {
        "decision": answer.decision.value,
        "obligations": [obligation_json(obligation) for obligation in answer.obligations],
    }
    if answer.based_on:
        extension["basedOn"] = f"{consent_base}{answer.based_on}"
    extension["rule"] = answer.rule
    extension["reason"] = answer.reason
    return {
        "summary": answer.decision.value,
        "detail": detail,
        "indicator": indicator,
        "source": {"label": source_label, "url": source_url},
        "extension": extension,
    }


def service_definition() -> dict[str, Any]:
    """The discovery entry of the consult service (CDS Hooks ``/cds-services``; no prefetch)."""
    return {
        "id": SERVICE_ID,
        "hook": HOOK,
        "title": "Patient Consent Consult",
        "description": "CareHub's consent decision service, compatible with the LEAP Consent Decision Service: "
        "given a patient, an actor, purposes of use and content classes, answers CONSENT_PERMIT, CONSENT_DENY "
        "or NO_CONSENT from the patient's consents on file, with the obligations to enforce.",
    }
