"""Consent changes skip hub.ingress: the FHIR edge resolves the patient and writes the consent-change event
straight to the patient's partition of hub.events before it answers 2xx (ADR 0006), so a revocation governs
every event of that patient accepted afterwards. Everything else still goes through hub.ingress."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import orjson
import pytest
from fastapi import FastAPI

from hub import events
from hub.adapters.fhir_rest import build_fhir_router, install_fhir_error_handlers
from hub.pipeline.normalize import EdgeNormalizer
from hub.topics.registry import EVENTS
from tests.adapters.conftest import HOSPITAL_TOKEN, MAX_BODY_BYTES, auth, make_authenticator, valid_service_request
from tests.adapters.resource_fakes import FakeResourceStore
from tests.adapters.test_fhir_consent import consent
from tests.fakes import FakeIngressWriter, FakePatientIndex, FakePublisher


@dataclass
class DirectEdge:
    client: httpx.AsyncClient
    ingress: FakeIngressWriter
    published: FakePublisher
    patients: FakePatientIndex
    store: FakeResourceStore


@pytest.fixture
async def direct() -> AsyncIterator[DirectEdge]:
    ingress, published, patients, store = FakeIngressWriter(), FakePublisher(), FakePatientIndex(), FakeResourceStore()
    app = FastAPI()
    app.include_router(
        build_fhir_router(
            authenticator=make_authenticator(), ingress=ingress, store=store, max_body_bytes=MAX_BODY_BYTES,
            events=EdgeNormalizer(patients=patients, publisher=published),
        ),
        prefix="/fhir",
    )
    install_fhir_error_handlers(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub.test") as client:
        yield DirectEdge(client, ingress, published, patients, store)


async def test_a_consent_is_on_hub_events_keyed_by_hub_patient_id_before_its_201(direct: DirectEdge) -> None:
    answer = await direct.client.post("/fhir/Consent", content=orjson.dumps(consent()), headers=auth())
    assert 201 == answer.status_code, answer.text
    assert [] == direct.ingress.written
    [(topic, key, value, headers)] = direct.published.published
    hub_patient_id = direct.patients.ids["urn:carehub:partner:hosp-a:Patient/123"]
    event = events.decode(value)
    assert (EVENTS.name, hub_patient_id.encode()) == (topic, key)
    assert ("consent-change", hub_patient_id) == (event.facts.event_kind, event.facts.hub_patient_id)
    assert (answer.json()["id"], f"Patient/{hub_patient_id}") == (headers["ce_id"], headers["ce_subject"])


async def test_a_revocation_follows_its_consent_on_the_same_key(direct: DirectEdge) -> None:
    created = (await direct.client.post("/fhir/Consent", content=orjson.dumps(consent()), headers=auth())).json()
    revoked = orjson.dumps(consent(id=created["id"], status="inactive"))
    answer = await direct.client.put(f"/fhir/Consent/{created['id']}", content=revoked, headers=auth())
    assert 200 == answer.status_code, answer.text
    keys = {key for _, key, _, _ in direct.published.published}
    assert ["active", "inactive"] == [events.decode(v).facts.status for _, _, v, _ in direct.published.published]
    assert 1 == len(keys)


async def test_a_referral_still_goes_through_hub_ingress(direct: DirectEdge) -> None:
    body = orjson.dumps(valid_service_request())
    answer = await direct.client.post("/fhir/ServiceRequest", content=body, headers=auth(HOSPITAL_TOKEN))
    assert 201 == answer.status_code, answer.text
    assert (1, []) == (len(direct.ingress.written), direct.published.published)


async def test_a_broker_that_does_not_acknowledge_the_consent_gets_503_and_nothing_is_stored(
    direct: DirectEdge,
) -> None:
    direct.published.fail_times = 1
    answer = await direct.client.post("/fhir/Consent", content=orjson.dumps(consent()), headers=auth())
    assert 503 == answer.status_code, answer.text
    assert "OperationOutcome" == answer.json()["resourceType"]
    assert ([], {}) == (direct.published.published, direct.store.resources)
    retried = await direct.client.post("/fhir/Consent", content=orjson.dumps(consent()), headers=auth())
    assert 201 == retried.status_code


async def test_a_crosswalk_that_does_not_answer_gets_503_and_nothing_is_written(direct: DirectEdge) -> None:
    direct.patients.fail_times = 1
    answer = await direct.client.post("/fhir/Consent", content=orjson.dumps(consent()), headers=auth())
    assert 503 == answer.status_code, answer.text
    assert ([], [], {}) == (direct.published.published, direct.ingress.written, direct.store.resources)
