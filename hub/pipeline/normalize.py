"""Normalize: ``hub.ingress`` → ``hub.events``, keyed by hub patient id.

Resolves the patient through the identity crosswalk and re-keys the event; the FHIR body and the
event id travel untouched. Nothing here parses FHIR.
"""

from __future__ import annotations

from typing import Any

from hub import events
from hub.errors import InvalidInput
from hub.events import CloudEvent, HubEvent
from hub.pipeline.ports import PatientIndex
from hub.pipeline.publisher import RecordPublisher
from hub.topics.registry import EVENTS

STAGE = "normalize"


async def normalize(record: Any, *, patients: PatientIndex, publisher: RecordPublisher) -> None:
    """Process one ``hub.ingress`` record; raises on a malformed record (the stage dead-letters it)."""
    ce = CloudEvent.from_headers(record.headers or ())
    event = events.decode(record.value)
    source = event.facts.patient_source
    if not source:
        raise InvalidInput("the event names no patient, so it cannot be keyed", expression="subject")
    hub_patient_id = await patients.resolve(source)
    normalized = HubEvent(
        facts=event.facts.model_copy(update={"hub_patient_id": hub_patient_id}),
        body=event.body,
    )
    headers = ce.model_copy(update={"subject": f"Patient/{hub_patient_id}"}).to_headers()
    await publisher.publish(
        EVENTS.name, key=hub_patient_id.encode(), value=events.encode(normalized), headers=headers
    )
