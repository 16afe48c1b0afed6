"""Helpers for ``test_intake_corpus_over_tansu``: what a partner sees of the hub over TCP.

* :class:`EventLog` - one aiokafka consumer in a fresh consumer group reads ``hub.events`` (and
  ``hub.dlq``, to say *why* an expected event is missing) for a whole test module; tests ask it for
  the events of their own senders with a bounded wait.
* :func:`ingress_end` - the end offsets of ``hub.ingress``, to prove a refused input wrote nothing.
* :func:`send_over_mllp` - a hospital's HL7 v2 feed on one connection with python-hl7's asyncio MLLP
  client (``hl7.mllp.open_hl7_connection``), one ACK read per message.
* :func:`msh` - MSH-4/9/10 of a sample read with plain string splitting, independent of the hub's parser.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import hl7.mllp
import pydantic
from aiokafka import AIOKafkaConsumer, TopicPartition

from hub import events
from hub.events import HubEvent
from hub.topics.registry import DLQ, EVENTS, INGRESS


@dataclass(frozen=True)
class SeenEvent:
    """One record of ``hub.events``: its key, decoded value and ``ce_*`` headers."""

    key: bytes | None
    event: HubEvent
    headers: dict[str, str]


@dataclass(frozen=True)
class DeadLetter:
    """One record of ``hub.dlq``: the sender it came from (``ce_source``) and the reason."""

    source: str
    stage: str
    reason: str


def _headers(record: Any) -> dict[str, str]:
    return {name: bytes(raw).decode("utf-8", "replace") for name, raw in record.headers or ()}


class EventLog:
    """``hub.events`` and ``hub.dlq`` as read by one consumer in its own, fresh consumer group.

    Reads from the earliest offset, so events written before the group got its partitions are not
    missed; every test filters by its own (test-unique) sender partner ids.
    """

    def __init__(self, bootstrap: str) -> None:
        self._consumer = AIOKafkaConsumer(
            EVENTS.name, DLQ.name, bootstrap_servers=bootstrap, group_id=f"corpus-intake-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest", enable_auto_commit=False,
            # Tansu answers a waiting fetch only when the wait runs out, and assigns partitions to a
            # joining member after half the session timeout: keep both short.
            fetch_max_wait_ms=20, session_timeout_ms=2000, heartbeat_interval_ms=500,
        )
        self.events: list[SeenEvent] = []
        self.dead_letters: list[DeadLetter] = []

    async def __aenter__(self) -> EventLog:
        await self._consumer.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._consumer.stop()

    async def _poll(self, timeout_ms: int) -> None:
        batch = await self._consumer.getmany(timeout_ms=timeout_ms)
        for records in batch.values():
            for record in records:
                headers = _headers(record)
                if record.topic == DLQ.name:
                    self.dead_letters.append(DeadLetter(
                        headers.get("ce_source", ""), headers.get("hub_dlq_stage", ""),
                        headers.get("hub_dlq_reason", ""),
                    ))
                    continue
                try:
                    event = events.decode(record.value)
                except pydantic.ValidationError:
                    continue  # another test's deliberately broken record; never one of ours
                self.events.append(SeenEvent(record.key, event, headers))

    def of(self, senders: Collection[str]) -> list[SeenEvent]:
        """The events read so far whose sender is one of ``senders``."""
        return [seen for seen in self.events if seen.event.facts.sender in senders]

    def dead_letters_of(self, senders: Collection[str]) -> list[DeadLetter]:
        """Dead letters read so far that came from one of ``senders``."""
        return [dead for dead in self.dead_letters if dead.source.removeprefix("/partners/") in senders]

    async def wait_for(
        self, senders: Collection[str], *, expect: int, timeout_s: float = 20.0, settle_s: float = 0.3
    ) -> list[SeenEvent]:
        """The events of ``senders`` once ``expect`` of them arrived (or ``timeout_s`` passed), after
        listening ``settle_s`` more so that an extra event would be seen too."""
        deadline = time.monotonic() + timeout_s
        while len(self.of(senders)) < expect and time.monotonic() < deadline:
            await self._poll(100)
        settle_end = time.monotonic() + settle_s
        while time.monotonic() < settle_end:
            await self._poll(50)
        return self.of(senders)


async def ingress_end(bootstrap: str) -> dict[int, int]:
    """The end offset of every ``hub.ingress`` partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(INGRESS.name, p) for p in range(INGRESS.partitions)])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def send_over_mllp(port: int, messages: list[bytes], *, timeout_s: float = 10.0) -> list[bytes]:
    """Send ``messages`` byte for byte on one MLLP connection; the ACK of each (unframed), in order.
    Each ACK must arrive within ``timeout_s`` (``TimeoutError`` otherwise)."""
    async with asyncio.timeout(timeout_s):
        reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", port)
    answers: list[bytes] = []
    try:
        for message in messages:
            writer.writeblock(message)
            async with asyncio.timeout(timeout_s):
                await writer.drain()
                answers.append(bytes(await reader.readblock()))
    finally:
        writer.close()
        await writer.wait_closed()
    return answers


@dataclass(frozen=True)
class Msh:
    """The MSH fields the test needs: MSH-4 as the operator registers it, MSH-9.2, MSH-10."""

    facility: str
    trigger: str
    control_id: str


def msh(message: bytes) -> Msh:
    """Read MSH of an ER7 message (BOM, CR or LF line ends allowed) by splitting on its own separators."""
    text = message.decode("utf-8").removeprefix("\ufeff")
    line = text.replace("\r\n", "\r").replace("\n", "\r").split("\r", 1)[0]
    field_sep, component_sep = line[3], line[4]
    fields = line.split(field_sep)  # fields[n - 1] is MSH-n (MSH-1 is the separator itself)
    facility = component_sep.join(part.strip() for part in fields[3].split(component_sep)).rstrip(component_sep)
    return Msh(facility=facility, trigger=fields[8].split(component_sep)[1], control_id=fields[9].strip())
