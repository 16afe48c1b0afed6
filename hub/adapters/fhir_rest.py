"""The inbound FHIR R4 REST edge: ``POST /ServiceRequest`` (create) and ``GET /metadata``.

Mounted by the composition root under ``/fhir``. A create is answered ``201 Created`` only after the
ingress writer returned, i.e. after the broker acknowledged the event on ``hub.ingress``; nothing is
written for any request answered with an error. The checks run cheapest and least revealing first:

* no ``Authorization: Bearer`` token -> 401 ``login``; a token the hub never issued -> 401
  ``unknown`` (both with ``WWW-Authenticate: Bearer``); a CBO token -> 403 ``forbidden`` (only
  hospitals and the HIE operator submit referrals);
* Content-Type other than ``application/fhir+json`` or ``application/json`` (parameters allowed:
  ``charset=utf-8``, ``fhirVersion=4.0``) -> 415 ``not-supported``;
* body over ``max_body_bytes`` -> 413 ``too-long``: refused on Content-Length before reading, and
  counted while reading, so a client that lies about (or omits) Content-Length cannot push more;
* not UTF-8, not JSON, not one object, duplicate property names -> 400 ``structure``; nested
  deeper than 64 -> 400 ``too-costly``;
* ``resourceType`` missing -> 422 ``required``, not R4 -> 422 ``not-supported``, another R4 type
  (a Patient posted here) -> 422 ``invalid``; all at expression ``resourceType``;
* not valid FHIR R4 -> 422 ``structure`` / ``required`` / ``value`` / ``code-invalid`` /
  ``invariant`` with the FHIRPath of each problem (see ``fhir_validation``);
* hub rule: the subject must be a Patient the hub can route on -> 422 ``business-rule`` /
  ``required`` at ``ServiceRequest.subject``;
* the broker did not acknowledge (``RetryableError``) -> 503 ``transient`` with ``Retry-After``.

400 is for bodies that could not be parsed, 422 for parsed resources that are not acceptable (FHIR
RESTful API, "create": 400 "could not be parsed", 422 "violated applicable FHIR profiles or server
business rules"). Every error body is an OperationOutcome (``application/fhir+json``).

The create is idempotent: the server-assigned id is the event id, derived from the sender and the
exact bytes, so a client retrying after a lost response gets the same id and ``ce_id`` (downstream
stages de-duplicate on it). The event carries the body text byte for byte; the 201 response body is
the resource with that ``id`` and ``meta.versionId`` "1".
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import PlainTextResponse

from hub.adapters.fhir_facts import referral_issues, servicerequest_facts
from hub.adapters.fhir_validation import FhirValidationError, parse_fhir_json, validate_resource
from hub.adapters.operation_outcome import (
    FHIR_JSON_MEDIA_TYPE,
    AuthenticationRequired,
    PayloadTooLarge,
    UnsupportedMediaType,
    http_status_for,
    issue,
    outcome,
    outcome_for,
)
from hub.errors import HubError, InvalidInput, NotAuthorized, RetryableError
from hub.events import CloudEvent, HubEvent, encode, event_id, event_type, now
from hub.ports import Authenticator, IngressWriter, Principal

#: Seconds a client should wait before retrying after a 503.
RETRY_AFTER_SECONDS = 5
#: When the CapabilityStatement last changed (update it with the capabilities).
CAPABILITY_DATE = "2026-11-23"
_ACCEPTED_MEDIA_TYPES = frozenset({"application/fhir+json", "application/json"})
_ACCEPTED_FHIR_VERSIONS = frozenset({"4.0", "4.0.1"})
_MEDIA_TYPE_HINT = (
    "send application/fhir+json (or application/json), optionally with charset=utf-8 and fhirVersion=4.0"
)
_REALM = 'Bearer realm="carehub"'

Handler = Callable[[Request, Any], Response | Awaitable[Response]]


def build_fhir_router(
    *,
    authenticator: Authenticator,
    ingress: IngressWriter,
    max_body_bytes: int,
) -> APIRouter:
    """The FHIR R4 router (paths ``/metadata`` and ``/ServiceRequest``; mount it with prefix ``/fhir``).

    Handlers close over ``authenticator``, ``ingress`` and ``max_body_bytes``; nothing is global.
    """
    router = APIRouter(tags=["FHIR R4"])
    software_version = _software_version()

    @router.get(
        "/metadata",
        summary="CapabilityStatement (FHIR R4)",
        response_class=Response,
        responses={200: {"content": {FHIR_JSON_MEDIA_TYPE: {}}}},
    )
    async def metadata_(request: Request) -> Response:
        base = str(request.base_url).rstrip("/") + request.url.path.removesuffix("/metadata")
        return _fhir_json(200, capability_statement(base_url=base, software_version=software_version))

    @router.post(
        "/ServiceRequest",
        summary="Create a ServiceRequest (referral)",
        status_code=201,
        response_class=Response,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {FHIR_JSON_MEDIA_TYPE: {"schema": {"type": "object"}}},
            },
        },
        responses={
            201: {"description": "Accepted and acknowledged by the broker"},
            400: {"description": "The body is not one JSON object (OperationOutcome)"},
            401: {"description": "No or unknown bearer token (OperationOutcome)"},
            403: {"description": "The caller may not submit referrals (OperationOutcome)"},
            413: {"description": "The body is too large (OperationOutcome)"},
            415: {"description": "Unsupported Content-Type (OperationOutcome)"},
            422: {"description": "Not a valid FHIR R4 ServiceRequest (OperationOutcome)"},
            503: {"description": "The broker did not acknowledge; retry (OperationOutcome)"},
        },
    )
    async def create_service_request(request: Request) -> Response:
        try:
            principal = await _authenticate(request, authenticator)
            _check_media_type(request.headers.get("content-type"))
            body = await _read_body(request, max_body_bytes)
            data = parse_fhir_json(body)
            resource = validate_resource(data, expected_type="ServiceRequest")
            sender = principal.partner_id or "operator"
            resource_id = event_id(sender, "ServiceRequest", body)
            facts = servicerequest_facts(resource, sender=sender, resource_id=resource_id)
            issues = referral_issues(resource, facts)
            if issues:
                raise FhirValidationError(issues)
            envelope = CloudEvent(
                id=resource_id,
                source=f"/partners/{sender}",
                type=event_type("ServiceRequest"),
                subject=None,
                time=now(),
            )
            await ingress.write(
                key=f"{sender}|{facts.patient_source}".encode(),
                value=encode(HubEvent(facts=facts, body=body.decode("utf-8"))),
                headers=envelope.to_headers(),
            )
        except HubError as error:
            return error_response(error)
        base = request.url.path.removesuffix("/ServiceRequest")
        return _fhir_json(
            201,
            _as_created(data, resource_id),
            headers={"Location": f"{base}/ServiceRequest/{resource_id}/_history/1", "ETag": 'W/"1"'},
        )

    return router


def capability_statement(*, base_url: str | None = None, software_version: str = "0.0.0") -> dict[str, Any]:
    """The R4 CapabilityStatement of what this edge implements: ServiceRequest create, nothing more."""
    implementation: dict[str, Any] = {"description": "CareHub HIE integration hub, FHIR R4 API"}
    if base_url:
        implementation["url"] = base_url
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": CAPABILITY_DATE,
        "publisher": "CareHub",
        "kind": "instance",
        "software": {"name": "CareHub", "version": software_version},
        "implementation": implementation,
        "fhirVersion": "4.0.1",
        "format": ["json", FHIR_JSON_MEDIA_TYPE],
        "rest": [
            {
                "mode": "server",
                "documentation": "Partners authenticate with the bearer token the HIE operator issued them.",
                "security": {
                    "cors": False,
                    "description": "Authorization: Bearer <token>; hospitals and the HIE operator may "
                    "submit referrals, community-based organizations may not.",
                },
                "resource": [
                    {
                        "type": "ServiceRequest",
                        "profile": "http://hl7.org/fhir/StructureDefinition/ServiceRequest",
                        "documentation": "create only (read is not implemented yet). The server assigns "
                        "the id from the sender and the exact request bytes, so resending the same "
                        "bytes is idempotent. 201 is returned once the broker acknowledged the referral.",
                        "interaction": [{"code": "create"}],
                        "versioning": "versioned",
                        "readHistory": False,
                        "updateCreate": False,
                        "conditionalCreate": False,
                    }
                ],
            }
        ],
    }


def error_response(error: HubError) -> Response:
    """The ``application/fhir+json`` OperationOutcome response for a hub error, with its headers."""
    status = http_status_for(error)
    headers: dict[str, str] = {}
    if isinstance(error, AuthenticationRequired):
        headers["WWW-Authenticate"] = _REALM if error.code == "login" else f'{_REALM}, error="invalid_token"'
    elif isinstance(error, RetryableError):
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return _fhir_json(status, outcome_for(error), headers=headers)


def install_fhir_error_handlers(app: FastAPI, *, prefix: str = "/fhir") -> None:
    """Answer FastAPI's own errors under ``prefix`` (404, 405, validation, 500) with OperationOutcomes.

    Requests outside ``prefix`` keep whatever handler was installed before (FastAPI's defaults if
    none), so this composes with other edges' handlers whichever is installed first.
    """
    previous_http: Handler = app.exception_handlers.get(StarletteHTTPException, http_exception_handler)
    previous_validation: Handler = app.exception_handlers.get(
        RequestValidationError, request_validation_exception_handler
    )
    previous_server_error: Handler | None = app.exception_handlers.get(Exception)

    def under_prefix(request: Request) -> bool:
        path = request.url.path
        return path == prefix or path.startswith(prefix + "/")

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        if not under_prefix(request) or not isinstance(exc, StarletteHTTPException):
            return await _delegate(previous_http, request, exc)
        return _http_exception_outcome(exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        if not under_prefix(request) or not isinstance(exc, RequestValidationError):
            return await _delegate(previous_validation, request, exc)
        issues = [
            issue(
                "invalid", f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg', 'invalid')}"
            )
            for error in exc.errors()
        ] or [issue("invalid", "the request is not valid")]
        return _fhir_json(400, outcome(issues))

    async def on_server_error(request: Request, exc: Exception) -> Response:
        if not under_prefix(request):
            if previous_server_error is not None:
                return await _delegate(previous_server_error, request, exc)
            return PlainTextResponse("Internal Server Error", status_code=500)
        return _fhir_json(
            500, outcome([issue("exception", "the server could not process the request", severity="fatal")])
        )

    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_server_error)


async def _delegate(handler: Handler, request: Request, exc: Exception) -> Response:
    result = handler(request, exc)
    return await result if inspect.isawaitable(result) else result


# --- steps ------------------------------------------------------------------------------------


async def _authenticate(request: Request, authenticator: Authenticator) -> Principal:
    header = request.headers.get("authorization")
    if not header:
        raise AuthenticationRequired("a bearer token is required (Authorization: Bearer <token>)")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationRequired("use the Authorization: Bearer <token> scheme")
    principal = await authenticator.authenticate(token)
    if principal is None:
        raise AuthenticationRequired("the bearer token is not valid", code="unknown")
    if principal.kind not in {"hospital", "operator"}:
        raise NotAuthorized("only hospitals and the HIE operator may submit referrals")
    return principal


def _check_media_type(content_type: str | None) -> None:
    if not content_type:
        raise UnsupportedMediaType(f"the request has no Content-Type; {_MEDIA_TYPE_HINT}")
    media_type, *parameters = content_type.split(";")
    if media_type.strip().lower() not in _ACCEPTED_MEDIA_TYPES:
        raise UnsupportedMediaType(f"unsupported Content-Type; {_MEDIA_TYPE_HINT}")
    for parameter in parameters:
        if not parameter.strip():
            continue
        name, _, value = parameter.partition("=")
        name, value = name.strip().lower(), value.strip().strip('"')
        if name == "charset" and value.lower() == "utf-8":
            continue
        if name == "fhirversion" and value in _ACCEPTED_FHIR_VERSIONS:
            continue
        if name == "fhirversion":
            raise UnsupportedMediaType("this server speaks FHIR R4 only (fhirVersion=4.0)")
        if name == "charset":
            raise UnsupportedMediaType("FHIR JSON is UTF-8; send charset=utf-8 or no charset")
        raise UnsupportedMediaType(f"unsupported Content-Type parameter; {_MEDIA_TYPE_HINT}")


async def _read_body(request: Request, limit: int) -> bytes:
    """Read at most ``limit`` bytes: refuse early on Content-Length, and count what actually arrives."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise InvalidInput("the Content-Length header is not a byte count", code="structure")
        if int(declared) > limit:
            raise PayloadTooLarge(f"the body is larger than the limit of {limit} bytes")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"the body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _as_created(data: dict[str, Any], resource_id: str) -> dict[str, Any]:
    """The resource as stored: the server's id and version first, everything else as sent."""
    meta = dict(data.get("meta") or {})
    meta["versionId"] = "1"
    rest = {key: value for key, value in data.items() if key not in {"resourceType", "id", "meta"}}
    return {"resourceType": data["resourceType"], "id": resource_id, "meta": meta, **rest}


