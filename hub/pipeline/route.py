"""Route: ``hub.events`` → gather → decide per candidate recipient → audit → deliver to ``partner.<id>``.

* **verify** (pure): the record proof (``hub.record_proof``); a record the hub did not write is
  dead-lettered before anything below sees it.
* **gather** (I/O): the active partners, the roster membership of the batch's patients from the
  :class:`RosterSource` (one read per batch, cached per patient), and the patient's consents from the
  :class:`ConsentSource` (cached per patient). A ``consent-change`` event is not routed: it tells the
  consent source that this patient's consents changed (with the version it carries), so every later
  event of the patient, which the same stage sees later because ``hub.events`` is keyed by hub patient
  id, is decided under it.
* **candidates** (pure, :func:`candidates`): who could receive the event. Encounter events (admit,
  discharge, transfer, registration, updates: FHIR, Da Vinci, HL7 v2 ADT) go only to the partners that
  have the patient on their roster (and any partner the event names); other events to every CBO and
  any partner they name. Never to the sender. ``Recipient.on_roster`` is set for rostered partners.
  The consents of every patient with a candidate are read together, before the batch is decided
  (:meth:`ConsentSource.prefetch`), those of patients with a candidate whatever the rosters say while the
  rosters are read; a consent change in the batch reloads its patient's.
* **decide** (pure): ``hub.consent.engine.decide(facts, recipient, policies, consents, at=<event time>)``
  for every candidate.
* **audit**: every decision, permit or deny, is recorded before anything is delivered.
* **deliver**: only what was permitted, with the decision's obligations applied: the redaction profile
  (minimum necessary; the FHIR JSON is parsed only when the profile is not ``full``) and, for 42 CFR
  Part 2 data, the redisclosure notice and the consent's reference as ``hub_part2_*`` headers.

A batch costs one control-plane transaction for its audit and numbering when the audit log is a
:class:`DecisionLedger` (the SQL one is): decisions and delivery numbers commit together, before delivery.
Otherwise one audit transaction and one numbering transaction per receiving partner.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

import orjson
import structlog

from hub import events
from hub.consent import engine
from hub.consent.decision import Decision, Recipient
from hub.consent.model import Consent, Policies, consent_from_fhir
from hub.control.audit import DecisionRecord
from hub.delivery.partner_view import (
    delivered_body,
    obligation_headers,
    redaction_profile,
)
from hub.errors import InvalidInput
from hub.events import FHIR_JSON, CloudEvent, HubEvent, RoutingFacts
from hub.pipeline.ports import AuditLog, ConsentSource, DecisionLedger, PartnerDirectory, RosterSource, Sequencer
from hub.pipeline.publisher import Outgoing, RecordPublisher
from hub.pipeline.stage import dead_letter
from hub.record_proof import RecordProof
from hub.topics.registry import partner_topic

log = structlog.get_logger(__name__)

STAGE = "route"
CONSENT_CHANGE: Final = "consent-change"
_RULE_MAX = 128
#: Resource types whose events go to the partners that have the patient on their roster (not to every CBO).
ROSTER_RESOURCE_TYPES: Final = frozenset({"Encounter"})

#: The pure decision the stage applies: facts, recipient, the patient's consents, the event time.
DecideFn = Callable[[RoutingFacts, Recipient, Sequence[Consent], datetime], Decision]


def engine_decider(policies: Policies) -> DecideFn:
    """The consent engine under the operator's ``policies`` (built once by the composition root)."""

    def decide(facts: RoutingFacts, recipient: Recipient, consents: Sequence[Consent], at: datetime) -> Decision:
        return engine.decide(facts, recipient, policies, consents, at=at)

    return decide


@dataclass(frozen=True, slots=True)
class Routed:
    """One event and the decisions taken for it (none for a consent-change event)."""

    ce: CloudEvent
    event: HubEvent
    decisions: tuple[tuple[Recipient, Decision], ...]


