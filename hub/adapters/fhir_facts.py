"""Routing facts of an inbound ServiceRequest, extracted once at the edge (pure: model in, value out).

Everything downstream (normalize, route, consent) works from these facts and never re-reads the
FHIR JSON, so the forms are fixed here:

* **patient_source** - how the *sender* names the patient, made unambiguous across partners:

  - ``subject.identifier`` with a system -> ``system|value`` (e.g. ``urn:oid:2.16.840.1.113883.4.1|123``);
    an identifier without a system is local to the sender -> ``urn:carehub:partner:{sender}|value``;
  - otherwise ``subject.reference``: a bare (relative) reference such as ``Patient/1`` only means
    something on the sender's own server, so it is namespaced as
    ``urn:carehub:partner:{sender}:Patient/1``: two hospitals' ``Patient/1`` never collide.
    Absolute URLs and ``urn:`` references are globally unique and kept as given. A version
    suffix (``/_history/n``) is dropped: every version names the same patient.
  - a ``#id`` reference to a contained Patient uses that Patient's first identifier (as above);
  - a subject with display text only is valid R4 (several published examples do it): the referral
    is accepted and keyed as an unidentified patient of its own,
    ``urn:carehub:partner:{sender}:unidentified|{resource id}``, so it still reaches its addressed
    performer but is never linked to any other event (see :func:`unidentified_patient`).

* **requester**, **performers** - the reference string as given (minus ``/_history/n``), else the
  identifier as ``system|value`` (``|value`` without a system): the same forms in which partners are
  registered with their ``organization``. Entries naming no one (display only) are skipped.
* **categories**, **codes**, **security_labels** - ``system|code`` of the codings of
  ``category``, ``code.coding`` and ``meta.security`` (``|code`` without a system), in order,
  without duplicates.

* **Bundle-local patients** - inside a transaction or a Da Vinci message the subject usually points
  at a Patient entry of the same Bundle (``urn:uuid:...``, or ``Patient/<id>`` after the hub assigned
  ids). ``local_patients`` maps such references to the Patient entry; the patient is then named by
  that Patient's first usable identifier (see :func:`patient_identifier_sources`), which stays
  meaningful after the message is gone, instead of a per-message URN.

The other routed resources (pure functions as well):

* **Task** (:func:`task_facts`) - patient from ``Task.for`` (else the patient of the ServiceRequest
  its ``focus`` names, found by the caller); ``requester``; ``performers`` = ``owner``; ``focus``;
  ``codes`` = ``Task.code``; ``status``, ``intent``; ``event_kind`` ``referral-task`` for the first
  version of a Task whose focus is a ServiceRequest, ``task`` for the first version of any other
  Task, ``task-update`` for every later version.
* **Encounter** (:func:`encounter_facts`) - patient from ``subject``; ``codes`` = ``Encounter.type``;
  ``encounter_class`` = ``class``; ``status``; ``event_kind`` from :func:`encounter_event_kind`
  (or given, for a Da Vinci notification whose MessageHeader event says what happened).
* **ServiceRequest** - ``event_kind`` ``referral`` for the first version, ``referral-update`` after.
* **Consent** (:func:`consent_facts`) - patient from ``Consent.patient``; ``status``; ``event_kind``
  ``consent-change`` for every version.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hub.adapters.fhir_validation import FhirIssue, reference_type
from hub.events import RoutingFacts

_HISTORY = "/_history/"


def partner_namespace(sender: str) -> str:
    """The URN under which a sender's local names (bare references, system-less identifiers) live."""
    return f"urn:carehub:partner:{sender}"


#: Identifier systems never used to name or link a patient: a shared or mistyped SSN would merge people.
UNLINKED_IDENTIFIER_SYSTEMS: frozenset[str] = frozenset({"http://hl7.org/fhir/sid/us-ssn"})
#: Task statuses after which the Task is closed (Gravity: only the requester may still change it).
TERMINAL_TASK_STATUSES: frozenset[str] = frozenset({"completed", "failed", "rejected", "cancelled", "entered-in-error"})
#: The event kind of every accepted Consent version (new, changed or revoked).
CONSENT_CHANGE = "consent-change"


