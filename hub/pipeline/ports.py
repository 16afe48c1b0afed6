"""The control-plane ports the pipeline stages need (tiny Protocols, faked in unit tests)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from hub.consent.decision import Recipient
from hub.control.audit import DecisionRecord


class PatientIndex(Protocol):
    """The identity crosswalk: a source identifier in, the hub patient id out (created on first sight)."""

    async def resolve(self, source: str) -> str:
        """Return the hub patient id for ``source``."""
        ...


class PartnerDirectory(Protocol):
    """Who could receive an event."""

    async def recipients(self, *, named: Sequence[str]) -> list[Recipient]:
        """Every active CBO, plus any active partner whose organization is in ``named``."""
        ...


class AuditLog(Protocol):
    """Append-only store of sharing decisions."""

    async def record(self, records: Sequence[DecisionRecord]) -> None:
        """Store the decisions (idempotent for a retried event)."""
        ...


class Sequencer(Protocol):
    """Per-partner event numbers."""

    async def assign(self, partner_id: str, event_id: str) -> int:
        """The partner's number for this event; the same on every retry."""
        ...
