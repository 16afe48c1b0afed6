"""The journal of accepted records: append, read in order, prune by age.

Holds :func:`append_records`, :func:`records_after` and :func:`prune_older_than`. It touches only the
``accepted_records`` table (migration 0008). A row is a record an edge wrote to a ``hub.*`` topic and
answered 2xx/AA for, as the edge handed it to the publisher: topic, key, value and headers *without* the
record proof, which the publisher stamps again when the record is replayed (the proof key is persistent,
docs/adr/0010). Rows are read back in ``seq`` order, the order in which their transactions committed.
Why the journal exists and when it is written and replayed: docs/adr/0012-durable-accepted-events.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import NamedTuple

import orjson
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.control.models import EVENT_ID_MAX, AcceptedRecordRow
from hub.control.sqltypes import utc_now
from hub.control.store_errors import guarded

#: The header that carries the record proof; never journaled (it is stamped again on replay).
PROOF_HEADER = "hub_proof"


class JournaledRecord(NamedTuple):
    """One journaled record, as it is written again on replay."""

    seq: int
    topic: str
    key: bytes
    value: bytes
    headers: dict[str, str]


class NewRecord(NamedTuple):
    """A record to journal (the shape of ``hub.pipeline.publisher.Outgoing``)."""

    topic: str
    key: bytes
    value: bytes
    headers: Mapping[str, str]


async def append_records(session: AsyncSession, records: Sequence[NewRecord]) -> None:
    """Append ``records`` in order, in one transaction. Commits.

    Raises ``StoreUnavailable`` when the database does not answer (the caller must not answer 2xx/AA).
    """
    if not records:
        return
    now = utc_now()
    rows = [
        {
            "topic": r.topic,
            "key": r.key,
            "value": r.value,
            "headers": orjson.dumps({k: v for k, v in r.headers.items() if k != PROOF_HEADER}).decode(),
            "ce_id": _ce_id(r.headers),
            "accepted_at": now,
        }
        for r in records
    ]
    async with guarded(session, "journal_append"):
        await session.execute(insert(AcceptedRecordRow), rows)
        await session.commit()


async def records_after(session: AsyncSession, after: int, *, limit: int = 500) -> list[JournaledRecord]:
    """Up to ``limit`` journaled records with ``seq`` greater than ``after``, in ``seq`` order."""
    statement = (
        select(AcceptedRecordRow.seq, AcceptedRecordRow.topic, AcceptedRecordRow.key, AcceptedRecordRow.value,
               AcceptedRecordRow.headers)
        .where(AcceptedRecordRow.seq > after)
        .order_by(AcceptedRecordRow.seq)
        .limit(limit)
    )
    async with guarded(session, "journal_read"):
        rows = (await session.execute(statement)).all()
        await session.commit()
    return [
        JournaledRecord(row.seq, row.topic, bytes(row.key), bytes(row.value), orjson.loads(row.headers))
        for row in rows
    ]


async def prune_older_than(session: AsyncSession, cutoff: datetime) -> int:
    """Delete the records accepted before ``cutoff``; return how many. Commits."""
    async with guarded(session, "journal_prune"):
        result = await session.execute(
            delete(AcceptedRecordRow)
            .where(AcceptedRecordRow.accepted_at < cutoff)
            .execution_options(synchronize_session=False)
        )
        await session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


def _ce_id(headers: Mapping[str, str]) -> str | None:
    ce_id = headers.get("ce_id")
    return ce_id[:EVENT_ID_MAX] if ce_id else None