def servicerequest_facts(
    resource: Any,
    *,
    sender: str,
    resource_id: str | None,
    first_version: bool = True,
    local_patients: Mapping[str, Any] | None = None,
) -> RoutingFacts:
    """Extract the routing facts from a validated R4B ``ServiceRequest`` sent by partner ``sender``."""
    contained = _contained_by_id(resource)
    performers = (_party(ref, contained) for ref in getattr(resource, "performer", None) or ())
    category_codings = (
        coding
        for concept in getattr(resource, "category", None) or ()
        for coding in getattr(concept, "coding", None) or ()
    )
    meta = getattr(resource, "meta", None)
    return RoutingFacts(
        resource_type="ServiceRequest",
        resource_id=resource_id,
        sender=sender,
        patient_source=patient_source(
            getattr(resource, "subject", None), sender=sender, contained=contained, local_patients=local_patients
        )
        or (unidentified_patient(sender, resource_id) if resource_id else None),
        requester=_party(getattr(resource, "requester", None), contained),
        performers=_unique(p for p in performers if p is not None),
        categories=_codes(category_codings),
        codes=_codes(getattr(getattr(resource, "code", None), "coding", None) or ()),
        security_labels=_codes(getattr(meta, "security", None) or ()),
        status=getattr(resource, "status", None),
        intent=getattr(resource, "intent", None),
        event_kind="referral" if first_version else "referral-update",
    )


def task_facts(
    resource: Any,
    *,
    sender: str,
    resource_id: str,
    first_version: bool = True,
    patient_fallback: str | None = None,
    local_patients: Mapping[str, Any] | None = None,
) -> RoutingFacts:
    """The routing facts of a validated R4B ``Task`` (see the module docstring).

    ``patient_fallback`` names the patient when ``Task.for`` names none (the caller looks up the
    ServiceRequest in ``focus``); with neither, the Task is keyed as an unidentified patient of its own.
    """
    contained = _contained_by_id(resource)
    focus = _party(getattr(resource, "focus", None), contained)
    owner = _party(getattr(resource, "owner", None), contained)
    meta = getattr(resource, "meta", None)
    if not first_version:
        kind = "task-update"
    elif focus is not None and reference_type(focus) == "ServiceRequest":
        kind = "referral-task"
    else:
        kind = "task"
    return RoutingFacts(
        resource_type="Task",
        resource_id=resource_id,
        sender=sender,
        patient_source=patient_source(
            getattr(resource, "for_fhir", None), sender=sender, contained=contained, local_patients=local_patients
        )
        or patient_fallback
        or unidentified_patient(sender, resource_id),
        requester=_party(getattr(resource, "requester", None), contained),
        performers=(owner,) if owner is not None else (),
        codes=_codes(getattr(getattr(resource, "code", None), "coding", None) or ()),
        security_labels=_codes(getattr(meta, "security", None) or ()),
        status=getattr(resource, "status", None),
        intent=getattr(resource, "intent", None),
        event_kind=kind,
        focus=(focus,) if focus is not None else (),
    )


def consent_facts(resource: Any, *, sender: str, resource_id: str | None) -> RoutingFacts:
    """Routing facts of a validated R4B ``Consent``: the patient it is about, its status, ``consent-change``.

    A Consent is an event on its patient's key like any other, so every later event of that patient
    is decided under it; it is delivered to no partner.
    """
    contained = _contained_by_id(resource)
    meta = getattr(resource, "meta", None)
    return RoutingFacts(
        resource_type="Consent",
        resource_id=resource_id,
        sender=sender,
        patient_source=patient_source(getattr(resource, "patient", None), sender=sender, contained=contained),
        security_labels=_codes(getattr(meta, "security", None) or ()),
        status=getattr(resource, "status", None),
        event_kind=CONSENT_CHANGE,
    )


def task_focus(resource: Any) -> str | None:
    """The reference (or identifier token) the Task's ``focus`` names, without a version suffix."""
    return _party(getattr(resource, "focus", None), _contained_by_id(resource))


