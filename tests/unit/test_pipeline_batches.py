"""Batching of the pipeline stages: a batch's patients are resolved together, its decisions and delivery
numbers are stored in one ledger call before anything is delivered, and its outputs are one write."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from hub.consent.decision import Recipient
from hub.consent.model import Policies
from hub.control.audit import DecisionRecord
from hub.errors import InvalidInput, StoreUnavailable
from hub.events import HubEvent, RoutingFacts
from hub.pipeline import normalize, route, stage
from hub.pipeline.ports import BatchPatientIndex, DecisionLedger
from hub.pipeline.publisher import Outgoing
from hub.topics.registry import DLQ, EVENTS, INGRESS
from tests.fakes import (
    FakeAuditLog,
    FakeConsentSource,
    FakeDirectory,
    FakePatientIndex,
    FakePublisher,
    FakeRosterSource,
    FakeSequencer,
)
from tests.records import TEST_PROOF, cloud_event, hub_event, record_of

CBO_A = Recipient(partner_id="cbo-a", kind="cbo", organization="Organization/cbo-a")
CBO_B = Recipient(partner_id="cbo-b", kind="cbo", organization="Organization/cbo-b")
decide = route.engine_decider(Policies())


@pytest.fixture(autouse=True)
def no_retry_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage, "RETRY_PAUSE_S", 0)


@dataclass
class BatchIndex(FakePatientIndex):
    """A FakePatientIndex that also resolves batches; ``refused`` sources are refused as invalid."""

    batches: list[set[str]] = field(default_factory=list)
    singles: list[str] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)

    async def resolve(self, source: str) -> str:
        self.singles.append(source)
        return await super().resolve(source)

    async def resolve_many(self, sources: Collection[str]) -> dict[str, str]:
        self.batches.append(set(sources))
        if self.refused & set(sources):
            raise InvalidInput("source must be at most 512 characters", expression="source")
        return {s: await FakePatientIndex.resolve(self, s) for s in sorted(sources)}


@dataclass
class Ledger(FakeAuditLog):
    """A FakeAuditLog that is a DecisionLedger, numbering like FakeSequencer; ``fail_times`` fails it."""

    sequencer: FakeSequencer = field(default_factory=FakeSequencer)
    calls: list[tuple[int, dict[str, list[str]]]] = field(default_factory=list)
    fail_times: int = 0

    async def record_and_number(
        self, records: Sequence[DecisionRecord], permitted: Mapping[str, Sequence[str]]
    ) -> dict[str, dict[str, int]]:
        if self.fail_times > 0:
            self.fail_times -= 1
            raise StoreUnavailable("database unavailable")
        self.calls.append((len(records), {p: list(ids) for p, ids in permitted.items()}))
        await self.record(records)
        return {p: await self.sequencer.assign_many(p, ids) for p, ids in permitted.items()}


class CountingPublisher(FakePublisher):
    """Counts publish_many calls: one per batch is the contract."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    async def publish_many(self, records: Sequence[Outgoing]) -> None:
        self.writes += 1
        await super().publish_many(records)


def test_the_fakes_are_the_batch_ports_the_stages_look_for() -> None:
    assert isinstance(BatchIndex(), BatchPatientIndex)
    assert isinstance(Ledger(), DecisionLedger)
    assert not isinstance(FakePatientIndex(), BatchPatientIndex)
    assert not isinstance(FakeAuditLog(), DecisionLedger)


async def test_normalize_resolves_a_batchs_patients_in_one_call_and_writes_one_batch_in_order() -> None:
    publisher, patients = CountingPublisher(), BatchIndex()
    batch = [record_of(INGRESS.name, hub_event(mrn=m), cloud_event(f"e{i}"), offset=i)
             for i, m in enumerate(["A", "B", "A", "C"])]
    await normalize.normalize(batch, patients=patients, publisher=publisher, proof=TEST_PROOF)
    assert [{"urn:mrn|A", "urn:mrn|B", "urn:mrn|C"}] == patients.batches
    assert [] == patients.singles
    assert 1 == publisher.writes
    by_source = patients.ids
    assert [("e0", by_source["urn:mrn|A"]), ("e1", by_source["urn:mrn|B"]), ("e2", by_source["urn:mrn|A"]),
            ("e3", by_source["urn:mrn|C"])] == [(h["ce_id"], k.decode()) for _, k, _, h in publisher.published]


async def test_a_source_the_crosswalk_refuses_dead_letters_only_its_record() -> None:
    publisher, patients = FakePublisher(), BatchIndex(refused={"urn:mrn|BAD"})
    batch = [record_of(INGRESS.name, hub_event(mrn=m), cloud_event(f"e{i}"), offset=i)
             for i, m in enumerate(["A", "BAD", "C"])]

    async def work(records: Sequence[Any]) -> None:
        await normalize.normalize(records, patients=patients, publisher=publisher, proof=TEST_PROOF)

    await stage.run_batch(normalize.STAGE, batch, work, publisher)
    assert [(EVENTS.name, "e0"), (DLQ.name, "e1"), (EVENTS.name, "e2")] == [
        (t, h["ce_id"]) for t, _, _, h in publisher.published
    ]
    assert "InvalidInput" in publisher.to(DLQ.name)[0][3]["hub_dlq_reason"]


