"""The SQL ConsentSource on SQLite and PostgreSQL: loads a patient's current consents through the crosswalk,
caches them per patient, applies a consent-change at once, expires after its TTL."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.consent.model import ConsentStatus, consent_from_fhir
from hub.control import resources
from hub.control.crosswalk import resolve_patient
from hub.control.resources import NewVersion
from hub.pipeline.stores import SqlConsentSource

MRN = "urn:oid:1.2.3|MRN-5"
REFERENCE = "urn:carehub:partner:hosp-a:Patient/5"


def consent_json(resource_id: str, status: str = "active") -> str:
    return orjson.dumps({
        "resourceType": "Consent", "id": resource_id, "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "patient": {"reference": "Patient/5"},
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
    }).decode()


def version(resource_id: str, source: str, status: str = "active") -> NewVersion:
    return NewVersion(resource_type="Consent", resource_id=resource_id, sender="hosp-a",
                      content=consent_json(resource_id, status), event_id=f"{resource_id}-{status}",
                      patient_source=source)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_consents_are_loaded_through_the_crosswalk_cached_and_changed_in_place(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        await resources.link_patient_sources(session, [[MRN, REFERENCE]])
    async with sessions() as session:
        hub_patient_id = await resolve_patient(session, MRN)
    async with sessions() as session:
        await resources.save_versions(session, [version("c1", MRN), version("c2", REFERENCE), version("c3", "urn:x|9")])
    clock = Clock()
    source = SqlConsentSource(sessions, ttl_s=10, clock=clock)

    first = await source.consents_for(hub_patient_id)
    assert ["c1", "c2"] == sorted(c.id or "" for c in first)
    assert {hub_patient_id} == {c.patient for c in first}
    assert first == await source.consents_for(hub_patient_id)
    assert 1 == source.loads

    # a revocation reaches the route stage before the edge stored it: the event's version counts at once
    revoked = consent_from_fhir(orjson.loads(consent_json("c1", "inactive")), patient=hub_patient_id)
    await source.changed(hub_patient_id, revoked)
    statuses = {c.id: c.status for c in await source.consents_for(hub_patient_id)}
    assert {"c1": ConsentStatus.INACTIVE, "c2": ConsentStatus.ACTIVE} == statuses

    # once stored, a reload after the TTL finds the same
    async with sessions() as session:
        await resources.save_versions(session, [version("c1", MRN, "inactive")])
    clock.now = 11
    statuses = {c.id: c.status for c in await source.consents_for(hub_patient_id)}
    assert {"c1": ConsentStatus.INACTIVE, "c2": ConsentStatus.ACTIVE} == statuses
    assert 3 == source.loads


async def test_a_patient_without_consents_has_none_and_the_cache_is_bounded(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    source = SqlConsentSource(sessions, cache_size=2)
    for patient in ("hp-a", "hp-b", "hp-c", "hp-a"):
        assert () == await source.consents_for(patient)
    assert 4 == source.loads  # hp-a was evicted by hp-c


async def test_an_unreadable_stored_consent_is_skipped(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        hub_patient_id = await resolve_patient(session, MRN)
    broken = NewVersion(resource_type="Consent", resource_id="bad", sender="hosp-a",
                        content='{"resourceType":"Consent","status":"bogus"}', patient_source=MRN)
    async with sessions() as session:
        await resources.save_versions(session, [broken, version("ok", MRN)])
    assert ["ok"] == [c.id for c in await SqlConsentSource(sessions).consents_for(hub_patient_id)]


async def test_a_batch_prefetch_reads_many_patients_at_once_and_matches_one_by_one_loading(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    patients: list[str] = []
    async with sessions() as session:
        for n in range(6):
            await resources.link_patient_sources(session, [[f"urn:oid:1.2.3|P{n}", f"urn:local|L{n}"]])
            patients.append(await resolve_patient(session, f"urn:oid:1.2.3|P{n}"))
        writes = [version(f"c{n}", f"urn:oid:1.2.3|P{n}") for n in range(0, 6, 2)]
        writes += [version(f"d{n}", f"urn:local|L{n}") for n in range(0, 6, 3)]
        await resources.save_versions(session, writes)
        # a consent whose newer version names another patient no longer counts for the first one
        await resources.save_versions(session, [version("e1", "urn:oid:1.2.3|P1")])
        await resources.save_versions(session, [version("e1", "urn:x|elsewhere", "inactive")])
    one_by_one = SqlConsentSource(sessions)
    expected = {p: sorted((c.id or "", c.status) for c in await one_by_one.consents_for(p)) for p in patients}
    batched = SqlConsentSource(sessions)
    await batched.prefetch([*patients, "hp-unknown"])
    assert len(patients) + 1 == batched.loads
    got = {p: sorted((c.id or "", c.status) for c in await batched.consents_for(p)) for p in patients}
    assert len(patients) + 1 == batched.loads  # every answer came from the prefetch
    assert expected == got
    assert [("c0", ConsentStatus.ACTIVE), ("d0", ConsentStatus.ACTIVE)] == got[patients[0]]
    assert [] == got[patients[1]]
    assert () == await batched.consents_for("hp-unknown")


async def test_a_prefetch_skips_fresh_entries_and_reloads_expired_ones(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        hub_patient_id = await resolve_patient(session, MRN)
        await resources.save_versions(session, [version("c1", MRN)])
    clock = Clock()
    source = SqlConsentSource(sessions, ttl_s=10, clock=clock)
    await source.prefetch([hub_patient_id])
    await source.prefetch([hub_patient_id])
    assert 1 == source.loads
    clock.now = 11
    await source.prefetch([hub_patient_id])
    assert 2 == source.loads
    assert ["c1"] == [c.id for c in await source.consents_for(hub_patient_id)]
