"""The control-plane ports the pipeline stages need (tiny Protocols, faked in unit tests)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol, runtime_checkable

from hub.consent.decision import Recipient
from hub.consent.model import Consent
from hub.control.audit import DecisionRecord


class PatientIndex(Protocol):
    """The identity crosswalk: a source identifier in, the hub patient id out (created on first sight)."""

    async def resolve(self, source: str) -> str:
        """Return the hub patient id for ``source``."""
        ...


@runtime_checkable
class BatchPatientIndex(PatientIndex, Protocol):
    """A PatientIndex that resolves a batch's identifiers together (its misses in one transaction); the
    normalize stage uses it when its index is one."""

    async def resolve_many(self, sources: Collection[str]) -> dict[str, str]:
        """The hub patient id of every given source (created on first sight)."""
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


@runtime_checkable
class DecisionLedger(AuditLog, Protocol):
    """An AuditLog that also numbers the deliveries, in the same transaction as the decisions it records
    (the route stage then costs one control-plane commit per batch instead of one per receiving partner
    plus one for the audit). The stage uses it when its audit log is one."""

    async def record_and_number(
        self, records: Sequence[DecisionRecord], permitted: Mapping[str, Sequence[str]]
    ) -> dict[str, dict[str, int]]:
        """Store the decisions and, per partner id in ``permitted``, that partner's numbers for the given
        event ids (as :meth:`Sequencer.assign_many`); both commit together or neither does."""
        ...


class Sequencer(Protocol):
    """Per-partner event numbers."""

    async def assign_many(self, partner_id: str, event_ids: Sequence[str]) -> dict[str, int]:
        """The partner's numbers for these events, in order; the same on every retry."""
        ...


class ConsentSource(Protocol):
    """The patient consents in force, per hub patient id (cached by implementations)."""

    async def consents_for(self, hub_patient_id: str) -> tuple[Consent, ...]:
        """The current version of every Consent about this patient (any status: the engine reads it)."""
        ...

    async def changed(self, hub_patient_id: str, consent: Consent | None) -> None:
        """A consent-change event of this patient passed the route stage: forget what is cached and, when
        given, take ``consent`` (the version the event carries) as that Consent's current version."""
        ...

    def forget_all(self) -> None:
        """Forget every cached consent: the route stage was (re)assigned partitions, and another worker
        may have applied consent changes of their patients meanwhile."""
        ...

    async def prefetch(self, hub_patient_ids: Collection[str]) -> None:
        """Load the consents of the given patients that are not cached, together (a batch's patients
        cost one read, not one each); ``consents_for`` then answers them from the cache."""
        ...


class RosterSource(Protocol):
    """Roster membership: which partners have a patient on their roster (cached by implementations)."""

    async def rostered(self, hub_patient_ids: Collection[str]) -> Mapping[str, frozenset[str]]:
        """For every given hub patient id, the ids of the partners whose roster holds the patient (empty
        when none does)."""
        ...
