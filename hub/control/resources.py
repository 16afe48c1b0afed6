"""The FHIR resource store: every version of every resource the FHIR edge accepted.

Holds the value objects :class:`StoredVersion`, :class:`NewVersion` and :class:`Saved`, the functions
that read and write the ``resources`` and ``resource_identifiers`` tables through the session they are
given, and :class:`SqlResourceStore`, the FHIR edge's ``ResourceStore`` port on a session factory. It
also links the identifiers of a stored Patient into the identity crosswalk (``patient_identities``), in
the same transaction as the Patient itself.

Versions: the current version of ``(type, id)`` is the highest ``version_id``. A new version is written
with one ``INSERT ... SELECT max(version_id) + 1 ... WHERE NOT EXISTS (current version with the same
content hash)``, so

* storing content identical to the current version is a no-op (``Saved.written`` is False): a retried
  request never creates a second version;
* the write is the first statement of its transaction, so on SQLite concurrent writers queue on the
  busy handler (ADR 0003); on PostgreSQL the transaction first takes a transaction-scoped advisory
  lock per resource (in a fixed order, so two multi-resource saves cannot deadlock), so writers of one
  resource queue instead of colliding. Should two writers still pick the same number, the loser
  retries the whole transaction (at most :data:`MAX_SAVE_ATTEMPTS` times).

A create under a fresh server-assigned id (``NewVersion.first``) is stored as version 1 or not at all:
the creates of one transaction go in as one ``INSERT ... ON CONFLICT DO NOTHING`` (no advisory lock, no
read), their identifiers as one more statement; one that finds its id taken writes nothing and answers
with the stored version 1 (a concurrent retry of the same bytes).

:class:`SqlResourceStore` batches concurrent calls (``hub.control.group_commit``): saves share one
transaction, and :meth:`SqlResourceStore.versions` lookups share one ``SELECT``.

Identifiers are indexed for the current version only (``If-None-Exist: identifier=...`` matches what a
resource says now). Values longer than the columns are not indexed rather than refused. Patient
identifiers and references are PHI: they never appear in an error message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Integer, Row, String, Table, Text, bindparam, delete, exists, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.dml import Insert

from hub.control import audit
from hub.control.crosswalk import SOURCE_MAX, new_hub_patient_id
from hub.control.group_commit import GroupCommitter
from hub.control.models import PatientIdentityRow, ResourceIdentifierRow, ResourceRow
from hub.control.sqltypes import UTCDateTime, utc_now
from hub.control.store_errors import guarded
from hub.control.upsert import insert_ignoring_conflicts
from hub.control.validation import require_text
from hub.errors import Conflict, InvalidInput, StoreUnavailable

MAX_SAVE_ATTEMPTS: Final = 5
IDENTIFIER_MAX: Final = 512
_RESOURCES: Table = ResourceRow.__table__  # type: ignore[assignment]  # declarative tables are Tables
_IDENTIFIERS: Table = ResourceIdentifierRow.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One stored version of a resource (``content`` without ``meta.versionId``/``meta.lastUpdated``)."""

    resource_type: str
    resource_id: str
    version_id: int
    last_updated: datetime
    sender: str
    content: str
    content_hash: str
    event_id: str | None = None
    patient_source: str | None = None


@dataclass(frozen=True, slots=True)
class NewVersion:
    """A version to store. ``identifiers`` are ``(system, value)`` pairs (``""`` for no system);
    ``patient_sources`` are crosswalk sources that all name this one patient (Patient resources only).
    ``first``: a create under a server-assigned id, stored as version 1 or not at all (when any version of
    the id exists, nothing is written and the stored version 1 is returned)."""

    resource_type: str
    resource_id: str
    sender: str
    content: str
    event_id: str | None = None
    patient_source: str | None = None
    identifiers: tuple[tuple[str, str], ...] = ()
    patient_sources: tuple[str, ...] = ()
    first: bool = False

    @property
    def content_hash(self) -> str:
        """SHA-256 (hex) of ``content``."""
        return content_hash(self.content)


@dataclass(frozen=True, slots=True)
class Saved:
    """The outcome of storing one :class:`NewVersion`: the current version, and whether this call wrote it."""

    version: StoredVersion
    written: bool


def content_hash(content: str) -> str:
    """SHA-256 (hex) of the stored JSON text."""
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


