"""In-memory fakes of the ports in ``hub.ports`` and ``hub.pipeline.ports``, for unit tests of edges and pure code."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from hub.consent.decision import Recipient
from hub.consent.model import Consent
from hub.control.audit import DecisionRecord
from hub.errors import BrokerUnavailable, StoreUnavailable
from hub.pipeline.publisher import Outgoing
from hub.ports import Principal


@dataclass
class FakeAuthenticator:
    """Maps fixed tokens to principals."""

    tokens: dict[str, Principal] = field(default_factory=dict)

    async def authenticate(self, token: str) -> Principal | None:
        return self.tokens.get(token)


@dataclass
class FakeIngressWriter:
    """Records writes; set ``fail`` to simulate a broker that does not acknowledge."""

    written: list[tuple[bytes, bytes, dict[str, str]]] = field(default_factory=list)
    fail: bool = False

    async def write(self, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        if self.fail:
            raise BrokerUnavailable("broker did not acknowledge")
        self.written.append((key, value, headers))


@dataclass
class FakePatientIndex:
    """Crosswalk in a dict; ``fail_times`` simulates an unavailable database."""

    ids: dict[str, str] = field(default_factory=dict)
    fail_times: int = 0

    async def resolve(self, source: str) -> str:
        if self.fail_times > 0:
            self.fail_times -= 1
            raise StoreUnavailable("database unavailable")
        return self.ids.setdefault(source, f"hp-{len(self.ids) + 1}")


@dataclass
class FakeDirectory:
    """A fixed list of active partners."""

    active: list[Recipient] = field(default_factory=list)

    async def partners(self, *, named: Collection[str]) -> list[Recipient]:
        return list(self.active)


@dataclass
class FakeAuditLog:
    """Decisions in a list, idempotent like the real table."""

    records: list[DecisionRecord] = field(default_factory=list)

    async def record(self, records: Sequence[DecisionRecord]) -> None:
        seen = {(r.event_id, r.recipient_id, r.verdict, r.rule) for r in self.records}
        self.records.extend(r for r in records if (r.event_id, r.recipient_id, r.verdict, r.rule) not in seen)


@dataclass
class FakeSequencer:
    """Per-partner counters, idempotent per (partner, event)."""

    numbers: dict[tuple[str, str], int] = field(default_factory=dict)

    async def assign_many(self, partner_id: str, event_ids: Sequence[str]) -> dict[str, int]:
        for event_id in event_ids:
            key = (partner_id, event_id)
            if key not in self.numbers:
                self.numbers[key] = 1 + sum(1 for p, _ in self.numbers if p == partner_id)
        return {event_id: self.numbers[(partner_id, event_id)] for event_id in event_ids}


@dataclass
class FakePublisher:
    """Records publishes; ``fail_times`` simulates a broker that does not acknowledge."""

    published: list[tuple[str, bytes, bytes, dict[str, str]]] = field(default_factory=list)
    fail_times: int = 0

    async def publish(self, topic: str, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        if self.fail_times > 0:
            self.fail_times -= 1
            raise BrokerUnavailable("broker did not acknowledge")
        self.published.append((topic, key, value, headers))

    async def publish_many(self, records: Sequence[Outgoing]) -> None:
        if self.fail_times > 0:
            self.fail_times -= 1
            raise BrokerUnavailable("broker did not acknowledge")
        self.published.extend((r.topic, r.key, r.value, r.headers) for r in records)

    def to(self, topic: str) -> list[tuple[str, bytes, bytes, dict[str, str]]]:
        return [p for p in self.published if p[0] == topic]


@dataclass
class FakeConsentSource:
    """Consents per hub patient in a dict; ``changed`` applies the carried version and counts the calls."""

    consents: dict[str, tuple[Consent, ...]] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)
    forgotten: int = 0
    prefetched: list[frozenset[str]] = field(default_factory=list)

    async def consents_for(self, hub_patient_id: str) -> tuple[Consent, ...]:
        return self.consents.get(hub_patient_id, ())

    async def changed(self, hub_patient_id: str, consent: Consent | None) -> None:
        self.changes.append(hub_patient_id)
        if consent is not None:
            kept = tuple(c for c in self.consents.get(hub_patient_id, ()) if c.id != consent.id)
            self.consents[hub_patient_id] = (*kept, consent)

    def forget_all(self) -> None:
        self.forgotten += 1

    async def prefetch(self, hub_patient_ids: Collection[str]) -> None:
        self.prefetched.append(frozenset(hub_patient_ids))


@dataclass
class FakeRosterSource:
    """Rosters in a dict (partner id -> hub patient ids); ``asked`` records every batch of patients asked about."""

    rosters: dict[str, set[str]] = field(default_factory=dict)
    asked: list[frozenset[str]] = field(default_factory=list)

    async def rostered(self, hub_patient_ids: Collection[str]) -> dict[str, frozenset[str]]:
        self.asked.append(frozenset(hub_patient_ids))
        return {
            patient: frozenset(partner for partner, patients in self.rosters.items() if patient in patients)
            for patient in hub_patient_ids
        }

    def add(self, partner_id: str, hub_patient_id: str) -> None:
        self.rosters.setdefault(partner_id, set()).add(hub_patient_id)

    def remove(self, partner_id: str, hub_patient_id: str) -> None:
        self.rosters.get(partner_id, set()).discard(hub_patient_id)
