"""The order of the FHIR edge's checks, as the docstring of ``hub.adapters.fhir_rest`` lists them ("cheapest
and least revealing first"), through the whole app (``hub.app.build_http_app``: the ASGI guards, routing,
the handlers, the plan).

Each row is a request that fails two checks at once; the answer must be the earlier check's. A row that
changes is a docstring that no longer tells the truth: change both together.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.adapters import fhir_samples as samples
from tests.contract.hub_http import CBO, HOSPITAL, HubHttp, serving

LIMIT = 8 * 1024
FHIR = "application/fhir+json"
TOO_BIG = b" " * (LIMIT + 1)


async def chunks(total: int, size: int = 1024) -> AsyncIterator[bytes]:
    """``total`` bytes sent without a Content-Length."""
    for start in range(0, total, size):
        yield b" " * min(size, total - start)


@dataclass(frozen=True)
class Row:
    """A request failing two checks, and the (status, issue code) of the earlier one."""

    method: str
    path: str
    token: str | None
    expected: tuple[int, str]
    content_type: str | None = FHIR
    body: bytes | None = None
    streamed: int = 0
    """Send this many bytes without a Content-Length instead of ``body``."""
    headers: dict[str, str] = field(default_factory=dict)


def dumps(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data)


ROWS: dict[str, Row] = {
    "a declared oversized body is refused before routing and authentication": Row(
        "POST", "/fhir/Nothing/here/at/all", None, (413, "too-long"), body=TOO_BIG,
    ),
    "routing (no such method) comes before authentication": Row(
        "DELETE", "/fhir/Patient/1", None, (405, "not-supported"),
    ),
    "authentication comes before the resource type": Row("GET", "/fhir/Condition/1", None, (401, "login")),
    "an unknown token is refused before the resource type": Row("GET", "/fhir/Condition/1", "nobody", (401, "unknown")),
    "the resource type comes before the caller's role": Row(
        "POST", "/fhir/Condition", CBO, (404, "not-supported"), content_type="text/plain",
    ),
    "the caller's role comes before the media type": Row(
        "POST", "/fhir/Task", CBO, (403, "forbidden"), content_type="text/plain",
    ),
    "a PUT's URL id comes before the media type": Row(
        "PUT", "/fhir/Patient/not_an_id", HOSPITAL, (400, "invalid"), content_type="text/plain",
    ),
    "a read's malformed id is not found, like any other": Row(
        "GET", "/fhir/Patient/not_an_id", HOSPITAL, (404, "not-found"),
    ),
    "the media type comes before the body is read": Row(
        "POST", "/fhir/Patient", HOSPITAL, (415, "not-supported"), content_type="text/plain", streamed=LIMIT + 1,
    ),
    "an undeclared oversized body is counted before it is parsed": Row(
        "POST", "/fhir/Patient", HOSPITAL, (413, "too-long"), streamed=LIMIT + 1,
    ),
    "JSON structure comes before the PUT's id": Row(
        "PUT", "/fhir/Patient/general.p1", HOSPITAL, (400, "structure"), body=b'{"resourceType": "Patient"',
    ),
    "the PUT's body id comes before the resource's validity": Row(
        "PUT", "/fhir/Patient/general.p1", HOSPITAL, (400, "required"), body=b'{"resourceType": "Task"}',
    ),
    "the resource's validity comes before If-None-Exist": Row(
        "POST", "/fhir/Patient", HOSPITAL, (422, "code-invalid"),
        body=dumps(samples.patient(gender="sometimes")), headers={"If-None-Exist": "name=x"},
    ),
    "If-None-Exist is read in the plan": Row(
        "POST", "/fhir/Patient", HOSPITAL, (400, "not-supported"),
        body=dumps(samples.patient()), headers={"If-None-Exist": "name=x"},
    ),
    "a PUT outside the partner's id space is 405 before its If-Match is compared": Row(
        "PUT", "/fhir/Patient/other.p1", HOSPITAL, (405, "not-supported"),
        body=dumps(samples.patient(id="other.p1")), headers={"If-Match": 'W/"7"'},
    ),
    "If-Match names a version the resource does not have": Row(
        "PUT", "/fhir/Patient/general.p1", HOSPITAL, (412, "conflict"),
        body=dumps(samples.patient(id="general.p1")), headers={"If-Match": 'W/"7"'},
    ),
}


async def send(hub_http: HubHttp, http: httpx.AsyncClient, row: Row) -> httpx.Response:
    """Send ``row``'s request (its token: a registered partner's, or sent as it is)."""
    headers = dict(row.headers)
    if row.token is not None:
        headers.update(HubHttp.bearer(hub_http.tokens.get(row.token, row.token)))
    if row.content_type is not None:
        headers["Content-Type"] = row.content_type
    content = chunks(row.streamed) if row.streamed else row.body
    return await http.request(row.method, row.path, content=content, headers=headers)


@pytest.fixture(scope="module")
async def hub(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[HubHttp, httpx.AsyncClient]]:
    async with serving(Path(tmp_path_factory.mktemp("check-order")), max_body_bytes=LIMIT) as served:
        yield served


@pytest.mark.parametrize("name", list(ROWS))
async def test_a_request_failing_two_checks_gets_the_earlier_ones_answer(
    hub: tuple[HubHttp, httpx.AsyncClient], name: str
) -> None:
    answer = await send(*hub, ROWS[name])
    row = ROWS[name]
    assert (FHIR, "OperationOutcome") == (answer.headers["content-type"], answer.json()["resourceType"]), answer.text
    assert row.expected == (answer.status_code, answer.json()["issue"][0]["code"]), answer.text
