"""What the CDS Hooks consent service gathers from the control plane: patients, actors, consents; its audit.

Holds :class:`ResolvedActor`, the port :class:`ConsultStore` and :class:`SqlConsultStore`, its
implementation on the control-plane database. It reads the identity crosswalk (``patient_identities``),
the resource store (``resources``, ``resource_identifiers``: Patient, Organization and Practitioner
resources, the patient's Consents and who sent each of their versions) and the partner registry, and
appends to the decision audit (``consent_decisions``). It writes nothing else and creates no crosswalk
entry: a consult about an unknown identifier leaves no trace but its audit row.

Patient identifiers resolve through the crosswalk (every identifier the hub linked) *and* through stored
Patient resources carrying the identifier (so an identifier the hub never links, such as a US SSN, still
finds the one Patient that carries it; it never links anything). Every hub patient found is returned; the
pure consult denies when there is more than one.

Identifiers and references are PHI or close to it: they never appear in an error or a log line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.adapters.fhir_facts import partner_namespace
from hub.consent.model import Consent
from hub.control import audit, partners, resources, rosters
from hub.control.audit import DecisionRecord
from hub.control.crosswalk import SOURCE_MAX
from hub.control.models import PatientIdentityRow, ResourceRow
from hub.control.store_errors import guarded
from hub.pipeline.stores import SqlConsentSource

#: Resource types an actor identifier may name (the hub's directory).
ACTOR_TYPES: Final = ("Organization", "Practitioner")
#: The longest resource id the store holds (FHIR ids are at most 64 characters).
RESOURCE_ID_MAX: Final = 64
_REFERENCE = re.compile(r"(Organization|Practitioner)/([A-Za-z0-9\-.]{1,64})")


@dataclass(frozen=True, slots=True)
class ResolvedActor:
    """Every name of the actor a consent could use, and the registered partners it is."""

    names: frozenset[str]
    partner_ids: tuple[str, ...] = ()


class ConsultStore(Protocol):
    """The consult's gather port (one fake in the adapter tests, :class:`SqlConsultStore` in the hub)."""

    async def patients(self, identifiers: Sequence[str]) -> tuple[str, ...]:
        """The distinct hub patient ids the ``'system|value'`` identifiers name (empty: none known)."""
        ...

    async def actor(self, names: Sequence[str]) -> ResolvedActor:
        """The actor's names (identifiers, references) widened with the directory and the partners."""
        ...

    async def consents(self, hub_patient_id: str) -> tuple[Consent, ...]:
        """The patient's current consents, read now (no cache: a revocation counts at once)."""
        ...

    async def consent_senders(self, consent_ids: Sequence[str]) -> dict[str, frozenset[str]]:
        """For each Consent id, every sender (partner id, or ``operator``) of a stored version of it; an id
        the store does not hold maps to the empty set."""
        ...

    async def knows(self, partner_id: str, hub_patient_id: str) -> bool:
        """Whether the partner has a relationship with the patient the hub can see: it named the patient
        in its own namespace or sent a resource about it, has the patient on its roster, or was
        disclosed something about the patient."""
        ...

    async def record(self, record: DecisionRecord) -> None:
        """Append the consult's decision to the audit (idempotent per hook instance and outcome)."""
        ...