_COLUMNS: Final = (
    "resource_type",
    "resource_id",
    "version_id",
    "last_updated",
    "sender",
    "content",
    "content_hash",
    "event_id",
    "patient_source",
)
_KEY = (_RESOURCES.c.resource_type == bindparam("rt"), _RESOURCES.c.resource_id == bindparam("rid"))
# Statements are built once, with bound parameters, so SQLAlchemy compiles each of them once per dialect
# (building one per call with literal values cost more than executing it).
_VERSIONS: Final = select(*(_RESOURCES.c[name] for name in _COLUMNS)).where(*_KEY).order_by(_RESOURCES.c.version_id)
_CURRENT: Final = (
    select(*(_RESOURCES.c[name] for name in _COLUMNS))
    .where(*_KEY)
    .order_by(_RESOURCES.c.version_id.desc())
    .limit(1)
)
_DELETE_IDENTIFIERS: Final = delete(_IDENTIFIERS).where(
    _IDENTIFIERS.c.resource_type == bindparam("rt"), _IDENTIFIERS.c.resource_id == bindparam("rid")
)


def _insert_next_version() -> Insert:
    """``INSERT`` the next version of ``(rt, rid)`` unless its current version has the content hash ``hash``;
    returns the new ``version_id`` (no row when nothing was written)."""
    latest = _RESOURCES.alias("latest")
    newest = (
        select(func.max(latest.c.version_id))
        .where(latest.c.resource_type == bindparam("rt"), latest.c.resource_id == bindparam("rid"))
        .scalar_subquery()
    )
    same = _RESOURCES.alias("same")
    unchanged = exists().where(
        same.c.resource_type == bindparam("rt"),
        same.c.resource_id == bindparam("rid"),
        same.c.version_id == newest,
        same.c.content_hash == bindparam("hash"),
    )
    previous = _RESOURCES.alias("previous")
    next_version = (
        select(func.coalesce(func.max(previous.c.version_id), 0) + 1)
        .where(previous.c.resource_type == bindparam("rt"), previous.c.resource_id == bindparam("rid"))
        .scalar_subquery()
    )
    source = select(
        bindparam("rt", type_=String()),
        bindparam("rid", type_=String()),
        next_version.cast(Integer()),
        bindparam("now", type_=UTCDateTime()),
        bindparam("sender", type_=String()),
        bindparam("content", type_=Text()),
        bindparam("hash", type_=String()),
        bindparam("event_id", type_=String()),
        bindparam("patient_source", type_=String()),
    ).where(~unchanged)
    return insert(_RESOURCES).from_select(list(_COLUMNS), source).returning(_RESOURCES.c.version_id)


_INSERT_NEXT: Final = _insert_next_version()


def _stored(row: Row[Any]) -> StoredVersion:
    return StoredVersion(
        resource_type=row.resource_type,
        resource_id=row.resource_id,
        version_id=row.version_id,
        last_updated=row.last_updated,
        sender=row.sender,
        content=row.content,
        content_hash=row.content_hash,
        event_id=row.event_id,
        patient_source=row.patient_source,
    )


def _check_key(resource_type: str, resource_id: str) -> None:
    require_text("resource_type", resource_type, 64)
    require_text("resource_id", resource_id, 64)


async def versions(session: AsyncSession, resource_type: str, resource_id: str) -> list[StoredVersion]:
    """Every stored version of ``(resource_type, resource_id)``, oldest first (empty when unknown)."""
    _check_key(resource_type, resource_id)
    async with guarded(session, "read_resource"):
        connection = await session.connection()
        rows = (await connection.execute(_VERSIONS, {"rt": resource_type, "rid": resource_id})).all()
    return [_stored(row) for row in rows]


async def versions_of(
    session: AsyncSession, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], list[StoredVersion]]:
    """Every stored version of each ``(resource_type, resource_id)`` in ``keys``, oldest first, in one
    ``SELECT`` per resource type (empty lists for unknown ones)."""
    found: dict[tuple[str, str], list[StoredVersion]] = {key: [] for key in keys}
    for resource_type, resource_id in found:
        _check_key(resource_type, resource_id)
    by_type: dict[str, list[str]] = {}
    for resource_type, resource_id in found:
        by_type.setdefault(resource_type, []).append(resource_id)
    async with guarded(session, "read_resources"):
        connection = await session.connection()
        for resource_type, ids in sorted(by_type.items()):
            statement = (
                select(*(_RESOURCES.c[name] for name in _COLUMNS))
                .where(_RESOURCES.c.resource_type == resource_type, _RESOURCES.c.resource_id.in_(ids))
                .order_by(_RESOURCES.c.resource_id, _RESOURCES.c.version_id)
            )
            for row in (await connection.execute(statement)).all():
                found[(row.resource_type, row.resource_id)].append(_stored(row))
    return found


