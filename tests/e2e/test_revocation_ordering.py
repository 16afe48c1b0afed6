"""Over the real broker, with no pipeline worker running: when the consent API answers a revocation, its
consent-change event is already on hub.events on the patient's key (the edge put it there, not normalize),
so every event of the patient accepted afterwards is behind it and is decided under it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from hub import events
from hub.app import running_hub
from hub.broker.embedded import EmbeddedBroker
from hub.topics.registry import EVENTS, INGRESS
from tests.e2e.conftest import HubClient, read_topic, settings_for
from tests.e2e.test_consent_over_tansu import opt_out

pytestmark = pytest.mark.broker


@pytest.fixture
async def edge_only(tansu: EmbeddedBroker, tmp_path: Path) -> AsyncIterator[HubClient]:
    async with (
        running_hub(settings_for(tansu.bootstrap, tmp_path), workers=False) as hub,
        httpx.AsyncClient(base_url=hub.http_url or "", timeout=30) as http,
    ):
        yield HubClient(hub=hub, http=http, prefix="revoke")


async def test_a_revocation_is_on_the_patients_partition_of_hub_events_when_it_is_answered(
    edge_only: HubClient,
) -> None:
    token = edge_only.admin["Authorization"].removeprefix("Bearer ")
    # A patient of this test alone: consent ids derive from the bytes, and hub.events outlives each test.
    patient = {"identifier": {"system": "urn:oid:1.2.3", "value": f"MRN-{uuid.uuid4().hex}"}}
    created = await edge_only.post_fhir("Consent", orjson.dumps({**opt_out(), "patient": patient}), token)
    assert 201 == created.status_code, created.text
    consent_id = created.json()["id"]
    revocation = orjson.dumps({**opt_out("inactive", consent_id), "patient": patient})
    revoked = await edge_only.http.put(f"/fhir/Consent/{consent_id}", content=revocation, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"})
    assert 200 == revoked.status_code, revoked.text
    revocation_id = events.event_id("operator", f"Consent/{consent_id}/_history/2", revocation)

    on_events = [r for r in await read_topic(edge_only.hub.bootstrap, EVENTS.name, expect=10_000, timeout_s=2)
                 if dict(r.headers).get("ce_id") in {created.json()["id"].encode(), revocation_id.encode()}]
    on_ingress = [r for r in await read_topic(edge_only.hub.bootstrap, INGRESS.name, expect=10_000, timeout_s=1)
                  if dict(r.headers).get("ce_id") == revocation_id.encode()]

    assert [] == on_ingress
    assert [consent_id, revocation_id] == [dict(r.headers)["ce_id"].decode() for r in on_events]
    [first, second] = [events.decode(r.value) for r in on_events]
    assert ("active", "inactive") == (first.facts.status, second.facts.status)
    assert second.facts.hub_patient_id is not None
    assert {second.facts.hub_patient_id.encode()} == {r.key for r in on_events}
    assert (on_events[0].partition, on_events[0].offset) < (on_events[1].partition, on_events[1].offset)
