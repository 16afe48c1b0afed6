"""The topic registry: one declaration per topic, the single source of truth.

Name, partitions, key, retention, compaction and payload model of every topic the hub
uses. The broker bootstrap creates them; the AsyncAPI document is generated from them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from hub.events import HubEvent
from hub.topics.payloads import DeadLetter, PartnerResource

DAY_MS = 24 * 60 * 60 * 1000
PARTNER_PREFIX = "partner."


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: how it is created and what it carries."""

    name: str
    partitions: int
    key: str
    retention_ms: int
    payload: type[BaseModel]
    description: str
    compacted: bool = False

    def configs(self) -> dict[str, str]:
        """Topic-level configuration for CreateTopics."""
        return {
            "retention.ms": str(self.retention_ms),
            "cleanup.policy": "compact" if self.compacted else "delete",
        }


INGRESS = TopicSpec(
    name="hub.ingress",
    partitions=3,
    key="sender partner id | patient as the sender names it",
    retention_ms=7 * DAY_MS,
    payload=HubEvent,
    description="Raw accepted input, written with acks=all before the sender gets its 2xx/ACK.",
)
EVENTS = TopicSpec(
    name="hub.events",
    partitions=3,
    key="hub patient id",
    retention_ms=30 * DAY_MS,
    payload=HubEvent,
    description="Normalised canonical events, keyed by hub patient id so one patient's events keep order.",
)
DLQ = TopicSpec(
    name="hub.dlq",
    partitions=1,
    key="the original record's key",
    retention_ms=30 * DAY_MS,
    payload=DeadLetter,
    description="Records no stage could process: original bytes as the value, the reason in headers.",
)

CORE_TOPICS: tuple[TopicSpec, ...] = (INGRESS, EVENTS, DLQ)


def partner_topic(partner_id: str) -> TopicSpec:
    """The delivery topic of one partner: the resources that partner may see, numbered per partner."""
    return TopicSpec(
        name=f"{PARTNER_PREFIX}{partner_id}",
        partitions=1,
        key="hub patient id",
        retention_ms=14 * DAY_MS,
        payload=PartnerResource,
        description=(
            "FHIR R4 JSON of each resource this partner may see (redacted for it); ce_* headers carry "
            "type, source, subject and ce_sequence, the partner's own event number."
        ),
    )
