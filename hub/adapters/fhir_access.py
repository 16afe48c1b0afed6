"""Who may create, update and read which FHIR resource (pure: principal and stored versions in, verdicts out).

The I/O around these rules (loading versions, asking the audit what was delivered) happens in the
caller; nothing here touches a store. The rules:

* **Create** (POST, or PUT of an id not stored yet): hospitals and the HIE operator, for every type the
  edge serves. Community-based organizations create nothing; they update the Tasks they own.
* **Consent** (create or update): the operator for any patient, a hospital for its own patients only
  (:func:`check_may_write_consent`); never a CBO.
* **Read**: the operator reads everything. A partner that sent any version of a resource reads all
  of its versions (the current one included, so a hospital sees the CBO's update of its Task). Any
  other partner reads only the versions whose event the audit shows was *permitted* to it, and the
  newest of those is what ``GET /Type/id`` returns. Everything else is answered 404, exactly as if
  the resource did not exist: the hub does not confirm that another partner's resource exists.
* **Update** of a stored resource: the operator and the partner that created it may change anything.
  The partner a Task's ``owner`` names (or that already updated the Task) may update the Task within
  Gravity's rules (:func:`task_update_issues`): it may not change who or what the Task is about, nor
  reopen a closed Task, nor set the statuses that belong to the requester. Anyone else may not: 403
  when it can read the resource, otherwise 409 (the id is taken; the client picked an id that another
  partner's resource holds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from hub.adapters.fhir_facts import TERMINAL_TASK_STATUSES, partner_namespace
from hub.adapters.fhir_store import StoredVersion
from hub.adapters.fhir_validation import FhirIssue, FhirValidationError
from hub.adapters.operation_outcome import ResourceConflict
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


def readable_versions(
    principal: Principal, versions: Sequence[StoredVersion], delivered: frozenset[str]
) -> list[StoredVersion]:
    """The versions the caller may read (see the module docstring), oldest first."""
    if is_participant(principal, versions):
        return list(versions)
    return [version for version in versions if version.event_id is not None and version.event_id in delivered]


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


def check_may_update(
    principal: Principal,
    resource_type: str,
    versions: Sequence[StoredVersion],
    new_data: Mapping[str, Any],
    *,
    delivered: frozenset[str],
) -> None:
    """Raise unless the caller may store ``new_data`` as the next version of a stored resource.

    ``NotAuthorized`` (403), ``ResourceConflict`` (409) or ``FhirValidationError`` (422 for a Task
    update outside Gravity's rules).
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
    if readable_versions(principal, versions, delivered):
        raise NotAuthorized(f"you may read this {resource_type} but only the partner that created it may change it")
    raise ResourceConflict(
        f"this {resource_type} id is already used by a resource you cannot see; choose another id "
        f"or create with POST and let the server assign one",
        expression=f"{resource_type}.id",
    )


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
