"""Valid sample resources and Bundles for the FHIR edge tests (fresh copies, safe to mutate)."""

from __future__ import annotations

import copy
from typing import Any

import orjson

MRN_SYSTEM = "http://hospital-a.example/mrn"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

_PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [
        {"system": MRN_SYSTEM, "value": "MRN-1"},
        {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-00-0000"},
    ],
    "name": [{"family": "Doe", "given": ["Jane"]}],
    "birthDate": "1970-01-01",
}

_ORGANIZATION: dict[str, Any] = {
    "resourceType": "Organization",
    "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}],
    "name": "Food Bank",
}

_PRACTITIONER: dict[str, Any] = {
    "resourceType": "Practitioner",
    "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567890"}],
    "name": [{"family": "Water", "given": ["Jan"]}],
}

_TASK: dict[str, Any] = {
    "resourceType": "Task",
    "id": "hosp-a.task-1",
    "status": "requested",
    "intent": "order",
    "code": {
        "coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]
    },
    "focus": {"reference": "ServiceRequest/sr-1"},
    "for": {"reference": "Patient/123"},
    "authoredOn": "2025-01-15T10:00:00Z",
    "requester": {"reference": "Organization/hosp-a"},
    "owner": {"reference": "Organization/food-bank"},
}

_ENCOUNTER: dict[str, Any] = {
    "resourceType": "Encounter",
    "id": "hosp-a.enc-1",
    "status": "in-progress",
    "class": {"system": ACT_CODE, "code": "IMP", "display": "inpatient encounter"},
    "subject": {"reference": "Patient/123"},
    "period": {"start": "2025-01-15T10:00:00Z"},
    "location": [{"location": {"reference": "Location/ward-1"}, "status": "active"}],
}


def patient(**changes: Any) -> dict[str, Any]:
    """A Patient with an MRN (and an SSN the hub must not link on)."""
    return {**copy.deepcopy(_PATIENT), **changes}


def organization(**changes: Any) -> dict[str, Any]:
    """An Organization with an NPI."""
    return {**copy.deepcopy(_ORGANIZATION), **changes}


def practitioner(**changes: Any) -> dict[str, Any]:
    """A Practitioner with an NPI."""
    return {**copy.deepcopy(_PRACTITIONER), **changes}


def task(**changes: Any) -> dict[str, Any]:
    """A Gravity referral Task (id hosp-a.task-1) owned by the food bank, focus ServiceRequest/sr-1."""
    return {**copy.deepcopy(_TASK), **changes}


def encounter(**changes: Any) -> dict[str, Any]:
    """An in-progress inpatient Encounter (id hosp-a.enc-1) of Patient/123."""
    return {**copy.deepcopy(_ENCOUNTER), **changes}


def dumps(data: Any) -> bytes:
    """JSON bytes of ``data``."""
    return orjson.dumps(data)


def referral_transaction(bundle_type: str = "transaction") -> dict[str, Any]:
    """A Gravity referral as it arrives: Patient + ServiceRequest + Task, linked by urn:uuid fullUrls."""
    return {
        "resourceType": "Bundle",
        "type": bundle_type,
        "entry": [
            {
                "fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
                "resource": patient(),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222",
                "resource": {
                    "resourceType": "ServiceRequest",
                    "status": "active",
                    "intent": "order",
                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "467771000124109"}]},
                    "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"},
                    "performer": [{"reference": "Organization/food-bank"}],
                },
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
            {
                "fullUrl": "urn:uuid:33333333-3333-4333-8333-333333333333",
                "resource": {
                    "resourceType": "Task",
                    "status": "requested",
                    "intent": "order",
                    "focus": {"reference": "urn:uuid:22222222-2222-4222-8222-222222222222"},
                    "for": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"},
                    "owner": {"reference": "Organization/food-bank"},
                },
                "request": {"method": "POST", "url": "Task"},
            },
        ],
    }


NOTIFICATION_EVENT = "http://hl7.org/fhir/us/davinci-alerts/CodeSystem/notification-event"
_HEADER_URL = "urn:uuid:aaaaaaaa-0000-4000-8000-000000000001"
ENCOUNTER_URL = "urn:uuid:aaaaaaaa-0000-4000-8000-000000000002"
PATIENT_URL = "urn:uuid:aaaaaaaa-0000-4000-8000-000000000003"
ORGANIZATION_URL = "urn:uuid:aaaaaaaa-0000-4000-8000-000000000004"


def notification(event: str = "notification-admit") -> dict[str, Any]:
    """A Da Vinci notification message Bundle shaped like the IG's examples (MessageHeader, Encounter,
    Patient, Organization), for ``event``."""
    return {
        "resourceType": "Bundle",
        "id": "notification-1",
        "meta": {"profile": ["http://hl7.org/fhir/us/davinci-alerts/StructureDefinition/notifications-bundle"]},
        "type": "message",
        "timestamp": "2025-01-15T10:00:00Z",
        "entry": [
            {
                "fullUrl": _HEADER_URL,
                "resource": {
                    "resourceType": "MessageHeader",
                    "id": "aaaaaaaa-0000-4000-8000-000000000001",
                    "eventCoding": {"system": NOTIFICATION_EVENT, "code": event},
                    "destination": [{"endpoint": "https://hub.example/fhir/$process-message"}],
                    "sender": {"reference": ORGANIZATION_URL},
                    "source": {"name": "General Hospital ADT", "endpoint": "https://general.example/fhir"},
                    "responsible": {"reference": ORGANIZATION_URL},
                    "focus": [{"reference": ENCOUNTER_URL}],
                },
            },
            {
                "fullUrl": ENCOUNTER_URL,
                "resource": {
                    "resourceType": "Encounter",
                    "id": "aaaaaaaa-0000-4000-8000-000000000002",
                    "status": "finished" if event == "notification-discharge" else "in-progress",
                    "class": {"system": ACT_CODE, "code": "EMER"},
                    "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "50849002"}]}],
                    "subject": {"reference": PATIENT_URL},
                    "period": {"start": "2025-01-15T09:00:00Z"},
                    "serviceProvider": {"reference": ORGANIZATION_URL},
                },
            },
            {"fullUrl": PATIENT_URL, "resource": patient(id="aaaaaaaa-0000-4000-8000-000000000003")},
            {
                "fullUrl": ORGANIZATION_URL,
                "resource": organization(id="aaaaaaaa-0000-4000-8000-000000000004", name="General Hospital"),
            },
        ],
    }


def in_own_id_space(resources: list[dict[str, Any]], partner: str) -> list[dict[str, Any]]:
    """The resources with their ids moved into ``partner``'s own id space (``<partner>.<id>``: partners may
    create with PUT only there) and the references between them moved along, as a client would map its ids."""
    moved = {f"{r['resourceType']}/{r['id']}": f"{r['resourceType']}/{partner}.{r['id']}" for r in resources}

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        return moved.get(value, value) if isinstance(value, str) else value

    return [{**walk(r), "id": f"{partner}.{r['id']}"} for r in resources]
