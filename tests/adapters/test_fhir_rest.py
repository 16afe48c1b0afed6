"""The FHIR REST edge over HTTP: every broken input gets its precise OperationOutcome and writes nothing."""



from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.adapters.fhir_rest import RETRY_AFTER_SECONDS, install_fhir_error_handlers
from hub.errors import StoreUnavailable
from hub.events import RoutingFacts, decode
from hub.ports import Principal
from tests.adapters.conftest import (
    CBO_TOKEN,
    FHIR_JSON,
    HOSPITAL_B_TOKEN,
    HOSPITAL_TOKEN,
    MAX_BODY_BYTES,
    OPERATOR_TOKEN,
    Edge,
    auth,
    created_id,
    make_app,
    valid_body,
    valid_service_request,
)
from tests.adapters.resource_fakes import FakeResourceStore
from tests.fakes import FakeIngressWriter


def body_with(**changes: Any) -> bytes:
    """The valid referral with ``changes`` (``...`` deletes a key), as JSON bytes."""
    data = valid_service_request()
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return orjson.dumps(data)


OVERSIZE = body_with(note=[{"text": "x" * (MAX_BODY_BYTES + 10)}])


async def chunks(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    """Stream ``data`` without a Content-Length (chunked transfer)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


@dataclass
class Broken:
    """One broken request and the exact answer it must get."""

    status: int
    code: str
    expression: str | None = None
    body: bytes = field(default_factory=valid_body)
    headers: dict[str, str] = field(default_factory=auth)
    stream: bool = False
    broker_down: bool = False


BROKEN: list[Any] = [
    pytest.param(Broken(401, "login", headers={"Content-Type": FHIR_JSON}), id="no-auth"),
    pytest.param(
        Broken(401, "login", headers={**auth(), "Authorization": "Basic dXNlcjpwdw=="}), id="basic-auth"
    ),
    pytest.param(Broken(401, "login", headers={**auth(), "Authorization": "Bearer "}), id="empty-bearer"),
    pytest.param(Broken(401, "unknown", headers=auth("not-a-token")), id="bad-token"),
    pytest.param(Broken(403, "forbidden", headers=auth(CBO_TOKEN)), id="cbo-token"),
    pytest.param(Broken(415, "not-supported", headers=auth(content_type="text/plain")), id="text-plain"),
    pytest.param(
        Broken(415, "not-supported", headers=auth(content_type="application/fhir+xml")), id="fhir-xml"
    ),
    pytest.param(
        Broken(415, "not-supported", headers={"Authorization": f"Bearer {HOSPITAL_TOKEN}"}),
        id="no-content-type",
    ),
    pytest.param(
        Broken(415, "not-supported", headers=auth(content_type="application/fhir+json; charset=iso-8859-1")),
        id="latin-1-charset",
    ),
    pytest.param(
        Broken(415, "not-supported", headers=auth(content_type="application/fhir+json; fhirVersion=5.0")),
        id="fhir-r5",
    ),
    pytest.param(
        Broken(415, "not-supported", headers=auth(content_type="application/fhir+json; profile=x")),
        id="unknown-parameter",
    ),
    pytest.param(Broken(413, "too-long", body=OVERSIZE), id="oversize-honest-content-length"),
    pytest.param(
        Broken(413, "too-long", body=OVERSIZE, headers={**auth(), "Content-Length": "100"}),
        id="oversize-lying-content-length",
    ),
    pytest.param(Broken(413, "too-long", body=OVERSIZE, stream=True), id="oversize-no-content-length"),
    pytest.param(
        Broken(400, "structure", headers={**auth(), "Content-Length": "12abc"}), id="malformed-content-length"
    ),
    pytest.param(Broken(400, "structure", body=b""), id="empty-body"),
    pytest.param(Broken(400, "structure", body=b"this is not json"), id="non-json"),
    pytest.param(Broken(400, "structure", body=b"[" + valid_body() + b"]"), id="json-array"),
    pytest.param(
        Broken(400, "structure", body=valid_body().replace(b"proc\xc3\xa9dure", b"proc\xe9dure")),
        id="bad-utf8",
    ),
    pytest.param(Broken(400, "structure", body=b"\xef\xbb\xbf" + valid_body()), id="byte-order-mark"),
    pytest.param(
        Broken(
            400,
            "structure",
            body=valid_body().replace(b'"status": "active"', b'"status": "active", "status": "x"'),
        ),
        id="duplicate-property",
    ),
    pytest.param(
        Broken(
            400,
            "too-costly",
            body=body_with(extension=[{"url": "http://x", "valueString": "y"}]).replace(
                b'"valueString":"y"', b'"valueString":' + b'{"a":' * 70 + b"1" + b"}" * 70
            ),
        ),
        id="deeply-nested",
    ),
    pytest.param(
        Broken(422, "required", "resourceType", body=body_with(resourceType=...)), id="missing-resourceType"
    ),
    pytest.param(
        Broken(422, "not-supported", "resourceType", body=body_with(resourceType="Referral")),
        id="unknown-resourceType",
    ),
    pytest.param(
        Broken(422, "invalid", "resourceType", body=orjson.dumps({"resourceType": "Patient", "id": "p1"})),
        id="patient-posted",
    ),
    pytest.param(
        Broken(422, "required", "ServiceRequest.status", body=body_with(status=...)), id="missing-status"
    ),
    pytest.param(
        Broken(422, "structure", "ServiceRequest.subject", body=body_with(subject="Patient/123")),
        id="subject-wrong-type",
    ),
    pytest.param(
        Broken(422, "code-invalid", "ServiceRequest.status", body=body_with(status="pending")),
        id="invalid-code-value",
    ),
    pytest.param(
        Broken(
            422,
            "value",
            "ServiceRequest.code.coding[0].code",
            body=body_with(code={"coding": [{"system": "http://snomed.info/sct", "code": "two  spaces"}]}),
        ),
        id="invalid-code-format",
    ),
    pytest.param(
        Broken(
            422,
            "structure",
            "ServiceRequest.code.coding[0].system",
            body=body_with(code={"coding": [{"system": 42, "code": "x"}]}),
        ),
        id="coding-system-number",
    ),
    pytest.param(
        Broken(422, "structure", "ServiceRequest.doNotPerform", body=body_with(doNotPerform="false")),
        id="boolean-as-string",
    ),
    pytest.param(
        Broken(422, "structure", "ServiceRequest.priorty", body=body_with(priorty="urgent")), id="typo"
    ),
    pytest.param(
        Broken(
            422,
            "business-rule",
            "ServiceRequest.subject.reference",
            body=body_with(subject={"reference": "Group/9"}),
        ),
        id="subject-group",
    ),
    pytest.param(
        Broken(422, "required", "ServiceRequest.subject", body=body_with(subject={"reference": "#nowhere"})),
        id="subject-dangling-contained-reference",
    ),
    pytest.param(Broken(503, "transient", broker_down=True), id="broker-unavailable"),
]


@pytest.mark.parametrize("case", BROKEN)
async def test_broken_input_gets_precise_outcome_and_writes_nothing(case: Broken) -> None:
    """Exact status, issue code and expression; a valid OperationOutcome; the ingress stays empty."""
    ingress = FakeIngressWriter(fail=case.broker_down)
    transport = httpx.ASGITransport(app=make_app(ingress))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        content: bytes | AsyncIterator[bytes] = chunks(case.body) if case.stream else case.body
        response = await client.post("/fhir/ServiceRequest", content=content, headers=case.headers)

    assert case.status == response.status_code, response.text
    assert FHIR_JSON == response.headers["content-type"]
    body = response.json()
    OperationOutcome.model_validate(body)
    first = body["issue"][0]
    assert (case.code, [case.expression] if case.expression else None) == (
        first["code"],
        first.get("expression"),
    )
    assert [] == ingress.written
    if case.status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    if case.status == 503:
        assert str(RETRY_AFTER_SECONDS) == response.headers["retry-after"]


async def test_unknown_token_challenge_says_invalid_token(edge: Edge) -> None:
    """RFC 6750: a rejected token is answered with error="invalid_token"."""
    response = await edge.client.post("/fhir/ServiceRequest", content=valid_body(), headers=auth("nope"))
    assert 'Bearer realm="carehub", error="invalid_token"' == response.headers["www-authenticate"]


async def test_authenticator_outage_is_503_not_401() -> None:
    """When the token store is down the client must retry, not conclude its token is bad."""

    class DownAuthenticator:
        async def authenticate(self, token: str) -> Principal | None:
            raise StoreUnavailable("control plane did not answer")

    from hub.adapters.fhir_rest import build_fhir_router  # noqa: PLC0415

    ingress = FakeIngressWriter()
    app = FastAPI()
    app.include_router(
        build_fhir_router(
            authenticator=DownAuthenticator(), ingress=ingress, store=FakeResourceStore(), max_body_bytes=MAX_BODY_BYTES
        ),
        prefix="/fhir",
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://hub.test"
    ) as client:
        response = await client.post("/fhir/ServiceRequest", content=valid_body(), headers=auth())
    assert (503, "transient") == (response.status_code, response.json()["issue"][0]["code"])
    assert [] == ingress.written


async def test_phi_in_a_rejected_body_is_not_echoed(edge: Edge) -> None:
    """Values are PHI: the OperationOutcome names elements, never their content."""
    body = body_with(status="JaneDoe-555-12-3456", authoredOn="JaneDoe-555-12-3456")
    response = await edge.client.post("/fhir/ServiceRequest", content=body, headers=auth())
    assert 422 == response.status_code
    assert "JaneDoe" not in response.text
    assert "555-12" not in response.text


# --- the happy path -----------------------------------------------------------------------------


async def test_valid_referral_is_written_then_created(edge: Edge) -> None:
    """201 with Location/ETag; the event holds the exact bytes, stable ce_id, key sender|patient, facts."""
    posted = valid_body()
    response = await edge.client.post("/fhir/ServiceRequest", content=posted, headers=auth())

    assert 201 == response.status_code, response.text
    expected_id = created_id("hosp-a", "ServiceRequest", posted)
    assert f"/fhir/ServiceRequest/{expected_id}/_history/1" == response.headers["location"]
    assert 'W/"1"' == response.headers["etag"]
    assert response.headers["last-modified"].endswith(" GMT")
    assert FHIR_JSON == response.headers["content-type"]
    created = response.json()
    last_updated = created["meta"].pop("lastUpdated")
    assert {
        **valid_service_request(),
        "id": expected_id,
        "meta": {"versionId": "1", **valid_service_request()["meta"]},
    } == created
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", last_updated)
    [stored] = edge.store.all_versions()
    assert (expected_id, 1, "hosp-a", expected_id) == (
        stored.resource_id, stored.version_id, stored.sender, stored.event_id
    )

    assert 1 == len(edge.ingress.written)
    key, value, headers = edge.ingress.written[0]
    assert b"hosp-a|urn:carehub:partner:hosp-a:Patient/123" == key
    assert expected_id == headers["ce_id"]
    assert "1.0" == headers["ce_specversion"]
    assert "/partners/hosp-a" == headers["ce_source"]
    assert "org.carehub.servicerequest.submitted" == headers["ce_type"]
    assert "application/vnd.carehub.event+json" == headers["content-type"]
    assert "ce_subject" not in headers
    event = decode(value)
    assert posted == event.body.encode("utf-8")
    assert (
        RoutingFacts(
            resource_type="ServiceRequest",
            resource_id=expected_id,
            sender="hosp-a",
            patient_source="urn:carehub:partner:hosp-a:Patient/123",
            requester="Practitioner/9",
            performers=("Organization/food-bank",),
            categories=(
                "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes|food-insecurity",
            ),
            codes=("http://snomed.info/sct|467771000124109",),
            security_labels=("http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R",),
            status="active",
            intent="order",
            event_kind="referral",
        )
        == event.facts
    )


async def test_same_bytes_twice_create_once_and_answer_the_same_location(edge: Edge) -> None:
    """A retried create is answered like the first (201, same id) and writes nothing again; other bytes
    or another sender are other resources."""
    posted = valid_body()
    first = await edge.client.post("/fhir/ServiceRequest", content=posted, headers=auth())
    second = await edge.client.post("/fhir/ServiceRequest", content=posted, headers=auth())
    reformatted = await edge.client.post("/fhir/ServiceRequest", content=posted.rstrip(), headers=auth())
    other_sender = await edge.client.post(
        "/fhir/ServiceRequest", content=posted, headers=auth(HOSPITAL_B_TOKEN)
    )

    ids = [headers["ce_id"] for _, _, headers in edge.ingress.written]
    assert 3 == len(ids)
    assert (201, 201) == (first.status_code, second.status_code)
    assert first.headers["location"] == second.headers["location"]
    assert first.json() == second.json()
    assert ids[0] != ids[1]
    assert ids[0] != ids[2]
    assert b"hosp-b|urn:carehub:partner:hosp-b:Patient/123" == edge.ingress.written[2][0]
    assert 201 == reformatted.status_code == other_sender.status_code
    assert 3 == len(edge.store.all_versions())


async def test_operator_submits_as_operator(edge: Edge) -> None:
    """The HIE operator may submit; its events are sourced from /partners/operator."""
    response = await edge.client.post(
        "/fhir/ServiceRequest", content=valid_body(), headers=auth(OPERATOR_TOKEN)
    )
    assert 201 == response.status_code
    key, _, headers = edge.ingress.written[0]
    assert "/partners/operator" == headers["ce_source"]
    assert key.startswith(b"operator|urn:carehub:partner:operator:")


@pytest.mark.parametrize(
    "content_type",
    [
        "application/fhir+json",
        "application/json",
        "application/fhir+json; charset=utf-8",
        "application/fhir+json;charset=UTF-8",
        'application/fhir+json; fhirVersion=4.0; charset="utf-8"',
        "Application/JSON; fhirVersion=4.0",
    ],
)
async def test_fhir_json_media_types_are_accepted(edge: Edge, content_type: str) -> None:
    """Both JSON media types, with the charset and fhirVersion parameters FHIR allows."""
    response = await edge.client.post(
        "/fhir/ServiceRequest", content=valid_body(), headers=auth(content_type=content_type)
    )
    assert 201 == response.status_code, response.text
    assert 1 == len(edge.ingress.written)


async def test_client_supplied_id_and_version_are_replaced(edge: Edge) -> None:
    """On create the server assigns the id (the client's is ignored, as FHIR requires) and version 1."""
    posted = body_with(id="client-chosen", meta={"versionId": "7", "lastUpdated": "2025-01-01T00:00:00Z"})
    response = await edge.client.post("/fhir/ServiceRequest", content=posted, headers=auth())
    created = response.json()
    assert created_id("hosp-a", "ServiceRequest", posted) == created["id"]
    assert "1" == created["meta"]["versionId"]
    assert "2025-01-01T00:00:00Z" != created["meta"]["lastUpdated"]
    assert posted == decode(edge.ingress.written[0][1]).body.encode()


async def test_body_exactly_at_the_limit_is_accepted() -> None:
    """The limit is inclusive: a body of exactly max_body_bytes passes the size check."""
    posted = valid_body()
    ingress = FakeIngressWriter()
    app = make_app(ingress, max_body_bytes=len(posted))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://hub.test"
    ) as client:
        exact = await client.post("/fhir/ServiceRequest", content=posted, headers=auth())
        over = await client.post("/fhir/ServiceRequest", content=posted + b" ", headers=auth())
    assert (201, 413) == (exact.status_code, over.status_code)
    assert 1 == len(ingress.written)


# --- metadata and FastAPI's own errors ----------------------------------------------------------


async def test_metadata_is_an_accurate_r4_capability_statement_without_auth(edge: Edge) -> None:
    """No token needed; valid R4; says exactly what is implemented: seven types with create, update,
    read and vread (search by patient on Consent only; no history, no delete), transaction, batch and
    $process-message."""
    response = await edge.client.get("/fhir/metadata")
    assert 200 == response.status_code
    assert FHIR_JSON == response.headers["content-type"]
    statement = response.json()
    CapabilityStatement.model_validate(statement)
    assert "4.0.1" == statement["fhirVersion"]
    assert "http://hub.test/fhir" == statement["implementation"]["url"]
    assert ["server"] == [rest["mode"] for rest in statement["rest"]]
    [rest] = statement["rest"]
    assert [
        (name, ["read", "vread", "update", "create", *(["search-type"] if name == "Consent" else [])])
        for name in ("ServiceRequest", "Task", "Encounter", "Consent", "Patient", "Organization", "Practitioner")
    ] == [(r["type"], [i["code"] for i in r["interaction"]]) for r in rest["resource"]]
    assert all(r["conditionalCreate"] and r["updateCreate"] and not r["readHistory"] for r in rest["resource"])
    assert all(
        ("searchParam" in r) == (r["type"] == "Consent") and "searchInclude" not in r for r in rest["resource"]
    )
    [consent] = [r for r in rest["resource"] if r["type"] == "Consent"]
    assert ["patient"] == [p["name"] for p in consent["searchParam"]]
    assert ["transaction", "batch"] == [i["code"] for i in rest["interaction"]]
    assert ["process-message"] == [o["name"] for o in rest["operation"]]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/fhir/Patient/1", 404, "not-found"),
        ("GET", "/fhir/ServiceRequest/abc", 404, "not-found"),
        ("GET", "/fhir/Condition/abc", 404, "not-supported"),
        ("GET", "/fhir/Patient/1/_history", 404, "not-supported"),
        ("GET", "/fhir/Patient", 405, "not-supported"),
        ("DELETE", "/fhir/Patient/1", 405, "not-supported"),
        ("GET", "/fhir/ServiceRequest", 405, "not-supported"),
        ("DELETE", "/fhir/metadata", 405, "not-supported"),
    ],
)
async def test_fastapi_errors_under_fhir_are_operation_outcomes(
    edge: Edge, method: str, path: str, status: int, code: str
) -> None:
    """Routing 404/405 under /fhir answer in FHIR, keeping headers such as Allow."""
    response = await edge.client.request(method, path, headers=auth())
    assert status == response.status_code
    assert FHIR_JSON == response.headers["content-type"]
    assert code == response.json()["issue"][0]["code"]
    OperationOutcome.model_validate(response.json())
    if status == 405:
        assert "allow" in response.headers


