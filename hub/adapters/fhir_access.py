"""Who may create, update and read which FHIR resource (pure: principal and stored versions in, verdicts out).

The I/O around these rules (loading versions, asking the audit what was delivered) happens in the
caller; nothing here touches a store. The rules:

* **Create** (POST, or PUT of an id not stored yet): hospitals and the HIE operator, for every type the
  edge serves. Community-based organizations create nothing; they update the Tasks they own.
* **Consent** (create or update): the operator for any patient, a hospital for its own patients only
  (:func:`check_may_write_consent`); never a CBO.
* **Read** (:func:`read_plan`): the operator and the partner that created a resource read every version
  whole (so a hospital sees the CBO's update of its Task). Any other partner reads the versions it sent
  itself, and a version another partner sent only when the audit shows its event was *permitted* to it
  *and* the read gate (``fhir_disclosure``: the consent engine now, audited) permits it, redacted as
  delivery redacts it; the newest such version is what ``GET /Type/id`` returns. Everything else is
  answered 404, exactly as if the resource did not exist: the hub does not confirm that another
  partner's resource exists.
* **Update** of a stored resource: the operator and the partner that created it may change anything.
  The partner a Task's ``owner`` names (or that already updated the Task) may update the Task within
  Gravity's rules (:func:`task_update_issues`): it may not change who or what the Task is about, nor
  reopen a closed Task, nor set the statuses that belong to the requester. Anyone else that may read the
  resource gets 403.
* **Update-as-create** (:func:`check_update_as_create`): a PUT of an id the caller may not know of (unused,
  or held by a resource it can neither read nor act on) is answered exactly alike, so no status code
  tells a partner that another partner's resource exists. The operator may create any id; a hospital
  only ids in its own id space, ``<partner id>.<anything>`` (partner ids have no dot, so the spaces are
  disjoint; server-assigned ids are UUIDs), anything else is 405; a CBO creates nothing (403).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import orjson

from hub.adapters.fhir_facts import TERMINAL_TASK_STATUSES, partner_namespace
from hub.adapters.fhir_store import StoredVersion
from hub.adapters.fhir_validation import FhirIssue, FhirValidationError
from hub.adapters.operation_outcome import ResourceConflict, UpdateCreateRefused
from hub.errors import NotAuthorized
from hub.ports import Principal

#: Resource types whose accepted versions become events on ``hub.ingress`` (routed to partners).
ROUTED_TYPES: tuple[str, ...] = ("ServiceRequest", "Task", "Encounter", "Consent")
#: Directory and patient-index resource types: stored (Patient identifiers linked), never routed.
DIRECTORY_TYPES: tuple[str, ...] = ("Patient", "Organization", "Practitioner")
SUPPORTED_TYPES: tuple[str, ...] = ROUTED_TYPES + DIRECTORY_TYPES
#: Elements of a Task only its requester (the creator) may change.
TASK_REQUESTER_ELEMENTS: tuple[str, ...] = ("for", "focus", "owner", "requester", "basedOn", "intent")
#: Statuses that belong to the requester in Gravity's Task state machine (draft, request, cancel).
TASK_REQUESTER_STATUSES: frozenset[str] = frozenset({"draft", "requested", "cancelled"})


def sender_of(principal: Principal) -> str:
    """The partner id events and stored versions carry for this caller (``operator`` for the admin token)."""
    return principal.partner_id or "operator"


def check_may_create(principal: Principal) -> None:
    """Raise ``NotAuthorized`` unless the caller may create resources (hospitals and the operator)."""
    if principal.kind not in {"hospital", "operator"}:
        raise NotAuthorized(
            "community-based organizations may not create resources; they update the Tasks they own"
        )


def check_may_write_consent(principal: Principal, patient_source: str, *, knows_patient: bool) -> None:
    """Raise ``NotAuthorized`` unless the caller may record a Consent for this patient.

    The operator may for anyone. A hospital may for its own patients: one it names in its own namespace
    (a relative ``Patient/<id>`` or a system-less identifier), or one it already sent a resource about
    (``knows_patient``, from the store). Community-based organizations never write consents.
    """
    if principal.is_operator:
        return
    if principal.kind != "hospital":
        raise NotAuthorized("community-based organizations may not record consents")
    own = partner_namespace(sender_of(principal))
    if patient_source.startswith((own + ":", own + "|")) or knows_patient:
        return
    raise NotAuthorized(
        "a hospital may record consents only for its own patients: name the patient as you did in your "
        "referrals or encounters, or send the Patient first"
    )


def is_participant(principal: Principal, versions: Sequence[StoredVersion]) -> bool:
    """True for the operator and for a partner that sent any version of the resource."""
    sender = sender_of(principal)
    return principal.is_operator or any(version.sender == sender for version in versions)


def read_plan(
    principal: Principal, versions: Sequence[StoredVersion], delivered: frozenset[str]
) -> list[tuple[StoredVersion, bool]]:
    """The versions the caller may be shown, oldest first, each with ``True`` when it is shown whole and
    ``False`` when only the read gate (the consent engine, now, redacted as delivery redacts) may show it.

    The operator and the resource's creator: every version whole. Any other partner: the versions it sent
    whole, and those whose event ``delivered`` (the audit's permits to it) names, through the gate.
    """
    sender = sender_of(principal)
    if principal.is_operator or (versions and versions[0].sender == sender):
        return [(version, True) for version in versions]
    return [
        (version, version.sender == sender)
        for version in versions
        if version.sender == sender or (version.event_id is not None and version.event_id in delivered)
    ]


def unreadable_consents(principal: Principal, senders: Mapping[str, Collection[str]]) -> frozenset[str]:
    """Of the Consents in ``senders`` (id -> every sender of a version of it), the ids the caller may not read.

    None for the operator. A partner reads a Consent only if it sent a version of it (:func:`read_plan`:
    another partner's version is readable once delivered, and a consent is never delivered: the route stage
    applies consents, it does not disclose them). The CDS consult names no other (ADR 0007 decision 7).
    """
    if principal.is_operator:
        return frozenset()
    sender = sender_of(principal)
    return frozenset(consent_id for consent_id, sent_by in senders.items() if sender not in sent_by)


def owner_of(content: Mapping[str, Any]) -> str | None:
    """The partner a stored Task's ``owner`` names: its reference (unversioned) or ``system|value``."""
    owner = content.get("owner")
    if not isinstance(owner, Mapping):
        return None
    reference = owner.get("reference")
    if isinstance(reference, str) and reference and not reference.startswith("#"):
        return reference.split("/_history/", 1)[0]
    identifier = owner.get("identifier")
    if isinstance(identifier, Mapping) and isinstance(identifier.get("value"), str) and identifier["value"]:
        return f"{identifier.get('system') or ''}|{identifier['value']}"
    return None


def own_id_prefix(principal: Principal) -> str:
    """The prefix of the ids a partner may choose itself with update-as-create (``<partner id>.``)."""
    return f"{sender_of(principal)}."


def check_update_as_create(
    principal: Principal, resource_type: str, resource_id: str, *, stored: bool, known: bool
) -> None:
    """Raise unless the caller may create ``resource_id`` with PUT (see the module docstring).

    ``stored``: a resource holds the id; ``known``: the caller may know that (it may read or act on it).
    Nothing to check when ``known`` (that is an update). Raises ``NotAuthorized`` (403) for a CBO,
    ``UpdateCreateRefused`` (405) for an id outside the caller's id space, and ``ResourceConflict`` (409)
    only for an id in the caller's own space that the operator used.
    """
    if known or principal.is_operator:
        return
    check_may_create(principal)
    prefix = own_id_prefix(principal)
    if not resource_id.startswith(prefix) or len(resource_id) == len(prefix):
        raise UpdateCreateRefused(
            f"partners may create with PUT only ids in their own id space ({prefix}<your id>); create with POST "
            f"to let the server assign an id, or PUT an id that starts with {prefix}",
            expression=f"{resource_type}.id",
        )
    if stored:
        raise ResourceConflict(
            f"the {resource_type} id {resource_id!r} in your id space is already used by the HIE operator",
            expression=f"{resource_type}.id",
        )


def check_may_update(
    principal: Principal,
    resource_type: str,
    versions: Sequence[StoredVersion],
    new_data: Mapping[str, Any],
) -> None:
    """Raise unless the caller may store ``new_data`` as the next version of a resource it may know of
    (``versions`` empty: an update-as-create, see :func:`check_update_as_create`).

    ``NotAuthorized`` (403) or ``FhirValidationError`` (422 for a Task update outside Gravity's rules).
    """
    if not versions:
        check_may_create(principal)
        return
    sender = sender_of(principal)
    if principal.is_operator or versions[0].sender == sender:
        return
    current: dict[str, Any] = orjson.loads(versions[-1].content)
    owns_task = resource_type == "Task" and (
        is_participant(principal, versions)
        or (principal.organization is not None and owner_of(current) == principal.organization)
    )
    if owns_task:
        issues = task_update_issues(current, new_data)
        if issues:
            raise FhirValidationError(issues)
        return
    raise NotAuthorized(f"you may read this {resource_type} but only the partner that created it may change it")


def task_update_issues(current: Mapping[str, Any], new: Mapping[str, Any]) -> list[FhirIssue]:
    """Gravity rules for a Task update by its owner (not its requester)."""
    issues = [
        FhirIssue(
            "business-rule",
            f"Task.{element}: only the requester may change this element of a Task",
            f"Task.{element}",
        )
        for element in TASK_REQUESTER_ELEMENTS
        if current.get(element) != new.get(element)
    ]
    status, new_status = current.get("status"), new.get("status")
    if status in TERMINAL_TASK_STATUSES and new_status != status:
        issues.append(
            FhirIssue(
                "business-rule",
                f"Task.status: the Task is {status}; only its requester may change it now",
                "Task.status",
            )
        )
    elif new_status in TASK_REQUESTER_STATUSES and new_status != status:
        issues.append(
            FhirIssue(
                "business-rule",
                f"Task.status: only the requester may set a Task to {new_status}",
                "Task.status",
            )
        )
    return issues
