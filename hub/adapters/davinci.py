"""Da Vinci Unsolicited Notifications (HL7 ``hl7.fhir.us.davinci-alerts`` 1.1.0) at ``POST [base]/$process-message``.

A notification is a FHIR message Bundle (``type`` = ``message``): the first entry is a MessageHeader
whose ``eventCoding`` (system :data:`NOTIFICATION_EVENT_SYSTEM`) says what happened and whose ``focus``
names the Encounter; the Patient, Location, Organization, Practitioner, Condition, Coverage... of the
notification are further entries. This module reads one (pure: :func:`read_notification`) and builds
the answer (:func:`response_message`); the router writes its events and links its patients.

What the hub makes of it:

* **one event per Encounter the MessageHeader focuses on** (the IG's examples have exactly one):
  Encounter-shaped like every admit/discharge event (``resource_type`` Encounter, ``ce_type``
  ``org.carehub.encounter.<kind>`` as on the HL7 v2 edge), ``facts.event_kind`` ``admit``/``discharge``/``transfer``
  from the event code (*not* from the Encounter's status: the IG's own admit example carries a
  ``period.end``), the Encounter JSON as ``HubEvent.body`` and the whole Bundle, byte for byte, as
  ``HubEvent.original`` (``application/fhir+json``);
* **the patient** is named by the first usable identifier of the Patient entry the Encounter's
  ``subject`` points at (a ``urn:uuid:`` fullUrl is meaningless after the message), and every
  Patient entry's identifiers are linked in the identity crosswalk, so a later referral naming the
  patient by MRN reaches the same hub patient;
* **ids**: the event id is derived from the sender and the exact bytes (and the focus position), so
  a retransmitted notification keeps its ``ce_id``; nothing is stored in the resource store (a
  message is not a RESTful create: its resources keep the sender's ids, which the hub does not own).

The answer (:func:`response_message`): the IG expects nothing "beyond the http level response as
defined in the FHIR specification", and FHIR's ``$process-message`` returns, for synchronous
messaging, a response message. So: **200** with a message Bundle whose MessageHeader has
``response.code`` ``ok`` and ``response.identifier`` the id of the notification's MessageHeader,
sent only after the broker acknowledged every event. Bad input is answered like everywhere else on
this API (an OperationOutcome with the FHIRPath of the problem, 4xx; 503 when the broker did not
acknowledge). ``async=true`` is refused (400): the hub never sends a later response message.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from hub.adapters.fhir_facts import encounter_facts, patient_identifier_sources
from hub.adapters.fhir_intake import PATIENT_SOURCE_MAX, IngressRecord
from hub.adapters.fhir_validation import (
    R4_RESOURCE_TYPES,
    FhirIssue,
    FhirValidationError,
    rebase_issues,
    validate_bundle_structure,
    validate_resource,
)
from hub.events import FHIR_JSON, CloudEvent, HubEvent, encode, event_id, event_type, now

NOTIFICATION_EVENT_SYSTEM = "http://hl7.org/fhir/us/davinci-alerts/CodeSystem/notification-event"
#: Notification event code -> ``RoutingFacts.event_kind``.
EVENT_KINDS: Mapping[str, str] = {
    "notification-admit": "admit",
    "notification-discharge": "discharge",
    "notification-transfer": "transfer",
}
NOTIFICATION_RECEIVER = "http://hl7.org/fhir/us/davinci-alerts/CapabilityStatement/notification-receiver"
_HEADER = "Bundle.entry[0].resource"
_EVENT = f"{_HEADER}.event.ofType(Coding)"
_RESTFUL_TAIL = re.compile(r"(?:.*/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})")


@dataclass(frozen=True, slots=True)
class Notification:
    """What one notification Bundle amounts to: its events, its patients, and what to answer."""

    kind: str
    event_coding: dict[str, Any]
    request_message_id: str | None
    source_endpoint: str | None
    events: tuple[IngressRecord, ...]
    patient_groups: tuple[tuple[str, ...], ...]


def _issue(code: Any, path: str, message: str) -> FhirIssue:
    return FhirIssue(code, f"{path}: {message}", path)


def read_notification(body: bytes, data: dict[str, Any], *, sender: str) -> Notification:
    """Validate a parsed notification Bundle once and turn it into its events (pure).

    Raises ``FhirValidationError`` (422) listing every problem with its FHIRPath.
    """
    entries = _check_bundle(data)
    models = _validate_entries(entries)
    header = models[0]
    kind, coding = _event(header)
    index = _entry_index(entries)
    encounters = _focused_encounters(header, index, entries)
    patients = {
        key: models[position]
        for key, position in index.items()
        if entries[position]["resource"].get("resourceType") == "Patient"
    }
    events = tuple(
        _event_record(body, entries[position]["resource"], models[position], sender=sender, kind=kind,
                      focus_index=n, position=position, patients=patients)
        for n, position in enumerate(encounters)
    )
    groups = tuple(
        sources
        for position, model in enumerate(models)
        if model is not None and model.get_resource_type() == "Patient"
        and (sources := patient_identifier_sources(model, sender=sender))
    )
    source = getattr(header, "source", None)
    return Notification(
        kind=kind,
        event_coding=coding,
        request_message_id=getattr(header, "id", None),
        source_endpoint=getattr(source, "endpoint", None),
        events=events,
        patient_groups=groups,
    )


def _check_bundle(data: dict[str, Any]) -> list[dict[str, Any]]:
    if data.get("resourceType") != "Bundle":
        raise FhirValidationError(
            [_issue("invalid", "resourceType", "$process-message takes a message Bundle")]
        )
    validate_bundle_structure(data)
    entries = data.get("entry")
    if data.get("type") != "message":
        raise FhirValidationError(
            [_issue("invalid", "Bundle.type", "a notification is a Bundle of type message")]
        )
    if not isinstance(entries, list) or not entries:
        raise FhirValidationError(
            [_issue("required", "Bundle.entry", "a message Bundle starts with its MessageHeader entry")]
        )
    resources = [entry.get("resource") for entry in entries]
    first = resources[0]
    if not isinstance(first, dict) or first.get("resourceType") != "MessageHeader":
        raise FhirValidationError(
            [_issue("required", _HEADER, "the first entry of a message Bundle must be its MessageHeader")]
        )
    missing = [
        _issue("required", f"Bundle.entry[{n}].resource", "every entry of a message carries a resource")
        for n, resource in enumerate(resources)
        if not isinstance(resource, dict)
    ]
    if missing:
        raise FhirValidationError(missing)
    return entries


def _validate_entries(entries: Sequence[dict[str, Any]]) -> list[Any]:
    models: list[Any] = []
    issues: list[FhirIssue] = []
    for n, entry in enumerate(entries):
        resource = entry["resource"]
        path = f"Bundle.entry[{n}].resource"
        resource_type = resource.get("resourceType")
        if not isinstance(resource_type, str) or resource_type not in R4_RESOURCE_TYPES:
            issues.append(_issue("required" if resource_type is None else "not-supported", f"{path}.resourceType",
                                 "not an R4 resource type"))
            models.append(None)
            continue
        try:
            models.append(validate_resource(resource, expected_type=resource_type))
        except FhirValidationError as error:
            issues.extend(rebase_issues(error.issues, resource_type, path))
            models.append(None)
    if issues:
        raise FhirValidationError(issues[:50])
    return models


def _event(header: Any) -> tuple[str, dict[str, Any]]:
    coding = getattr(header, "eventCoding", None)
    if coding is None:
        raise FhirValidationError(
            [_issue("required", _EVENT, "a Da Vinci notification names its event as a Coding (eventCoding)")]
        )
    system, code = getattr(coding, "system", None), getattr(coding, "code", None)
    if system != NOTIFICATION_EVENT_SYSTEM or not isinstance(code, str) or code not in EVENT_KINDS:
        raise FhirValidationError(
            [
                _issue(
                    "not-supported",
                    _EVENT,
                    f"this hub processes the notification events {', '.join(EVENT_KINDS)} "
                    f"of {NOTIFICATION_EVENT_SYSTEM}",
                )
            ]
        )
    shown = {"system": system, "code": code}
    display = getattr(coding, "display", None)
    if isinstance(display, str):
        shown["display"] = display
    return EVENT_KINDS[code], shown


def _entry_index(entries: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Every name a reference may use for an entry: its fullUrl, the ``Type/id`` of a RESTful fullUrl,
    and ``Type/id`` from the resource itself."""
    index: dict[str, int] = {}
    for position, entry in enumerate(entries):
        resource = entry["resource"]
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str):
            index.setdefault(full_url, position)
            tail = _RESTFUL_TAIL.fullmatch(full_url)
            if tail is not None and "://" in full_url:
                index.setdefault(f"{tail.group('type')}/{tail.group('id')}", position)
        if isinstance(resource.get("id"), str):
            index.setdefault(f"{resource.get('resourceType')}/{resource['id']}", position)
    return index


