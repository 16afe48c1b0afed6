"""Consent and policy value objects (immutable, hashable, precompiled) and the FHIR R4 Consent reader.

A :class:`Consent` is the patient's word; :class:`Policies` is the operator's. Both are plain frozen
dataclasses: cheap to hash and compare, safe to cache and share between threads. Everything the engine
needs at decision time (label scopes, code sets, actor sets by role, period bounds as timestamps, the
base decision) is computed once when the value is built, in ``__post_init__``, into fields that take no
part in equality or hashing.

Forms used throughout (the same as :class:`hub.events.RoutingFacts`):

* a coding is ``'system|code'`` (``'|code'`` without a system); security labels are canonicalised by
  :func:`hub.consent.labels.normalize_label`;
* a reference is the ``Reference.reference`` string minus any ``/_history/n`` suffix, or, for a logical
  reference, its identifier as ``'system|value'``. References compare exactly: the gather step lists every
  name of a partner in :attr:`hub.consent.decision.Recipient.identifiers`.

:func:`consent_from_fhir` reads FHIR R4 Consent JSON (already validated at the edge) of both LEAP
generations: the base decision comes from the root ``provision.type`` when present, otherwise from
``policyRule`` (v3-ActCode OPTIN permits, OPTOUT denies); the privacy scope may be in ``scope`` or in
``category``. It first normalises the shapes LEAP and R5-era writers send
(:func:`hub.consent.consent_reading.normalize_consent`: scope in ``category``, single objects where R4
repeats, ...). Anything it still cannot use raises one :class:`hub.errors.InvalidInput` naming the
FHIRPath.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from hub.consent import consent_reading
from hub.consent import labels as lbl
from hub.consent.consent_reading import normalize_consent
from hub.consent.redaction import PROFILES
from hub.errors import ConfigurationError, InvalidInput

CONSENT_SCOPE_SYSTEM: Final = consent_reading.CONSENT_SCOPE_SYSTEM
PATIENT_PRIVACY: Final = consent_reading.PATIENT_PRIVACY
ACT_CODE_SYSTEM: Final = lbl.ACT_CODE_SYSTEM
OPTIN: Final = f"{ACT_CODE_SYSTEM}|OPTIN"
OPTOUT: Final = f"{ACT_CODE_SYSTEM}|OPTOUT"
#: Legacy spellings of OPTIN/OPTOUT's code system that LEAP-era consents carry.
_POLICY_SYSTEMS: Final = frozenset({ACT_CODE_SYSTEM, "http://hl7.org/fhir/v3/ActCode", "urn:oid:2.16.840.1.113883.5.4"})

RESOURCE_TYPES_SYSTEM: Final = "http://hl7.org/fhir/resource-types"
CONSENT_ACTION_SYSTEMS: Final = frozenset(
    {"", "http://terminology.hl7.org/CodeSystem/consentaction", "http://hl7.org/fhir/consentaction"},
)
#: Systems whose codes are purposes of use (LEAP's requests and some consents use the value-set URL).
PURPOSE_SYSTEMS: Final = frozenset(
    {
        "",
        "http://terminology.hl7.org/CodeSystem/v3-ActReason",
        "http://terminology.hl7.org/ValueSet/v3-PurposeOfUse",
        "http://terminology.hl7.org/CodeSystem/v3-PurposeOfUse",
        "http://hl7.org/fhir/v3/ActReason",
        "http://hl7.org/fhir/v3/PurposeOfUse",
        "urn:oid:2.16.840.1.113883.5.8",
    },
)

#: Actor roles (v3-ParticipationType and friends, by code) that make the actor a *recipient* of the data.
RECIPIENT_ROLES: Final = frozenset({"PRCP", "IRCP", "RCV", "REFT", "TRC", "grantee", "GRANTEE"})
#: Actor roles that make the actor a *source* of the data (custodian, author, informant, enterer).
SOURCE_ROLES: Final = frozenset({"CST", "AUT", "INF", "ENT", "AUTHEN", "LA", "grantor", "GRANTOR"})

MAX_PROVISION_DEPTH: Final = 16


class ConsentStatus(StrEnum):
    """FHIR R4 ``Consent.status``."""

    DRAFT = "draft"
    PROPOSED = "proposed"
    ACTIVE = "active"
    REJECTED = "rejected"
    INACTIVE = "inactive"
    ENTERED_IN_ERROR = "entered-in-error"


class ProvisionType(StrEnum):
    """FHIR R4 ``Consent.provision.type``."""

    PERMIT = "permit"
    DENY = "deny"


def flip(kind: ProvisionType) -> ProvisionType:
    """The opposite provision type (an untyped nested provision is an exception to its parent)."""
    return _DENY if kind is _PERMIT else _PERMIT


_PERMIT: Final = ProvisionType.PERMIT
_DENY: Final = ProvisionType.DENY


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open time range ``[start, until)``; ``None`` is unbounded.

    ``until`` is *exclusive*: a FHIR ``end`` of ``2016-01-01`` (day precision, so the whole day counts)
    becomes ``until = 2016-01-02T00:00Z``. Naive datetimes are taken as UTC.
    """

    start: datetime | None = None
    until: datetime | None = None
    start_ts: float = field(init=False, repr=False, compare=False)
    until_ts: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "start_ts", _as_utc(self.start).timestamp() if self.start else -math.inf)
        object.__setattr__(self, "until_ts", _as_utc(self.until).timestamp() if self.until else math.inf)

    def contains(self, moment: float) -> bool:
        """Whether the POSIX timestamp ``moment`` falls in the period."""
        return self.start_ts <= moment < self.until_ts


