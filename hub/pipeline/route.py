"""Route: ``hub.events`` → decide per candidate recipient → audit → ``partner.<id>``.

Gather with I/O (partners), decide with the pure rule, record every decision (permit or deny) before
anything is delivered, then deliver only what was permitted. Delivery writes the FHIR JSON as the
recipient may see it, with the partner's own event number in ``ce_sequence``. A batch costs one
audit transaction and one numbering transaction per receiving partner.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hub import events
from hub.consent.decision import Decision, Recipient
from hub.control.audit import DecisionRecord
from hub.errors import InvalidInput
from hub.events import FHIR_JSON, CloudEvent, HubEvent, RoutingFacts
from hub.pipeline.ports import AuditLog, PartnerDirectory, Sequencer
from hub.pipeline.publisher import Outgoing, RecordPublisher
from hub.pipeline.stage import dead_letter
from hub.topics.registry import partner_topic

STAGE = "route"

DecideFn = Callable[[RoutingFacts, Recipient], Decision]


@dataclass(frozen=True, slots=True)
class Routed:
    """One event and the decisions taken for it."""

    ce: CloudEvent
    event: HubEvent
    decisions: tuple[tuple[Recipient, Decision], ...]


def candidates(facts: RoutingFacts, partners: Sequence[Recipient]) -> list[Recipient]:
    """Who could receive the event: every CBO and any partner it names as performer, never its sender."""
    named = set(facts.performers)
    return [
        p for p in partners
        if p.partner_id != facts.sender and (p.kind == "cbo" or p.organization in named)
    ]


def parse(record: Any) -> tuple[CloudEvent, HubEvent]:
    """The record's CloudEvent attributes and event; raises on a malformed record."""
    ce = CloudEvent.from_headers(record.headers or ())
    event = events.decode(record.value)
    if not event.facts.hub_patient_id:
        raise InvalidInput("the event carries no hub patient id; it skipped normalize", expression="facts")
    return ce, event


async def route(
    records: Sequence[Any],
    *,
    decide: DecideFn,
    directory: PartnerDirectory,
    audit: AuditLog,
    sequencer: Sequencer,
    publisher: RecordPublisher,
) -> list[Routed]:
    """Process a batch of ``hub.events`` records; return the decisions taken (for tests and metrics)."""
    dead: list[Outgoing] = []
    parsed: list[tuple[CloudEvent, HubEvent]] = []
    for record in records:
        try:
            parsed.append(parse(record))
        except Exception as exc:  # noqa: BLE001 - a bad record is dead-lettered, never fatal
            dead.append(dead_letter(record, stage=STAGE, exc=exc))
    partners = await directory.partners(named={p for _, e in parsed for p in e.facts.performers})
    routed: list[Routed] = []
    for ce, event in parsed:
        decided = tuple((r, decide(event.facts, r)) for r in candidates(event.facts, partners))
        routed.append(Routed(ce, event, decided))
    await audit.record([_audit_record(r.ce, r.event.facts, rec, d) for r in routed for rec, d in r.decisions])

    permitted: dict[str, list[str]] = defaultdict(list)
    for r in routed:
        for recipient, decision in r.decisions:
            if decision.permitted:
                permitted[recipient.partner_id].append(r.ce.id)
    numbers = {partner_id: await sequencer.assign_many(partner_id, ids) for partner_id, ids in permitted.items()}

    deliveries = dead
    for r in routed:
        body = r.event.body.encode("utf-8")
        key = (r.event.facts.hub_patient_id or "").encode()
        for recipient, decision in r.decisions:
            if decision.permitted:
                sequence = numbers[recipient.partner_id][r.ce.id]
                headers = r.ce.with_sequence(sequence, datacontenttype=FHIR_JSON).to_headers()
                deliveries.append(Outgoing(partner_topic(recipient.partner_id).name, key, body, headers))
    await publisher.publish_many(deliveries)
    return routed


def _audit_record(ce: CloudEvent, facts: RoutingFacts, recipient: Recipient, decision: Decision) -> DecisionRecord:
    return DecisionRecord(
        event_id=ce.id,
        hub_patient_id=facts.hub_patient_id or "",
        recipient_id=recipient.partner_id,
        verdict=decision.verdict.value,
        rule=decision.rule,
        reason=decision.reason,
        purpose=decision.purpose,
        resource_type=facts.resource_type,
        decided_at=events.now(),
    )
