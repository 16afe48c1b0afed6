"""Durable accepted events on the embedded broker: journal each edge write, replay the journal at start.

The embedded Tansu broker keeps its log in memory, so a record it acknowledged is gone when the hub dies.
On the embedded default every edge (FHIR REST, Bundles, Da Vinci, MLLP) writes through a
:class:`JournaledPublisher`: it writes the records to the broker and waits for the acknowledgement, as
before, *then* appends them to the control-plane journal (``hub.control.journal``) and only then returns,
so the caller's 2xx/AA comes after both. :class:`JournalAppender` lets appends that arrive together
share one database transaction (group commit: the hot path costs a fraction of a commit per event under
load). When the hub starts a fresh embedded broker, :func:`replay_journal` writes every retained record
back in journal order before any listener opens; the pipeline re-derives everything from them, and
partners see duplicates only with the same ``ce_id`` and the same event number. With an external Kafka
nothing is journaled: acks=all on a replicated topic is the durable write. docs/adr/0012.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.control.journal import NewRecord, append_records, prune_older_than, records_after
from hub.control.sqltypes import utc_now
from hub.errors import HubError, StoreUnavailable
from hub.pipeline.publisher import Outgoing, RecordPublisher
from hub.topics.registry import INGRESS

log = structlog.get_logger(__name__)

#: Journal rows read and written back per broker round trip during a replay.
REPLAY_BATCH = 500


class JournalAppender:
    """Appends records to the journal; appends waiting while a transaction runs share the next one.

    :meth:`append` returns once its records are committed and raises ``StoreUnavailable`` (or the
    store's ``ConfigurationError``) when they could not be: the caller must then not answer 2xx/AA.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._waiting: list[tuple[Sequence[NewRecord], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.transactions = 0  #: how many journal transactions were committed (for tests and benches)

    async def append(self, records: Sequence[NewRecord]) -> None:
        """Journal ``records`` in order, after every record appended before; wait until they are committed."""
        if not records:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((records, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="journal-append")
        await future

    async def close(self) -> None:
        """Wait for the appends already handed over."""
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                async with self._sessions() as session:
                    await append_records(session, [record for records, _ in batch for record in records])
            except Exception as exc:  # noqa: BLE001 - every waiting caller gets the failure, none is left hanging
                failure = exc if isinstance(exc, HubError) else StoreUnavailable(f"journal: {type(exc).__name__}")
                log.warning("journal_append_failed", records=len(batch), error=type(exc).__name__)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(failure)
                continue
            self.transactions += 1
            for _, future in batch:
                if not future.done():
                    future.set_result(None)


class JournaledPublisher:
    """The edges' writer on the embedded broker: broker write and acknowledgement, then the journal.

    Implements ``RecordPublisher`` and ``hub.ports.IngressWriter`` over another ``RecordPublisher``.
    Raises ``BrokerUnavailable`` when the broker did not acknowledge (nothing is journaled) and
    ``StoreUnavailable`` when the journal did not commit (the records are on the broker, but the caller
    answers 503/AE; a retry carries the same ``ce_id``).
    """

    def __init__(self, publisher: RecordPublisher, journal: JournalAppender) -> None:
        self._publisher = publisher
        self._journal = journal

    async def publish(self, topic: str, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        await self.publish_many([Outgoing(topic, key, value, headers)])

    async def publish_many(self, records: Sequence[Outgoing]) -> None:
        await self._publisher.publish_many(records)
        await self._journal.append([NewRecord(r.topic, r.key, r.value, r.headers) for r in records])

    async def write(self, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        """``hub.ports.IngressWriter``: write one accepted input to ``hub.ingress`` and journal it."""
        await self.publish(INGRESS.name, key=key, value=value, headers=headers)


async def replay_journal(
    sessions: async_sessionmaker[AsyncSession], publisher: RecordPublisher, *, batch: int = REPLAY_BATCH
) -> int:
    """Write every journaled record to the broker again, in journal order; return how many.

    ``publisher`` stamps each record's proof again (the journal keeps none). Call it before any edge
    writes, on a broker that lost its log (a fresh embedded broker).
    """
    after, count = 0, 0
    while True:
        async with sessions() as session:
            rows = await records_after(session, after, limit=batch)
        if not rows:
            return count
        await publisher.publish_many([Outgoing(r.topic, r.key, r.value, r.headers) for r in rows])
        after, count = rows[-1].seq, count + len(rows)


async def prune_journal(sessions: async_sessionmaker[AsyncSession], retention: timedelta) -> int:
    """Delete the journaled records older than ``retention``; return how many."""
    async with sessions() as session:
        return await prune_older_than(session, utc_now() - retention)


async def prune_periodically(
    sessions: async_sessionmaker[AsyncSession], retention: timedelta, *, every: timedelta
) -> None:
    """Prune the journal every ``every`` until cancelled; a failed prune is logged and tried again later."""
    while True:
        await asyncio.sleep(every.total_seconds())
        try:
            pruned = await prune_journal(sessions, retention)
        except HubError as exc:
            log.warning("journal_prune_failed", error=type(exc).__name__)
        else:
            if pruned:
                log.info("journal_pruned", records=pruned)
