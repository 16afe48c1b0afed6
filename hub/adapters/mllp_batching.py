"""The MLLP edge's produce stage: concurrent ingress writes share one broker round trip (pure asyncio).

Every MLLP connection hands its accepted messages to one :class:`IngressBatches` per listener.
:meth:`IngressBatches.submit` enqueues a record *synchronously* (so a connection that submits in the
order its frames came keeps that order on ``hub.ingress``) and returns a future that resolves once the
broker acknowledged the record - and, on the embedded default, once it was journaled
(``hub.broker.journal``): the caller answers ``AA`` only then.

Batches form by themselves: the first record starts a batch at once (a lone message waits for
nothing); records submitted while a batch is in flight go together into the next one, at most
``max_batch`` records. Under load, messages from many connections, and the pipelined messages of one
connection, share one ``publish_many`` and one journal transaction instead of one ``send_and_wait``
each. Batches run one after another, in submission order.

Failures: with a writer that has ``publish_many`` (the hub's ``EdgePublisher``) a batch is all or
nothing, as that port promises: when it raises, *every* record of that batch gets the error (none of
them counts as acknowledged; each sender is answered AE and resends), and the records of the batches
before and after are unaffected. A writer with ``write`` only (the tests' fakes) is called once per
record, concurrently, and each record gets its own result. Not
:class:`hub.control.group_commit.GroupCommitter`: its submit is a coroutine (the record is enqueued only
when it first runs, so the order of two submits is the scheduler's) and it retries a failed batch
caller by caller, which for a broker that is down would cost one more timeout per message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from hub.errors import BrokerUnavailable
from hub.pipeline.publisher import Outgoing
from hub.ports import IngressWriter
from hub.topics.registry import INGRESS


@runtime_checkable
class BatchWriter(Protocol):
    """A writer that takes many records in one call (``hub.pipeline.publisher.RecordPublisher``)."""

    async def publish_many(self, records: Sequence[Outgoing]) -> None:
        """Write ``records`` in order; return after all were acknowledged, raise when any was not."""
        ...


class _Entry(NamedTuple):
    record: Outgoing
    done: asyncio.Future[None]


class IngressBatches:
    """Batches concurrent writes to ``hub.ingress`` into ``publish_many`` calls (see the module docstring)."""

    def __init__(self, ingress: IngressWriter, *, max_batch: int = 256) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._ingress = ingress
        self._max_batch = max_batch
        self._waiting: deque[_Entry] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0  #: how many batches were written (for tests and benches)

    @property
    def queued(self) -> int:
        """Records submitted and not yet handed to a batch (for tests and benches)."""
        return len(self._waiting)

    def submit(self, *, key: bytes, value: bytes, headers: dict[str, str]) -> asyncio.Future[None]:
        """Enqueue one record now; the future resolves when it was acknowledged (or raises why not).

        Records are written in the order they were submitted. Cancelling the future does not take the
        record back: it may still be written (with its ``ce_id``, so a resend is de-duplicated).
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_observed)  # a caller that went away must not leave an unretrieved error
        self._waiting.append(_Entry(Outgoing(INGRESS.name, key, value, headers), done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="mllp-ingress-batches")
        return done

    async def close(self) -> None:
        """Wait until the records already submitted were written (or failed)."""
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher

    async def _flush(self) -> None:
        try:
            while self._waiting:
                count = min(len(self._waiting), self._max_batch)
                batch = [self._waiting.popleft() for _ in range(count)]
                self.batches += 1
                await self._write(batch)
        finally:  # cancelled: nobody is left waiting for ever
            while self._waiting:
                _settle(self._waiting.popleft().done, BrokerUnavailable("the MLLP listener is stopping"))

    async def _write(self, batch: Sequence[_Entry]) -> None:
        try:
            if isinstance(self._ingress, BatchWriter):
                await self._ingress.publish_many([entry.record for entry in batch])
                results: Sequence[BaseException | None] = [None] * len(batch)
            else:
                writes = (
                    self._ingress.write(key=e.record.key, value=e.record.value, headers=e.record.headers)
                    for e in batch
                )
                results = await asyncio.gather(*writes, return_exceptions=True)
        except Exception as exc:  # noqa: BLE001 - every record of the batch gets it, none is left hanging
            results = [exc] * len(batch)
        except asyncio.CancelledError:
            for entry in batch:
                _settle(entry.done, BrokerUnavailable("the MLLP listener is stopping"))
            raise
        for entry, result in zip(batch, results, strict=True):
            _settle(entry.done, result)


def _settle(done: asyncio.Future[None], result: BaseException | None) -> None:
    if done.done():
        return
    if result is None:
        done.set_result(None)
    elif isinstance(result, Exception):
        done.set_exception(result)
    else:  # a write cancelled under us: not acknowledged
        done.set_exception(BrokerUnavailable("the write was cancelled before the broker acknowledged it"))


def _observed(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()
