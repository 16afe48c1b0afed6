"""The CDS Hooks router in memory (fake store): the gather -> decide -> audit order, 503 when the store does
not answer, no 500 on any body, logs without identifiers, and no card naming a Consent its caller may not
read (ADR 0007 decision 7)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from structlog.testing import capture_logs

from hub.adapters.cds_hooks import build_cds_router
from hub.adapters.cds_hooks_store import ResolvedActor
from hub.consent.model import Consent
from hub.control.audit import DecisionRecord
from hub.errors import StoreUnavailable
from tests.adapters.conftest import CBO_TOKEN, HOSPITAL_B_TOKEN, HOSPITAL_TOKEN, OPERATOR_TOKEN, make_authenticator
from tests.consent.helpers import PATIENT, optout, part2_consent

CONSULT = "/cds-services/patient-consent-consult"
MRN = "urn:oid:1.2.3|MRN-SECRET-77"


@dataclass
class FakeConsultStore:
    """Knows one patient (MRN) with the given consents, each recorded by ``senders``' partners (default:
    hospital ``hosp-a``); records the audit; can be made unavailable (or only the senders' read)."""

    consents_of: tuple[Consent, ...] = ()
    recorded: list[DecisionRecord] = field(default_factory=list)
    down: bool = False
    relationships: set[tuple[str, str]] = field(default_factory=lambda: {
        ("food-bank", PATIENT), ("hosp-a", PATIENT), ("hosp-b", PATIENT)})
    senders: dict[str, frozenset[str]] = field(default_factory=dict)
    senders_down: bool = False
    senders_asked: list[tuple[str, ...]] = field(default_factory=list)

    async def patients(self, identifiers: Sequence[str]) -> tuple[str, ...]:
        if self.down:
            raise StoreUnavailable("the database did not answer")
        return (PATIENT,) if MRN in identifiers else ()

    async def actor(self, names: Sequence[str]) -> ResolvedActor:
        return ResolvedActor(frozenset(names), ("food-bank",) if "Organization/food-bank" in names else ())

    async def consents(self, hub_patient_id: str) -> tuple[Consent, ...]:
        return self.consents_of

    async def consent_senders(self, consent_ids: Sequence[str]) -> dict[str, frozenset[str]]:
        self.senders_asked.append(tuple(consent_ids))
        if self.senders_down:
            raise StoreUnavailable("the database did not answer")
        return {item: self.senders.get(item, frozenset({"hosp-a"})) for item in consent_ids}

    async def knows(self, partner_id: str, hub_patient_id: str) -> bool:
        return (partner_id, hub_patient_id) in self.relationships

    async def record(self, record: DecisionRecord) -> None:
        self.recorded.append(record)


@pytest.fixture
def store() -> FakeConsultStore:
    return FakeConsultStore(consents_of=(optout("c1"),))


@pytest.fixture
async def client(store: FakeConsultStore) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(build_cds_router(authenticator=make_authenticator(), store=store, max_body_bytes=4096))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub.test") as http:
        yield http


def consult_body(**context: object) -> bytes:
    return orjson.dumps({"hook": "patient-consent-consult", "hookInstance": "h-1", "context": {
        "patientId": [{"system": "urn:oid:1.2.3", "value": "MRN-SECRET-77"}], **context}})


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


async def test_a_cbo_asking_about_itself_is_answered_and_audited_with_its_partner_id(
    client: httpx.AsyncClient, store: FakeConsultStore
) -> None:
    answer = await client.post(CONSULT, content=consult_body(purposeOfUse="CAREMGT"), headers=auth(CBO_TOKEN))
    assert 200 == answer.status_code, answer.text
    [card] = answer.json()["cards"]
    assert "CONSENT_DENY" == card["summary"]
    assert "basedOn" not in card["extension"]  # c1 is hosp-a's: the CBO may not read it
    assert {"label": "CareHub Consent Decision Service", "url": "http://hub.test/cds-services"} == card["source"]
    [record] = store.recorded
    assert ("food-bank", PATIENT, "deny", "cds:consent:c1:policyRule") == (
        record.recipient_id, record.hub_patient_id, record.verdict, record.rule)


async def test_a_cbo_without_a_relationship_to_the_patient_is_refused_and_nothing_is_audited(
    client: httpx.AsyncClient, store: FakeConsultStore
) -> None:
    store.relationships.clear()
    answer = await client.post(CONSULT, content=consult_body(), headers=auth(CBO_TOKEN))
    assert (403, "forbidden") == (answer.status_code, answer.json()["error"])
    assert "MRN-SECRET" not in answer.text
    assert [] == store.recorded


async def test_an_unknown_patient_gets_the_same_refusal_as_a_strangers(client: httpx.AsyncClient) -> None:
    unknown = orjson.dumps({"hook": "patient-consent-consult", "hookInstance": "h-2", "context": {
        "patientId": [{"system": "urn:oid:1.2.3", "value": "NOBODY"}]}})
    answer = await client.post(CONSULT, content=unknown, headers=auth(CBO_TOKEN))
    assert (403, "forbidden") == (answer.status_code, answer.json()["error"])


async def test_the_operator_may_consult_about_any_patient(
    client: httpx.AsyncClient, store: FakeConsultStore
) -> None:
    store.relationships.clear()
    body = consult_body(actor=[{"system": "urn:x", "value": "a"}])
    answer = await client.post(CONSULT, content=body, headers=auth(OPERATOR_TOKEN))
    assert 200 == answer.status_code, answer.text


async def test_the_store_not_answering_is_a_503_with_retry_after(
    client: httpx.AsyncClient, store: FakeConsultStore
) -> None:
    store.down = True
    body = consult_body(actor=[{"system": "urn:x", "value": "a"}])
    answer = await client.post(CONSULT, content=body, headers=auth(OPERATOR_TOKEN))
    assert (503, "service_unavailable") == (answer.status_code, answer.json()["error"])
    assert "5" == answer.headers["retry-after"]
    assert [] == store.recorded


async def test_logs_name_the_decision_and_never_the_identifiers(client: httpx.AsyncClient) -> None:
    with capture_logs() as logs:
        await client.post(CONSULT, content=consult_body(actor=[{"system": "urn:x", "value": "ACTOR-9"}]),
                          headers=auth(OPERATOR_TOKEN))
    assert [("cds_consult", "CONSENT_DENY")] == [(entry["event"], entry.get("decision")) for entry in logs]
    assert "MRN-SECRET-77" not in repr(logs)
    assert "ACTOR-9" not in repr(logs)


@pytest.mark.parametrize(
    "content",
    [b"", b"null", b"1e999999", b"\xff\xfe", b'{"hook": "patient-consent-consult", "hookInstance": "x", "context": '
     b'{"patientId": [{"system": "s", "value": "v"}], "purposeOfUse": {"code": 5}}}',
     b'{"hook": "patient-consent-consult", "hookInstance": "x", "context": {"patientId": [{"value": "v"}], '
     b'"actor": [], "class": [{"code": "X"}], "scope": [{"coding": [{"code": "adr"}]}]}}',
     b'{"hook": "patient-consent-consult", "hookInstance": "x\\u007f", "context": {}}',
     b"x" * 5000],
)
async def test_no_body_gets_a_500(client: httpx.AsyncClient, content: bytes) -> None:
    answer = await client.post(CONSULT, content=content, headers=auth(OPERATOR_TOKEN))
    assert answer.status_code in (200, 400, 413), answer.text
    assert answer.headers["content-type"] == "application/json"


async def consult_card(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    body = consult_body(actor=[{"system": "urn:x", "value": "a"}], purposeOfUse="CAREMGT")
    answer = await client.post(CONSULT, content=body, headers=auth(token))
    assert 200 == answer.status_code, answer.text
    [card] = answer.json()["cards"]
    extension: dict[str, Any] = card["extension"]
    return extension


async def test_the_operator_and_the_recording_hospital_see_the_deciding_consents_id(
    client: httpx.AsyncClient, store: FakeConsultStore
) -> None:
    for token in (OPERATOR_TOKEN, HOSPITAL_TOKEN):
        extension = await consult_card(client, token)
        assert ("http://hub.test/fhir/Consent/c1", "consent:c1:policyRule") == (
            extension["basedOn"], extension["rule"]), token
        assert "c1" in str(extension["reason"])
    assert [("c1",)] == store.senders_asked  # asked for the hospital only: the operator reads every Consent


async def test_another_partner_gets_the_same_decision_without_the_consents_id_and_the_audit_keeps_it(
    client: httpx.AsyncClient, store: FakeConsultStore
) -> None:
    store.consents_of = (part2_consent("p2", actor="urn:x|a"),)
    store.senders = {"p2": frozenset({"hosp-a", "operator"})}
    recorder = await consult_card(client, HOSPITAL_TOKEN)
    assert "Consent/p2" in orjson.dumps(recorder).decode()
    for token in (HOSPITAL_B_TOKEN, CBO_TOKEN):
        other = await consult_card(client, token)
        assert "p2" not in orjson.dumps(other).decode(), token
        assert "consent:(another-organization):provision.provision[0]" == other["rule"]
        assert recorder["decision"] == other["decision"] == "CONSENT_PERMIT"
        assert [
            {**o, "parameters": {k: v for k, v in o["parameters"].items() if k != "consent"}}
            for o in recorder["obligations"]
        ] == other["obligations"]
    assert {"cds:consent:p2:provision.provision[0]"} == {record.rule for record in store.recorded}
    assert all("p2" in record.reason for record in store.recorded)


async def test_the_senders_read_failing_is_a_503_before_anything_is_audited(
    client: httpx.AsyncClient, store: FakeConsultStore
) -> None:
    store.senders_down = True
    answer = await client.post(CONSULT, content=consult_body(), headers=auth(CBO_TOKEN))
    assert (503, "service_unavailable") == (answer.status_code, answer.json()["error"])
    assert [] == store.recorded
