"""Route: ``hub.events`` → decide per candidate recipient → audit → ``partner.<id>``.

Gather with I/O (recipients), decide with the pure rule, record every decision (permit or deny)
before anything is delivered, then deliver only what was permitted. Delivery writes the FHIR JSON
as the recipient may see it, with the partner's own event number in ``ce_sequence``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hub import events
from hub.consent.decision import Decision, Recipient
from hub.control.audit import DecisionRecord
from hub.errors import InvalidInput
from hub.events import FHIR_JSON, CloudEvent, RoutingFacts
from hub.pipeline.ports import AuditLog, PartnerDirectory, Sequencer
from hub.pipeline.publisher import RecordPublisher
from hub.topics.registry import partner_topic

STAGE = "route"

DecideFn = Callable[[RoutingFacts, Recipient], Decision]


async def route(
    record: Any,
    *,
    decide: DecideFn,
    directory: PartnerDirectory,
    audit: AuditLog,
    sequencer: Sequencer,
    publisher: RecordPublisher,
) -> list[tuple[Recipient, Decision]]:
    """Process one ``hub.events`` record; return the decisions taken (for tests and metrics)."""
    ce = CloudEvent.from_headers(record.headers or ())
    event = events.decode(record.value)
    facts = event.facts
    if not facts.hub_patient_id:
        raise InvalidInput("the event carries no hub patient id; it skipped normalize", expression="facts")
    candidates = [
        r for r in await directory.recipients(named=facts.performers) if r.partner_id != facts.sender
    ]
    decided = [(recipient, decide(facts, recipient)) for recipient in candidates]
    if decided:
        await audit.record([_audit_record(ce, facts, r, d) for r, d in decided])
    body = event.body.encode("utf-8")
    for recipient, decision in decided:
        if not decision.permitted:
            continue
        sequence = await sequencer.assign(recipient.partner_id, ce.id)
        await publisher.publish(
            partner_topic(recipient.partner_id).name,
            key=facts.hub_patient_id.encode(),
            value=body,
            headers=ce.with_sequence(sequence, datacontenttype=FHIR_JSON).to_headers(),
        )
    return decided


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
