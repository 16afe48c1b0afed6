"""The running hub's HTTP server (real uvicorn, started by ``hub.app.running_hub``) names no server software
and marks every answer uncacheable, and refuses an oversized admin body before reading it (issue 9,
items 5 and 6)."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import HubClient

pytestmark = pytest.mark.broker


async def test_no_answer_names_the_framework_and_none_may_be_cached(hub_client: HubClient) -> None:
    http = hub_client.http
    _, token = await hub_client.add_partner("general", "hospital")
    answers: list[httpx.Response] = [
        await http.get("/fhir/metadata"),
        await http.get("/fhir/Patient/nobody", headers={"Authorization": f"Bearer {token}"}),
        await http.get("/admin/v1/partners", headers=hub_client.admin),
        await http.get("/admin/v1/partners"),
        await http.get("/admin/v1/partners/nobody/roster?limit=²", headers=hub_client.admin),
        await http.get("/cds-services"),
        await http.get("/nowhere"),
    ]
    assert [200, 404, 200, 401, 400, 200, 404] == [a.status_code for a in answers], [a.text for a in answers]
    for answer in answers:
        assert "server" not in answer.headers, answer.request.url
        assert ("no-store", "no-cache") == (answer.headers["cache-control"], answer.headers["pragma"])
        assert not any("uvicorn" in value.lower() or "starlette" in value.lower() for value in answer.headers.values())


async def test_a_12_mb_partner_registration_is_refused_with_a_short_problem(hub_client: HubClient) -> None:
    name = b"N" * 12_000_000
    body = b'{"id": "pantry", "kind": "cbo", "organization": "Organization/pantry", "name": "' + name + b'"}'
    answer = await hub_client.http.post(
        "/admin/v1/partners", content=body, headers={**hub_client.admin, "Content-Type": "application/json"}
    )
    assert (413, "application/problem+json") == (answer.status_code, answer.headers["content-type"])
    assert len(answer.content) < 300
