"""The control-plane ports the pipeline stages need (tiny Protocols, faked in unit tests)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from hub.consent.decision import Recipient
from hub.control.audit import DecisionRecord


class PatientIndex(Protocol):
    """The identity crosswalk: a source identifier in, the hub patient id out (created on first sight)."""

    async def resolve(self, source: str) -> str:
        """Return the hub patient id for ``source``."""
        ...


class PartnerDirectory(Protocol):
    """The active partners, as possible recipients."""

    async def partners(self, *, named: Collection[str]) -> list[Recipient]:
        """Every active partner; ``named`` are organizations the caller is about to look for (a name
        the directory does not know yet makes it refresh)."""
        ...


class AuditLog(Protocol):
    """Append-only store of sharing decisions."""

    async def record(self, records: Sequence[DecisionRecord]) -> None:
        """Store the decisions (idempotent for a retried event)."""
        ...


class Sequencer(Protocol):
    """Per-partner event numbers."""

    async def assign_many(self, partner_id: str, event_ids: Sequence[str]) -> dict[str, int]:
        """The partner's numbers for these events, in order; the same on every retry."""
        ...