async def test_errors_outside_fhir_keep_their_previous_handlers() -> None:
    """Other edges keep FastAPI's (or their own) error shape; a crash under /fhir is an OperationOutcome."""
    app = make_app(FakeIngressWriter())

    @app.get("/fhir/boom")
    async def fhir_boom() -> None:
        raise RuntimeError("bug")

    @app.get("/api/boom")
    async def api_boom() -> None:
        raise RuntimeError("bug")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        not_found = await client.get("/api/nothing")
        fhir_crash = await client.get("/fhir/boom")
        api_crash = await client.get("/api/boom")
    assert (404, {"detail": "Not Found"}) == (not_found.status_code, not_found.json())
    assert (500, "exception") == (fhir_crash.status_code, fhir_crash.json()["issue"][0]["code"])
    assert "bug" not in fhir_crash.text
    assert (500, "Internal Server Error") == (api_crash.status_code, api_crash.text)


async def test_handlers_installed_before_still_answer_their_paths() -> None:
    """install_fhir_error_handlers composes with an admin API's own 404 handler."""
    from fastapi.responses import JSONResponse  # noqa: PLC0415
    from starlette.exceptions import HTTPException  # noqa: PLC0415
    from starlette.requests import Request  # noqa: PLC0415

    app = FastAPI()

    async def admin_handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"admin": True}, status_code=404)

    app.add_exception_handler(HTTPException, admin_handler)
    install_fhir_error_handlers(app)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://hub.test"
    ) as client:
        admin = await client.get("/admin/v1/nothing")
        fhir = await client.get("/fhir/nothing")
    assert {"admin": True} == admin.json()
    assert "OperationOutcome" == fhir.json()["resourceType"]