@dataclass(frozen=True, slots=True)
class Actor:
    """``Consent.provision.actor``: who (``reference``) in what role (``role``: ``'system|code'`` codings)."""

    reference: str
    role: tuple[str, ...] = ()

    @property
    def role_codes(self) -> frozenset[str]:
        """The role codes without their systems."""
        return frozenset(coding.partition("|")[2] for coding in self.role)


@dataclass(frozen=True, slots=True)
class DataReference:
    """``Consent.provision.data``: a resource the rule is about, and how (instance, related, ...)."""

    meaning: str
    reference: str


@dataclass(frozen=True, slots=True)
class Provision:
    """One rule of a Consent (``Consent.provision`` and its nested ``provision``), with its conditions.

    Every present condition must hold for the rule to apply; within one condition any listed value will
    do. ``type`` is ``None`` at the root of LEAP's first generation (the base comes from ``policyRule``)
    and on nested rules written for LEAP (an exception to the parent).
    """

    type: ProvisionType | None = None
    period: Period | None = None
    actors: tuple[Actor, ...] = ()
    actions: tuple[str, ...] = ()
    security_labels: tuple[str, ...] = ()
    purposes: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()
    data_period: Period | None = None
    data: tuple[DataReference, ...] = ()
    provisions: tuple[Provision, ...] = ()

    # --- precompiled (not part of equality or hashing) ---
    c_labels: frozenset[str] = field(init=False, repr=False, compare=False)
    c_deny_scope: frozenset[str] = field(init=False, repr=False, compare=False)
    c_permit_scope: frozenset[str] = field(init=False, repr=False, compare=False)
    c_purposes: frozenset[str] = field(init=False, repr=False, compare=False)
    c_actions: frozenset[str] = field(init=False, repr=False, compare=False)
    c_classes: frozenset[str] = field(init=False, repr=False, compare=False)
    c_codes: frozenset[str] = field(init=False, repr=False, compare=False)
    c_actor_ids: frozenset[str] = field(init=False, repr=False, compare=False)
    c_recipient_ids: frozenset[str] = field(init=False, repr=False, compare=False)
    c_source_ids: frozenset[str] = field(init=False, repr=False, compare=False)
    c_other_ids: frozenset[str] = field(init=False, repr=False, compare=False)
    c_has_codes: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        labels = lbl.normalize_labels(self.security_labels)
        recipient: set[str] = set()
        source: set[str] = set()
        other: set[str] = set()
        for actor in self.actors:
            roles = actor.role_codes
            if roles & RECIPIENT_ROLES:
                recipient.add(actor.reference)
            if roles & SOURCE_ROLES:
                source.add(actor.reference)
            if not roles & (RECIPIENT_ROLES | SOURCE_ROLES):
                other.add(actor.reference)
        classes = frozenset(_code_in(coding, frozenset({"", RESOURCE_TYPES_SYSTEM})) for coding in self.classes)
        setter = object.__setattr__
        setter(self, "c_labels", labels)
        setter(self, "c_deny_scope", lbl.deny_scope(labels))
        setter(self, "c_permit_scope", lbl.permit_scope(labels))
        setter(self, "c_purposes", frozenset(_code_in(coding, PURPOSE_SYSTEMS) for coding in self.purposes))
        setter(self, "c_actions", frozenset(_code_in(coding, CONSENT_ACTION_SYSTEMS) for coding in self.actions))
        setter(self, "c_classes", classes)
        setter(self, "c_codes", frozenset(self.codes))
        setter(self, "c_actor_ids", frozenset(actor.reference for actor in self.actors))
        setter(self, "c_recipient_ids", frozenset(recipient))
        setter(self, "c_source_ids", frozenset(source))
        setter(self, "c_other_ids", frozenset(other))
        setter(self, "c_has_codes", bool(labels or classes or self.codes))