def _focused_encounters(header: Any, index: Mapping[str, int], entries: Sequence[dict[str, Any]]) -> list[int]:
    found = []
    for focus in getattr(header, "focus", None) or ():
        reference = getattr(focus, "reference", None)
        position = index.get(reference) if isinstance(reference, str) else None
        if position is not None and entries[position]["resource"].get("resourceType") == "Encounter":
            found.append(position)
    if not found:
        raise FhirValidationError(
            [
                _issue(
                    "required", f"{_HEADER}.focus", "the MessageHeader's focus must name an Encounter of the Bundle"
                )
            ]
        )
    return list(dict.fromkeys(found))


def _event_record(
    body: bytes,
    encounter: dict[str, Any],
    model: Any,
    *,
    sender: str,
    kind: str,
    focus_index: int,
    position: int,
    patients: Mapping[str, Any],
) -> IngressRecord:
    resource_id = encounter.get("id") if isinstance(encounter.get("id"), str) else None
    ev_id = event_id(sender, f"$process-message/{focus_index}", body)
    facts = encounter_facts(
        model, sender=sender, resource_id=resource_id or ev_id, event_kind=kind, local_patients=patients
    )
    source = facts.patient_source or ""
    if len(source) > PATIENT_SOURCE_MAX or any(ord(char) < 32 or ord(char) == 127 for char in source):
        path = f"Bundle.entry[{position}].resource.subject"
        raise FhirValidationError(
            [_issue("value", path, "the patient's identifier or reference cannot be used to key events")]
        )
    envelope = CloudEvent(id=ev_id, source=f"/partners/{sender}", type=event_type("Encounter", kind), time=now())
    event = HubEvent(
        facts=facts,
        body=orjson.dumps(encounter).decode("utf-8"),
        original=body.decode("utf-8"),
        original_media_type=FHIR_JSON,
    )
    return IngressRecord(
        key=f"{sender}|{facts.patient_source}".encode(), value=encode(event), headers=envelope.to_headers()
    )


def response_message(
    notification: Notification, *, endpoint: str, software_version: str, first_event_id: str | None = None
) -> dict[str, Any]:
    """The synchronous response message: a message Bundle whose MessageHeader says ``ok``.

    Its ids are derived from the notification's first event id, so a retransmission gets the same answer.
    """
    seed = first_event_id or str(uuid.uuid4())
    header_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"carehub:response-header:{seed}"))
    header: dict[str, Any] = {
        "resourceType": "MessageHeader",
        "id": header_id,
        "eventCoding": notification.event_coding,
        "source": {"name": "CareHub", "software": "CareHub", "version": software_version, "endpoint": endpoint},
        "response": {"identifier": notification.request_message_id or seed, "code": "ok"},
    }
    if notification.source_endpoint:
        header["destination"] = [{"endpoint": notification.source_endpoint}]
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"carehub:response:{seed}")),
        "type": "message",
        "timestamp": now().isoformat().replace("+00:00", "Z"),
        "entry": [{"fullUrl": f"urn:uuid:{header_id}", "resource": header}],
    }
