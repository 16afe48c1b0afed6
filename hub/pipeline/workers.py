"""The pipeline's FastStream router: the normalize and route subscribers and the topics they write.

Ack policy, on purpose: NACK_ON_ERROR. Subscribers take batches (up to ``max_batch`` records); a
handler returns normally only after every output of the batch (or a record's dead-letter copy) was
acknowledged by the broker, and only then are the offsets committed. A transient failure is re-raised;
the nack seeks each partition back to the batch's first record, so a later commit can never skip it
(FastStream issues #1980 and #2618).

Caches across rebalances: the route stage's consent cache is emptied whenever its consumer is assigned
partitions. A patient's consent changes are applied in order by whichever worker owns the patient's
partition; a worker that gets a partition back must not decide with what it cached before it lost it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from faststream import AckPolicy
from faststream.kafka import KafkaRouter
from faststream.kafka.annotations import KafkaMessage

from hub.events import HubEvent
from hub.pipeline import normalize as normalize_stage
from hub.pipeline import route as route_stage
from hub.pipeline.ports import AuditLog, ConsentSource, PartnerDirectory, PatientIndex, RosterSource, Sequencer
from hub.pipeline.publisher import RecordPublisher
from hub.pipeline.route import DecideFn
from hub.pipeline.stage import run_batch
from hub.record_proof import RecordProof
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
    consents: ConsentSource
    decide: DecideFn
    proof: RecordProof
    rosters: RosterSource | None = None


class ForgetConsentsOnAssignment(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Empties the consent cache when the route consumer is assigned partitions (see the module doc)."""

    def __init__(self, forget: Callable[[], None]) -> None:
        self._forget = forget

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        """Nothing to do: what was decided under the lost partitions is committed or will be redone."""

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        """Forget every cached consent before the first batch of the new assignment is decided."""
        if assigned:
            self._forget()


def build_pipeline_router(
    deps: PipelineDeps,
    *,
    group_id: str,
    fetch_max_wait_ms: int,
    session_timeout_ms: int = 10_000,
    max_batch: int = 200,
) -> KafkaRouter:
    """A KafkaRouter with both stages; include it into the broker."""
    router = KafkaRouter()
    # Subscribers read raw records (a poison record must reach the handler to be dead-lettered), so
    # FastStream cannot infer their payload; the contract is documented on the publishers below.
    subscriber_options = {
        "include_in_schema": False,
        "ack_policy": AckPolicy.NACK_ON_ERROR,
        "batch": True,
        "max_records": max_batch,
        # How long one poll waits for buffered records (the fetcher prefetches in the background);
        # an empty poll also sleeps this long, so keep it short for latency.
        "batch_timeout_ms": max(1, fetch_max_wait_ms // 4),
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": fetch_max_wait_ms,
        "session_timeout_ms": session_timeout_ms,
        "heartbeat_interval_ms": max(100, session_timeout_ms // 5),
        # The handlers take the raw records as their body: FastStream's batch decoder would build a message
        # and try to decode the body of every record first (per-record CPU for nothing, and a body that
        # contradicts its content type would fail before a stage could dead-letter it), and a
        # ``msg: KafkaMessage`` context parameter is resolved in a worker thread (a thread hop per batch).
        "decoder": _raw_records,
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
    async def normalize(records: Any) -> None:  # the decoder's raw records (see _raw_records)
        async def work(records: Sequence[Any]) -> None:
            await normalize_stage.normalize(
                records, patients=deps.patients, publisher=deps.publisher, proof=deps.proof
            )

        await run_batch(normalize_stage.STAGE, records, work, deps.publisher)

    def forget_consents() -> None:
        # Looked up when called: the AsyncAPI document builds this router without deps.
        deps.consents.forget_all()

    @router.subscriber(EVENTS.name, title=f"{EVENTS.name}:route",
                       description="Decide per recipient, audit every decision, deliver what is permitted.",
                       group_id=f"{group_id}.route", listener=ForgetConsentsOnAssignment(forget_consents),
                       **subscriber_options)  # type: ignore[call-overload, untyped-decorator]
    async def route(records: Any) -> None:  # the decoder's raw records (see _raw_records)
        async def work(records: Sequence[Any]) -> None:
            await route_stage.route(
                records, decide=deps.decide, directory=deps.directory, consents=deps.consents, audit=deps.audit,
                sequencer=deps.sequencer, publisher=deps.publisher, proof=deps.proof, rosters=deps.rosters,
            )

        await run_batch(route_stage.STAGE, records, work, deps.publisher)

    return router


async def _raw_records(msg: KafkaMessage) -> Sequence[Any]:
    """The subscribers' decoder: the batch's consumer records, undecoded (the stages parse them)."""
    return _records(msg)


def _records(msg: KafkaMessage) -> Sequence[Any]:
    """The consumer records of a batch message (a tuple; a list under TestKafkaBroker), or of a single one."""
    raw = msg.raw_message
    return raw if isinstance(raw, (tuple, list)) else (raw,)