def _code_in(coding: str, systems: frozenset[str]) -> str:
    """The bare code when the coding's system is one of ``systems``, else the whole coding."""
    system, _, code = coding.partition("|")
    return code if system in systems else coding


@dataclass(frozen=True, slots=True)
class Consent:
    """A patient's FHIR R4 Consent, as the engine sees it.

    ``patient`` is the hub patient id once the store has resolved it (see :func:`consent_from_fhir`);
    ``date_time`` orders consents (the most recent applicable one decides, as in LEAP).
    """

    id: str | None
    status: ConsentStatus
    patient: str | None = None
    date_time: datetime | None = None
    scope: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    policy_rules: tuple[str, ...] = ()
    provision: Provision | None = None

    # --- precompiled ---
    base: ProvisionType | None = field(init=False, repr=False, compare=False)
    base_path: str = field(init=False, repr=False, compare=False)
    date_ts: float = field(init=False, repr=False, compare=False)
    scope_codes: frozenset[str] = field(init=False, repr=False, compare=False)
    is_privacy: bool = field(init=False, repr=False, compare=False)
    label_denies: tuple[tuple[str, Provision], ...] = field(init=False, repr=False, compare=False)
    time_bounds: tuple[float, ...] = field(init=False, repr=False, compare=False)
    reads_labels: bool = field(init=False, repr=False, compare=False)
    reads_codes: bool = field(init=False, repr=False, compare=False)
    reads_reference: bool = field(init=False, repr=False, compare=False)
    reads_sources: bool = field(init=False, repr=False, compare=False)
    hash_value: int = field(init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        return self.hash_value

    def __post_init__(self) -> None:
        base, base_path = _base_decision(self.provision, self.policy_rules)
        scope_codes = frozenset((*self.scope, *self.categories))
        setter = object.__setattr__
        setter(self, "base", base)
        setter(self, "base_path", base_path)
        setter(self, "date_ts", _as_utc(self.date_time).timestamp() if self.date_time else -math.inf)
        setter(self, "scope_codes", scope_codes)
        setter(self, "is_privacy", f"{CONSENT_SCOPE_SYSTEM}|{PATIENT_PRIVACY}" in scope_codes)
        denies: list[tuple[str, Provision]] = []
        if base is not None and self.provision is not None:
            _collect_label_denies(self.provision, base, "provision", denies)
        setter(self, "label_denies", tuple(denies))
        every = tuple(_walk(self.provision)) if self.provision is not None else ()
        bounds = {
            moment
            for provision in every
            if provision.period is not None
            for moment in (provision.period.start_ts, provision.period.until_ts)
            if math.isfinite(moment)
        }
        setter(self, "time_bounds", tuple(sorted(bounds)))
        setter(self, "reads_labels", any(provision.c_labels for provision in every))
        setter(self, "reads_codes", any(provision.c_codes or provision.c_classes for provision in every))
        setter(self, "reads_reference", any(provision.data for provision in every))
        setter(self, "reads_sources", any(provision.c_source_ids or provision.c_other_ids for provision in every))
        setter(
            self,
            "hash_value",
            hash((self.id, self.status, self.patient, self.date_time, self.scope, self.categories,
                  self.policy_rules, self.provision)),
        )

    @property
    def label(self) -> str:
        """How rules and reasons name this consent."""
        return self.id if self.id else "(unsaved)"


def _base_decision(root: Provision | None, policy_rules: tuple[str, ...]) -> tuple[ProvisionType | None, str]:
    """The consent's base decision and where it comes from; any source saying deny makes it deny."""
    from_policy: ProvisionType | None = None
    for coding in policy_rules:
        system, _, code = coding.partition("|")
        if system in _POLICY_SYSTEMS and code == "OPTOUT":
            from_policy = ProvisionType.DENY
        elif system in _POLICY_SYSTEMS and code == "OPTIN" and from_policy is None:
            from_policy = ProvisionType.PERMIT
    from_root = root.type if root is not None else None
    if ProvisionType.DENY in (from_root, from_policy):
        return ProvisionType.DENY, "provision" if from_root is ProvisionType.DENY else "policyRule"
    if ProvisionType.PERMIT in (from_root, from_policy):
        return ProvisionType.PERMIT, "provision" if from_root is ProvisionType.PERMIT else "policyRule"
    return None, "policyRule"


def _walk(provision: Provision) -> Iterable[Provision]:
    yield provision
    for child in provision.provisions:
        yield from _walk(child)


def _collect_label_denies(
    provision: Provision, kind: ProvisionType, path: str, found: list[tuple[str, Provision]]
) -> None:
    if kind is ProvisionType.DENY and provision.c_labels:
        found.append((path, provision))
    for index, child in enumerate(provision.provisions):
        _collect_label_denies(child, child.type or flip(kind), f"{path}.provision[{index}]", found)


# --- operator policies ----------------------------------------------------------------------------


class Jurisdiction(StrEnum):
    """The jurisdiction's HIE consent model: what happens when no patient consent applies."""

    OPT_IN = "opt-in"
    OPT_OUT = "opt-out"


class Relationship(StrEnum):
    """How the recipient must relate to the event for a sharing rule to apply."""

    ADDRESSED = "addressed"
    """The event names the recipient as performer (a referral addressed to it, a Task it owns)."""
    ON_ROSTER = "on-roster"
    """The patient is on the recipient's roster (``Recipient.on_roster``)."""
    REQUESTER = "requester"
    """The event names the recipient as requester (case updates going back to the referring hospital)."""


#: Event kinds (``RoutingFacts.event_kind``) assumed when the edge did not set one.
DEFAULT_EVENT_KINDS: Final[Mapping[str, str]] = {
    "ServiceRequest": "referral",
    "Task": "task-update",
    "Encounter": "encounter-update",
}

CARE_COORDINATION: Final = "CAREMGT"
TREATMENT: Final = "TREAT"
BREAK_GLASS_PURPOSES: Final = frozenset({"ETREAT", "BTG"})


@dataclass(frozen=True, slots=True)
class SharingRule:
    """What one partner kind may receive: event kinds, the relationship it needs, purposes, redaction."""

    id: str
    partner_kind: str
    event_kinds: frozenset[str]
    relationship: Relationship
    purposes: frozenset[str]
    redaction_profile: str
    description: str
    hash_value: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "hash_value",
            hash((self.id, self.partner_kind, self.event_kinds, self.relationship, self.purposes,
                  self.redaction_profile, self.description)),
        )

    def __hash__(self) -> int:
        return self.hash_value