async def _current(session: AsyncSession, resource_type: str, resource_id: str) -> Row[Any] | None:
    connection = await session.connection()
    return (await connection.execute(_CURRENT, {"rt": resource_type, "rid": resource_id})).first()


async def find_by_identifier(
    session: AsyncSession, resource_type: str, system: str | None, value: str
) -> list[StoredVersion]:
    """Current versions of ``resource_type`` whose identifiers match the token ``system|value``.

    ``system`` None matches any system; ``""`` matches identifiers without a system (FHIR token search).
    """
    require_text("resource_type", resource_type, 64)
    if not value or len(value) > IDENTIFIER_MAX or (system is not None and len(system) > IDENTIFIER_MAX):
        return []
    ids = ResourceIdentifierRow
    statement = select(ids.resource_id).where(ids.resource_type == resource_type, ids.id_value == value)
    if system is not None:
        statement = statement.where(ids.id_system == system)
    async with guarded(session, "find_resource_by_identifier"):
        matched = sorted(set((await session.scalars(statement.distinct())).all()))
        found = [await _current(session, resource_type, resource_id) for resource_id in matched]
    return [_stored(row) for row in found if row is not None]


def _identifier_rows(write: NewVersion) -> list[dict[str, str]]:
    pairs = {
        (system, value)
        for system, value in write.identifiers
        if value and len(value) <= IDENTIFIER_MAX and len(system) <= IDENTIFIER_MAX
    }
    return [
        {"resource_type": write.resource_type, "resource_id": write.resource_id, "id_system": system, "id_value": value}
        for system, value in sorted(pairs)
    ]


async def _replace_identifiers(session: AsyncSession, write: NewVersion, *, first_version: bool) -> None:
    connection = await session.connection()
    if not first_version:
        await connection.execute(_DELETE_IDENTIFIERS, {"rt": write.resource_type, "rid": write.resource_id})
    rows = _identifier_rows(write)
    if rows:
        await connection.execute(insert(_IDENTIFIERS), rows)


def _usable_sources(sources: Sequence[str]) -> list[str]:
    usable = []
    for source in dict.fromkeys(sources):
        try:
            require_text("source", source, SOURCE_MAX)
        except InvalidInput:
            continue  # an identifier the crosswalk cannot hold is simply not linked
        usable.append(source)
    return usable


async def _link(session: AsyncSession, sources: Sequence[str]) -> str | None:
    """Map every source to one hub patient id: the one the first already-known source has, else a new one.

    Sources already mapped to another hub patient keep their mapping (no automatic merge of two
    patients the hub already tells apart). Returns the hub patient id, or None when nothing is usable.
    """
    usable = _usable_sources(sources)
    if not usable:
        return None
    statement = select(PatientIdentityRow.source, PatientIdentityRow.hub_patient_id).where(
        PatientIdentityRow.source.in_(usable)
    )
    known = {row.source: row.hub_patient_id for row in (await session.execute(statement)).all()}
    hub_patient_id = next((known[s] for s in usable if s in known), None) or new_hub_patient_id()
    missing = [
        {"source": s, "hub_patient_id": hub_patient_id, "created_at": utc_now()} for s in usable if s not in known
    ]
    if missing:
        dialect = session.get_bind().dialect.name
        await session.execute(insert_ignoring_conflicts(dialect, PatientIdentityRow, missing, ["source"]))
    return hub_patient_id


def _validate(write: NewVersion) -> None:
    _check_key(write.resource_type, write.resource_id)
    require_text("sender", write.sender, 63)
    require_text("content", write.content, 50_000_000, single_line=False)
    if write.event_id is not None:
        require_text("event_id", write.event_id, 255)
    if write.patient_source is not None:
        require_text("patient_source", write.patient_source, SOURCE_MAX)


async def save_versions(session: AsyncSession, writes: Sequence[NewVersion]) -> list[Saved]:
    """Store ``writes`` in one transaction, in order; each becomes a new version unless unchanged. Commits.

    All or nothing: either every write is stored (and every Patient's sources linked) or none is.
    Raises ``StoreUnavailable`` when the database does not answer or concurrent writers kept winning.
    """
    for write in writes:
        _validate(write)
    if not writes:
        return []
    for _attempt in range(MAX_SAVE_ATTEMPTS):
        try:
            return await _save_once(session, writes)
        except IntegrityError:
            continue  # a concurrent writer took the same version number; read again and retry
    raise StoreUnavailable("concurrent updates of the same resource kept colliding during save_resources; retry")