def candidates(
    facts: RoutingFacts, partners: Sequence[Recipient], rostered: Collection[str] = frozenset()
) -> list[Recipient]:
    """Who could receive the event, never its sender; ``rostered``: ids of the partners that have the
    event's patient on their roster (they come back with ``on_roster=True``).

    * an Encounter event (:data:`ROSTER_RESOURCE_TYPES`): the rostered partners and any partner the event
      names as performer; a partner that does not know the patient is not asked, so it gets no decision;
    * any other event: every CBO and any partner it names as performer (by its organization or one of
      its identifiers);
    * a consent-change event: no one (consents are the hub's to apply, not to disclose).
    """
    if is_consent_change(facts):
        return []
    named = set(facts.performers)
    roster_only = facts.resource_type in ROSTER_RESOURCE_TYPES
    found: list[Recipient] = []
    for partner in partners:
        if partner.partner_id == facts.sender:
            continue
        on_roster = partner.partner_id in rostered
        addressed = partner.organization in named or not named.isdisjoint(partner.identifiers)
        if on_roster or addressed or (partner.kind == "cbo" and not roster_only):
            found.append(replace(partner, on_roster=True) if on_roster and not partner.on_roster else partner)
    return found


def is_consent_change(facts: RoutingFacts) -> bool:
    """True for an accepted Consent version (new, changed or revoked)."""
    return facts.event_kind == CONSENT_CHANGE or facts.resource_type == "Consent"


def parse(record: Any) -> tuple[CloudEvent, HubEvent]:
    """The record's CloudEvent attributes and event; raises on a malformed record."""
    ce = CloudEvent.from_headers(record.headers or ())
    event = events.decode(record.value)
    if not event.facts.hub_patient_id:
        raise InvalidInput("the event carries no hub patient id; it skipped normalize", expression="facts")
    return ce, event


def carried_consent(event: HubEvent) -> Consent | None:
    """The Consent version a consent-change event carries, as the engine reads it (None if unreadable)."""
    try:
        data = orjson.loads(event.body)
        if not isinstance(data, dict):
            return None
        if event.facts.resource_id:
            data["id"] = event.facts.resource_id
        return consent_from_fhir(data, patient=event.facts.hub_patient_id)
    except (InvalidInput, orjson.JSONDecodeError):
        return None