DEFAULT_SHARING_RULES: Final = (
    SharingRule(
        "cbo-referral-addressed",
        "cbo",
        frozenset({"referral"}),
        Relationship.ADDRESSED,
        frozenset({CARE_COORDINATION}),
        "cbo",
        "a CBO receives the referrals addressed to it, for care coordination",
    ),
    SharingRule(
        "cbo-task-addressed",
        "cbo",
        frozenset({"referral-task", "task-update"}),
        Relationship.ADDRESSED,
        frozenset({CARE_COORDINATION}),
        "cbo",
        "a CBO receives the referral tasks it owns (new and updated), for care coordination",
    ),
    SharingRule(
        "cbo-adt-roster",
        "cbo",
        frozenset({"admit", "discharge"}),
        Relationship.ON_ROSTER,
        frozenset({CARE_COORDINATION}),
        "cbo",
        "a CBO receives admit and discharge events of clients on its roster, for care coordination",
    ),
    SharingRule(
        "hospital-referral-addressed",
        "hospital",
        frozenset({"referral"}),
        Relationship.ADDRESSED,
        frozenset({TREATMENT, CARE_COORDINATION, "ETREAT"}),
        "full",
        "a hospital receives the referrals addressed to it, for treatment or care coordination",
    ),
    SharingRule(
        "hospital-case-update-requester",
        "hospital",
        frozenset({"task-update"}),
        Relationship.REQUESTER,
        frozenset({TREATMENT, CARE_COORDINATION}),
        "full",
        "a hospital receives case updates on the referrals it requested",
    ),
    SharingRule(
        "hospital-adt-roster",
        "hospital",
        frozenset({"admit", "discharge", "transfer", "encounter-update"}),
        Relationship.ON_ROSTER,
        frozenset({TREATMENT, CARE_COORDINATION, "ETREAT"}),
        "full",
        "a hospital receives encounter events of patients on its roster, for treatment or care coordination",
    ),
)

