"""Normalize: ``hub.ingress`` → ``hub.events``, keyed by hub patient id.

Resolves each event's patient through the identity crosswalk and re-keys the event; the FHIR body and
the event id travel untouched. Nothing here parses FHIR. A record is read only after its record proof
verified (``hub.record_proof``): one the hub did not write, whatever sender it claims, is dead-lettered.
:class:`EdgeNormalizer` does the same for one event at the edge (``hub.ports.EventWriter``): consent
changes skip ``hub.ingress`` so that a revocation is on the patient's partition of ``hub.events``
before the edge answers 2xx (ADR 0006).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hub import events
from hub.errors import InvalidInput, RetryableError
from hub.events import CloudEvent, HubEvent
from hub.pipeline.ports import BatchPatientIndex, PatientIndex
from hub.pipeline.publisher import Outgoing, RecordPublisher
from hub.pipeline.stage import dead_letter
from hub.record_proof import RecordProof
from hub.topics.registry import EVENTS

STAGE = "normalize"


def parse(record: Any) -> tuple[CloudEvent, HubEvent, str]:
    """The record's CloudEvent attributes, event and patient source; raises on a malformed record."""
    return parse_event(record.value, record.headers or ())


def parse_event(
    value: bytes, headers: Mapping[str, str | bytes] | Iterable[tuple[str, bytes]]
) -> tuple[CloudEvent, HubEvent, str]:
    """:func:`parse` on a value and its headers."""
    ce = CloudEvent.from_headers(headers)
    event = events.decode(value)
    source = event.facts.patient_source
    if not source:
        raise InvalidInput("the event names no patient, so it cannot be keyed", expression="subject")
    return ce, event, source


async def normalize(
    records: Sequence[Any], *, patients: PatientIndex, publisher: RecordPublisher, proof: RecordProof
) -> None:
    """Process a batch of ``hub.ingress`` records; returns once every output was acknowledged.

    A record without a valid proof goes to ``hub.dlq`` (original bytes, the reason in ``hub_dlq_reason``).
    The batch's patients are resolved together (one transaction for the unknown ones) when ``patients``
    is a :class:`BatchPatientIndex`; the outputs keep the input order and are written as one batch.
    """
    parsed: list[tuple[Any, tuple[CloudEvent, HubEvent, str] | Outgoing]] = []
    for record in records:
        try:
            proof.verify_record(record)
            parsed.append((record, parse(record)))
        except Exception as exc:  # noqa: BLE001 - a bad record is dead-lettered, never fatal
            parsed.append((record, dead_letter(record, stage=STAGE, exc=exc)))
    resolved: dict[str, str] = {}
    if isinstance(patients, BatchPatientIndex):
        # A failure here that is not retryable escapes: run_batch then retries record by record, so only
        # the record whose identifier the crosswalk refuses is dead-lettered.
        resolved = await patients.resolve_many({p[2] for _, p in parsed if not isinstance(p, Outgoing)})
    outgoing: list[Outgoing] = []
    for record, item in parsed:
        if isinstance(item, Outgoing):
            outgoing.append(item)
            continue
        ce, event, source = item
        hub_patient_id = resolved.get(source)
        if hub_patient_id is None:
            try:
                hub_patient_id = await patients.resolve(source)
            except RetryableError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bad record is dead-lettered, never fatal
                outgoing.append(dead_letter(record, stage=STAGE, exc=exc))
                continue
        key, value, headers = events.keyed_by_patient(ce, event, hub_patient_id)
        outgoing.append(Outgoing(EVENTS.name, key, value, headers))
    await publisher.publish_many(outgoing)


class EdgeNormalizer:
    """``hub.ports.EventWriter``: normalize one event at the edge and write it to ``hub.events``."""

    def __init__(self, *, patients: PatientIndex, publisher: RecordPublisher) -> None:
        self._patients = patients
        self._publisher = publisher

    async def write_event(self, *, value: bytes, headers: dict[str, str]) -> None:
        """Resolve the event's patient, re-key it and write it; return after the broker acknowledged it.

        Raises ``InvalidInput`` for an event that names no patient (the edge never builds one) and
        ``BrokerUnavailable``/``StoreUnavailable`` when the broker or the crosswalk does not answer.
        """
        ce, event, source = parse_event(value, headers)
        hub_patient_id = await self._patients.resolve(source)
        key, normalized, normalized_headers = events.keyed_by_patient(ce, event, hub_patient_id)
        await self._publisher.publish(EVENTS.name, key=key, value=normalized, headers=normalized_headers)
