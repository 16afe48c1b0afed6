"""Delivery numbering: the per-partner event number carried by each event on ``partner.<id>``.

Holds :func:`assign_sequence`. It touches only ``partner_sequences`` (one counter row per partner) and
``partner_event_numbers`` (one row per partner and event) through the session it is given.

How it stays contiguous and idempotent under concurrency: the write transaction starts with
``UPDATE partner_sequences SET last_number = last_number + 1 ... RETURNING``, which takes the partner's
row lock on PostgreSQL and the database write lock on SQLite, so assignments for one partner are
serialised. Holding that lock it looks for an existing number for the event (PostgreSQL READ COMMITTED
sees rows committed by the transaction it waited for); if one exists it rolls back, giving the
increment back, so no number is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.control.models import PartnerEventNumberRow, PartnerRow, PartnerSequenceRow
from hub.control.partners import PartnerNotFound
from hub.control.sqltypes import utc_now
from hub.control.store_errors import guarded
from hub.control.upsert import insert_ignoring_conflicts
from hub.control.validation import require_text

EVENT_ID_MAX: Final = 255
PARTNER_ID_MAX: Final = 63


async def _existing_number(session: AsyncSession, partner_id: str, event_id: str) -> int | None:
    statement = select(PartnerEventNumberRow.number).where(
        PartnerEventNumberRow.partner_id == partner_id, PartnerEventNumberRow.event_id == event_id
    )
    return await session.scalar(statement)


async def _increment(session: AsyncSession, partner_id: str) -> int | None:
    statement = (
        update(PartnerSequenceRow)
        .where(PartnerSequenceRow.partner_id == partner_id)
        .values(last_number=PartnerSequenceRow.last_number + 1)
        .returning(PartnerSequenceRow.last_number)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def _ensure_counter(session: AsyncSession, partner_id: str) -> None:
    """Create the partner's counter row if it is missing (partners created outside create_partner)."""
    if await session.scalar(select(PartnerRow.id).where(PartnerRow.id == partner_id)) is None:
        raise PartnerNotFound
    dialect = session.get_bind().dialect.name
    row = {"partner_id": partner_id, "last_number": 0}
    await session.execute(insert_ignoring_conflicts(dialect, PartnerSequenceRow, [row], ["partner_id"]))


async def _assign(session: AsyncSession, partner_id: str, event_id: str) -> int:
    number = await _increment(session, partner_id)
    if number is None:
        await _ensure_counter(session, partner_id)
        number = await _increment(session, partner_id)
        if number is None:
            raise PartnerNotFound
    existing = await _existing_number(session, partner_id, event_id)
    if existing is not None:
        await session.rollback()
        return existing
    values = {"partner_id": partner_id, "event_id": event_id, "number": number, "assigned_at": utc_now()}
    await session.execute(insert(PartnerEventNumberRow).values(values))
    await session.commit()
    return number


async def assign_sequence(session: AsyncSession, partner_id: str, event_id: str) -> int:
    """The partner's event number for ``event_id``: 1, 2, 3... per partner, the same on every retry. Commits.

    Raises :class:`hub.control.partners.PartnerNotFound` for an unknown partner.
    """
    require_text("partner_id", partner_id, PARTNER_ID_MAX)
    require_text("event_id", event_id, EVENT_ID_MAX)
    async with guarded(session, "assign_sequence"):
        existing = await _existing_number(session, partner_id, event_id)
        if existing is not None:
            await session.commit()
            return existing
        try:
            return await _assign(session, partner_id, event_id)
        except IntegrityError:
            # Only reachable if the lock above was bypassed; the number for the event exists: read it.
            await session.rollback()
            existing = await _existing_number(session, partner_id, event_id)
            if existing is None:
                raise
            await session.commit()
            return existing


async def assign_sequences(session: AsyncSession, partner_id: str, event_ids: Sequence[str]) -> dict[str, int]:
    """The partner's event numbers for a batch of events, in the order given; one transaction. Commits.

    Same guarantees as :func:`assign_sequence`: idempotent per (partner, event), contiguous per partner,
    serialised per partner by the counter row. Events already numbered keep their number; the new ones
    take the next numbers in order. Raises ``PartnerNotFound`` for an unknown partner.
    """
    async with guarded(session, "assign_sequences"):
        numbers = await number_events(session, partner_id, event_ids)
        await session.commit()
        return numbers


async def number_events(session: AsyncSession, partner_id: str, event_ids: Sequence[str]) -> dict[str, int]:
    """:func:`assign_sequences` inside the caller's transaction: neither commits nor translates driver
    errors (the caller runs it under ``guarded`` and commits). It holds the partner's counter lock until
    that commit, so a caller numbering several partners in one transaction must take them in one global
    order (sorted by partner id) or two such callers can deadlock on PostgreSQL."""
    require_text("partner_id", partner_id, PARTNER_ID_MAX)
    wanted = list(dict.fromkeys(event_ids))
    for event_id in wanted:
        require_text("event_id", event_id, EVENT_ID_MAX)
    if not wanted:
        return {}
    # Take the partner's lock first (a no-op increment), then look at what is already numbered.
    if await _bump(session, partner_id, 0) is None:
        await _ensure_counter(session, partner_id)
        if await _bump(session, partner_id, 0) is None:
            raise PartnerNotFound
    rows = await session.execute(
        select(PartnerEventNumberRow.event_id, PartnerEventNumberRow.number).where(
            PartnerEventNumberRow.partner_id == partner_id, PartnerEventNumberRow.event_id.in_(wanted)
        )
    )
    numbers: dict[str, int] = {row[0]: row[1] for row in rows}
    new = [event_id for event_id in wanted if event_id not in numbers]
    if new:
        last = await _bump(session, partner_id, len(new))
        assert last is not None  # the counter row exists: it was locked above
        now = utc_now()
        assigned = {event_id: last - len(new) + 1 + i for i, event_id in enumerate(new)}
        await session.execute(
            insert(PartnerEventNumberRow),
            [
                {"partner_id": partner_id, "event_id": e, "number": n, "assigned_at": now}
                for e, n in assigned.items()
            ],
        )
        numbers.update(assigned)
    return {event_id: numbers[event_id] for event_id in wanted}


async def _bump(session: AsyncSession, partner_id: str, by: int) -> int | None:
    statement = (
        update(PartnerSequenceRow)
        .where(PartnerSequenceRow.partner_id == partner_id)
        .values(last_number=PartnerSequenceRow.last_number + by)
        .returning(PartnerSequenceRow.last_number)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(statement)).scalar_one_or_none()
