"""``GET /admin/v1/disclosures`` and ``GET /admin/v1/audit/AuditEvent`` through the real HTTP app.

Operator token only (401 without or with an unknown token, 403 with a partner's), 400 naming the bad
query parameter, an empty accounting for an unknown patient, the happy path, paging by the next link,
and the export as a FHIR searchset Bundle of AuditEvents the R4B models accept.
"""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

from hub.control import crosswalk, resources
from hub.control.audit import DecisionRecord, record_decisions
from tests.admin.conftest import Admin

DISCLOSURES = "/admin/v1/disclosures"
EXPORT = "/admin/v1/audit/AuditEvent"
MRN = "urn:oid:1.2.3|MRN-1"
OTHER_ID = "urn:oid:9.9|X-7"


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


async def _patient(admin: Admin) -> str:
    async with admin.sessions() as session:
        await resources.link_patient_sources(session, [[MRN, OTHER_ID]])
        return await crosswalk.resolve_patient(session, MRN)


def _decision(n: int, hub_patient_id: str, *, days_ago: float, **changes: Any) -> DecisionRecord:
    record = DecisionRecord(
        event_id=f"00000000-0000-4000-8000-{n:012d}", hub_patient_id=hub_patient_id, recipient_id="foodbank",
        verdict="permit", rule="cbo-referral-addressed", reason="The referral names Food Bank as performer.",
        purpose="CAREMGT", resource_type="ServiceRequest", decided_at=_now() - timedelta(days=days_ago),
    )
    return replace(record, **changes)


async def _record(admin: Admin, *records: DecisionRecord) -> None:
    async with admin.sessions() as session:
        await record_decisions(session, list(records))


@pytest.mark.parametrize("path", [DISCLOSURES, EXPORT])
@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Basic dXNlcjpwdw=="])
async def test_no_token_or_an_unknown_one_is_401_with_a_bearer_challenge(
    admin: Admin, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = await admin.http.get(path, params={"patient": MRN}, headers=headers)
    assert 401 == answer.status_code
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert "HUB_ADMIN_TOKEN" in answer.json()["detail"]


@pytest.mark.parametrize("path", [DISCLOSURES, EXPORT, "/admin/v1/partners"])
async def test_a_partners_own_token_is_403(admin: Admin, path: str) -> None:
    token = await admin.add_partner("general", "hospital")
    answer = await admin.http.get(path, params={"patient": MRN}, headers={"Authorization": f"Bearer {token}"})
    assert 403 == answer.status_code
    assert "partner" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({}, "patient"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2024-02-30"}, "since"),
        ({"since": "2024-05-01T08:00:00"}, "since"),
        ({"until": "2024-13-01"}, "until"),
        ({"since": "2024-06-01", "until": "2024-05-01"}, "since"),
        ({"until": "2000-01-01"}, "until"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "!!"}, "cursor"),
        ({"cursor": "bm90LWEtY3Vyc29y"}, "cursor"),
        ({"patient": "x" * 600}, "patient"),
    ],
)
async def test_bad_accounting_queries_are_400_naming_the_parameter(
    admin: Admin, params: dict[str, str], parameter: str
) -> None:
    query = params if not params or "patient" in params else {"patient": MRN, **params}
    answer = await admin.http.get(DISCLOSURES, params=query, headers=admin.headers)
    assert 400 == answer.status_code, answer.text
    detail = answer.json()["detail"]
    assert detail.startswith(parameter)
    assert "MRN-1" not in detail


@pytest.mark.parametrize(
    ("params", "parameter"),
    [({"verdict": "maybe"}, "verdict"), ({"_count": "-1"}, "_count"), ({"since": "2024-05-01T08:00"}, "since"),
     ({"since": "2024-05-02", "until": "2024-05-01"}, "since"), ({"cursor": "%%%"}, "cursor")],
)
async def test_bad_export_queries_are_400_naming_the_parameter(
    admin: Admin, params: dict[str, str], parameter: str
) -> None:
    answer = await admin.http.get(EXPORT, params=params, headers=admin.headers)
    assert 400 == answer.status_code, answer.text
    assert answer.json()["detail"].startswith(parameter)


async def test_an_unknown_patient_has_an_empty_accounting(admin: Admin) -> None:
    answer = await admin.http.get(DISCLOSURES, params={"patient": "urn:oid:1.2.3|NOBODY"}, headers=admin.headers)
    assert 200 == answer.status_code
    body = answer.json()
    assert ({"hub_patient_id": None, "linked_identifiers": 0}, [], 0, None) == (
        body["patient"], body["disclosures"], body["count"], body["next"])
    assert body["period"]["six_year_default"]


