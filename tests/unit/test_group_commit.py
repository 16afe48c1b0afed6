"""Group commit (pure asyncio): concurrent submits share one batch, each caller gets exactly its own results,
and a failure reaches only the callers it belongs to."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.control.group_commit import GroupCommitter
from hub.errors import InvalidInput, StoreUnavailable


class Recorder:
    """A batch operation that doubles numbers, refuses negative ones (the whole batch fails) and records
    every batch it ran."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = gate

    async def run(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        if any(item < 0 for item in items):
            raise InvalidInput("negative")
        return [item * 2 for item in items]


async def test_a_lone_caller_runs_at_once_in_a_batch_of_its_own() -> None:
    recorder = Recorder()
    committer = GroupCommitter(recorder.run)
    assert [2, 4] == await committer.submit([1, 2])
    assert [[1, 2]] == recorder.batches


async def test_callers_arriving_while_a_batch_runs_share_the_next_one_and_get_their_own_results() -> None:
    gate = asyncio.Event()
    recorder = Recorder(gate)
    committer = GroupCommitter(recorder.run)
    first = asyncio.create_task(committer.submit([1]))
    await asyncio.sleep(0)  # the first batch is running (held at the gate)
    others = [asyncio.create_task(committer.submit([10 * n, 10 * n + 1])) for n in range(1, 6)]
    await asyncio.sleep(0)
    gate.set()
    assert [2] == await first
    assert [[20 * n, 20 * n + 2] for n in range(1, 6)] == [await task for task in others]
    assert [[1], [10, 11, 20, 21, 30, 31, 40, 41, 50, 51]] == recorder.batches


async def test_a_failing_caller_fails_alone_and_the_others_of_its_batch_succeed() -> None:
    gate = asyncio.Event()
    recorder = Recorder(gate)
    committer = GroupCommitter(recorder.run)
    blocker = asyncio.create_task(committer.submit([0]))
    await asyncio.sleep(0)
    good = asyncio.create_task(committer.submit([1]))
    bad = asyncio.create_task(committer.submit([-1, 5]))
    also_good = asyncio.create_task(committer.submit([2]))
    await asyncio.sleep(0)
    gate.set()
    await blocker
    assert [2] == await good
    assert [4] == await also_good
    with pytest.raises(InvalidInput):
        await bad
    # the shared batch failed, then each caller ran alone
    assert [[0], [1, -1, 5, 2], [1], [-1, 5], [2]] == recorder.batches


async def test_batches_are_bounded_but_a_caller_is_never_split() -> None:
    gate = asyncio.Event()
    recorder = Recorder(gate)
    committer = GroupCommitter(recorder.run, max_batch=3)
    blocker = asyncio.create_task(committer.submit([0]))
    await asyncio.sleep(0)
    tasks = [asyncio.create_task(committer.submit(items)) for items in ([1, 2], [3, 4], [5], [6, 7, 8, 9])]
    await asyncio.sleep(0)
    gate.set()
    await blocker
    await asyncio.gather(*tasks)
    assert [[0], [1, 2], [3, 4, 5], [6, 7, 8, 9]] == recorder.batches


async def test_callers_still_waiting_when_the_committer_is_cancelled_get_a_retryable_error() -> None:
    never = asyncio.Event()
    committer = GroupCommitter(Recorder(never).run)
    running = asyncio.create_task(committer.submit([1]))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(committer.submit([2]))
    await asyncio.sleep(0)
    assert committer._flusher is not None
    committer._flusher.cancel()
    with pytest.raises((StoreUnavailable, asyncio.CancelledError)):
        await running
    with pytest.raises(StoreUnavailable):
        await waiting


def test_max_batch_must_allow_one_item() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommitter(Recorder().run, max_batch=0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(min_value=-3, max_value=50), min_size=1, max_size=5), min_size=1, max_size=12),
       st.integers(min_value=1, max_value=8))
def test_every_caller_gets_what_it_would_have_got_alone(calls: list[list[int]], max_batch: int) -> None:
    """Whatever the mix of callers, failures and batch bounds: results as if each caller ran alone."""

    async def scenario() -> list[object]:
        committer = GroupCommitter(Recorder().run, max_batch=max_batch)
        outcomes = await asyncio.gather(*(committer.submit(items) for items in calls), return_exceptions=True)
        return list(outcomes)

    outcomes = asyncio.run(scenario())
    for items, outcome in zip(calls, outcomes, strict=True):
        if any(item < 0 for item in items):
            assert isinstance(outcome, InvalidInput)
        else:
            assert [item * 2 for item in items] == outcome
