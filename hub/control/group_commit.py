"""Group commit: concurrent calls of one batched database operation share one transaction (pure asyncio).

:class:`GroupCommitter` runs ``run_batch`` over the items of every caller waiting at the moment the
previous batch finished (at most ``max_batch`` items), so under load many requests cost one transaction
and one commit, and with a single caller nothing waits at all (its batch starts at once). Each caller
gets exactly its own results. When a batch of several callers fails, each caller's items run again on
their own: a failure (a bad write, a conflict) reaches only the callers it belongs to, never the others.
With ``retry_concurrently`` those single runs go at once rather than one after the other (for a batch
whose failure may be a timeout, such as a broker write: no caller then waits for the others' timeouts).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from hub.errors import StoreUnavailable

Item = TypeVar("Item")
Result = TypeVar("Result")

BatchFn = Callable[[Sequence[Item]], Awaitable[list[Result]]]


class GroupCommitter(Generic[Item, Result]):
    """Batches concurrent :meth:`submit` calls into calls of ``run_batch`` (see the module docstring).

    ``run_batch(items)`` must return one result per item, in order, all or nothing (one transaction).
    """

    def __init__(
        self, run_batch: BatchFn[Item, Result], *, max_batch: int = 500, retry_concurrently: bool = False
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._retry_concurrently = retry_concurrently
        self._waiting: list[tuple[Sequence[Item], asyncio.Future[list[Result]]]] = []
        self._running: list[tuple[Sequence[Item], asyncio.Future[list[Result]]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0  #: how many batches ran (for tests and benches)

    @property
    def waiting(self) -> int:
        """How many callers wait for the next batch (for tests and metrics)."""
        return len(self._waiting)

    async def submit(self, items: Sequence[Item]) -> list[Result]:
        """Run ``items`` (atomically, with whatever else is waiting); return their results in order."""
        if not items:
            return []
        future: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
        self._waiting.append((items, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="group-commit")
        return await future

    async def close(self) -> None:
        """Wait for the batches already handed over."""
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher

    def _next_batch(self) -> list[tuple[Sequence[Item], asyncio.Future[list[Result]]]]:
        batch: list[tuple[Sequence[Item], asyncio.Future[list[Result]]]] = []
        size = 0
        while self._waiting and (not batch or size + len(self._waiting[0][0]) <= self._max_batch):
            entry = self._waiting.pop(0)
            batch.append(entry)
            size += len(entry[0])
        return batch

    async def _flush(self) -> None:
        try:
            await self._drain()
        finally:  # cancelled (shutdown): nobody is left waiting for ever
            waiting, self._waiting, self._running = self._running + self._waiting, [], []
            for _, future in waiting:
                _fail(future, StoreUnavailable("the store is shutting down; retry"))

    async def _drain(self) -> None:
        while self._waiting:
            batch = [entry for entry in self._next_batch() if not entry[1].done()]  # skip callers gone
            if not batch:
                continue
            self._running = batch
            self.batches += 1
            try:
                results = await self._run_batch([item for items, _ in batch for item in items])
            except Exception as exc:  # noqa: BLE001 - handed to the callers, never lost
                if len(batch) == 1:
                    _fail(batch[0][1], exc)
                    continue
                if self._retry_concurrently:
                    await asyncio.gather(*(self._run_alone(items, future) for items, future in batch))
                    continue
                for items, future in batch:  # each caller alone: a failure reaches only its own
                    await self._run_alone(items, future)
                continue
            offset = 0
            for items, future in batch:
                if not future.done():
                    future.set_result(results[offset : offset + len(items)])
                offset += len(items)

    async def _run_alone(self, items: Sequence[Item], future: asyncio.Future[list[Result]]) -> None:
        self.batches += 1
        try:
            results = await self._run_batch(items)
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            _fail(future, exc)
            return
        if not future.done():
            future.set_result(results)


def _fail(future: asyncio.Future[list[Result]], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