# --- property: never a 5xx on input, nothing written on 4xx -------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(_paths(child, (*prefix, index)))
    return found


PATHS = _paths(valid_service_request())


def _mutate(path: tuple[str | int, ...], replacement: Any, drop: bool) -> bytes:
    data: Any = valid_service_request()
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    if drop:
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return orjson.dumps(data)


def _splice(offset: int, noise: bytes) -> bytes:
    body = valid_body()
    offset %= len(body)
    return body[:offset] + noise + body[offset + len(noise) :]


def _add(key: str, value: Any) -> bytes:
    return orjson.dumps({**valid_service_request(), key: value})


# Elements whose handling has bitten before: embedded resources, extensions, choices, primitive siblings.
tricky_keys = st.sampled_from(
    [
        "contained",
        "extension",
        "_status",
        "occurrenceTiming",
        "quantityQuantity",
        "note",
        "identifier",
        "doNotPerform",
        "subject",
        "meta",
        "text",
        "resource_type",
        "instantiatesUri",
        "_instantiatesUri",
    ]
)
embedded_resources = st.lists(
    st.fixed_dictionaries(
        {
            "resourceType": st.sampled_from(
                ["Patient", "Organization", "MedicinalProduct", "Foo", "Reference", ""]
            )
        },
        optional={"id": st.text(max_size=4), "gender": json_values, "identifier": json_values},
    ),
    min_size=1,
    max_size=2,
)

