"""Group commit in the resource store, on SQLite and PostgreSQL: concurrent saves share transactions, each
caller gets exactly its own versions, a bad write fails only its own request, and concurrent FHIR creates
are each stored and published exactly once."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.adapters.fhir_rest import build_fhir_router, install_fhir_error_handlers
from hub.control.resources import NewVersion, SqlResourceStore
from hub.errors import Conflict, InvalidInput
from tests.adapters.conftest import VALID_SERVICE_REQUEST, auth, make_authenticator
from tests.adapters.resource_fakes import FakeReadGate
from tests.control.helpers import fetch_all
from tests.fakes import FakeIngressWriter

CONCURRENT = 40


def task(resource_id: str, *, event_id: str | None = None) -> NewVersion:
    content = f'{{"resourceType":"Task","id":"{resource_id}","status":"requested","intent":"order"}}'
    return NewVersion(resource_type="Task", resource_id=resource_id, sender="hosp-a", content=content,
                      event_id=event_id or f"ev-{resource_id}")


async def test_concurrent_saves_share_transactions_and_each_gets_its_own_versions(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = SqlResourceStore(sessions)
    saved = await asyncio.gather(*(store.save([task(f"t{n}a"), task(f"t{n}b")]) for n in range(CONCURRENT)))
    assert [[(f"t{n}a", 1), (f"t{n}b", 1)] for n in range(CONCURRENT)] == [
        [(s.version.resource_id, s.version.version_id) for s in pair] for pair in saved
    ]
    assert store.save_transactions < CONCURRENT  # shared: fewer transactions than requests
    async with sessions() as session:
        rows = await fetch_all(session, "SELECT resource_id FROM resources")
    assert 2 * CONCURRENT == len(rows)


async def test_a_bad_write_fails_only_the_request_it_belongs_to(sessions: async_sessionmaker[AsyncSession]) -> None:
    store = SqlResourceStore(sessions)
    too_long = "e" * 300  # the store refuses an event id over 255 characters
    requests = [[task(f"g{n}")] for n in range(10)]
    requests[4] = [task("bad-1"), task("bad-2", event_id=too_long)]  # atomic: neither may be stored
    outcomes = await asyncio.gather(*(store.save(r) for r in requests), return_exceptions=True)
    assert isinstance(outcomes[4], InvalidInput)
    assert all(not isinstance(o, BaseException) for i, o in enumerate(outcomes) if i != 4), outcomes
    async with sessions() as session:
        stored = {row["resource_id"] for row in await fetch_all(session, "SELECT resource_id FROM resources")}
    assert {f"g{n}" for n in range(10) if n != 4} == stored


Edge = tuple[httpx.AsyncClient, FakeIngressWriter, SqlResourceStore]


@pytest.fixture
async def edge(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[Edge]:
    ingress = FakeIngressWriter()
    store = SqlResourceStore(sessions)
    app = FastAPI()
    app.include_router(build_fhir_router(authenticator=make_authenticator(), ingress=ingress, store=store,
                                         max_body_bytes=1 << 20, reads=FakeReadGate()), prefix="/fhir")
    install_fhir_error_handlers(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub.test") as client:
        yield client, ingress, store


async def test_concurrent_creates_are_each_stored_and_published_exactly_once(
    edge: Edge,
) -> None:
    client, ingress, store = edge

    def referral(n: int) -> bytes:
        body = copy.deepcopy(VALID_SERVICE_REQUEST)
        body["identifier"] = [{"system": "urn:test:referral", "value": f"R-{n}"}]
        return orjson.dumps(body)

    answers = await asyncio.gather(*(client.post("/fhir/ServiceRequest", content=referral(n), headers=auth())
                                     for n in range(CONCURRENT)))
    assert [201] * CONCURRENT == [a.status_code for a in answers]
    ids = [a.json()["id"] for a in answers]
    assert CONCURRENT == len(set(ids))
    published = [headers["ce_id"] for _, _, headers in ingress.written]
    assert sorted(ids) == sorted(published)  # each exactly once, with the resource's id
    reads = await asyncio.gather(*(client.get(f"/fhir/ServiceRequest/{i}", headers=auth()) for i in ids))
    assert [200] * CONCURRENT == [r.status_code for r in reads]
    assert store.save_transactions < CONCURRENT


async def test_concurrent_version_lookups_share_one_select_and_each_gets_its_own(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = SqlResourceStore(sessions)
    await store.save([task("known")])
    keys = ["known", *(f"unknown-{n}" for n in range(CONCURRENT))]
    found = await asyncio.gather(*(store.versions("Task", key) for key in keys))
    assert [["known"]] + [[]] * CONCURRENT == [[v.resource_id for v in versions] for versions in found]
    assert store.version_lookups < len(keys)


async def test_a_create_whose_id_is_taken_writes_nothing_and_answers_the_stored_version_1_only_to_its_retry(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The same create again (same sender, same content) finds version 1 and writes nothing; a create of
    other content (or by another sender) under that id is a conflict, never answered with the stored content."""
    store = SqlResourceStore(sessions)
    first = NewVersion(resource_type="Task", resource_id="c1", sender="hosp-a", content='{"v":1}', first=True,
                       identifiers=(("urn:x", "1"),))
    retry = NewVersion(resource_type="Task", resource_id="c1", sender="hosp-a", content='{"v":1}', first=True)
    other = NewVersion(resource_type="Task", resource_id="c1", sender="hosp-a", content='{"v":2}', first=True)
    foreign = NewVersion(resource_type="Task", resource_id="c1", sender="hosp-b", content='{"v":1}', first=True)
    saved = await store.save([first, task("plain")])
    assert [(1, True), (1, True)] == [(s.version.version_id, s.written) for s in saved]
    again = await store.save([retry])
    assert [(1, False, '{"v":1}')] == [(s.version.version_id, s.written, s.version.content) for s in again]
    for conflicting in (other, foreign):
        with pytest.raises(Conflict):
            await store.save([conflicting])
    together = await asyncio.gather(store.save([retry]), store.save([other]), store.save([task("more")]),
                                    return_exceptions=True)
    assert isinstance(together[1], Conflict)
    assert not isinstance(together[0], BaseException)
    assert not isinstance(together[2], BaseException)
    assert ["c1"] == [v.resource_id for v in await store.find_by_identifier("Task", "urn:x", "1")]
    assert 1 == len(await store.versions("Task", "c1"))
