"""The FHIR resource store on SQLite and PostgreSQL: versions, idempotent saves, identifiers, patient links."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.adapters.fhir_rest import build_fhir_router, install_fhir_error_handlers
from hub.control import resources
from hub.control.audit import DecisionRecord, record_decisions
from hub.control.crosswalk import resolve_patient
from hub.control.resources import NewVersion, SqlResourceStore, content_hash
from hub.errors import InvalidInput
from tests.adapters import fhir_samples as samples
from tests.adapters.conftest import CBO_TOKEN, auth, make_authenticator, valid_body
from tests.adapters.resource_fakes import FakeReadGate
from tests.control.helpers import fetch_all
from tests.fakes import FakeIngressWriter


def task(status: str = "requested", *, resource_id: str = "t1", **extra: object) -> NewVersion:
    """A Task version with ``status`` (the content is the JSON text the edge would store)."""
    content = f'{{"resourceType":"Task","id":"{resource_id}","status":"{status}","intent":"order"}}'
    return NewVersion(
        resource_type="Task", resource_id=resource_id, sender="hosp-a", content=content, **extra  # type: ignore[arg-type]
    )


async def test_a_new_resource_is_stored_as_version_1_with_everything_it_was_given(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    write = task(event_id="ev-1", patient_source="urn:carehub:partner:hosp-a:Patient/1")
    async with sessions() as session:
        [saved] = await resources.save_versions(session, [write])
    async with sessions() as session:
        [stored] = await resources.versions(session, "Task", "t1")

    assert saved.written
    assert stored == saved.version
    assert ("Task", "t1", 1, "hosp-a") == (stored.resource_type, stored.resource_id, stored.version_id, stored.sender)
    assert (write.content, content_hash(write.content)) == (stored.content, stored.content_hash)
    assert ("ev-1", "urn:carehub:partner:hosp-a:Patient/1") == (stored.event_id, stored.patient_source)
    assert UTC == stored.last_updated.tzinfo
    assert 0 == stored.last_updated.microsecond % 1000
    assert abs((datetime.now(UTC) - stored.last_updated).total_seconds()) < 60


async def test_an_unknown_resource_has_no_versions(session: AsyncSession) -> None:
    assert [] == await resources.versions(session, "Task", "nothing-here")


async def test_saving_the_current_content_again_writes_nothing(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        [first] = await resources.save_versions(session, [task()])
    async with sessions() as session:
        [again] = await resources.save_versions(session, [task(event_id="another-event")])
        rows = await fetch_all(session, "SELECT version_id, event_id FROM resources")

    assert (True, False) == (first.written, again.written)
    assert first.version == again.version
    assert [{"version_id": 1, "event_id": None}] == rows


async def test_changed_content_becomes_the_next_version_and_going_back_is_a_change_too(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    for status in ("requested", "accepted", "requested"):
        async with sessions() as session:
            await resources.save_versions(session, [task(status)])
    async with sessions() as session:
        stored = await resources.versions(session, "Task", "t1")

    assert [1, 2, 3] == [v.version_id for v in stored]
    assert ["requested", "accepted", "requested"] == [v.content.split('"status":"')[1].split('"')[0] for v in stored]


async def test_concurrent_updates_of_one_resource_get_contiguous_versions_and_none_is_lost(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async def save(status: str) -> resources.Saved:
        async with sessions() as session:
            [saved] = await resources.save_versions(session, [task(status)])
            return saved

    statuses = [f"s{n}" for n in range(8)]
    results = await asyncio.gather(*(save(s) for s in statuses))
    async with sessions() as session:
        stored = await resources.versions(session, "Task", "t1")

    assert list(range(1, 9)) == [v.version_id for v in stored]
    assert sorted(statuses) == sorted(v.content.split('"status":"')[1].split('"')[0] for v in stored)
    assert all(r.written for r in results)


async def test_concurrent_saves_of_identical_content_store_one_version(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async def save() -> bool:
        async with sessions() as session:
            [saved] = await resources.save_versions(session, [task()])
            return saved.written

    written = await asyncio.gather(*(save() for _ in range(6)))
    async with sessions() as session:
        rows = await fetch_all(session, "SELECT version_id FROM resources")
    assert [{"version_id": 1}] == rows
    assert 1 == sum(written)


async def test_a_save_is_all_or_nothing(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    original = resources._replace_identifiers

    async def fail_on_second(session: AsyncSession, write: NewVersion, *, first_version: bool) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("disk on fire")
        await original(session, write, first_version=first_version)

    monkeypatch.setattr(resources, "_replace_identifiers", fail_on_second)
    with pytest.raises(RuntimeError):
        async with sessions() as session:
            await resources.save_versions(session, [task(resource_id="a"), task(resource_id="b")])
    async with sessions() as session:
        assert [] == await fetch_all(session, "SELECT resource_id FROM resources")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"resource_type": ""}, "resource_type"),
        ({"resource_id": "x" * 65}, "resource_id"),
        ({"sender": "s" * 64}, "sender"),
        ({"event_id": "line\nbreak"}, "event_id"),
        ({"patient_source": "p" * 513}, "patient_source"),
    ],
)
async def test_an_unstorable_version_is_invalid_input_naming_the_field(
    session: AsyncSession, change: dict[str, str], field: str
) -> None:
    write = task()
    values = {**{name: getattr(write, name) for name in write.__slots__}, **change}
    with pytest.raises(InvalidInput) as caught:
        await resources.save_versions(session, [NewVersion(**values)])
    assert field == caught.value.expression


# --- identifiers --------------------------------------------------------------------------------

MRN = "http://hospital.example/mrn"


async def test_identifiers_of_the_current_version_are_found_by_token(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        await resources.save_versions(
            session,
            [
                task(resource_id="t1", identifiers=((MRN, "42"), ("", "local-7"))),
                task(resource_id="t2", identifiers=(("http://other.example", "42"),)),
            ],
        )

    async def ids(system: str | None, value: str, resource_type: str = "Task") -> list[str]:
        async with sessions() as session:
            return [v.resource_id for v in await resources.find_by_identifier(session, resource_type, system, value)]

    assert ["t1"] == await ids(MRN, "42")
    assert ["t1", "t2"] == await ids(None, "42")
    assert ["t1"] == await ids("", "local-7")
    assert [] == await ids(MRN, "local-7")
    assert [] == await ids(MRN, "42", "ServiceRequest")
    assert [] == await ids(MRN, "")


async def test_identifiers_follow_the_current_version(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        await resources.save_versions(session, [task("requested", identifiers=((MRN, "old"),))])
    async with sessions() as session:
        await resources.save_versions(session, [task("accepted", identifiers=((MRN, "new"),))])
    async with sessions() as session:
        old = await resources.find_by_identifier(session, "Task", MRN, "old")
        new = await resources.find_by_identifier(session, "Task", MRN, "new")
    assert [] == old
    assert [2] == [v.version_id for v in new]


async def test_identifiers_too_long_to_index_are_skipped_not_refused(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    long_value = "v" * 600
    async with sessions() as session:
        [saved] = await resources.save_versions(session, [task(identifiers=((MRN, long_value), (MRN, "ok")))])
    async with sessions() as session:
        rows = await fetch_all(session, "SELECT id_value FROM resource_identifiers")
        found = await resources.find_by_identifier(session, "Task", MRN, long_value)
    assert saved.written
    assert [{"id_value": "ok"}] == rows
    assert [] == found


# --- patient links ------------------------------------------------------------------------------


async def test_a_stored_patient_links_its_sources_to_one_hub_patient(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    sources = (f"{MRN}|42", "urn:carehub:partner:hosp-a:Patient/p1")
    patient = NewVersion(
        resource_type="Patient", resource_id="p1", sender="hosp-a", content='{"resourceType":"Patient"}',
        patient_sources=sources,
    )
    async with sessions() as session:
        await resources.save_versions(session, [patient])
    async with sessions() as session:
        by_mrn = await resolve_patient(session, sources[0])
    async with sessions() as session:
        by_reference = await resolve_patient(session, sources[1])
    assert by_mrn == by_reference


async def test_new_sources_join_the_hub_patient_an_earlier_source_already_has(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        known = await resolve_patient(session, f"{MRN}|42")
    async with sessions() as session:
        await resources.link_patient_sources(session, [["urn:oid:1.2|new", f"{MRN}|42", "line\nbreak", ""]])
    async with sessions() as session:
        joined = await resolve_patient(session, "urn:oid:1.2|new")
        rows = await fetch_all(session, "SELECT source FROM patient_identities ORDER BY source")
    assert known == joined
    assert [{"source": f"{MRN}|42"}, {"source": "urn:oid:1.2|new"}] == rows


async def test_two_patients_the_hub_already_tells_apart_are_not_merged(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        first = await resolve_patient(session, f"{MRN}|1")
    async with sessions() as session:
        second = await resolve_patient(session, f"{MRN}|2")
    async with sessions() as session:
        await resources.link_patient_sources(session, [[f"{MRN}|1", f"{MRN}|2", f"{MRN}|3"]])
    async with sessions() as session:
        after = [await resolve_patient(session, f"{MRN}|{n}") for n in (1, 2, 3)]
    assert [first, second, first] == after


# --- delivery (from the audit) ------------------------------------------------------------------


def decision(event_id: str, recipient: str, verdict: str) -> DecisionRecord:
    """An audited decision about ``event_id`` for ``recipient``."""
    return DecisionRecord(
        event_id=event_id, hub_patient_id="hp-1", recipient_id=recipient, verdict=verdict,  # type: ignore[arg-type]
        rule="test", reason="test", purpose="CAREMGT", resource_type="ServiceRequest", decided_at=datetime.now(UTC),
    )


async def test_delivered_events_are_those_the_audit_permitted_to_the_recipient(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        await record_decisions(
            session,
            [
                decision("e1", "food-bank", "permit"),
                decision("e2", "food-bank", "deny"),
                decision("e3", "other", "permit"),
            ],
        )
    store = SqlResourceStore(sessions)
    assert frozenset({"e1"}) == await store.delivered("food-bank", ["e1", "e2", "e3", "e4"])
    assert frozenset() == await store.delivered("food-bank", [])


async def test_the_sql_store_port_reads_and_writes_through_its_own_sessions(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = SqlResourceStore(sessions)
    [saved] = await store.save([task(identifiers=((MRN, "9"),))])
    await store.link_patients([[f"{MRN}|9"]])
    assert [saved.version] == await store.versions("Task", "t1")
    assert [saved.version] == await store.find_by_identifier("Task", MRN, "9")
    async with sessions() as session:
        assert 1 == len(await fetch_all(session, "SELECT source FROM patient_identities"))


# --- the FHIR edge on the real store (both backends) ----------------------------------------------


Fhir = tuple[httpx.AsyncClient, FakeIngressWriter]


@pytest.fixture
async def fhir(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[Fhir]:
    """A client on the FHIR router over the SQL resource store of the test database."""
    ingress = FakeIngressWriter()
    app = FastAPI()
    store = SqlResourceStore(sessions)
    app.include_router(
        build_fhir_router(
            authenticator=make_authenticator(), ingress=ingress, store=store, max_body_bytes=1 << 20,
            reads=FakeReadGate(),
        ),
        prefix="/fhir",
    )
    install_fhir_error_handlers(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub.test") as client:
        yield client, ingress


async def test_a_read_after_a_201_finds_the_resource(fhir: Fhir) -> None:
    client, ingress = fhir
    created = await client.post("/fhir/Task", content=orjson.dumps(samples.task()), headers=auth())
    read = await client.get(created.headers["location"], headers=auth())
    assert (201, 200) == (created.status_code, read.status_code)
    assert created.json() == read.json()
    assert 1 == len(ingress.written)


async def test_updates_version_and_an_identical_put_writes_nothing(
    fhir: Fhir, sessions: async_sessionmaker[AsyncSession]
) -> None:
    client, ingress = fhir
    statuses = []
    for status in ("requested", "accepted", "accepted"):
        response = await client.put(
            "/fhir/Task/hosp-a.task-1", content=orjson.dumps(samples.task(status=status)), headers=auth()
        )
        statuses.append((response.status_code, response.headers["etag"]))
    assert [(201, 'W/"1"'), (200, 'W/"2"'), (200, 'W/"2"')] == statuses
    assert 2 == len(ingress.written)
    async with sessions() as session:
        rows = await fetch_all(session, "SELECT version_id, event_id FROM resources ORDER BY version_id")
    assert [h["ce_id"] for _, _, h in ingress.written] == [r["event_id"] for r in rows]


async def test_a_referral_transaction_is_stored_and_its_patient_linked(
    fhir: Fhir, sessions: async_sessionmaker[AsyncSession]
) -> None:
    client, ingress = fhir
    response = await client.post("/fhir", content=orjson.dumps(samples.referral_transaction()), headers=auth())
    assert 200 == response.status_code, response.text
    patient = response.json()["entry"][0]["response"]["location"].split("/_history/")[0]
    async with sessions() as session:
        by_mrn = await resolve_patient(session, f"{samples.MRN_SYSTEM}|MRN-1")
    async with sessions() as session:
        by_reference = await resolve_patient(session, f"urn:carehub:partner:hosp-a:{patient}")
    async with sessions() as session:
        rows = await fetch_all(session, "SELECT resource_type FROM resources ORDER BY resource_type")
    assert by_mrn == by_reference
    assert [{"resource_type": "Patient"}, {"resource_type": "ServiceRequest"}, {"resource_type": "Task"}] == rows
    assert 2 == len(ingress.written)


async def test_conditional_create_uses_the_identifier_index(fhir: Fhir) -> None:
    client, _ = fhir
    condition = {"If-None-Exist": f"identifier={samples.MRN_SYSTEM}|MRN-1"}
    first = await client.post("/fhir/Patient", content=orjson.dumps(samples.patient()), headers={**auth(), **condition})
    second = await client.post(
        "/fhir/Patient", content=orjson.dumps(samples.patient(gender="female")), headers={**auth(), **condition}
    )
    assert (201, 200) == (first.status_code, second.status_code)
    assert first.json()["id"] == second.json()["id"]


async def test_a_cbo_reads_what_the_audit_shows_was_delivered_to_it(
    fhir: Fhir, sessions: async_sessionmaker[AsyncSession]
) -> None:
    client, ingress = fhir
    created = await client.post("/fhir/ServiceRequest", content=valid_body(), headers=auth())
    location = created.headers["location"].split("/_history/")[0]
    before = await client.get(location, headers=auth(CBO_TOKEN))
    async with sessions() as session:
        await record_decisions(session, [decision(ingress.written[0][2]["ce_id"], "food-bank", "permit")])
    after = await client.get(location, headers=auth(CBO_TOKEN))
    assert (404, 200) == (before.status_code, after.status_code)


def consent_version(
    resource_id: str, patient_source: str, *, status: str = "active", sender: str = "hosp-a"
) -> NewVersion:
    content = f'{{"resourceType":"Consent","id":"{resource_id}","status":"{status}"}}'
    return NewVersion(
        resource_type="Consent", resource_id=resource_id, sender=sender, content=content,
        event_id=f"ev-{resource_id}-{status}", patient_source=patient_source,
    )


async def test_resources_about_a_patient_follow_the_crosswalk_and_the_current_version(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    reference = "urn:carehub:partner:hosp-a:Patient/p1"
    async with sessions() as session:
        await resources.link_patient_sources(session, [[f"{MRN}|42", reference]])
    async with sessions() as session:
        hub_patient_id = await resolve_patient(session, reference)
    async with sessions() as session:
        await resources.save_versions(session, [consent_version("c1", f"{MRN}|42"), consent_version("c2", reference)])
    async with sessions() as session:
        await resources.save_versions(session, [consent_version("c1", f"{MRN}|42", status="inactive")])
        await resources.save_versions(session, [consent_version("c3", "urn:oid:9|other")])
        # c4 was about this patient, and its current version is about another one
        await resources.save_versions(session, [consent_version("c4", reference)])
        await resources.save_versions(session, [consent_version("c4", "urn:oid:9|other", status="inactive")])

    async with sessions() as session:
        sources = await resources.patient_sources(session, hub_patient_id=hub_patient_id)
        found = await resources.current_about_patient(session, "Consent", sources)
    assert sorted([f"{MRN}|42", reference]) == sources
    assert [("c1", 2), ("c2", 1)] == [(v.resource_id, v.version_id) for v in found]

    store = SqlResourceStore(sessions)
    assert ["c1", "c2"] == [v.resource_id for v in await store.about_patient("Consent", reference)]
    assert ["c3", "c4"] == [v.resource_id for v in await store.about_patient("Consent", "urn:oid:9|other")]
    assert [] == await store.about_patient("Task", reference)


async def test_a_sender_knows_its_own_patients_and_those_it_sent_resources_about(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = SqlResourceStore(sessions)
    assert await store.knows_patient("hosp-a", "urn:carehub:partner:hosp-a:Patient/9")
    assert await store.knows_patient("hosp-a", "urn:carehub:partner:hosp-a|MRN-1")
    assert not await store.knows_patient("hosp-a", f"{MRN}|42")
    await store.save([consent_version("c1", f"{MRN}|42", sender="hosp-b")])
    assert not await store.knows_patient("hosp-a", f"{MRN}|42")
    assert await store.knows_patient("hosp-b", f"{MRN}|42")
    # linked to a Patient hosp-a sent: its own name for the same patient
    await store.link_patients([[f"{MRN}|42", "urn:carehub:partner:hosp-a:Patient/p1"]])
    assert await store.knows_patient("hosp-a", f"{MRN}|42")