class SqlConsultStore:
    """:class:`ConsultStore` on the control-plane database (one session per call)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        # A negative ttl: no entry is ever fresh, so every consult reads the store (the loader is the route
        # stage's, so both read consents alike).
        self._consents = SqlConsentSource(sessions, cache_size=1, ttl_s=-1.0)

    async def patients(self, identifiers: Sequence[str]) -> tuple[str, ...]:
        """Crosswalk sources, plus the crosswalk source of every stored Patient carrying an identifier."""
        sources = [item for item in dict.fromkeys(identifiers) if 0 < len(item) <= SOURCE_MAX]
        if not sources:
            return ()
        async with self._sessions() as session:
            for identifier in list(sources):
                system, _, value = identifier.partition("|")
                for patient in await resources.find_by_identifier(session, "Patient", system, value):
                    history = await resources.versions(session, "Patient", patient.resource_id)
                    creator = history[0].sender if history else patient.sender
                    sources.append(f"{partner_namespace(creator)}:Patient/{patient.resource_id}")
            statement = select(PatientIdentityRow.hub_patient_id).where(
                PatientIdentityRow.source.in_(list(dict.fromkeys(sources)))
            )
            async with guarded(session, "cds_resolve_patient"):
                found = (await session.scalars(statement.distinct())).all()
        return tuple(sorted(set(found)))

    async def actor(self, names: Sequence[str]) -> ResolvedActor:
        """Identifiers -> the Organization/Practitioner resources carrying them (and their other
        identifiers); references -> the resource's identifiers; then the active partners so named."""
        found: set[str] = set(names)
        async with self._sessions() as session:
            for name in names:
                match = _REFERENCE.fullmatch(name)
                if match is not None:
                    history = await resources.versions(session, match[1], match[2])
                    if history:
                        found.update(_identifier_tokens(history[-1].content))
                    continue
                system, _, value = name.partition("|")
                if not system or not value:
                    continue
                for resource_type in ACTOR_TYPES:
                    for version in await resources.find_by_identifier(session, resource_type, system, value):
                        found.add(f"{resource_type}/{version.resource_id}")
                        found.update(_identifier_tokens(version.content))
            registered = await partners.list_partners(session)
        matched = tuple(sorted(p.id for p in registered if p.active and p.organization in found))
        for partner in registered:
            if partner.id in matched:
                found.add(partner.organization)
        return ResolvedActor(names=frozenset(found), partner_ids=matched)

    async def consents(self, hub_patient_id: str) -> tuple[Consent, ...]:
        """The patient's current consents (see :class:`hub.pipeline.stores.SqlConsentSource`)."""
        return await self._consents.consents_for(hub_patient_id)

    async def consent_senders(self, consent_ids: Sequence[str]) -> dict[str, frozenset[str]]:
        """See :meth:`ConsultStore.consent_senders`: one read of the resource store."""
        wanted = sorted({item for item in consent_ids if 0 < len(item) <= RESOURCE_ID_MAX})
        found: dict[str, set[str]] = {item: set() for item in consent_ids}
        if wanted:
            statement = (
                select(ResourceRow.resource_id, ResourceRow.sender)
                .where(ResourceRow.resource_type == "Consent", ResourceRow.resource_id.in_(wanted))
                .distinct()
            )
            async with self._sessions() as session, guarded(session, "cds_consent_senders"):
                for resource_id, sender in (await session.execute(statement)).all():
                    found[resource_id].add(sender)
        return {item: frozenset(senders) for item, senders in found.items()}

    async def knows(self, partner_id: str, hub_patient_id: str) -> bool:
        """See :meth:`ConsultStore.knows`: up to three reads of the control plane, the cheapest first."""
        async with self._sessions() as session:
            sources = await resources.patient_sources(session, hub_patient_id=hub_patient_id)
            if sources and await resources.sender_knows_sources(session, partner_id, sources):
                return True
            rostered = await rosters.rostered_partners(session, [hub_patient_id])
            if partner_id in rostered.get(hub_patient_id, frozenset()):
                return True
            return await audit.was_disclosed_to(session, partner_id, hub_patient_id)

    async def record(self, record: DecisionRecord) -> None:
        """Append to ``consent_decisions``."""
        async with self._sessions() as session:
            await audit.record_decisions(session, [record])


def _identifier_tokens(content: str) -> set[str]:
    """``'system|value'`` of the identifiers (with a system) of a stored resource's JSON."""
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return set()
    tokens: set[str] = set()
    for item in data.get("identifier") or () if isinstance(data, dict) else ():
        if isinstance(item, dict) and isinstance(item.get("system"), str) and isinstance(item.get("value"), str):
            tokens.add(f"{item['system']}|{item['value']}")
    return tokens
