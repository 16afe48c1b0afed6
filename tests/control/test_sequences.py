"""Delivery numbering: per-partner event numbers are contiguous, start at 1 and never change on retry."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.control.partners import PartnerNotFound, create_partner
from hub.control.sequences import assign_sequence, assign_sequences


async def _partner(session: AsyncSession, partner_id: str = "food-bank") -> str:
    await create_partner(
        session, id=partner_id, kind="cbo", name=partner_id.title(), organization=f"Organization/{partner_id}"
    )
    return partner_id


async def test_numbers_start_at_one_and_are_contiguous(session: AsyncSession) -> None:
    partner = await _partner(session)
    numbers = [await assign_sequence(session, partner, f"evt-{n}") for n in range(5)]
    assert [1, 2, 3, 4, 5] == numbers


async def test_the_same_event_keeps_its_number_and_consumes_none(session: AsyncSession) -> None:
    partner = await _partner(session)
    first = await assign_sequence(session, partner, "evt-a")
    again = await assign_sequence(session, partner, "evt-a")
    following = await assign_sequence(session, partner, "evt-b")
    assert (1, 1, 2) == (first, again, following)


async def test_each_partner_has_its_own_numbering(session: AsyncSession) -> None:
    food_bank = await _partner(session, "food-bank")
    housing = await _partner(session, "housing")
    assert 1 == await assign_sequence(session, food_bank, "evt-a")
    assert 2 == await assign_sequence(session, food_bank, "evt-b")
    assert 1 == await assign_sequence(session, housing, "evt-b")
    assert 2 == await assign_sequence(session, housing, "evt-a")


async def test_concurrent_assignment_of_twenty_events_gives_exactly_one_to_twenty(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        partner = await _partner(session)

    async def assign(event_id: str) -> tuple[str, int]:
        async with sessions() as session:
            return event_id, await assign_sequence(session, partner, event_id)

    assigned = dict(await asyncio.gather(*(assign(f"evt-{n}") for n in range(20))))
    assert list(range(1, 21)) == sorted(assigned.values())
    async with sessions() as session:
        assert assigned == {event: await assign_sequence(session, partner, event) for event in assigned}


async def test_concurrent_retries_of_one_event_agree_without_a_gap(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        partner = await _partner(session)

    async def assign() -> int:
        async with sessions() as session:
            return await assign_sequence(session, partner, "evt-retried")

    numbers = await asyncio.gather(*(assign() for _ in range(10)))
    async with sessions() as session:
        following = await assign_sequence(session, partner, "evt-next")
    assert [1] * 10 == numbers
    assert 2 == following


async def test_an_unknown_partner_is_refused(session: AsyncSession) -> None:
    with pytest.raises(PartnerNotFound):
        await assign_sequence(session, "nobody", "evt-1")


async def test_a_batch_is_numbered_in_order_and_mixes_with_single_assignments(session: AsyncSession) -> None:
    partner = await _partner(session)
    assert 1 == await assign_sequence(session, partner, "evt-0")
    assert {"evt-1": 2, "evt-0": 1, "evt-2": 3} == await assign_sequences(session, partner, ["evt-1", "evt-0", "evt-2"])
    assert {"evt-2": 3, "evt-3": 4, "evt-1": 2} == await assign_sequences(session, partner, ["evt-2", "evt-3", "evt-1"])
    assert 5 == await assign_sequence(session, partner, "evt-4")


async def test_a_batch_naming_an_event_twice_numbers_it_once(session: AsyncSession) -> None:
    partner = await _partner(session)
    assert {"a": 1, "b": 2} == await assign_sequences(session, partner, ["a", "b", "a"])
    assert {} == await assign_sequences(session, partner, [])


async def test_concurrent_batches_share_one_contiguous_numbering(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        partner = await _partner(session)

    async def assign(batch: list[str]) -> dict[str, int]:
        async with sessions() as session:
            return await assign_sequences(session, partner, batch)

    batches = [[f"evt-{b}-{n}" for n in range(5)] + ["shared"] for b in range(4)]
    results = await asyncio.gather(*(assign(batch) for batch in batches))
    numbers = {event: number for result in results for event, number in result.items()}
    assert list(range(1, 22)) == sorted(numbers.values())
    assert 1 == len({result["shared"] for result in results})


async def test_an_unknown_partner_is_refused_for_a_batch(session: AsyncSession) -> None:
    with pytest.raises(PartnerNotFound):
        await assign_sequences(session, "nobody", ["evt-1"])
