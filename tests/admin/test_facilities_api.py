"""The operator registers, lists and removes a hospital's HL7 v2 sending facilities over the admin API."""

from __future__ import annotations

import pytest

from tests.admin.conftest import Admin


async def test_a_facility_is_registered_listed_and_removed(admin: Admin) -> None:
    await admin.add_partner("general", "hospital")
    url = "/admin/v1/partners/general/facilities"
    added = await admin.http.post(url, headers=admin.headers, json={"facility": "GHH^1.2.3^ISO"})
    again = await admin.http.post(url, headers=admin.headers, json={"facility": "GHH^1.2.3^ISO"})
    assert (201, 201) == (added.status_code, again.status_code), added.text
    assert {"facility": "GHH^1.2.3^ISO", "partner_id": "general"} == {
        k: added.json()[k] for k in ("facility", "partner_id")
    }
    listed = await admin.http.get(url, headers=admin.headers)
    assert ["GHH^1.2.3^ISO"] == [item["facility"] for item in listed.json()]
    removed = await admin.http.delete(f"{url}/GHH^1.2.3^ISO", headers=admin.headers)
    gone = await admin.http.delete(f"{url}/GHH^1.2.3^ISO", headers=admin.headers)
    assert (204, 404) == (removed.status_code, gone.status_code)
    assert [] == (await admin.http.get(url, headers=admin.headers)).json()


@pytest.mark.parametrize(
    ("partner", "body", "status", "detail"),
    [
        ("nobody", {"facility": "GHH"}, 404, "no partner"),
        ("pantry", {"facility": "GHH"}, 422, "only hospitals"),
        ("general", {"facility": "A|B"}, 422, "facility"),
        ("general", {"facility": ""}, 422, "facility"),
        ("general", {"facility": "MERCY"}, 409, "another partner"),
        ("general", {"facility": "GHH", "extra": 1}, 422, ""),
        ("general", {}, 422, ""),
    ],
)
async def test_bad_registrations_are_refused_precisely(
    admin: Admin, partner: str, body: dict[str, object], status: int, detail: str
) -> None:
    await admin.add_partner("general", "hospital")
    await admin.add_partner("mercy", "hospital")
    await admin.add_partner("pantry", "cbo")
    taken = await admin.http.post(
        "/admin/v1/partners/mercy/facilities", headers=admin.headers, json={"facility": "MERCY"}
    )
    assert 201 == taken.status_code
    answer = await admin.http.post(f"/admin/v1/partners/{partner}/facilities", headers=admin.headers, json=body)
    assert status == answer.status_code, answer.text
    assert detail in str(answer.json()["detail"])


async def test_facilities_need_the_operator_token(admin: Admin) -> None:
    token = await admin.add_partner("general", "hospital")
    url = "/admin/v1/partners/general/facilities"
    as_partner = await admin.http.post(url, headers={"Authorization": f"Bearer {token}"}, json={"facility": "GHH"})
    anonymous = await admin.http.get(url)
    assert (403, 401) == (as_partner.status_code, anonymous.status_code)
    assert [] == (await admin.http.get(url, headers=admin.headers)).json()


async def test_listing_the_facilities_of_an_unknown_partner_is_404(admin: Admin) -> None:
    answer = await admin.http.get("/admin/v1/partners/nobody/facilities", headers=admin.headers)
    assert 404 == answer.status_code
