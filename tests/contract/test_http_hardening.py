"""The whole HTTP app (``hub.app.build_http_app``) against oversized bodies, echoing errors, bad parameters
and caches (issue 9, items 5-7): every JSON route is bounded like the FHIR edge, each edge answering its
own 413 shape; a validation error names the field and never echoes the input; hand-parsed numbers that
used to be 500s are 400 problems naming the parameter; every answer is ``Cache-Control: no-store``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from hub.adapters.problem_json import MAX_ERRORS, PROBLEM_JSON
from tests.contract.hub_http import ADMIN_TOKEN, CBO, HubHttp, serving

LIMIT = 4 * 1024 * 1024  # above the 2 MB field below, far below the 12 MB body
ADMIN = HubHttp.bearer(ADMIN_TOKEN)
ROSTER = f"/admin/v1/partners/{CBO}/roster"


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[HubHttp, httpx.AsyncClient]]:
    async with serving(tmp_path, max_body_bytes=LIMIT) as served:
        yield served


@pytest.fixture
def http(hub: tuple[HubHttp, httpx.AsyncClient]) -> httpx.AsyncClient:
    return hub[1]


async def chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        yield b" " * piece


def partner(**changes: object) -> dict[str, object]:
    return {"id": "pantry", "kind": "cbo", "name": "Pantry", "organization": "Organization/pantry", **changes}


# --- bounded bodies ---------------------------------------------------------------------------------------


async def test_a_12_mb_partner_registration_is_refused_413_with_a_short_problem(http: httpx.AsyncClient) -> None:
    body = orjson.dumps(partner(name="N" * 12_000_000))
    answer = await http.post("/admin/v1/partners", content=body, headers={**ADMIN, "Content-Type": "application/json"})
    assert (413, PROBLEM_JSON) == (answer.status_code, answer.headers["content-type"])
    assert f"the body is larger than the limit of {LIMIT} bytes" == answer.json()["detail"]
    assert len(answer.content) < 300
    assert 404 == (await http.get("/admin/v1/partners/pantry", headers=ADMIN)).status_code


async def test_a_chunked_body_over_the_limit_is_refused_413_on_the_admin_api(http: httpx.AsyncClient) -> None:
    answer = await http.post("/admin/v1/partners", content=chunks(LIMIT + 1), headers=ADMIN)
    assert (413, PROBLEM_JSON) == (answer.status_code, answer.headers["content-type"])


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_the_fhir_api_still_answers_its_413_as_an_operation_outcome(
    hub: tuple[HubHttp, httpx.AsyncClient], streamed: bool
) -> None:
    hub_http, http = hub
    content = chunks(LIMIT + 1) if streamed else b" " * (LIMIT + 1)
    answer = await http.post("/fhir/ServiceRequest", content=content, headers={
        **HubHttp.bearer(hub_http.tokens["general"]), "Content-Type": "application/fhir+json"})
    assert (413, "application/fhir+json") == (answer.status_code, answer.headers["content-type"])
    assert ("OperationOutcome", "too-long") == (answer.json()["resourceType"], answer.json()["issue"][0]["code"])
    assert [] == hub_http.publisher.records


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_the_cds_hooks_service_still_answers_its_413_in_leaps_shape(
    http: httpx.AsyncClient, streamed: bool
) -> None:
    content = chunks(LIMIT + 1) if streamed else b" " * (LIMIT + 1)
    answer = await http.post("/cds-services/patient-consent-consult", content=content,
                             headers={**ADMIN, "Content-Type": "application/json"})
    assert (413, "payload_too_large") == (answer.status_code, answer.json()["error"])


# --- validation errors never echo ---------------------------------------------------------------------------


async def test_a_2_mb_field_under_the_limit_gets_a_small_422_naming_it_without_echoing_it(
    http: httpx.AsyncClient,
) -> None:
    answer = await http.post("/admin/v1/partners", json=partner(name="N" * 2_000_000), headers=ADMIN)
    assert (422, PROBLEM_JSON) == (answer.status_code, answer.headers["content-type"])
    assert len(answer.content) < 1024
    problem = answer.json()
    assert ["body", "name"] == problem["errors"][0]["loc"]
    assert problem["detail"].startswith("name: ")
    assert "NNNN" not in answer.text


async def test_a_huge_unknown_member_name_is_cut_in_the_location(http: httpx.AsyncClient) -> None:
    answer = await http.post("/admin/v1/partners", json=partner(**{"K" * 1_000_000: 1}), headers=ADMIN)
    assert 422 == answer.status_code
    assert len(answer.content) < 1024
    assert "K" * 100 not in answer.text


async def test_a_flood_of_errors_is_capped_and_counted(http: httpx.AsyncClient) -> None:
    answer = await http.put(ROSTER, json={"patients": list(range(100_000))}, headers=ADMIN)
    assert 422 == answer.status_code
    problem = answer.json()
    assert MAX_ERRORS == len(problem["errors"])
    assert problem["detail"].endswith("(and 99997 more)")
    assert len(answer.content) < 4096


# --- typed, bounded parameters ----------------------------------------------------------------------------------

HUGE = "9" * 30
BAD_PARAMETERS = [
    ("GET", f"{ROSTER}?limit=²", "limit"),
    ("GET", f"{ROSTER}?limit={HUGE}", "limit"),
    ("GET", f"{ROSTER}?limit=-1", "limit"),
    ("GET", f"{ROSTER}?limit=", "limit"),
    ("GET", f"{ROSTER}?after=²", "after"),
    ("GET", f"{ROSTER}?after={2**63}", "after"),
    ("GET", f"{ROSTER}?after=0", "after"),
    ("DELETE", f"{ROSTER}/²", "entry_id"),
    ("DELETE", f"{ROSTER}/{HUGE}", "entry_id"),
    ("DELETE", f"{ROSTER}/-3", "entry_id"),
    ("GET", "/admin/v1/disclosures?patient=urn:x|1&limit=²", "limit"),
    ("GET", f"/admin/v1/disclosures?patient=urn:x|1&limit={HUGE}", "limit"),
    ("GET", "/admin/v1/disclosures?patient=urn:x|1&since=0001-01-01T00:00:00%2B05:00", "since"),
    ("GET", "/admin/v1/disclosures?patient=urn:x|1&cursor=" + "A" * 300, "cursor"),
    ("GET", "/admin/v1/audit/AuditEvent?_count=²", "_count"),
    ("GET", "/admin/v1/audit/AuditEvent?_count=", "_count"),
    ("GET", "/admin/v1/audit/AuditEvent?verdict=", "verdict"),
    ("GET", "/admin/v1/audit/AuditEvent?since=0001-01-01T00:00:00%2B05:00", "since"),
    ("GET", "/admin/v1/audit?limit=²", "limit"),
    ("GET", "/admin/v1/audit?patient=" + "p" * 600, "patient"),
    ("GET", "/admin/v1/partners/" + "P" * 5000, "partner_id"),
    ("GET", "/admin/v1/partners/Not_An_Id/facilities", "partner_id"),
    ("DELETE", "/admin/v1/partners/general/facilities/" + "F" * 300, "facility"),
]


@pytest.mark.parametrize(("method", "url", "parameter"), BAD_PARAMETERS)
async def test_a_bad_parameter_is_a_400_problem_naming_it_never_a_500(
    http: httpx.AsyncClient, method: str, url: str, parameter: str
) -> None:
    answer = await http.request(method, url, headers=ADMIN)
    assert (400, PROBLEM_JSON) == (answer.status_code, answer.headers["content-type"]), answer.text
    assert answer.json()["detail"].startswith(parameter)
    assert len(answer.content) < 1024


async def test_the_largest_dates_and_page_sizes_are_served(http: httpx.AsyncClient) -> None:
    """The bounds are inclusive, and the last day of year 9999 is a usable end (it used to overflow)."""
    answers = [
        await http.get(ROSTER, params={"limit": "10000", "after": str(2**63 - 1)}, headers=ADMIN),
        await http.get("/admin/v1/disclosures", params={"patient": "urn:x|1", "until": "9999-12-31", "limit": "1000"},
                       headers=ADMIN),
        await http.get("/admin/v1/audit/AuditEvent", params={"until": "9999-12-31", "_count": "1000"}, headers=ADMIN),
    ]
    assert [200, 200, 200] == [a.status_code for a in answers], [a.text for a in answers]


# --- errors keep their shapes -----------------------------------------------------------------------------------


async def test_admin_errors_are_problems_that_keep_their_detail_and_challenge(
    hub: tuple[HubHttp, httpx.AsyncClient],
) -> None:
    hub_http, http = hub
    missing = await http.get("/admin/v1/partners")
    as_partner = await http.get("/admin/v1/partners", headers=HubHttp.bearer(hub_http.tokens[CBO]))
    unknown = await http.get("/admin/v1/partners/nobody", headers=ADMIN)
    assert [401, 403, 404] == [a.status_code for a in (missing, as_partner, unknown)]
    assert {PROBLEM_JSON} == {a.headers["content-type"] for a in (missing, as_partner, unknown)}
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert {"type": "about:blank", "title": "Not Found", "status": 404,
            "detail": "no partner with id 'nobody'"} == unknown.json()


# --- no cache keeps an answer ----------------------------------------------------------------------------------


async def test_every_answer_fhir_admin_cds_and_errors_is_no_store(hub: tuple[HubHttp, httpx.AsyncClient]) -> None:
    hub_http, http = hub
    hospital = HubHttp.bearer(hub_http.tokens["general"])
    answers = [
        await http.get("/admin/v1/partners", headers=ADMIN),
        await http.get(ROSTER, headers=ADMIN),
        await http.get("/admin/v1/partners"),
        await http.get("/fhir/metadata"),
        await http.get("/fhir/Patient/unknown", headers=hospital),
        await http.get("/fhir/Patient/unknown"),
        await http.get("/cds-services"),
        await http.post("/cds-services/patient-consent-consult", content=b"{}"),
        await http.get("/nowhere"),
        await http.get("/openapi.json"),
    ]
    assert [200, 200, 401, 200, 404, 401, 200, 401, 404, 200] == [a.status_code for a in answers]
    for answer in answers:
        assert ("no-store", "no-cache") == (answer.headers.get("cache-control"), answer.headers.get("pragma")), (
            answer.request.url
        )
        assert "server" not in answer.headers
