"""What ``/openapi.json`` says about the FHIR API and the CDS Hooks service, checked against real answers.

Schemathesis (``test_openapi_fuzz``) proves with the operator's token that no operation answers a status it
does not document. Here: the error bodies are documented in each edge's own shape (an ``application/fhir+json``
OperationOutcome; LEAP's error JSON), FastAPI's 422 HTTPValidationError (which these routes never produce) is
gone, and the answers only a partner gets (a CBO's 403, a hospital's 405 for a PUT outside its id space, a
consult about a stranger) are documented too.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.contract.hub_http import CBO, HOSPITAL, HubHttp, serving
from tests.contract.test_fhir_check_order import LIMIT, ROWS, Row, send

FHIR = "application/fhir+json"
METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture(scope="module")
async def hub(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[HubHttp, httpx.AsyncClient]]:
    async with serving(Path(tmp_path_factory.mktemp("openapi-document")), max_body_bytes=LIMIT) as served:
        yield served


@pytest.fixture(scope="module")
def spec(hub: tuple[HubHttp, httpx.AsyncClient]) -> dict[str, Any]:
    return hub[0].app.openapi()


def operations(spec: dict[str, Any], prefix: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in spec["paths"].items() if path.startswith(prefix)
        for method, operation in item.items() if method in METHODS
    ]


def documented(spec: dict[str, Any], method: str, path: str) -> set[int] | None:
    """The statuses the operation serving ``method path`` documents (None: no operation serves it). A literal
    path wins over a template, as in the router."""
    matches = []
    for template, item in spec["paths"].items():
        pattern = "[^/]+".join(re.escape(part) for part in re.split(r"\{[^}]+\}", template))
        if re.fullmatch(pattern, path) and method.lower() in item:
            matches.append((template.count("{"), item[method.lower()]))
    if not matches:
        return None
    return {int(status) for status in min(matches, key=lambda match: match[0])[1]["responses"]}


@pytest.mark.parametrize("prefix", ["/fhir", "/cds-services"])
def test_no_fhir_or_cds_operation_documents_fastapis_validation_error(spec: dict[str, Any], prefix: str) -> None:
    """Their path parameters are plain strings and their bodies are read by hand, so FastAPI never answers its
    422 there (and under /fhir would answer a 400 OperationOutcome)."""
    found = operations(spec, prefix)
    assert found
    for method, path, operation in found:
        assert "HTTPValidationError" not in orjson.dumps(operation).decode(), (method, path)


def test_every_fhir_error_is_documented_as_an_operation_outcome(spec: dict[str, Any]) -> None:
    for method, path, operation in operations(spec, "/fhir"):
        errors = {status: answer for status, answer in operation["responses"].items() if int(status) >= 400}
        assert {"401", "413"} <= set(errors) or path == "/fhir/metadata", (method, path)
        for status, answer in errors.items():
            assert [FHIR] == list(answer["content"]), (method, path, status)
            schema = answer["content"][FHIR]["schema"]
            assert {"const": "OperationOutcome"} == schema["properties"]["resourceType"], (method, path, status)


def test_every_cds_hooks_error_is_documented_in_leaps_shape(spec: dict[str, Any]) -> None:
    [consult] = [op for method, path, op in operations(spec, "/cds-services/") if method == "POST"]
    assert {200, 400, 401, 403, 413, 415, 503} == {int(status) for status in consult["responses"]}
    for status, answer in consult["responses"].items():
        if int(status) >= 400:
            assert ["error", "errorMessage"] == answer["content"]["application/json"]["schema"]["required"]


#: Exactly what each FHIR operation answers (500, an unexpected failure, aside).
STATUSES: dict[tuple[str, str], set[int]] = {
    ("GET", "/fhir/metadata"): {200, 413},
    ("GET", "/fhir/{resource_type}/{resource_id}"): {200, 401, 404, 413, 503},
    ("GET", "/fhir/{resource_type}/{resource_id}/_history/{version_id}"): {200, 401, 404, 413, 503},
    ("GET", "/fhir/Consent"): {200, 400, 401, 413, 503},
    ("POST", "/fhir/{resource_type}"): {200, 201, 400, 401, 403, 404, 409, 412, 413, 415, 422, 503},
    ("PUT", "/fhir/{resource_type}/{resource_id}"): {200, 201, 400, 401, 403, 404, 405, 409, 412, 413, 415, 422, 503},
    ("POST", "/fhir"): {200, 400, 401, 403, 404, 405, 409, 412, 413, 415, 422, 503},
    ("POST", "/fhir/$process-message"): {200, 400, 401, 403, 413, 415, 422, 503},
}


def test_each_fhir_operation_documents_exactly_the_statuses_it_answers(spec: dict[str, Any]) -> None:
    assert STATUSES == {
        (method, path): {int(status) for status in operation["responses"]}
        for method, path, operation in operations(spec, "/fhir")
    }


def patient_outside_own_space() -> bytes:
    return orjson.dumps({"resourceType": "Patient", "id": "elsewhere.p-1"})


#: Answers the operator's fuzzing cannot reach: a partner's, or a stranger's.
PARTNER_ROWS: dict[str, Row] = {
    "a hospital's PUT outside its own id space": Row(
        "PUT", "/fhir/Patient/elsewhere.p-1", HOSPITAL, (405, "not-supported"), body=patient_outside_own_space(),
    ),
    "a CBO's create": Row("POST", "/fhir/Patient", CBO, (403, "forbidden"), body=b"{}"),
    "a CBO's message": Row("POST", "/fhir/$process-message", CBO, (403, "forbidden"), body=b"{}"),
    "a CBO's transaction": Row(
        "POST", "/fhir", CBO, (403, "forbidden"), body=orjson.dumps({
            "resourceType": "Bundle", "type": "transaction",
            "entry": [{"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}],
        }),
    ),
    "a hospital's transaction PUT outside its own id space": Row(
        "POST", "/fhir", HOSPITAL, (405, "not-supported"), body=orjson.dumps({
            "resourceType": "Bundle", "type": "transaction",
            "entry": [{"resource": {"resourceType": "Patient", "id": "elsewhere.p-2"},
                       "request": {"method": "PUT", "url": "Patient/elsewhere.p-2"}}],
        }),
    ),
    "a transaction reading a resource the hospital may not see": Row(
        "POST", "/fhir", HOSPITAL, (404, "not-found"), body=orjson.dumps({
            "resourceType": "Bundle", "type": "transaction",
            "entry": [{"request": {"method": "GET", "url": "Patient/nobody"}}],
        }),
    ),
    "a search without a token": Row("GET", "/fhir/Consent?patient=Patient/1", None, (401, "login")),
    "a search by another parameter": Row("GET", "/fhir/Consent?name=x", HOSPITAL, (400, "not-supported")),
    "a vread of no such version": Row("GET", "/fhir/Patient/general.p-9/_history/3", HOSPITAL, (404, "not-found")),
}


@pytest.mark.parametrize("name", [*ROWS, *PARTNER_ROWS])
async def test_a_partners_answer_is_documented_for_its_operation(
    hub: tuple[HubHttp, httpx.AsyncClient], spec: dict[str, Any], name: str
) -> None:
    """Each answer of the check-order table and of the partner rows is one its operation documents (the
    routing answers for no operation, a 405 for DELETE and a 413 for a path nothing serves, aside)."""
    row = ROWS.get(name) or PARTNER_ROWS[name]
    answer = await send(*hub, row)
    assert row.expected == (answer.status_code, answer.json()["issue"][0]["code"]), answer.text
    statuses = documented(spec, row.method, row.path.split("?")[0])
    if statuses is None:
        assert row.method == "DELETE" or row.path.startswith("/fhir/Nothing"), name
        return
    assert answer.status_code in statuses, (row.method, row.path, sorted(statuses))


@pytest.mark.parametrize(
    ("token", "content_type", "body", "status", "error"),
    [
        (None, "application/json", b"{}", 401, "unauthorized"),
        ("nobody", "application/json", b"{}", 401, "unauthorized"),
        (HOSPITAL, "text/plain", b"{}", 415, "unsupported_media_type"),
        (HOSPITAL, "application/json", b"[", 400, "bad_request"),
        (HOSPITAL, "application/json", b" " * (LIMIT + 1), 413, "payload_too_large"),
        (CBO, "application/json", orjson.dumps({
            "hook": "patient-consent-consult", "hookInstance": "h-1",
            "context": {"patientId": [{"system": "urn:oid:9.9", "value": "stranger"}], "purposeOfUse": "TREAT"},
        }), 403, "forbidden"),
    ],
)
async def test_each_cds_hooks_error_answer_is_documented(
    hub: tuple[HubHttp, httpx.AsyncClient], spec: dict[str, Any], token: str | None, content_type: str, body: bytes,
    status: int, error: str,
) -> None:
    hub_http, http = hub
    headers = {"Content-Type": content_type}
    if token is not None:
        headers.update(HubHttp.bearer(hub_http.tokens.get(token, token)))
    answer = await http.post("/cds-services/patient-consent-consult", content=body, headers=headers)
    assert (status, error) == (answer.status_code, answer.json()["error"]), answer.text
    assert status in (documented(spec, "POST", "/cds-services/patient-consent-consult") or set())
