"""Who may consult the consent service about a patient, on SQLite and PostgreSQL: a partner that sent data
about the patient, has it on its roster, or was disclosed something about it; nobody else (and a consent
service answer is not a disclosure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.adapters.cds_hooks_store import SqlConsultStore
from hub.control import audit, resources, rosters
from hub.control.audit import DecisionRecord
from hub.control.crosswalk import resolve_patient
from hub.control.partners import create_partner
from hub.control.resources import NewVersion

MRN = "urn:oid:1.2.3|MRN-REL"


async def test_each_relationship_lets_a_partner_consult_and_a_stranger_is_refused(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        for partner_id, kind in (("general", "hospital"), ("other", "hospital"), ("pantry", "cbo"),
                                 ("shelter", "cbo"), ("clinic", "cbo")):
            await create_partner(session, id=partner_id, kind=kind, name=partner_id,
                                 organization=f"Organization/{partner_id}")
        patient = await resolve_patient(session, MRN)
        await resources.save_versions(session, [NewVersion(
            resource_type="ServiceRequest", resource_id="sr-1", sender="general", content="{}",
            event_id="evt-1", patient_source=MRN)])
        await rosters.add_to_roster(session, "pantry", MRN)
        base = DecisionRecord(event_id="evt-1", hub_patient_id=patient, recipient_id="shelter", verdict="permit",
                              rule="policy:cbo-referral-addressed", reason="r", purpose="CAREMGT",
                              resource_type="ServiceRequest", decided_at=datetime(2026, 1, 1, tzinfo=UTC))
        await audit.record_decisions(session, [
            base,
            replace(base, recipient_id="clinic", rule="cds:policy:x"),  # a consult answer: nothing disclosed
            replace(base, recipient_id="other", verdict="deny", rule="policy:no-sharing-rule"),
        ])
    store = SqlConsultStore(sessions)
    known = {p: await store.knows(p, patient) for p in ("general", "pantry", "shelter", "clinic", "other")}
    assert {"general": True, "pantry": True, "shelter": True, "clinic": False, "other": False} == known
    assert not await store.knows("general", "hp-" + "0" * 32)


async def test_the_consult_store_names_every_sender_of_each_consents_versions(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Who recorded a Consent (and the operator's later version) comes from the resource store; an id it does
    not hold, or a resource of another type with that id, has no sender."""
    async with sessions() as session:
        await resources.save_versions(session, [
            NewVersion(resource_type="Consent", resource_id="c-a", sender="general", content="{}", event_id="e-1",
                       patient_source=MRN),
            NewVersion(resource_type="Consent", resource_id="c-b", sender="other", content="{}", event_id="e-2",
                       patient_source=MRN),
            NewVersion(resource_type="ServiceRequest", resource_id="c-c", sender="general", content="{}",
                       event_id="e-3", patient_source=MRN),
        ])
        await resources.save_versions(session, [NewVersion(
            resource_type="Consent", resource_id="c-a", sender="operator", content='{"status": "inactive"}',
            event_id="e-4", patient_source=MRN)])
    store = SqlConsultStore(sessions)
    assert {"c-a": frozenset({"general", "operator"}), "c-b": frozenset({"other"}), "c-c": frozenset(),
            "x" * 65: frozenset()} == await store.consent_senders(["c-a", "c-b", "c-c", "x" * 65])
    assert {} == await store.consent_senders([])
