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
"""

from __future__ import annotations

from typing import Any

from hub.adapters.fhir_validation import FhirIssue, reference_type
from hub.events import RoutingFacts

_HISTORY = "/_history/"


def partner_namespace(sender: str) -> str:
    """The URN under which a sender's local names (bare references, system-less identifiers) live."""
    return f"urn:carehub:partner:{sender}"


def servicerequest_facts(resource: Any, *, sender: str, resource_id: str | None) -> RoutingFacts:
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
        patient_source=patient_source(getattr(resource, "subject", None), sender=sender, contained=contained)
        or (unidentified_patient(sender, resource_id) if resource_id else None),
        requester=_party(getattr(resource, "requester", None), contained),
        performers=_unique(p for p in performers if p is not None),
        categories=_codes(category_codings),
        codes=_codes(getattr(getattr(resource, "code", None), "coding", None) or ()),
        security_labels=_codes(getattr(meta, "security", None) or ()),
        status=getattr(resource, "status", None),
        intent=getattr(resource, "intent", None),
    )


def unidentified_patient(sender: str, resource_id: str) -> str:
    """The key of a patient named by display text only: unique to that one resource."""
    return f"{partner_namespace(sender)}:unidentified|{resource_id}"


def patient_source(subject: Any, *, sender: str, contained: dict[str, Any] | None = None) -> str | None:
    """The patient as ``sender`` names it in a Reference (see the module docstring for the forms)."""
    if subject is None:
        return None
    from_identifier = _patient_identifier(getattr(subject, "identifier", None), sender)
    if from_identifier is not None:
        return from_identifier
    reference = getattr(subject, "reference", None)
    if not isinstance(reference, str) or not reference:
        return None
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
