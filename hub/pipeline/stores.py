"""SQL implementations of the pipeline's control-plane ports, on ``hub.control``.

Reads (and, for the crosswalk, audit and numbering, writes) the control plane through ``hub.control``;
holds the in-process caches and states their staleness bounds. The partner directory also reads the
identifiers of the partners' own stored Organization resources (``resource_identifiers``) so consents may
name a partner by any of them.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence

import orjson
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.consent.decision import Recipient
from hub.consent.model import Consent, consent_from_fhir
from hub.control import audit, crosswalk, partners, resources, rosters, sequences
from hub.control.audit import DecisionRecord
from hub.control.models import ResourceIdentifierRow
from hub.control.store_errors import guarded
from hub.errors import InvalidInput

log = structlog.get_logger(__name__)


class SqlPatientIndex:
    """PatientIndex on the ``patient_identities`` table, with a bounded in-process cache.

    A source identifier's hub patient id never changes once assigned, so a cache hit is always right.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, cache_size: int = 100_000) -> None:
        self._sessions = sessions
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cache_size = cache_size

    async def resolve(self, source: str) -> str:
        hub_patient_id = self._cache.get(source)
        if hub_patient_id is not None:
            self._cache.move_to_end(source)
            return hub_patient_id
        async with self._sessions() as session:
            hub_patient_id = await crosswalk.resolve_patient(session, source)
        self._remember(source, hub_patient_id)
        return hub_patient_id

    async def resolve_many(self, sources: Collection[str]) -> dict[str, str]:
        """Every source's hub patient id: cache hits first, the misses together in one transaction."""
        found: dict[str, str] = {}
        missing: list[str] = []
        for source in sources:
            hub_patient_id = self._cache.get(source)
            if hub_patient_id is None:
                missing.append(source)
            else:
                self._cache.move_to_end(source)
                found[source] = hub_patient_id
        if missing:
            async with self._sessions() as session:
                resolved = await crosswalk.resolve_patients(session, missing)
            for source, hub_patient_id in resolved.items():
                self._remember(source, hub_patient_id)
            found.update(resolved)
        return found

    def _remember(self, source: str, hub_patient_id: str) -> None:
        self._cache[source] = hub_patient_id
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


class SqlPartnerDirectory:
    """PartnerDirectory on the ``partners`` table, cached for ``ttl_s`` and refreshed on an unknown name.

    ``on_new_partner`` runs once per partner id first seen (the composition root creates its topic).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        ttl_s: float = 5.0,
        on_new_partner: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._sessions = sessions
        self._ttl_s = ttl_s
        self._on_new_partner = on_new_partner
        self._seen: set[str] = set()
        self._loaded_at = -1e9
        self._recipients: list[Recipient] = []
        self._known: set[str] = set()

    async def _load(self) -> None:
        async with self._sessions() as session:
            active = [p for p in await partners.list_partners(session) if p.active]
            aliases = await organization_aliases(session, [p.organization for p in active])
        self._loaded_at = time.monotonic()
        self._recipients = [
            Recipient(partner_id=p.id, kind=p.kind, organization=p.organization,
                      identifiers=aliases.get(p.organization, ()))
            for p in active
        ]
        self._known = {p.organization for p in active}
        for partner in active:
            if partner.id not in self._seen:
                if self._on_new_partner is not None:
                    await self._on_new_partner(partner.id)  # e.g. create its topic
                self._seen.add(partner.id)

    def invalidate(self) -> None:
        """Forget the cache (a partner was added or changed in this process)."""
        self._loaded_at = -1e9

    async def partners(self, *, named: Collection[str]) -> list[Recipient]:
        stale = time.monotonic() - self._loaded_at > self._ttl_s
        if stale or any(name not in self._known for name in named):
            await self._load()
        return self._recipients


#: Patients per consent prefetch read (bounds the statement's parameter list).
PREFETCH_CHUNK = 500
_RELATIVE_ORGANIZATION = re.compile(r"Organization/([A-Za-z0-9\-.]{1,64})")


async def organization_aliases(session: AsyncSession, organizations: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Other names of each partner organization, from the hub's stored Organization resources (current
    versions): for ``Organization/<id>`` the identifiers of that Organization (``system|value``,
    ``|value`` without a system); for an identifier ``system|value`` every ``Organization/<id>`` carrying
    it. An absolute reference names another server's resource and gets none. Read only.
    """
    by_id = {m[1]: org for org in organizations if (m := _RELATIVE_ORGANIZATION.fullmatch(org))}
    by_token = {
        (system, value): org for org in organizations if "|" in org and not _RELATIVE_ORGANIZATION.fullmatch(org)
        for system, _, value in (org.partition("|"),)
    }
    found: dict[str, list[str]] = {}
    if not by_id and not by_token:
        return {}
    columns = (ResourceIdentifierRow.resource_id, ResourceIdentifierRow.id_system, ResourceIdentifierRow.id_value)
    organization = ResourceIdentifierRow.resource_type == "Organization"
    async with guarded(session, "read_organization_aliases"):
        if by_id:
            statement = select(*columns).where(organization, ResourceIdentifierRow.resource_id.in_(list(by_id)))
            for row in (await session.execute(statement)).all():
                found.setdefault(by_id[row.resource_id], []).append(f"{row.id_system}|{row.id_value}")
        if by_token:
            values = sorted({value for _, value in by_token})
            statement = select(*columns).where(organization, ResourceIdentifierRow.id_value.in_(values))
            for row in (await session.execute(statement)).all():
                owner = by_token.get((row.id_system, row.id_value))
                if owner is not None:
                    found.setdefault(owner, []).append(f"Organization/{row.resource_id}")
    return {org: tuple(sorted(set(names) - {org})) for org, names in found.items()}


