"""The port through which pipeline stages write records, and its Kafka implementation.

``publish`` returns only after the broker acknowledged the write (the producer uses acks=all);
any failure to get that acknowledgement becomes ``BrokerUnavailable`` (retryable).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker

from hub.errors import BrokerUnavailable
from hub.topics.registry import INGRESS


class RecordPublisher(Protocol):
    """Writes one record and waits for the broker's acknowledgement."""

    async def publish(self, topic: str, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        """Write and wait; raise BrokerUnavailable when not acknowledged."""
        ...


class KafkaRecordPublisher:
    """RecordPublisher on a FastStream KafkaBroker (whose producer is configured with acks=all)."""

    def __init__(self, broker: KafkaBroker, *, timeout_s: float = 15.0) -> None:
        self._broker = broker
        self._timeout_s = timeout_s

    async def publish(self, topic: str, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):  # no extra task per publish, unlike wait_for
                await self._broker.publish(value, topic, key=key, headers=headers)
        except (KafkaError, TimeoutError, OSError) as exc:
            raise BrokerUnavailable(
                f"the broker did not acknowledge a write to {topic}: {type(exc).__name__}"
            ) from exc

    async def write(self, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        """``hub.ports.IngressWriter``: write one accepted input to ``hub.ingress``."""
        await self.publish(INGRESS.name, key=key, value=value, headers=headers)
