"""The SQL stores' batch forms: a batch's decisions and delivery numbers commit together (or not at all),
and a batch's unknown patients are created in one transaction with the ids single lookups would give."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub import events
from hub.control import crosswalk
from hub.control.audit import DecisionRecord, list_decisions
from hub.control.partners import PartnerNotFound, create_partner
from hub.control.sequences import assign_sequences
from hub.errors import InvalidInput
from hub.pipeline.stores import SqlAuditLog, SqlPatientIndex


def _decision(event_id: str, recipient: str, verdict: str = "permit") -> DecisionRecord:
    return DecisionRecord(event_id=event_id, hub_patient_id="hp-" + "0" * 32, recipient_id=recipient,
                          verdict=verdict, rule="test", reason="because", purpose="TREAT",  # type: ignore[arg-type]
                          resource_type="ServiceRequest", decided_at=events.now())


async def _partner(sessions: async_sessionmaker[AsyncSession], partner_id: str) -> None:
    async with sessions() as session:
        await create_partner(session, id=partner_id, kind="cbo", name=partner_id.title(),
                             organization=f"Organization/{partner_id}")


class CountingSessions:
    """A session factory that counts the sessions opened (one per transaction in these stores)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self.opened = 0

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[AsyncSession]:
        self.opened += 1
        async with self._sessions() as session:
            yield session


async def test_decisions_and_numbers_of_a_batch_are_stored_together_and_a_retry_changes_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await _partner(sessions, "cbo-a")
    await _partner(sessions, "cbo-b")
    ledger = SqlAuditLog(sessions)
    records = [_decision("e1", "cbo-a"), _decision("e1", "cbo-b", "deny"), _decision("e2", "cbo-a")]
    permitted = {"cbo-a": ["e1", "e2"]}
    first = await ledger.record_and_number(records, permitted)
    again = await ledger.record_and_number(records, permitted)
    assert {"cbo-a": {"e1": 1, "e2": 2}} == first == again
    async with sessions() as session:
        stored = await list_decisions(session, hub_patient_id="hp-" + "0" * 32)
        assert {"cbo-a": {"e3": 3}} == {"cbo-a": await assign_sequences(session, "cbo-a", ["e3"])}
    assert [("e1", "cbo-a"), ("e1", "cbo-b"), ("e2", "cbo-a")] == [(r.event_id, r.recipient_id) for r in stored]


async def test_a_failed_batch_stores_no_decision_and_consumes_no_number(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await _partner(sessions, "cbo-a")
    ledger = SqlAuditLog(sessions)
    with pytest.raises(PartnerNotFound):  # cbo-a is numbered first (sorted), then the unknown partner fails
        await ledger.record_and_number([_decision("e1", "cbo-a"), _decision("e1", "zz-gone")],
                                       {"cbo-a": ["e1"], "zz-gone": ["e1"]})
    async with sessions() as session:
        assert [] == await list_decisions(session, event_id="e1")
        assert {"e9": 1} == await assign_sequences(session, "cbo-a", ["e9"])


async def test_an_invalid_decision_fails_the_batch_before_anything_is_stored(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await _partner(sessions, "cbo-a")
    with pytest.raises(InvalidInput):
        await SqlAuditLog(sessions).record_and_number([_decision("e1", "cbo-a"), _decision("", "cbo-a")],
                                                      {"cbo-a": ["e1"]})
    async with sessions() as session:
        assert [] == await list_decisions(session, recipient_id="cbo-a")


async def test_a_batch_of_patients_gets_the_ids_single_lookups_give_with_one_transaction_for_the_misses(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        known = await crosswalk.resolve_patient(session, "urn:mrn|known")
    counting = CountingSessions(sessions)
    index = SqlPatientIndex(counting)  # type: ignore[arg-type]
    cached = await index.resolve("urn:mrn|cached")
    counting.opened = 0
    found = await index.resolve_many(["urn:mrn|cached", "urn:mrn|known", "urn:mrn|new-1", "urn:mrn|new-2",
                                      "urn:mrn|new-1"])
    assert 1 == counting.opened
    assert {"urn:mrn|cached", "urn:mrn|known", "urn:mrn|new-1", "urn:mrn|new-2"} == found.keys()
    assert (cached, known) == (found["urn:mrn|cached"], found["urn:mrn|known"])
    assert found["urn:mrn|new-1"] != found["urn:mrn|new-2"]
    async with sessions() as session:
        assert found["urn:mrn|new-2"] == await crosswalk.resolve_patient(session, "urn:mrn|new-2")
    assert found == await index.resolve_many(list(found))
    assert 1 == counting.opened  # everything was cached by then


async def test_a_blank_source_in_a_batch_creates_no_patient(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        with pytest.raises(InvalidInput) as refused:
            await crosswalk.resolve_patients(session, ["urn:mrn|fine", "  "])
        assert "urn:mrn" not in str(refused.value)
        assert {} == await crosswalk._lookup_many(session, ["urn:mrn|fine"])
