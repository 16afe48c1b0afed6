"""The pipeline's FastStream router: the normalize and route subscribers and the topics they write.

Ack policy, on purpose: NACK_ON_ERROR. A handler returns normally only after its output (or the
record's dead-letter copy) was acknowledged by the broker, and only then is the offset committed.
A transient failure is re-raised; the nack seeks the partition back to that record, so a later
record's commit can never skip it (FastStream issues #1980 and #2618).
"""

from __future__ import annotations

from dataclasses import dataclass

from faststream import AckPolicy
from faststream.kafka import KafkaRouter
from faststream.kafka.annotations import KafkaMessage

from hub.events import HubEvent
from hub.pipeline import normalize as normalize_stage
from hub.pipeline import route as route_stage
from hub.pipeline.ports import AuditLog, PartnerDirectory, PatientIndex, Sequencer
from hub.pipeline.publisher import RecordPublisher
from hub.pipeline.route import DecideFn
from hub.pipeline.stage import run_stage
from hub.topics.payloads import DeadLetter, PartnerResource
from hub.topics.registry import DLQ, EVENTS, INGRESS, PARTNER_PREFIX, partner_topic


@dataclass(frozen=True, slots=True)
class PipelineDeps:
    """Everything the stages need, built by the composition root."""

    patients: PatientIndex
    directory: PartnerDirectory
    audit: AuditLog
    sequencer: Sequencer
    publisher: RecordPublisher
    decide: DecideFn


def build_pipeline_router(
    deps: PipelineDeps, *, group_id: str, fetch_max_wait_ms: int, session_timeout_ms: int = 10_000
) -> KafkaRouter:
    """A KafkaRouter with both stages; include it into the broker."""
    router = KafkaRouter()
    # Subscribers read raw records (a poison record must reach the handler to be dead-lettered), so
    # FastStream cannot infer their payload; the contract is documented on the publishers below.
    subscriber_options = {
        "include_in_schema": False,
        "ack_policy": AckPolicy.NACK_ON_ERROR,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": fetch_max_wait_ms,
        "session_timeout_ms": session_timeout_ms,
        "heartbeat_interval_ms": max(100, session_timeout_ms // 5),
    }

    # Publishers declared for the AsyncAPI contract; stages write through deps.publisher.
    router.publisher(INGRESS.name, schema=HubEvent, title=f"{INGRESS.name}:Publisher",
                     description=INGRESS.description)
    router.publisher(EVENTS.name, schema=HubEvent, title=f"{EVENTS.name}:Publisher",
                     description=EVENTS.description)
    router.publisher(DLQ.name, schema=DeadLetter, title=f"{DLQ.name}:Publisher", description=DLQ.description)
    router.publisher(f"{PARTNER_PREFIX}{{partner_id}}", schema=PartnerResource,
                     title="partner.{partner_id}:Publisher", description=partner_topic("{partner_id}").description)

    @router.subscriber(INGRESS.name, title=f"{INGRESS.name}:normalize",
                       description="Resolve the patient and re-key the event by hub patient id.",
                       group_id=f"{group_id}.normalize",
                       **subscriber_options)  # type: ignore[call-overload, untyped-decorator]
    async def normalize(msg: KafkaMessage) -> None:
        async def work(record: object) -> None:
            await normalize_stage.normalize(record, patients=deps.patients, publisher=deps.publisher)

        await run_stage(normalize_stage.STAGE, msg.raw_message, work, deps.publisher)

    @router.subscriber(EVENTS.name, title=f"{EVENTS.name}:route",
                       description="Decide per recipient, audit every decision, deliver what is permitted.",
                       group_id=f"{group_id}.route",
                       **subscriber_options)  # type: ignore[call-overload, untyped-decorator]
    async def route(msg: KafkaMessage) -> None:
        async def work(record: object) -> None:
            await route_stage.route(
                record, decide=deps.decide, directory=deps.directory, audit=deps.audit,
                sequencer=deps.sequencer, publisher=deps.publisher,
            )

        await run_stage(route_stage.STAGE, msg.raw_message, work, deps.publisher)

    return router
