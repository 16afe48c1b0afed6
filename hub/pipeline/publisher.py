"""The port through which the edges and the pipeline write records, and its two Kafka implementations.

``publish`` returns only after the broker acknowledged the write; ``publish_many`` hands every record
to the producer in order (so one partition keeps their order) and returns only after all of them were
acknowledged. The producer uses acks=all. Any failure to get an acknowledgement becomes
``BrokerUnavailable`` (retryable): the caller must then assume none of the batch was written.

:class:`GroupPublisher` puts the records of concurrent callers into one ``publish_many`` of the publisher
it wraps (group commit, ``hub.control.group_commit``): the FHIR edge's concurrent creates then cost one
broker round trip (and, on the embedded default, one journal transaction) per batch, each caller
returning only once its own records were acknowledged. A failed batch is retried caller by caller, at
once, so a failure reaches only the callers whose records it concerns.

Both Kafka implementations stamp every record for ``hub.ingress`` and ``hub.events`` with the hub's record
proof (``hub.record_proof``) as they write it, so no edge or stage can write an unproven hub record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner, murmur2
from faststream.kafka import KafkaBroker

from hub.broker.client_security import NO_SECURITY, ClientSecurity
from hub.control.group_commit import GroupCommitter
from hub.errors import BrokerUnavailable
from hub.record_proof import RecordProof
from hub.topics.registry import INGRESS


class Outgoing(NamedTuple):
    """One record to write."""

    topic: str
    key: bytes
    value: bytes
    headers: dict[str, str]


class RecordPublisher(Protocol):
    """Writes records and waits for the broker's acknowledgement."""

    async def publish(self, topic: str, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        """Write one record and wait; raise BrokerUnavailable when not acknowledged."""
        ...

    async def publish_many(self, records: Sequence[Outgoing]) -> None:
        """Write records in order and wait for all; raise BrokerUnavailable when any is not acknowledged."""
        ...


class EdgePublisher(RecordPublisher, Protocol):
    """A RecordPublisher that is also the edges' ``hub.ports.IngressWriter`` (``write`` to ``hub.ingress``)."""

    async def write(self, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        """Write one accepted input to ``hub.ingress`` and wait for the acknowledgement."""
        ...


class CachedKeyPartitioner:
    """aiokafka's default partitioner (murmur2 of the key, as the Java client) with the hash of recently
    seen keys cached: the pipeline's keys repeat (hub patient ids), and aiokafka's murmur2 is pure Python
    (about 10 us per key). Same partition for every key as ``DefaultPartitioner``; a record without a
    key goes to a random partition as there. At most ``max_keys`` hashes are kept (then forgotten)."""

    __slots__ = ("_hashes", "_max_keys")

    def __init__(self, max_keys: int = 100_000) -> None:
        self._hashes: dict[bytes, int] = {}
        self._max_keys = max_keys

    def __call__(self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
        if key is None:
            return int(DefaultPartitioner()(key, all_partitions, available))
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self._max_keys:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


class AioKafkaRecordPublisher:
    """RecordPublisher on its own aiokafka producer (acks=all): the hub's production writer.

    ``publish_many`` enqueues every record before awaiting any acknowledgement, so a batch costs about
    one broker round trip instead of one per record.
    """

    def __init__(
        self, bootstrap: str, *, proof: RecordProof, timeout_s: float = 15.0, security: ClientSecurity = NO_SECURITY
    ) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=False,  # Tansu has no idempotent producer
            request_timeout_ms=10_000,
            linger_ms=0,
            client_id="carehub",
            partitioner=CachedKeyPartitioner(),
            **security.aiokafka_kwargs(),
        )
        self._proof = proof
        self._timeout_s = timeout_s

    async def start(self) -> None:
        """Connect the producer."""
        try:
            await self._producer.start()
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"cannot connect the producer: {type(exc).__name__}") from exc

    async def stop(self) -> None:
        """Flush and close the producer."""
        await self._producer.stop()

    async def publish(self, topic: str, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        await self.publish_many([Outgoing(topic, key, value, headers)])

    async def publish_many(self, records: Sequence[Outgoing]) -> None:
        if not records:
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                futures = [
                    await self._producer.send(r.topic, r.value, key=r.key, headers=self._wire_headers(r))
                    for r in records
                ]
                await asyncio.gather(*futures)
        except (KafkaError, TimeoutError, OSError) as exc:
            raise BrokerUnavailable(
                f"the broker did not acknowledge {len(records)} write(s): {type(exc).__name__}"
            ) from exc

    async def write(self, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        """``hub.ports.IngressWriter``: write one accepted input to ``hub.ingress``."""
        await self.publish(INGRESS.name, key=key, value=value, headers=headers)

    def _wire_headers(self, record: Outgoing) -> list[tuple[str, bytes]]:
        stamped = self._proof.stamp(record.topic, key=record.key, value=record.value, headers=record.headers)
        return [(name, value.encode()) for name, value in stamped.items()]


class KafkaRecordPublisher:
    """RecordPublisher through a FastStream KafkaBroker: works under ``TestKafkaBroker`` (in-memory tests)."""

    def __init__(self, broker: KafkaBroker, *, proof: RecordProof, timeout_s: float = 15.0) -> None:
        self._broker = broker
        self._proof = proof
        self._timeout_s = timeout_s

    async def publish(self, topic: str, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        # FastStream writes ``content-type: ""`` when the headers carry none: prove the record it will write.
        stamped = self._proof.stamp(topic, key=key, value=value, headers={"content-type": "", **headers})
        try:
            async with asyncio.timeout(self._timeout_s):  # no extra task per publish, unlike wait_for
                await self._broker.publish(value, topic, key=key, headers=stamped)
        except (KafkaError, TimeoutError, OSError) as exc:
            raise BrokerUnavailable(
                f"the broker did not acknowledge a write to {topic}: {type(exc).__name__}"
            ) from exc

    async def publish_many(self, records: Sequence[Outgoing]) -> None:
        for record in records:
            await self.publish(record.topic, key=record.key, value=record.value, headers=record.headers)

    async def write(self, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        """``hub.ports.IngressWriter``: write one accepted input to ``hub.ingress``."""
        await self.publish(INGRESS.name, key=key, value=value, headers=headers)


class GroupPublisher:
    """An ``EdgePublisher`` whose concurrent writes share ``publish_many`` calls of ``publisher``.

    Every write waits for its batch (the callers that arrived while the previous batch was being
    written, at most ``max_batch`` records); it raises what its own records' write raised.
    """

    def __init__(self, publisher: RecordPublisher, *, max_batch: int = 256) -> None:
        self._publisher = publisher
        self._batches: GroupCommitter[Outgoing, None] = GroupCommitter(
            self._write_batch, max_batch=max_batch, retry_concurrently=True
        )

    @property
    def batches(self) -> int:
        """How many ``publish_many`` calls were made (for tests and benches)."""
        return self._batches.batches

    @property
    def waiting(self) -> int:
        """How many callers wait for the next batch."""
        return self._batches.waiting

    async def _write_batch(self, records: Sequence[Outgoing]) -> list[None]:
        await self._publisher.publish_many(records)
        return [None] * len(records)

    async def publish(self, topic: str, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        await self.publish_many([Outgoing(topic, key, value, headers)])

    async def publish_many(self, records: Sequence[Outgoing]) -> None:
        await self._batches.submit(records)

    async def write(self, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        """``hub.ports.IngressWriter``: write one accepted input to ``hub.ingress`` with the others waiting."""
        await self.publish(INGRESS.name, key=key, value=value, headers=headers)

    async def close(self) -> None:
        """Wait for the batches already handed over."""
        await self._batches.close()