def _written(write: NewVersion, version_id: int, now: datetime) -> StoredVersion:
    return StoredVersion(
        resource_type=write.resource_type,
        resource_id=write.resource_id,
        version_id=version_id,
        last_updated=now,
        sender=write.sender,
        content=write.content,
        content_hash=write.content_hash,
        event_id=write.event_id,
        patient_source=write.patient_source,
    )


def _lock_key(resource_type: str, resource_id: str) -> int:
    """A signed 64-bit advisory-lock key for one resource (PostgreSQL serialises its writers on it)."""
    digest = hashlib.sha256(f"carehub/resources/{resource_type}/{resource_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _row(write: NewVersion, version_id: int, now: datetime) -> dict[str, Any]:
    return {
        "resource_type": write.resource_type,
        "resource_id": write.resource_id,
        "version_id": version_id,
        "last_updated": now,
        "sender": write.sender,
        "content": write.content,
        "content_hash": write.content_hash,
        "event_id": write.event_id,
        "patient_source": write.patient_source,
    }


async def _save_firsts(session: AsyncSession, writes: Sequence[NewVersion], now: datetime) -> list[Saved]:
    """Store each create as version 1 unless its id is taken, in two statements; results in order."""
    dialect = session.get_bind().dialect.name
    statement = insert_ignoring_conflicts(
        dialect, _RESOURCES, [_row(write, 1, now) for write in writes], ["resource_type", "resource_id", "version_id"]
    ).returning(_RESOURCES.c.resource_type, _RESOURCES.c.resource_id)
    connection = await session.connection()
    inserted = {(row.resource_type, row.resource_id) for row in (await connection.execute(statement)).all()}
    saved: list[Saved] = []
    identifiers: list[dict[str, str]] = []
    for write in writes:
        key = (write.resource_type, write.resource_id)
        if key in inserted:
            inserted.discard(key)  # the same id twice in one batch: the first one wrote it
            saved.append(Saved(version=_written(write, 1, now), written=True))
            identifiers.extend(_identifier_rows(write))
            continue
        stored = await versions(session, write.resource_type, write.resource_id)
        if not stored:  # pragma: no cover - the row that took the id cannot vanish in-transaction
            raise StoreUnavailable("a stored resource disappeared during save_resources; retry")
        first = stored[0]
        if (first.sender, first.content_hash) != (write.sender, write.content_hash):
            # Never answer a create with another resource's content: only the same create, retried, may
            # find its id taken.
            raise Conflict(
                f"a different {write.resource_type} already holds the id this create maps to",
                expression=f"{write.resource_type}.id",
            )
        saved.append(Saved(version=first, written=False))
    if identifiers:
        await connection.execute(insert(_IDENTIFIERS), identifiers)
    return saved


async def _save_once(session: AsyncSession, writes: Sequence[NewVersion]) -> list[Saved]:
    moment = utc_now()
    now = moment.replace(microsecond=moment.microsecond // 1000 * 1000)  # FHIR instants in milliseconds
    saved: list[Saved] = []
    async with guarded(session, "save_resources"):
        firsts = [write for write in writes if write.first]
        if session.get_bind().dialect.name == "postgresql":
            for key in sorted({_lock_key(w.resource_type, w.resource_id) for w in writes if not w.first}):
                await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        first_saved = iter(await _save_firsts(session, firsts, now) if firsts else [])
        connection = await session.connection()
        for write in writes:
            if write.first:
                saved.append(next(first_saved))
                continue
            params = {
                "rt": write.resource_type,
                "rid": write.resource_id,
                "now": now,
                "sender": write.sender,
                "content": write.content,
                "hash": write.content_hash,
                "event_id": write.event_id,
                "patient_source": write.patient_source,
            }
            version_id = (await connection.execute(_INSERT_NEXT, params)).scalar()
            if version_id is not None:
                await _replace_identifiers(session, write, first_version=version_id == 1)
                saved.append(Saved(version=_written(write, version_id, now), written=True))
                continue
            row = await _current(session, write.resource_type, write.resource_id)
            if row is None:  # pragma: no cover - the row matched above cannot vanish in-transaction
                raise StoreUnavailable("a stored resource disappeared during save_resources; retry")
            saved.append(Saved(version=_stored(row), written=False))
        for write in writes:
            if write.patient_sources:
                await _link(session, write.patient_sources)
        await session.commit()
    return saved


async def link_patient_sources(session: AsyncSession, groups: Sequence[Sequence[str]]) -> None:
    """Link each group of crosswalk sources (the identifiers of one patient) to one hub patient id. Commits."""
    if not any(groups):
        return
    async with guarded(session, "link_patient_sources"):
        for sources in groups:
            await _link(session, sources)
        await session.commit()


async def delivered_event_ids(session: AsyncSession, recipient_id: str, event_ids: Sequence[str]) -> frozenset[str]:
    """The events among ``event_ids`` that the audit shows were permitted to ``recipient_id``."""
    permitted: set[str] = set()
    for event in dict.fromkeys(event_ids):
        decisions = await audit.list_decisions(session, event_id=event, recipient_id=recipient_id, limit=100)
        if any(decision.verdict == "permit" for decision in decisions):
            permitted.add(event)
    return frozenset(permitted)


async def patient_sources(
    session: AsyncSession, *, source: str | None = None, hub_patient_id: str | None = None
) -> list[str]:
    """Every crosswalk source of one patient, named by one of its sources or by its hub patient id.

    A ``source`` the crosswalk does not know yet (its first event is still on its way to normalize) is
    returned alone. Read only: nothing is created.
    """
    async with guarded(session, "read_patient_sources"):
        if hub_patient_id is None and source is not None:
            lookup = select(PatientIdentityRow.hub_patient_id).where(PatientIdentityRow.source == source)
            hub_patient_id = await session.scalar(lookup)
        found: list[str] = []
        if hub_patient_id is not None:
            statement = select(PatientIdentityRow.source).where(PatientIdentityRow.hub_patient_id == hub_patient_id)
            found = sorted((await session.scalars(statement)).all())
    if source is not None and source not in found:
        found.append(source)
    return found


async def current_about_patient(
    session: AsyncSession, resource_type: str, sources: Sequence[str]
) -> list[StoredVersion]:
    """Current versions of ``resource_type`` whose patient (``patient_source``) is one of ``sources``."""
    require_text("resource_type", resource_type, 64)
    usable = [item for item in dict.fromkeys(sources) if item and len(item) <= SOURCE_MAX]
    if not usable:
        return []
    statement = (
        select(ResourceRow.resource_id)
        .where(ResourceRow.resource_type == resource_type, ResourceRow.patient_source.in_(usable))
        .distinct()
    )
    async with guarded(session, "read_resources_of_patient"):
        matched = sorted((await session.scalars(statement)).all())
        current = [await _current(session, resource_type, resource_id) for resource_id in matched]
    wanted = set(usable)
    return [_stored(row) for row in current if row is not None and row.patient_source in wanted]


async def current_about_patients(
    session: AsyncSession, resource_type: str, hub_patient_ids: Collection[str]
) -> dict[str, list[StoredVersion]]:
    """For each hub patient id: the current versions of ``resource_type`` whose patient (``patient_source``)
    is one of that patient's crosswalk sources. Three statements whatever the number of patients."""
    require_text("resource_type", resource_type, 64)
    wanted = sorted(set(hub_patient_ids))
    found: dict[str, list[StoredVersion]] = {patient: [] for patient in wanted}
    if not wanted:
        return found
    identities = select(PatientIdentityRow.source, PatientIdentityRow.hub_patient_id).where(
        PatientIdentityRow.hub_patient_id.in_(wanted)
    )
    async with guarded(session, "read_resources_of_patients"):
        owner = {row.source: row.hub_patient_id for row in (await session.execute(identities)).all()}
        if not owner:
            return found
        sources = sorted(owner)
        about = (
            select(_RESOURCES.c.resource_id)
            .where(_RESOURCES.c.resource_type == resource_type, _RESOURCES.c.patient_source.in_(sources))
            .distinct()
        )
        latest = (
            select(_RESOURCES.c.resource_id, func.max(_RESOURCES.c.version_id).label("version_id"))
            .where(_RESOURCES.c.resource_type == resource_type, _RESOURCES.c.resource_id.in_(about))
            .group_by(_RESOURCES.c.resource_id)
            .subquery()
        )
        current = (
            select(*(_RESOURCES.c[name] for name in _COLUMNS))
            .join(
                latest,
                (_RESOURCES.c.resource_id == latest.c.resource_id) & (_RESOURCES.c.version_id == latest.c.version_id),
            )
            .where(_RESOURCES.c.resource_type == resource_type, _RESOURCES.c.patient_source.in_(sources))
            .order_by(_RESOURCES.c.resource_id)
        )
        rows = (await session.execute(current)).all()
    for row in rows:
        found[owner[row.patient_source]].append(_stored(row))
    return found


async def sender_knows_patient(session: AsyncSession, sender: str, source: str) -> bool:
    """Whether ``sender`` names this patient in its own namespace (a Patient it sent, a local reference)
    or already sent a resource about it."""
    return await sender_knows_sources(session, sender, await patient_sources(session, source=source))


async def sender_knows_sources(session: AsyncSession, sender: str, sources: Sequence[str]) -> bool:
    """:func:`sender_knows_patient` for a patient already given as all its crosswalk sources."""
    namespace = f"urn:carehub:partner:{sender}"
    if any(item.startswith((namespace + ":", namespace + "|")) for item in sources):
        return True
    statement = select(
        exists().where(ResourceRow.sender == sender, ResourceRow.patient_source.in_(sources[:1000]))
    )
    async with guarded(session, "read_patient_knowledge"):
        return bool(await session.scalar(statement))


class SqlResourceStore:
    """The FHIR edge's ``ResourceStore`` port on the control-plane database (one session per call)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, max_batch: int = 500) -> None:
        self._sessions = sessions
        self._saves: GroupCommitter[NewVersion, Saved] = GroupCommitter(self._save_batch, max_batch=max_batch)
        self._lookups: GroupCommitter[tuple[str, str], list[StoredVersion]] = GroupCommitter(
            self._versions_batch, max_batch=max_batch
        )

    @property
    def save_transactions(self) -> int:
        """How many save transactions ran (concurrent saves share one: group commit)."""
        return self._saves.batches

    async def _save_batch(self, writes: Sequence[NewVersion]) -> list[Saved]:
        async with self._sessions() as session:
            return await save_versions(session, writes)

    @property
    def version_lookups(self) -> int:
        """How many ``SELECT`` batches :meth:`versions` ran (concurrent lookups share one)."""
        return self._lookups.batches

    async def _versions_batch(self, keys: Sequence[tuple[str, str]]) -> list[list[StoredVersion]]:
        async with self._sessions() as session:
            found = await versions_of(session, keys)
        return [list(found[key]) for key in keys]

    async def versions(self, resource_type: str, resource_id: str) -> list[StoredVersion]:
        """Every version of the resource, oldest first; lookups that arrive together share one ``SELECT``."""
        _check_key(resource_type, resource_id)  # a bad key fails its own caller, not a batch
        [found] = await self._lookups.submit([(resource_type, resource_id)])
        return found

    async def find_by_identifier(self, resource_type: str, system: str | None, value: str) -> list[StoredVersion]:
        """Current versions whose identifiers match ``system|value``."""
        async with self._sessions() as session:
            return await find_by_identifier(session, resource_type, system, value)

    async def save(self, writes: Sequence[NewVersion]) -> list[Saved]:
        """Store the writes atomically (see :func:`save_versions`); saves that arrive together share one
        transaction (``hub.control.group_commit``), a failure reaching only the saves it belongs to."""
        return await self._saves.submit(writes)

    async def link_patients(self, groups: Sequence[Sequence[str]]) -> None:
        """Link each group of sources to one hub patient (see :func:`link_patient_sources`)."""
        async with self._sessions() as session:
            await link_patient_sources(session, groups)

    async def knows_patient(self, sender: str, source: str) -> bool:
        """Whether ``sender`` may speak for this patient (see :func:`sender_knows_patient`)."""
        async with self._sessions() as session:
            return await sender_knows_patient(session, sender, source)

    async def about_patient(self, resource_type: str, source: str) -> list[StoredVersion]:
        """Current versions of ``resource_type`` about the patient ``source`` names (any of its sources)."""
        async with self._sessions() as session:
            return await current_about_patient(session, resource_type, await patient_sources(session, source=source))

    async def delivered(self, recipient_id: str, event_ids: Sequence[str]) -> frozenset[str]:
        """Which of the events were permitted to the recipient (from the audit)."""
        if not event_ids:
            return frozenset()
        async with self._sessions() as session:
            return await delivered_event_ids(session, recipient_id, event_ids)