#: Labels that only a patient consent can release: operator policies and the opt-out default never do.
DEFAULT_CONSENT_REQUIRED_LABELS: Final = frozenset({lbl.R, lbl.V}) | lbl.SENSITIVITY_LABELS | lbl.PART2_LABELS


@dataclass(frozen=True, slots=True)
class Policies:
    """The operator's sharing policies (values; the control plane builds one and hands it to ``decide``).

    * ``jurisdiction``: what happens when no consent of the patient applies (opt-out: share; opt-in: don't).
    * ``rules``: per partner kind, which events it may receive and for which purposes (a ceiling: a
      patient consent cannot widen it); break-glass purposes are never allowed to a CBO.
    * ``consent_required_labels``: labels the jurisdiction default never releases.
    * ``specific_consent_labels``: labels that, like 42 CFR Part 2 data (always included), need a
      consent naming the recipient for that label.
    """

    jurisdiction: Jurisdiction = Jurisdiction.OPT_OUT
    rules: tuple[SharingRule, ...] = DEFAULT_SHARING_RULES
    consent_required_labels: frozenset[str] = DEFAULT_CONSENT_REQUIRED_LABELS
    specific_consent_labels: frozenset[str] = frozenset()
    break_glass_purposes: frozenset[str] = BREAK_GLASS_PURPOSES
    event_kinds: tuple[tuple[str, str], ...] = tuple(DEFAULT_EVENT_KINDS.items())

    rules_by_kind: Mapping[tuple[str, str], tuple[SharingRule, ...]] = field(init=False, repr=False, compare=False)
    event_kind_of: Mapping[str, str] = field(init=False, repr=False, compare=False)
    specific_labels: frozenset[str] = field(init=False, repr=False, compare=False)
    consent_labels: frozenset[str] = field(init=False, repr=False, compare=False)
    hash_value: int = field(init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        return self.hash_value

    def __post_init__(self) -> None:
        index: dict[tuple[str, str], list[SharingRule]] = {}
        for rule in self.rules:
            if rule.partner_kind == "cbo" and rule.purposes & self.break_glass_purposes:
                raise ConfigurationError(f"sharing rule {rule.id}: break-glass purposes are never allowed to a CBO")
            if rule.redaction_profile not in PROFILES:
                raise ConfigurationError(
                    f"sharing rule {rule.id}: unknown redaction profile {rule.redaction_profile!r}",
                )
            for kind in rule.event_kinds:
                index.setdefault((rule.partner_kind, kind), []).append(rule)
        setter = object.__setattr__
        setter(self, "rules_by_kind", {key: tuple(value) for key, value in index.items()})
        setter(self, "event_kind_of", dict(self.event_kinds))
        specific = lbl.normalize_labels(self.specific_consent_labels) | lbl.PART2_LABELS
        setter(self, "specific_labels", specific)
        setter(self, "consent_labels", lbl.normalize_labels(self.consent_required_labels) | specific)
        setter(
            self,
            "hash_value",
            hash((self.jurisdiction, self.rules, self.consent_required_labels, self.specific_consent_labels,
                  self.break_glass_purposes, self.event_kinds)),
        )


# --- FHIR R4 Consent JSON -> Consent --------------------------------------------------------------


def consent_from_fhir(data: Mapping[str, Any], *, patient: str | None = None) -> Consent:
    """Read a FHIR R4 Consent (LEAP and R5-era shapes normalised first); ``patient`` (the hub patient id,
    resolved by the store) overrides the JSON's.

    Raises :class:`hub.errors.InvalidInput` with the FHIRPath of the first thing it cannot use.
    """
    if not isinstance(data, Mapping):
        raise InvalidInput("a Consent must be a JSON object", expression="Consent")
    if data.get("resourceType") != "Consent":
        raise InvalidInput("resourceType must be Consent", expression="Consent.resourceType")
    data = normalize_consent(data).data
    status_text = _string(data.get("status"), "Consent.status", required=True)
    try:
        status = ConsentStatus(status_text or "")
    except ValueError:
        raise InvalidInput("Consent.status is not an R4 consent status", expression="Consent.status") from None
    root = data.get("provision")
    return Consent(
        id=_string(data.get("id"), "Consent.id"),
        status=status,
        patient=patient if patient is not None else _reference(data.get("patient"), "Consent.patient"),
        date_time=_instant(data.get("dateTime"), "Consent.dateTime", end=False),
        scope=_concept(data.get("scope"), "Consent.scope"),
        categories=tuple(
            coding
            for index, concept in enumerate(_array(data.get("category"), "Consent.category"))
            for coding in _concept(concept, f"Consent.category[{index}]")
        ),
        policy_rules=_concept(data.get("policyRule"), "Consent.policyRule"),
        provision=None if root is None else _provision(root, "Consent.provision", depth=0),
    )


def _provision(data: Any, path: str, *, depth: int) -> Provision:
    if depth > MAX_PROVISION_DEPTH:
        raise InvalidInput(f"provisions nest deeper than {MAX_PROVISION_DEPTH} levels", expression=path)
    item = _object(data, path)
    kind_text = _string(item.get("type"), f"{path}.type")
    if kind_text is not None and kind_text not in ("permit", "deny"):
        raise InvalidInput("provision.type must be permit or deny", expression=f"{path}.type")
    return Provision(
        type=ProvisionType(kind_text) if kind_text else None,
        period=_period(item.get("period"), f"{path}.period"),
        actors=tuple(
            _actor(actor, f"{path}.actor[{i}]") for i, actor in enumerate(_array(item.get("actor"), f"{path}.actor"))
        ),
        actions=_concepts(item.get("action"), f"{path}.action", coded=True),
        security_labels=_codings(item.get("securityLabel"), f"{path}.securityLabel", coded=True),
        purposes=_codings(item.get("purpose"), f"{path}.purpose", coded=True),
        classes=_codings(item.get("class"), f"{path}.class", coded=True),
        codes=_concepts(item.get("code"), f"{path}.code", coded=True),
        data_period=_period(item.get("dataPeriod"), f"{path}.dataPeriod"),
        data=tuple(
            _data(entry, f"{path}.data[{i}]") for i, entry in enumerate(_array(item.get("data"), f"{path}.data"))
        ),
        provisions=tuple(
            _provision(child, f"{path}.provision[{i}]", depth=depth + 1)
            for i, child in enumerate(_array(item.get("provision"), f"{path}.provision"))
        ),
    )


def _actor(data: Any, path: str) -> Actor:
    item = _object(data, path)
    reference = _reference(item.get("reference"), f"{path}.reference")
    if reference is None:
        raise InvalidInput("an actor must reference someone (reference or identifier)", expression=f"{path}.reference")
    return Actor(reference=reference, role=_concept(item.get("role"), f"{path}.role"))


def _data(data: Any, path: str) -> DataReference:
    item = _object(data, path)
    meaning = _string(item.get("meaning"), f"{path}.meaning", required=True)
    reference = _reference(item.get("reference"), f"{path}.reference")
    if reference is None:
        raise InvalidInput("provision.data must reference a resource", expression=f"{path}.reference")
    return DataReference(meaning=meaning or "", reference=reference)


def _object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInput("must be a JSON object", expression=path)
    return value


def _array(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput("must be a JSON array", expression=path)
    return value


def _string(value: Any, path: str, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise InvalidInput("is required", expression=path)
        return None
    if not isinstance(value, str) or (required and not value):
        raise InvalidInput("must be a non-empty string", expression=path)
    return value


def _coding(value: Any, path: str, *, coded: bool = False) -> str | None:
    item = _object(value, path)
    code = _string(item.get("code"), f"{path}.code", required=coded)
    if not code:
        return None
    return f"{_string(item.get('system'), f'{path}.system') or ''}|{code}"


def _codings(value: Any, path: str, *, coded: bool = False) -> tuple[str, ...]:
    """Codings as ``'system|code'``; ``coded``: a rule condition, where a coding without a code is unusable
    (dropping it would silently widen a permit)."""
    found = (_coding(item, f"{path}[{i}]", coded=coded) for i, item in enumerate(_array(value, path)))
    return tuple(dict.fromkeys(coding for coding in found if coding))


def _concept(value: Any, path: str, *, coded: bool = False) -> tuple[str, ...]:
    if value is None:
        return ()
    found = _codings(_object(value, path).get("coding"), f"{path}.coding", coded=coded)
    if coded and not found:
        raise InvalidInput("a rule condition needs a coded value (text alone cannot be evaluated)", expression=path)
    return found


def _concepts(value: Any, path: str, *, coded: bool = False) -> tuple[str, ...]:
    found = (
        coding
        for i, item in enumerate(_array(value, path))
        for coding in _concept(item, f"{path}[{i}]", coded=coded)
    )
    return tuple(dict.fromkeys(found))


def _reference(value: Any, path: str) -> str | None:
    if value is None:
        return None
    item = _object(value, path)
    literal = _string(item.get("reference"), f"{path}.reference")
    if literal:
        return normalize_reference(literal)
    identifier = item.get("identifier")
    if identifier is None:
        return None
    ident = _object(identifier, f"{path}.identifier")
    number = _string(ident.get("value"), f"{path}.identifier.value")
    if not number:
        return None
    return f"{_string(ident.get('system'), f'{path}.identifier.system') or ''}|{number}"


def normalize_reference(reference: str) -> str:
    """A reference as the engine compares it: the literal string without a ``/_history/n`` suffix."""
    return reference.split("/_history/", 1)[0]


def _period(value: Any, path: str) -> Period | None:
    if value is None:
        return None
    item = _object(value, path)
    period = Period(
        start=_instant(item.get("start"), f"{path}.start", end=False),
        until=_instant(item.get("end"), f"{path}.end", end=True),
    )
    if period.start_ts >= period.until_ts:
        raise InvalidInput("period.start must be before period.end", expression=path)
    return period


_DATE_TIME = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<time>\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?",
)


def _instant(value: Any, path: str, *, end: bool) -> datetime | None:
    """A FHIR date/dateTime as an aware datetime: its first instant, or (``end``) the first after it."""
    text = _string(value, path)
    if text is None:
        return None
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        raise InvalidInput("is not a FHIR date or dateTime", expression=path)
    year, month, day = int(match["year"]), int(match["month"] or 1), int(match["day"] or 1)
    try:
        if match["time"] is not None:
            moment = datetime.fromisoformat(f"{text[:10]}T{match['time']}{match['zone'] or '+00:00'}")
            step = timedelta(microseconds=1) if "." in match["time"] else timedelta(seconds=1)
        else:
            moment = datetime(year, month, day, tzinfo=UTC)
            step = timedelta(days=1)
            if match["month"] is None:
                step = datetime(year + 1, 1, 1, tzinfo=UTC) - moment
            elif match["day"] is None:
                step = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC) - moment
        return moment + step if end else moment
    except (ValueError, OverflowError):
        raise InvalidInput("is not a valid date", expression=path) from None