mutated_bodies = st.one_of(
    st.builds(_add, tricky_keys, json_values | embedded_resources),
    st.builds(_mutate, st.sampled_from(PATHS), st.just(None), st.just(True)),
    st.builds(_mutate, st.sampled_from(PATHS), json_values, st.just(False)),
    st.builds(_splice, st.integers(min_value=0), st.binary(min_size=1, max_size=8)),
    st.binary(max_size=64),
    json_values.map(orjson.dumps),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(posted=mutated_bodies)
async def test_mutated_referrals_never_cause_a_5xx_and_4xx_write_nothing(posted: bytes) -> None:
    """Whatever the body, the answer is 201 (one write, matching id) or a 4xx OperationOutcome (no write)."""
    ingress = FakeIngressWriter()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=make_app(ingress)), base_url="http://hub.test"
    ) as client:
        response = await client.post("/fhir/ServiceRequest", content=posted, headers=auth())
    assert response.status_code < 500, response.text
    if response.status_code == 201:
        assert 1 == len(ingress.written)
        assert response.headers["location"].split("/")[3] == ingress.written[0][2]["ce_id"]
        assert posted == decode(ingress.written[0][1]).body.encode()
    else:
        assert [] == ingress.written
        assert response.status_code in {400, 413, 422}
        OperationOutcome.model_validate(response.json())