async def test_a_crosswalk_outage_fails_the_whole_normalize_batch_and_writes_nothing() -> None:
    publisher = FakePublisher()
    patients = BatchIndex(fail_times=1)

    async def failing(sources: Collection[str]) -> dict[str, str]:
        raise StoreUnavailable("database unavailable")

    patients.resolve_many = failing  # type: ignore[method-assign]
    batch = [record_of(INGRESS.name, hub_event(mrn=m), cloud_event(f"e{i}")) for i, m in enumerate("AB")]

    async def work(records: Sequence[Any]) -> None:
        await normalize.normalize(records, patients=patients, publisher=publisher, proof=TEST_PROOF)

    with pytest.raises(StoreUnavailable):
        await stage.run_batch(normalize.STAGE, batch, work, publisher)
    assert [] == publisher.published


async def test_route_stores_a_batchs_decisions_and_numbers_in_one_ledger_call_before_one_delivery() -> None:
    publisher, ledger, sequencer = CountingPublisher(), Ledger(), FakeSequencer()
    batch = [record_of(EVENTS.name, hub_event(performer=p, hub_patient_id="hp-1"), cloud_event(f"e{i}"), offset=i)
             for i, p in enumerate(["Organization/cbo-a", "Organization/cbo-b", "Organization/cbo-a"])]
    await route.route(batch, decide=decide, directory=FakeDirectory([CBO_A, CBO_B]), consents=FakeConsentSource(),
                      audit=ledger, sequencer=sequencer, publisher=publisher, proof=TEST_PROOF)
    assert [(6, {"cbo-a": ["e0", "e2"], "cbo-b": ["e1"]})] == ledger.calls
    assert {} == sequencer.numbers  # the ledger numbered them, in the same call
    assert 1 == publisher.writes
    assert [("partner.cbo-a", "e0", "1"), ("partner.cbo-b", "e1", "1"), ("partner.cbo-a", "e2", "2")] == [
        (t, h["ce_id"], h["ce_sequence"]) for t, _, _, h in publisher.published
    ]


async def test_a_ledger_outage_delivers_nothing_and_the_retried_batch_keeps_its_numbers() -> None:
    publisher, ledger = FakePublisher(), Ledger(fail_times=1)
    batch = [record_of(EVENTS.name, hub_event(hub_patient_id="hp-1"), cloud_event(f"e{i}"), offset=i)
             for i in range(2)]

    async def work(records: Sequence[Any]) -> None:
        await route.route(records, decide=decide, directory=FakeDirectory([CBO_A]), consents=FakeConsentSource(),
                          audit=ledger, sequencer=FakeSequencer(), publisher=publisher, proof=TEST_PROOF)

    with pytest.raises(StoreUnavailable):
        await stage.run_batch(route.STAGE, batch, work, publisher)
    assert ([], []) == (publisher.published, ledger.records)
    await stage.run_batch(route.STAGE, batch, work, publisher)
    await stage.run_batch(route.STAGE, batch, work, publisher)  # redelivered after a lost commit
    assert [("e0", "1"), ("e1", "2"), ("e0", "1"), ("e1", "2")] == [
        (h["ce_id"], h["ce_sequence"]) for *_, h in publisher.published
    ]
    assert 2 == len(ledger.records)


async def test_consents_are_read_while_the_rosters_are_and_rostered_only_patients_after() -> None:
    """The patients with a candidate whatever the rosters say are prefetched concurrently with the roster
    read (the roster read waits until that prefetch started, so a sequential stage would never finish);
    patients whose only candidate is a roster get a second prefetch; a patient with none gets none."""
    prefetch_started = asyncio.Event()

    class Consents(FakeConsentSource):
        async def prefetch(self, hub_patient_ids: Collection[str]) -> None:
            prefetch_started.set()
            await super().prefetch(hub_patient_ids)

    class Rosters(FakeRosterSource):
        async def rostered(self, hub_patient_ids: Collection[str]) -> dict[str, frozenset[str]]:
            await prefetch_started.wait()
            return await super().rostered(hub_patient_ids)

    consents, rosters = Consents(), Rosters(rosters={"cbo-b": {"hp-7"}})
    referral = hub_event(hub_patient_id="hp-1")
    batch = [record_of(EVENTS.name, e, cloud_event(f"e{i}"), offset=i)
             for i, e in enumerate([referral, encounter("hp-7"), encounter("hp-8")])]
    publisher = FakePublisher()
    await asyncio.wait_for(
        route.route(batch, decide=decide, directory=FakeDirectory([CBO_A, CBO_B]), consents=consents,
                    audit=FakeAuditLog(), sequencer=FakeSequencer(), publisher=publisher, proof=TEST_PROOF,
                    rosters=rosters),
        timeout=30,  # a liveness guard, not a measurement
    )
    assert [frozenset({"hp-1"}), frozenset({"hp-7"})] == consents.prefetched
    assert [("partner.cbo-a", "e0"), ("partner.cbo-b", "e1")] == [(t, h["ce_id"]) for t, _, _, h in publisher.published]


def encounter(hub_patient_id: str) -> HubEvent:
    """An admit from hosp-a: it goes only to partners that have the patient on their roster."""
    facts = RoutingFacts(resource_type="Encounter", resource_id="enc-1", sender="hosp-a", patient_source="urn:mrn|7",
                         hub_patient_id=hub_patient_id, status="in-progress", event_kind="admit")
    return HubEvent(facts=facts, body='{"resourceType": "Encounter", "id": "enc-1", "status": "in-progress"}')