async def test_the_accounting_lists_the_six_years_of_permits_of_every_source_of_the_patient(admin: Admin) -> None:
    hub_patient_id = await _patient(admin)
    await admin.add_partner("foodbank", "cbo", name="Food Bank")
    old = _decision(1, hub_patient_id, days_ago=6 * 366 + 2)
    recent = _decision(2, hub_patient_id, days_ago=30)
    deny = _decision(3, hub_patient_id, days_ago=20, verdict="deny", recipient_id="housing", rule="policy:x")
    latest = _decision(4, hub_patient_id, days_ago=1, purpose="TREAT", resource_type="Encounter")
    await _record(admin, old, recent, deny, latest)

    for patient in (MRN, OTHER_ID, hub_patient_id):
        answer = await admin.http.get(DISCLOSURES, params={"patient": patient}, headers=admin.headers)
        assert 200 == answer.status_code
        body = answer.json()
        assert {"hub_patient_id": hub_patient_id, "linked_identifiers": 2} == body["patient"]
        assert [recent.event_id, latest.event_id] == [line["event_id"] for line in body["disclosures"]]
    first = body["disclosures"][0]
    assert {"id": "foodbank", "name": "Food Bank", "organization": "Organization/foodbank", "kind": "cbo"} \
        == first["recipient"]
    assert ("referral for a service (ServiceRequest)", "care management", "CAREMGT", "cbo-referral-addressed") == (
        first["description"], first["purpose"]["display"], first["purpose"]["code"], first["rule"])
    assert "hospital admission, discharge or transfer notification (Encounter)" == body["disclosures"][1]["description"]

    asked = await admin.http.get(DISCLOSURES, params={"patient": MRN, "since": "2000-01-01"}, headers=admin.headers)
    assert 3 == asked.json()["count"]
    assert asked.json()["period"]["beyond_six_years"]


async def test_the_accounting_pages_by_its_next_link_without_gaps_or_repeats(admin: Admin) -> None:
    hub_patient_id = await _patient(admin)
    records = [_decision(n, hub_patient_id, days_ago=40 - n) for n in range(7)]
    await _record(admin, *records)
    seen: list[str] = []
    url: str | None = str(httpx.URL(DISCLOSURES, params={"patient": MRN, "limit": "3"}))
    pages = 0
    while url:
        answer = await admin.http.get(url, headers=admin.headers)
        assert 200 == answer.status_code, answer.text
        seen.extend(line["event_id"] for line in answer.json()["disclosures"])
        url = answer.json()["next"]
        pages += 1
    assert [r.event_id for r in records] == seen
    assert 3 == pages


async def test_the_export_is_a_paged_searchset_bundle_of_valid_audit_events(admin: Admin) -> None:
    hub_patient_id = await _patient(admin)
    await admin.add_partner("foodbank", "cbo", name="Food Bank")
    permit = _decision(1, hub_patient_id, days_ago=3)
    deny = _decision(2, hub_patient_id, days_ago=2, verdict="deny", recipient_id="housing",
                     rule="consent:c-1:provision")
    elsewhere = _decision(3, "hp-" + "f" * 32, days_ago=1)
    await _record(admin, permit, deny, elsewhere)

    answer = await admin.http.get(EXPORT, params={"patient": OTHER_ID, "_count": "1"}, headers=admin.headers)
    assert 200 == answer.status_code
    assert answer.headers["content-type"].startswith("application/fhir+json")
    first: dict[str, Any] = answer.json()
    [next_link] = [link["url"] for link in first["link"] if link["relation"] == "next"]
    second: dict[str, Any] = (await admin.http.get(next_link, headers=admin.headers)).json()
    assert [] == [link for link in second["link"] if link["relation"] == "next"]
    for bundle in (first, second):
        Bundle.model_validate(bundle)
    events = [entry["resource"] for entry in (*first["entry"], *second["entry"])]
    for event in events:
        AuditEvent.model_validate(event)
    assert [("110106", "0"), ("110113", "4")] == [(event["type"]["code"], event["outcome"]) for event in events]

    everything = (await admin.http.get(EXPORT, headers=admin.headers)).json()
    assert 3 == len(everything["entry"])
    denies = (await admin.http.get(EXPORT, params={"verdict": "deny"}, headers=admin.headers)).json()
    assert ["110113"] == [entry["resource"]["type"]["code"] for entry in denies["entry"]]
    unknown = (await admin.http.get(EXPORT, params={"patient": "urn:x|none"}, headers=admin.headers)).json()
    assert ("searchset", []) == (unknown["type"], unknown["entry"])
