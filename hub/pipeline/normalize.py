"""Normalize: ``hub.ingress`` → ``hub.events``, keyed by hub patient id.

Resolves each event's patient through the identity crosswalk and re-keys the event; the FHIR body and
the event id travel untouched. Nothing here parses FHIR.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hub import events
from hub.errors import InvalidInput, RetryableError
from hub.events import CloudEvent, HubEvent
from hub.pipeline.ports import PatientIndex
from hub.pipeline.publisher import Outgoing, RecordPublisher
from hub.pipeline.stage import dead_letter
from hub.topics.registry import EVENTS

STAGE = "normalize"


def parse(record: Any) -> tuple[CloudEvent, HubEvent, str]:
    """The record's CloudEvent attributes, event and patient source; raises on a malformed record."""
    ce = CloudEvent.from_headers(record.headers or ())
    event = events.decode(record.value)
    source = event.facts.patient_source
    if not source:
        raise InvalidInput("the event names no patient, so it cannot be keyed", expression="subject")
    return ce, event, source


async def normalize(records: Sequence[Any], *, patients: PatientIndex, publisher: RecordPublisher) -> None:
    """Process a batch of ``hub.ingress`` records; returns once every output was acknowledged."""
    outgoing: list[Outgoing] = []
    for record in records:
        try:
            ce, event, source = parse(record)
            hub_patient_id = await patients.resolve(source)
        except RetryableError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bad record is dead-lettered, never fatal
            outgoing.append(dead_letter(record, stage=STAGE, exc=exc))
            continue
        normalized = HubEvent(
            facts=event.facts.model_copy(update={"hub_patient_id": hub_patient_id}),
            body=event.body,
            original=event.original,
            original_media_type=event.original_media_type,
        )
        headers = ce.model_copy(update={"subject": f"Patient/{hub_patient_id}"}).to_headers()
        outgoing.append(Outgoing(EVENTS.name, hub_patient_id.encode(), events.encode(normalized), headers))
    await publisher.publish_many(outgoing)