class SqlAuditLog:
    """AuditLog on the append-only ``consent_decisions`` table; also a ``DecisionLedger``: a batch's
    decisions and its delivery numbers (``hub.control.sequences``) commit in one transaction."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def record(self, records: Sequence[DecisionRecord]) -> None:
        async with self._sessions() as session:
            await audit.record_decisions(session, records)

    async def record_and_number(
        self, records: Sequence[DecisionRecord], permitted: Mapping[str, Sequence[str]]
    ) -> dict[str, dict[str, int]]:
        """Insert the decisions, then number each partner's events (partners in sorted order: one lock
        order for every worker), and commit once. Nothing is stored when any part fails."""
        numbers: dict[str, dict[str, int]] = {}
        if not records and not permitted:
            return numbers
        async with self._sessions() as session, guarded(session, "record_and_number"):
            await audit.insert_decisions(session, records)
            for partner_id in sorted(permitted):
                numbers[partner_id] = await sequences.number_events(session, partner_id, permitted[partner_id])
            await session.commit()
        return numbers


class SqlSequencer:
    """Sequencer on the per-partner counters."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def assign_many(self, partner_id: str, event_ids: Sequence[str]) -> dict[str, int]:
        async with self._sessions() as session:
            return await sequences.assign_sequences(session, partner_id, event_ids)


