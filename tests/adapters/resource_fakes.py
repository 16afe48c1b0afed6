"""In-memory fake of the FHIR edge's ``ResourceStore`` port (``hub.adapters.fhir_store``).

Behaves like ``hub.control.resources.SqlResourceStore``: versions numbered from 1, a save of content
equal to the current version writes nothing, saves are all or nothing, identifiers follow the current
version. ``fail_saves`` / ``fail_reads`` simulate a database that does not answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hub.adapters.fhir_disclosure import Shown
from hub.adapters.fhir_store import render
from hub.consent.decision import Decision, Verdict
from hub.consent.redaction import PROFILE_CBO, PROFILE_FULL, redaction_obligation
from hub.control.resources import NewVersion, Saved, StoredVersion
from hub.delivery.partner_view import read_view
from hub.errors import StoreUnavailable
from hub.events import RoutingFacts
from hub.ports import Principal


@dataclass
class FakeResourceStore:
    """Resources, identifiers, patient links and deliveries in dicts."""

    resources: dict[tuple[str, str], list[StoredVersion]] = field(default_factory=dict)
    identifiers: dict[tuple[str, str], tuple[tuple[str, str], ...]] = field(default_factory=dict)
    linked: list[tuple[str, ...]] = field(default_factory=list)
    permitted: set[tuple[str, str]] = field(default_factory=set)
    fail_saves: int = 0
    fail_reads: int = 0
    saves: int = 0

    def _read(self) -> None:
        if self.fail_reads > 0:
            self.fail_reads -= 1
            raise StoreUnavailable("database unavailable")

    async def versions(self, resource_type: str, resource_id: str) -> list[StoredVersion]:
        self._read()
        return list(self.resources.get((resource_type, resource_id), []))

    async def find_by_identifier(self, resource_type: str, system: str | None, value: str) -> list[StoredVersion]:
        self._read()
        return [
            self.resources[key][-1]
            for key, tokens in sorted(self.identifiers.items())
            if key[0] == resource_type
            and any(v == value and (system is None or s == system) for s, v in tokens)
        ]

    async def save(self, writes: Sequence[NewVersion]) -> list[Saved]:
        if self.fail_saves > 0:
            self.fail_saves -= 1
            raise StoreUnavailable("database unavailable")
        self.saves += 1
        staged = {key: list(versions) for key, versions in self.resources.items()}
        identifiers = dict(self.identifiers)
        links: list[tuple[str, ...]] = []
        results = []
        for write in writes:
            key = (write.resource_type, write.resource_id)
            versions = staged.setdefault(key, [])
            if versions and write.first:  # a create whose id is taken writes nothing
                results.append(Saved(version=versions[0], written=False))
                continue
            if versions and versions[-1].content_hash == write.content_hash:
                results.append(Saved(version=versions[-1], written=False))
                continue
            version = StoredVersion(
                resource_type=write.resource_type,
                resource_id=write.resource_id,
                version_id=len(versions) + 1,
                last_updated=datetime.now(UTC).replace(microsecond=0),
                sender=write.sender,
                content=write.content,
                content_hash=write.content_hash,
                event_id=write.event_id,
                patient_source=write.patient_source,
            )
            versions.append(version)
            identifiers[key] = write.identifiers
            if write.patient_sources:
                links.append(write.patient_sources)
            results.append(Saved(version=version, written=True))
        self.resources, self.identifiers = staged, identifiers
        self.linked.extend(links)
        return results

    async def link_patients(self, groups: Sequence[Sequence[str]]) -> None:
        if self.fail_saves > 0:
            self.fail_saves -= 1
            raise StoreUnavailable("database unavailable")
        self.linked.extend(tuple(group) for group in groups if group)

    def _same_patient(self, source: str) -> set[str]:
        """``source`` and every source linked with it (the crosswalk, as far as Patient links made it)."""
        found = {source}
        for group in self.linked:
            if found & set(group):
                found |= set(group)
        return found

    async def knows_patient(self, sender: str, source: str) -> bool:
        self._read()
        sources = self._same_patient(source)
        namespace = f"urn:carehub:partner:{sender}"
        if any(item.startswith((namespace + ":", namespace + "|")) for item in sources):
            return True
        return any(v.sender == sender and v.patient_source in sources for v in self.all_versions())

    async def about_patient(self, resource_type: str, source: str) -> list[StoredVersion]:
        self._read()
        sources = self._same_patient(source)
        return [
            versions[-1]
            for (kind, _), versions in sorted(self.resources.items())
            if kind == resource_type and versions and versions[-1].patient_source in sources
        ]

    async def delivered(self, recipient_id: str, event_ids: Sequence[str]) -> frozenset[str]:
        self._read()
        return frozenset(e for e in event_ids if (recipient_id, e) in self.permitted)

    def all_versions(self) -> list[StoredVersion]:
        """Every stored version of every resource (for 'nothing was written' assertions)."""
        return [version for versions in self.resources.values() for version in versions]


@dataclass
class FakeReadGate:
    """In-memory fake of the FHIR edge's ``ReadGate`` port (``hub.adapters.fhir_disclosure``).

    Permits every read it is asked about, redacted as delivery redacts for the caller's kind (``cbo``
    for a CBO, ``full`` for a hospital), except for the partners in ``deny``; records each question.
    """

    deny: set[str] = field(default_factory=set)
    asked: list[tuple[str | None, str | None]] = field(default_factory=list)

    async def disclose(self, principal: Principal, facts: RoutingFacts, version: StoredVersion) -> Shown | None:
        self.asked.append((principal.partner_id, version.event_id))
        if principal.partner_id in self.deny:
            return None
        profile = PROFILE_CBO if principal.kind == "cbo" else PROFILE_FULL
        decision = Decision(Verdict.PERMIT, "fake:read", "permitted", "TREAT", (redaction_obligation(profile),))
        return Shown(version, read_view(render(version), decision))
