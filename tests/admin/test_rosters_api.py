"""``/admin/v1/partners/{id}/roster`` over HTTP: add, list, remove, and a precise 4xx for every bad request."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import pytest

from hub.control import crosswalk, resources
from tests.admin.conftest import Admin

MRN = "urn:oid:1.2.3|MRN-1"
CLIENT = "urn:foodbank:clients|C-42"
ROSTER = "/admin/v1/partners/foodbank/roster"


@pytest.fixture
async def cbo(admin: Admin) -> Admin:
    await admin.add_partner("foodbank")
    await admin.add_partner("general", kind="hospital")
    return admin


async def test_an_operator_builds_lists_and_trims_a_cbos_roster(cbo: Admin) -> None:
    added = await cbo.http.post(ROSTER, headers=cbo.headers, json={"patient": MRN})
    assert 201 == added.status_code, added.text
    entry = added.json()
    assert ("foodbank", MRN, None) == (entry["partner_id"], entry["patient"], entry["hub_patient_id"])
    again = await cbo.http.post(ROSTER, headers=cbo.headers, json={"patient": MRN})
    assert (200, entry["id"]) == (again.status_code, again.json()["id"])
    await cbo.http.post(ROSTER, headers=cbo.headers, json={"patient": CLIENT})

    listed = await cbo.http.get(ROSTER, headers=cbo.headers)
    assert 200 == listed.status_code
    assert [MRN, CLIENT] == [e["patient"] for e in listed.json()["entries"]]
    assert listed.json()["next"] is None
    page = await cbo.http.get(ROSTER, headers=cbo.headers, params={"limit": "1"})
    assert [MRN] == [e["patient"] for e in page.json()["entries"]]
    following = await cbo.http.get(page.json()["next"], headers=cbo.headers)
    assert [CLIENT] == [e["patient"] for e in following.json()["entries"]]

    by_id = await cbo.http.delete(f"{ROSTER}/{entry['id']}", headers=cbo.headers)
    assert 204 == by_id.status_code
    by_patient = await cbo.http.delete(ROSTER, headers=cbo.headers, params={"patient": CLIENT})
    assert 204 == by_patient.status_code
    assert [] == (await cbo.http.get(ROSTER, headers=cbo.headers)).json()["entries"]
    gone = await cbo.http.delete(f"{ROSTER}/{entry['id']}", headers=cbo.headers)
    assert (404, "partner foodbank has no such roster entry") == (gone.status_code, gone.json()["detail"])


async def test_the_listing_shows_the_hub_patient_once_the_crosswalk_knows_the_identifier(cbo: Admin) -> None:
    await cbo.http.post(ROSTER, headers=cbo.headers, json={"patient": CLIENT})
    async with cbo.sessions() as session:
        await resources.link_patient_sources(session, [[MRN, CLIENT]])
        await session.commit()
        hub_patient_id = await crosswalk.resolve_patient(session, MRN)
    [entry] = (await cbo.http.get(ROSTER, headers=cbo.headers)).json()["entries"]
    assert hub_patient_id == entry["hub_patient_id"]
    by_hub_id = await cbo.http.post(ROSTER, headers=cbo.headers, json={"patient": hub_patient_id})
    assert (201, hub_patient_id) == (by_hub_id.status_code, by_hub_id.json()["hub_patient_id"])


async def test_an_unknown_partner_is_404_and_a_hospital_is_409(cbo: Admin) -> None:
    unknown = await cbo.http.post("/admin/v1/partners/nobody/roster", headers=cbo.headers, json={"patient": MRN})
    assert (404, "no partner with id 'nobody'") == (unknown.status_code, unknown.json()["detail"])
    assert 404 == (await cbo.http.get("/admin/v1/partners/nobody/roster", headers=cbo.headers)).status_code
    assert 404 == (await cbo.http.delete("/admin/v1/partners/nobody/roster/1", headers=cbo.headers)).status_code
    hospital = await cbo.http.post("/admin/v1/partners/general/roster", headers=cbo.headers, json={"patient": MRN})
    assert 409 == hospital.status_code
    assert "only community-based organizations" in hospital.json()["detail"]


@pytest.mark.parametrize("patient", ["MRN-1", "a|b|c", "sys tem|v", "urn:x|"])
async def test_an_unusable_patient_is_400_naming_the_field_without_repeating_it(cbo: Admin, patient: str) -> None:
    answer = await cbo.http.post(ROSTER, headers=cbo.headers, json={"patient": patient})
    assert 400 == answer.status_code
    assert answer.json()["detail"].startswith("patient")
    assert patient not in answer.json()["detail"]
    removal = await cbo.http.delete(ROSTER, headers=cbo.headers, params={"patient": patient})
    assert 400 == removal.status_code


@pytest.mark.parametrize(
    ("method", "url", "parameter"),
    [
        ("GET", f"{ROSTER}?limit=0", "limit"),
        ("GET", f"{ROSTER}?limit=x", "limit"),
        ("GET", f"{ROSTER}?after=-1", "after"),
        ("DELETE", f"{ROSTER}/abc", "entry"),
        ("DELETE", ROSTER, "patient"),
    ],
)
async def test_bad_parameters_are_400_naming_them(cbo: Admin, method: str, url: str, parameter: str) -> None:
    answer = await cbo.http.request(method, url, headers=cbo.headers)
    assert 400 == answer.status_code, answer.text
    assert answer.json()["detail"].startswith(parameter)


async def test_a_malformed_body_is_422(cbo: Admin) -> None:
    for body in ({}, {"patient": MRN, "extra": 1}, {"patient": 7}):
        assert 422 == (await cbo.http.post(ROSTER, headers=cbo.headers, json=body)).status_code


async def test_rosters_need_the_operators_token(cbo: Admin) -> None:
    partner_token = await cbo.add_partner("housing")
    assert 401 == (await cbo.http.get(ROSTER)).status_code
    assert 403 == (await cbo.http.get(ROSTER, headers={"Authorization": f"Bearer {partner_token}"})).status_code
    as_partner = await cbo.http.post(
        ROSTER, headers={"Authorization": f"Bearer {partner_token}"}, json={"patient": MRN}
    )
    assert 403 == as_partner.status_code


async def test_a_whole_roster_is_replaced_in_one_request_keeping_entries_already_there(cbo: Admin) -> None:
    kept = (await cbo.http.post(ROSTER, headers=cbo.headers, json={"patient": MRN})).json()
    await cbo.http.post(ROSTER, headers=cbo.headers, json={"patient": CLIENT})
    synced = await cbo.http.put(ROSTER, headers=cbo.headers,
                                json={"patients": [MRN, "urn:oid:9.9|N-1", "|N-2", "urn:oid:9.9|N-1"]})
    assert 200 == synced.status_code, synced.text
    assert {"partner_id": "foodbank", "added": 2, "removed": 1, "kept": 1, "total": 3} == synced.json()
    entries = (await cbo.http.get(ROSTER, headers=cbo.headers)).json()["entries"]
    assert [MRN, "urn:oid:9.9|N-1", "urn:carehub:partner:foodbank|N-2"] == [e["patient"] for e in entries]
    assert kept["id"] == entries[0]["id"]
    emptied = await cbo.http.put(ROSTER, headers=cbo.headers, json={"patients": []})
    assert (0, 3) == (emptied.json()["total"], emptied.json()["removed"])


@pytest.mark.parametrize(
    ("partner", "body", "status", "detail"),
    [
        ("foodbank", {"patients": [MRN, "no bar"]}, 400, "patients[1]"),
        ("foodbank", {"patients": "not a list"}, 422, ""),
        ("foodbank", {"patients": [MRN], "extra": 1}, 422, ""),
        ("general", {"patients": [MRN]}, 409, "only community-based organizations"),
        ("nobody", {"patients": [MRN]}, 404, "no partner"),
    ],
)
async def test_a_bad_roster_sync_changes_nothing_and_says_why(
    cbo: Admin, partner: str, body: dict[str, object], status: int, detail: str
) -> None:
    await cbo.http.post(ROSTER, headers=cbo.headers, json={"patient": CLIENT})
    answer = await cbo.http.put(f"/admin/v1/partners/{partner}/roster", headers=cbo.headers, json=body)
    assert status == answer.status_code, answer.text
    assert detail in str(answer.json()["detail"])
    assert "no bar" not in answer.text
    assert [CLIENT] == [e["patient"] for e in (await cbo.http.get(ROSTER, headers=cbo.headers)).json()["entries"]]
