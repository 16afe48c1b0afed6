"""The journal of accepted records (``hub.control.journal`` and ``hub.broker.journal``): what an edge wrote
is kept in order, without its proof, read back page by page, pruned by age, appended with group commit,
and replayed into a broker in the order it was accepted."""

# Asserts put the expected value first (assert expected == actual).

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.broker.journal import JournalAppender, JournaledPublisher, prune_journal, replay_journal
from hub.control.journal import NewRecord, append_records, records_after
from hub.control.models import AcceptedRecordRow
from hub.errors import BrokerUnavailable, ConfigurationError
from hub.pipeline.publisher import Outgoing
from tests.fakes import FakePublisher


def _record(n: int, topic: str = "hub.ingress") -> NewRecord:
    return NewRecord(topic, f"k{n}".encode(), f"v{n}".encode(), {"ce_id": f"evt-{n}", "hub_proof": "stale"})


async def _all(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[str, bytes, bytes, dict[str, str]]]:
    async with sessions() as session:
        return [(r.topic, r.key, r.value, r.headers) for r in await records_after(session, 0, limit=10_000)]


async def test_appended_records_come_back_in_order_without_their_proof(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        await append_records(session, [_record(1), _record(2, "hub.events")])
        await append_records(session, [_record(3)])
    assert [
        ("hub.ingress", b"k1", b"v1", {"ce_id": "evt-1"}),
        ("hub.events", b"k2", b"v2", {"ce_id": "evt-2"}),
        ("hub.ingress", b"k3", b"v3", {"ce_id": "evt-3"}),
    ] == await _all(sessions)


async def test_records_after_pages_through_the_journal_by_sequence(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        await append_records(session, [_record(n) for n in range(5)])
        first = await records_after(session, 0, limit=2)
        rest = await records_after(session, first[-1].seq, limit=10)
    assert [b"v0", b"v1"] == [r.value for r in first]
    assert [b"v2", b"v3", b"v4"] == [r.value for r in rest]
    assert sorted(r.seq for r in first + rest) == [r.seq for r in first + rest]


async def test_pruning_deletes_only_records_older_than_the_retention(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        await append_records(session, [_record(1), _record(2)])
        await session.execute(
            update(AcceptedRecordRow).where(AcceptedRecordRow.value == b"v1")
            .values(accepted_at=datetime.now(UTC) - timedelta(hours=2))
        )
        await session.commit()
    assert 1 == await prune_journal(sessions, timedelta(hours=1))
    assert [b"v2"] == [value for _, _, value, _ in await _all(sessions)]


async def test_concurrent_appends_share_one_transaction_and_keep_each_callers_order(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    appender = JournalAppender(sessions)
    await asyncio.gather(*(appender.append([_record(2 * n), _record(2 * n + 1)]) for n in range(20)))
    assert 1 == appender.transactions
    values = [value for _, _, value, _ in await _all(sessions)]
    assert 40 == len(values)
    for n in range(20):
        assert values.index(f"v{2 * n}".encode()) + 1 == values.index(f"v{2 * n + 1}".encode())


async def test_a_journal_that_cannot_commit_fails_every_waiting_append(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The journal table is gone (a database behind the code): every caller gets the store's error, so none
    answers 2xx/AA, and a later append still works once the table is back."""
    async with sessions() as session:
        await session.execute(text("ALTER TABLE accepted_records RENAME TO accepted_records_away"))
        await session.commit()
    appender = JournalAppender(sessions)
    results = await asyncio.gather(*(appender.append([_record(n)]) for n in range(3)), return_exceptions=True)
    assert [ConfigurationError] * 3 == [type(r) for r in results]
    assert 0 == appender.transactions
    async with sessions() as session:
        await session.execute(text("ALTER TABLE accepted_records_away RENAME TO accepted_records"))
        await session.commit()
    await appender.append([_record(9)])
    assert [b"v9"] == [value for _, _, value, _ in await _all(sessions)]


async def test_the_edge_writer_journals_only_what_the_broker_acknowledged(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    broker = FakePublisher(fail_times=1)
    writer = JournaledPublisher(broker, JournalAppender(sessions))
    with pytest.raises(BrokerUnavailable):
        await writer.write(key=b"k0", value=b"v0", headers={"ce_id": "evt-0"})
    await writer.write(key=b"k1", value=b"v1", headers={"ce_id": "evt-1"})
    await writer.publish("hub.events", key=b"k2", value=b"v2", headers={"ce_id": "evt-2"})
    assert [("hub.ingress", b"k1", b"v1", {"ce_id": "evt-1"}), ("hub.events", b"k2", b"v2", {"ce_id": "evt-2"})] == (
        broker.published
    )
    assert broker.published == await _all(sessions)


async def test_replay_writes_every_journaled_record_again_in_journal_order(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        await append_records(session, [_record(n, "hub.events" if n % 3 == 0 else "hub.ingress") for n in range(7)])
    broker = FakePublisher()
    assert 7 == await replay_journal(sessions, broker, batch=3)
    assert [Outgoing(*r) for r in await _all(sessions)] == [Outgoing(*p) for p in broker.published]
    assert [f"v{n}".encode() for n in range(7)] == [value for _, _, value, _ in broker.published]


async def test_a_replay_the_broker_does_not_acknowledge_raises(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        await append_records(session, [_record(1)])
    with pytest.raises(BrokerUnavailable):
        await replay_journal(sessions, FakePublisher(fail_times=1))