class SqlConsentSource:
    """ConsentSource on the resource store: the current Consent versions whose patient is, through the
    identity crosswalk, this hub patient; cached per patient (LRU, ``cache_size``) for ``ttl_s``.

    The route stage calls :meth:`changed` for every consent-change event; since ``hub.events`` is keyed
    by hub patient id, that happens before any later event of the patient is decided. The event's own
    version is taken as current at once (the edge stores a version only after the broker acknowledged
    its event, so the store may not hold it yet). ``ttl_s`` bounds how stale an entry can be in a
    worker that lost the patient's partition and got it back (ADR 0006).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        cache_size: int = 100_000,
        ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._cache: OrderedDict[str, tuple[float, tuple[Consent, ...]]] = OrderedDict()
        self._cache_size = cache_size
        self._ttl_s = ttl_s
        self._clock = clock
        self.loads = 0

    async def consents_for(self, hub_patient_id: str) -> tuple[Consent, ...]:
        entry = self._cache.get(hub_patient_id)
        if entry is not None and self._clock() - entry[0] <= self._ttl_s:
            self._cache.move_to_end(hub_patient_id)
            return entry[1]
        consents = await self._load(hub_patient_id)
        self._put(hub_patient_id, consents)
        return consents

    async def changed(self, hub_patient_id: str, consent: Consent | None) -> None:
        self._cache.pop(hub_patient_id, None)
        loaded = await self._load(hub_patient_id)
        if consent is not None and consent.id:
            loaded = (*(c for c in loaded if c.id != consent.id), consent)
        self._put(hub_patient_id, loaded)

    def forget_all(self) -> None:
        """Empty the cache (on a partition assignment: see ``hub.pipeline.workers``)."""
        self._cache.clear()

    async def prefetch(self, hub_patient_ids: Collection[str]) -> None:
        """Load the consents of every given patient not freshly cached, in one read per
        :data:`PREFETCH_CHUNK` patients (a batch's misses cost one round trip, not one each)."""
        now = self._clock()
        missing = sorted(
            {p for p in hub_patient_ids if (e := self._cache.get(p)) is None or now - e[0] > self._ttl_s}
        )
        for start in range(0, len(missing), PREFETCH_CHUNK):
            chunk = missing[start : start + PREFETCH_CHUNK]
            self.loads += len(chunk)
            async with self._sessions() as session:
                found = await resources.current_about_patients(session, "Consent", chunk)
            for patient in chunk:
                self._put(patient, self._parse(patient, found.get(patient, [])))

    def _put(self, hub_patient_id: str, consents: tuple[Consent, ...]) -> None:
        self._cache[hub_patient_id] = (self._clock(), consents)
        self._cache.move_to_end(hub_patient_id)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _load(self, hub_patient_id: str) -> tuple[Consent, ...]:
        self.loads += 1
        async with self._sessions() as session:
            found = await resources.current_about_patients(session, "Consent", [hub_patient_id])
        return self._parse(hub_patient_id, found[hub_patient_id])

    @staticmethod
    def _parse(hub_patient_id: str, versions: Sequence[resources.StoredVersion]) -> tuple[Consent, ...]:
        found: list[Consent] = []
        for version in versions:
            try:
                found.append(consent_from_fhir(orjson.loads(version.content), patient=hub_patient_id))
            except (InvalidInput, orjson.JSONDecodeError):
                # The edge stores only consents the engine can read; one that is not is reported, not used.
                log.error(  # noqa: TRY400 - no traceback: it could quote the content (PHI)
                    "consent_unreadable", resource_id=version.resource_id, version=version.version_id
                )
        return tuple(found)


class SqlRosterSource:
    """RosterSource on ``partner_rosters`` joined through the identity crosswalk (``hub.control.rosters``),
    cached per hub patient (LRU, ``cache_size``) for ``ttl_s``; patients on no roster are cached too.

    Staleness bound: a roster change made through the admin API or CLI of *this* process clears the
    cache at once (:meth:`invalidate`, wired by the composition root); a change made elsewhere (another
    process, or the crosswalk learning an identifier a roster entry names) is seen at most ``ttl_s``
    (5 s) later. Misses of one batch are loaded in one query.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        cache_size: int = 100_000,
        ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._cache: OrderedDict[str, tuple[float, frozenset[str]]] = OrderedDict()
        self._cache_size = cache_size
        self._ttl_s = ttl_s
        self._clock = clock
        self._generation = 0
        self.loads = 0

    async def rostered(self, hub_patient_ids: Collection[str]) -> dict[str, frozenset[str]]:
        now = self._clock()
        found: dict[str, frozenset[str]] = {}
        missing: list[str] = []
        for patient in dict.fromkeys(hub_patient_ids):
            entry = self._cache.get(patient)
            if entry is not None and now - entry[0] <= self._ttl_s:
                self._cache.move_to_end(patient)
                found[patient] = entry[1]
            else:
                missing.append(patient)
        if missing:
            generation = self._generation
            self.loads += 1
            async with self._sessions() as session:
                loaded = await rosters.rostered_partners(session, missing)
            found.update(loaded)
            if generation == self._generation:  # not invalidated while loading: safe to keep
                for patient, partner_ids in loaded.items():
                    self._cache[patient] = (now, partner_ids)
                    self._cache.move_to_end(patient)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return found

    def invalidate(self) -> None:
        """Forget every cached answer (a roster changed in this process)."""
        self._generation += 1
        self._cache.clear()
