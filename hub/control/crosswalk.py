"""Identity crosswalk: every source patient identifier maps to exactly one hub patient id.

Holds :func:`resolve_patient` and its batch form :func:`resolve_patients`. It touches only the
``patient_identities`` table through the session it is given.
Source identifiers are PHI: they never appear in an error message.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.control.models import PatientIdentityRow
from hub.control.sqltypes import utc_now
from hub.control.store_errors import guarded
from hub.control.upsert import insert_ignoring_conflicts
from hub.control.validation import require_text
from hub.errors import StoreUnavailable

HUB_PATIENT_ID_PREFIX: Final = "hp-"
SOURCE_MAX: Final = 512


def new_hub_patient_id() -> str:
    """A fresh, opaque hub patient id (``hp-`` + 32 hex digits); it carries no PHI."""
    return HUB_PATIENT_ID_PREFIX + uuid.uuid4().hex


async def _lookup(session: AsyncSession, source: str) -> str | None:
    statement = select(PatientIdentityRow.hub_patient_id).where(PatientIdentityRow.source == source)
    return await session.scalar(statement)


async def resolve_patient(session: AsyncSession, source: str) -> str:
    """Get or create the hub patient id for ``source`` (``system|value`` or a namespaced reference). Commits.

    Race-safe: concurrent callers with the same source insert with ``ON CONFLICT DO NOTHING`` and then
    read the one row that won, so they all get the same id.
    """
    require_text("source", source, SOURCE_MAX)
    async with guarded(session, "resolve_patient"):
        existing = await _lookup(session, source)
        if existing is None:
            dialect = session.get_bind().dialect.name
            row = {"source": source, "hub_patient_id": new_hub_patient_id(), "created_at": utc_now()}
            statement = insert_ignoring_conflicts(dialect, PatientIdentityRow, [row], ["source"])
            await session.execute(statement)
            existing = await _lookup(session, source)
        await session.commit()
    if existing is None:  # the winning row vanished: only a concurrent manual delete can do that
        raise StoreUnavailable("identity crosswalk row disappeared during resolve_patient; retry")
    return existing


#: Identifiers per statement of :func:`resolve_patients` (bounds the parameter lists).
RESOLVE_CHUNK: Final = 500


async def resolve_patients(session: AsyncSession, sources: Collection[str]) -> dict[str, str]:
    """:func:`resolve_patient` for many identifiers in one transaction: one read for all, one insert for
    the unknown ones (``ON CONFLICT DO NOTHING``, race-safe as above), one read of what was inserted.
    Commits. Raises ``InvalidInput`` (naming no value) when any identifier is blank or too long."""
    wanted = sorted(set(sources))  # sorted: concurrent callers insert in one order (no deadlock)
    for source in wanted:
        require_text("source", source, SOURCE_MAX)
    found: dict[str, str] = {}
    if not wanted:
        return found
    async with guarded(session, "resolve_patients"):
        for start in range(0, len(wanted), RESOLVE_CHUNK):
            chunk = wanted[start : start + RESOLVE_CHUNK]
            found.update(await _lookup_many(session, chunk))
            missing = [source for source in chunk if source not in found]
            if missing:
                now = utc_now()
                rows = [{"source": s, "hub_patient_id": new_hub_patient_id(), "created_at": now} for s in missing]
                dialect = session.get_bind().dialect.name
                await session.execute(insert_ignoring_conflicts(dialect, PatientIdentityRow, rows, ["source"]))
                found.update(await _lookup_many(session, missing))
        await session.commit()
    if len(found) != len(wanted):  # a winning row vanished: only a concurrent manual delete can do that
        raise StoreUnavailable("identity crosswalk rows disappeared during resolve_patients; retry")
    return found


async def _lookup_many(session: AsyncSession, sources: Sequence[str]) -> dict[str, str]:
    statement = select(PatientIdentityRow.source, PatientIdentityRow.hub_patient_id).where(
        PatientIdentityRow.source.in_(sources)
    )
    return {row[0]: row[1] for row in await session.execute(statement)}
