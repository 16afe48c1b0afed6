"""SQL implementations of the pipeline's control-plane ports, on ``hub.control``."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Sequence

import orjson
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.consent.decision import Recipient
from hub.consent.model import Consent, consent_from_fhir
from hub.control import audit, crosswalk, partners, resources, sequences
from hub.control.audit import DecisionRecord
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
        self._cache[source] = hub_patient_id
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return hub_patient_id


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
        self._loaded_at = time.monotonic()
        self._recipients = [Recipient(partner_id=p.id, kind=p.kind, organization=p.organization) for p in active]
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


class SqlAuditLog:
    """AuditLog on the append-only ``consent_decisions`` table."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def record(self, records: Sequence[DecisionRecord]) -> None:
        async with self._sessions() as session:
            await audit.record_decisions(session, records)


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

    def _put(self, hub_patient_id: str, consents: tuple[Consent, ...]) -> None:
        self._cache[hub_patient_id] = (self._clock(), consents)
        self._cache.move_to_end(hub_patient_id)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _load(self, hub_patient_id: str) -> tuple[Consent, ...]:
        self.loads += 1
        async with self._sessions() as session:
            sources = await resources.patient_sources(session, hub_patient_id=hub_patient_id)
            versions = await resources.current_about_patient(session, "Consent", sources)
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