def encounter_facts(
    resource: Any,
    *,
    sender: str,
    resource_id: str | None,
    previous: Mapping[str, Any] | None = None,
    event_kind: str | None = None,
    local_patients: Mapping[str, Any] | None = None,
) -> RoutingFacts:
    """The routing facts of a validated R4B ``Encounter``.

    ``event_kind`` defaults to :func:`encounter_event_kind` of ``previous`` (the JSON of the version
    before, None for a new Encounter) and this Encounter.
    """
    contained = _contained_by_id(resource)
    meta = getattr(resource, "meta", None)
    klass = getattr(resource, "class_fhir", None)
    class_code = getattr(klass, "code", None)
    type_codings = (
        coding for concept in getattr(resource, "type", None) or () for coding in getattr(concept, "coding", None) or ()
    )
    status = getattr(resource, "status", None)
    key = resource_id or "encounter"
    return RoutingFacts(
        resource_type="Encounter",
        resource_id=resource_id,
        sender=sender,
        patient_source=patient_source(
            getattr(resource, "subject", None), sender=sender, contained=contained, local_patients=local_patients
        )
        or unidentified_patient(sender, key),
        codes=_codes(type_codings),
        security_labels=_codes(getattr(meta, "security", None) or ()),
        status=status,
        event_kind=event_kind or encounter_event_kind(previous, _encounter_view(resource)),
        encounter_class=f"{getattr(klass, 'system', None) or ''}|{class_code}" if class_code else None,
    )


def _encounter_view(resource: Any) -> dict[str, Any]:
    period = getattr(resource, "period", None)
    locations = [
        getattr(getattr(item, "location", None), "reference", None)
        for item in getattr(resource, "location", None) or ()
        if getattr(item, "status", None) in {None, "active"}
    ]
    return {
        "status": getattr(resource, "status", None),
        "period_end": getattr(period, "end", None) is not None,
        "locations": sorted(str(loc) for loc in locations if loc),
    }