def _http_exception_outcome(exc: StarletteHTTPException) -> Response:
    code, diagnostics = {
        401: ("login", "authentication is required"),
        403: ("forbidden", "not allowed"),
        404: (
            "not-supported",
            "no such FHIR endpoint; this server implements GET /metadata and POST /ServiceRequest",
        ),
        405: ("not-supported", "this FHIR endpoint does not support that HTTP method"),
        406: ("not-supported", "this server answers application/fhir+json only"),
        413: ("too-long", "the request is too large"),
        415: ("not-supported", f"unsupported Content-Type; {_MEDIA_TYPE_HINT}"),
        429: ("throttled", "too many requests; retry later"),
        503: ("transient", "the service is unavailable; retry later"),
    }.get(exc.status_code, ("exception" if exc.status_code >= 500 else "invalid", f"HTTP {exc.status_code}"))
    return _fhir_json(exc.status_code, outcome([issue(code, diagnostics)]), headers=dict(exc.headers or {}))


def _fhir_json(status: int, content: dict[str, Any], *, headers: dict[str, str] | None = None) -> Response:
    return Response(
        content=orjson.dumps(content),
        status_code=status,
        media_type=FHIR_JSON_MEDIA_TYPE,
        headers=headers,
    )


def _software_version() -> str:
    try:
        return metadata.version("carehub")
    except metadata.PackageNotFoundError:
        return "0.0.0"