async def route(
    records: Sequence[Any],
    *,
    decide: DecideFn,
    directory: PartnerDirectory,
    consents: ConsentSource,
    audit: AuditLog,
    sequencer: Sequencer,
    publisher: RecordPublisher,
    proof: RecordProof,
    rosters: RosterSource | None = None,
) -> list[Routed]:
    """Process a batch of ``hub.events`` records; return the decisions taken (for tests and metrics).

    A record without a valid ``proof`` goes to ``hub.dlq`` before anything is decided, audited or delivered.
    ``rosters`` None: no partner has anyone on its roster (Encounter events reach only partners they name).
    """
    dead: list[Outgoing] = []
    parsed: list[tuple[CloudEvent, HubEvent]] = []
    for record in records:
        try:
            proof.verify_record(record)
            parsed.append(parse(record))
        except Exception as exc:  # noqa: BLE001 - a bad record is dead-lettered, never fatal
            dead.append(dead_letter(record, stage=STAGE, exc=exc))
    partners = await directory.partners(named={p for _, e in parsed for p in e.facts.performers})
    candidates_of = await _gather(parsed, partners, consents, rosters)
    routed: list[Routed] = []
    for (ce, event), recipients in zip(parsed, candidates_of, strict=True):  # in order: see below
        patient = event.facts.hub_patient_id or ""
        if is_consent_change(event.facts):
            await consents.changed(patient, carried_consent(event))
            routed.append(Routed(ce, event, ()))
            continue
        # A consent change applies to the patient's later events of the batch (``changed`` reloads).
        in_force = await consents.consents_for(patient) if recipients else ()
        decided = tuple((r, decide(event.facts, r, in_force, ce.time)) for r in recipients)
        routed.append(Routed(ce, event, decided))
    decided_at = events.now()
    audited = [_audit_record(r.ce, r.event.facts, rec, d, decided_at) for r in routed for rec, d in r.decisions]
    permitted: dict[str, list[str]] = defaultdict(list)
    for r in routed:
        for recipient, decision in r.decisions:
            if decision.permitted:
                permitted[recipient.partner_id].append(r.ce.id)
    # Every decision is stored, and every delivery numbered, before anything is delivered.
    if isinstance(audit, DecisionLedger):
        numbers = await audit.record_and_number(audited, permitted)
    else:
        await audit.record(audited)
        numbers = {partner_id: await sequencer.assign_many(partner_id, ids) for partner_id, ids in permitted.items()}

    deliveries = dead
    for r in routed:
        key = (r.event.facts.hub_patient_id or "").encode()
        bodies: dict[str, bytes] = {}
        for recipient, decision in r.decisions:
            if decision.permitted:
                sequence = numbers[recipient.partner_id][r.ce.id]
                headers = r.ce.with_sequence(sequence, datacontenttype=FHIR_JSON).to_headers()
                headers.update(obligation_headers(decision))
                profile = redaction_profile(decision)
                if profile not in bodies:
                    bodies[profile] = delivered_body(r.event.body, profile)
                deliveries.append(Outgoing(partner_topic(recipient.partner_id).name, key, bodies[profile], headers))
    await publisher.publish_many(deliveries)
    return routed


async def _gather(
    parsed: Sequence[tuple[CloudEvent, HubEvent]],
    partners: Sequence[Recipient],
    consents: ConsentSource,
    rosters: RosterSource | None,
) -> list[list[Recipient]]:
    """Every event's candidates, with the consents of every patient that has one loaded into ``consents``."""
    routable = {e.facts.hub_patient_id or "" for _, e in parsed if not is_consent_change(e.facts)}
    # The consents of every patient the batch may disclose something about, in one read. Roster membership
    # only adds candidates, so the patients that have one without it are read while the rosters are.
    without_rosters = _with_candidates(parsed, partners, {})
    if rosters is not None and routable:
        membership, _ = await asyncio.gather(rosters.rostered(routable), consents.prefetch(without_rosters))
    else:
        membership = {}
        await consents.prefetch(without_rosters)
    candidates_of = [
        candidates(event.facts, partners, membership.get(event.facts.hub_patient_id or "", frozenset()))
        for _, event in parsed
    ]
    pairs = zip(parsed, candidates_of, strict=True)
    rostered_only = {e.facts.hub_patient_id for (_, e), c in pairs if c and e.facts.hub_patient_id} - without_rosters
    if rostered_only:
        await consents.prefetch(rostered_only)
    return candidates_of


def _with_candidates(
    parsed: Sequence[tuple[CloudEvent, HubEvent]],
    partners: Sequence[Recipient],
    membership: Mapping[str, frozenset[str]],
) -> set[str]:
    """The hub patient ids of the events that have a candidate recipient under ``membership``."""
    return {
        patient for _, event in parsed
        if (patient := event.facts.hub_patient_id)
        and candidates(event.facts, partners, membership.get(patient, frozenset()))
    }


def _audit_record(
    ce: CloudEvent, facts: RoutingFacts, recipient: Recipient, decision: Decision, decided_at: datetime
) -> DecisionRecord:
    return DecisionRecord(
        event_id=ce.id,
        hub_patient_id=facts.hub_patient_id or "",
        recipient_id=recipient.partner_id,
        verdict=decision.verdict.value,
        rule=decision.rule[:_RULE_MAX],
        reason=decision.reason,
        purpose=decision.purpose,
        resource_type=facts.resource_type,
        decided_at=decided_at,
    )