def encounter_view(data: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of an Encounter's JSON that :func:`encounter_event_kind` compares (for a stored version)."""
    period = data.get("period")
    locations = data.get("location")
    active = [
        item.get("location", {}).get("reference")
        for item in locations if isinstance(item, dict) and item.get("status") in {None, "active"}
    ] if isinstance(locations, list) else []
    return {
        "status": data.get("status"),
        "period_end": isinstance(period, dict) and period.get("end") is not None,
        "locations": sorted(str(loc) for loc in active if isinstance(loc, str) and loc),
    }


def encounter_event_kind(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> str:
    """What an Encounter version says happened, from its status (views from :func:`encounter_view`).

    * ``discharge``: now ``finished`` (or the period got an end while in progress), and it was not before;
    * ``admit``: now ``in-progress`` (or ``arrived``) and it was not in progress before;
    * ``transfer``: still in progress, and the set of active locations changed;
    * ``encounter-update``: anything else (planned, cancelled, entered-in-error, corrections).
    """
    was = previous or {}
    status = current.get("status")
    was_status = was.get("status")
    ended = status == "finished" or (status == "in-progress" and bool(current.get("period_end")))
    was_ended = was_status == "finished" or (was_status == "in-progress" and bool(was.get("period_end")))
    if ended and not (previous is not None and was_ended):
        return "discharge"
    in_progress = status in {"arrived", "in-progress", "onleave"}
    if in_progress and not ended and (previous is None or was_status not in {"arrived", "in-progress", "onleave"}):
        return "admit"
    if in_progress and not ended and previous is not None and was.get("locations") != current.get("locations"):
        return "transfer"
    return "encounter-update"


def patient_identifier_sources(patient: Any, *, sender: str) -> tuple[str, ...]:
    """Crosswalk sources of a Patient's identifiers (``system|value``, system-less ones namespaced to the
    sender), in order, without duplicates and without :data:`UNLINKED_IDENTIFIER_SYSTEMS`."""
    found = []
    for identifier in getattr(patient, "identifier", None) or ():
        if getattr(identifier, "system", None) in UNLINKED_IDENTIFIER_SYSTEMS:
            continue
        named = _patient_identifier(identifier, sender)
        if named is not None:
            found.append(named)
    return _unique(found)


def identifier_tokens(resource: Any) -> tuple[tuple[str, str], ...]:
    """``(system, value)`` of every identifier of a resource (``""`` for a missing system)."""
    tokens = []
    for identifier in getattr(resource, "identifier", None) or ():
        value = getattr(identifier, "value", None)
        if isinstance(value, str) and value:
            tokens.append((getattr(identifier, "system", None) or "", value))
    return tuple(dict.fromkeys(tokens))


def unidentified_patient(sender: str, resource_id: str) -> str:
    """The key of a patient named by display text only: unique to that one resource."""
    return f"{partner_namespace(sender)}:unidentified|{resource_id}"


def patient_source(
    subject: Any,
    *,
    sender: str,
    contained: dict[str, Any] | None = None,
    local_patients: Mapping[str, Any] | None = None,
) -> str | None:
    """The patient as ``sender`` names it in a Reference (see the module docstring for the forms)."""
    if subject is None:
        return None
    from_identifier = _patient_identifier(getattr(subject, "identifier", None), sender)
    if from_identifier is not None:
        return from_identifier
    reference = getattr(subject, "reference", None)
    if not isinstance(reference, str) or not reference:
        return None
    local = (local_patients or {}).get(reference)
    if local is not None:
        local_sources = patient_identifier_sources(local, sender=sender)
        if local_sources:
            return local_sources[0]
    if reference.startswith("#"):
        target = (contained or {}).get(reference[1:])
        if target is None or _resource_type(target) != "Patient":
            return None
        for identifier in getattr(target, "identifier", None) or ():
            named = _patient_identifier(identifier, sender)
            if named is not None:
                return named
        return None
    reference = _unversioned(reference)
    if "://" in reference or reference.startswith("urn:"):
        return reference
    return f"{partner_namespace(sender)}:{reference}"


def referral_issues(resource: Any, facts: RoutingFacts) -> list[FhirIssue]:
    """Hub rules a referral must meet beyond FHIR R4: its subject is a Patient the hub can route on.

    FHIR allows ``subject`` to be a Group, Location or Device, or display text only; the hub keys
    every event by patient and evaluates consent per patient, so it cannot accept those.
    """
    subject = getattr(resource, "subject", None)
    reference = getattr(subject, "reference", None)
    declared = getattr(subject, "type", None)
    issues: list[FhirIssue] = []
    if isinstance(reference, str):
        named = reference_type(reference)
        if reference.startswith("#"):
            target = _contained_by_id(resource).get(reference[1:])
            named = _resource_type(target) if target is not None else None
        if named is not None and named != "Patient":
            issues.append(
                FhirIssue(
                    "business-rule",
                    f"ServiceRequest.subject: a referral must be about a Patient, not a {named}",
                    "ServiceRequest.subject.reference",
                )
            )
    if isinstance(declared, str) and declared not in {
        "Patient",
        "http://hl7.org/fhir/StructureDefinition/Patient",
    }:
        issues.append(
            FhirIssue(
                "business-rule",
                "ServiceRequest.subject.type: a referral must be about a Patient",
                "ServiceRequest.subject.type",
            )
        )
    named_patient = patient_source(subject, sender=facts.sender, contained=_contained_by_id(resource))
    if not issues and named_patient is None and isinstance(reference, str) and reference:
        issues.append(
            FhirIssue(
                "required",
                "ServiceRequest.subject.reference names no patient the hub can identify "
                "(a contained reference that resolves to nothing)",
                "ServiceRequest.subject",
            )
        )
    return issues


def _patient_identifier(identifier: Any, sender: str) -> str | None:
    value = getattr(identifier, "value", None)
    if not isinstance(value, str) or not value:
        return None
    system = getattr(identifier, "system", None)
    return f"{system}|{value}" if system else f"{partner_namespace(sender)}|{value}"


def _party(reference: Any, contained: dict[str, Any]) -> str | None:
    if reference is None:
        return None
    literal = getattr(reference, "reference", None)
    if isinstance(literal, str) and literal:
        if not literal.startswith("#"):
            return _unversioned(literal)
        target = contained.get(literal[1:])
        identifiers = getattr(target, "identifier", None) or ()
        return next((named for i in identifiers if (named := _token(i)) is not None), None)
    return _token(getattr(reference, "identifier", None))


def _token(identifier: Any) -> str | None:
    value = getattr(identifier, "value", None)
    if not isinstance(value, str) or not value:
        return None
    return f"{getattr(identifier, 'system', None) or ''}|{value}"


def _codes(codings: Any) -> tuple[str, ...]:
    found = []
    for coding in codings:
        code = getattr(coding, "code", None)
        if isinstance(code, str) and code:
            found.append(f"{getattr(coding, 'system', None) or ''}|{code}")
    return _unique(found)


def _unique(items: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _unversioned(reference: str) -> str:
    return reference.split(_HISTORY, 1)[0]


def _contained_by_id(resource: Any) -> dict[str, Any]:
    return {
        item.id: item
        for item in getattr(resource, "contained", None) or ()
        if isinstance(getattr(item, "id", None), str)
    }


def _resource_type(resource: Any) -> str | None:
    getter = getattr(resource, "get_resource_type", None)
    name = getter() if callable(getter) else None
    return name if isinstance(name, str) else None
