"""The inbound FHIR R4 REST edge, mounted by the composition root under ``/fhir``.

Interactions (``application/fhir+json``; the CapabilityStatement at ``GET /metadata`` lists exactly these):

* ``POST /{type}`` create, ``PUT /{type}/{id}`` update or update-as-create, ``GET /{type}/{id}`` read
  and ``GET /{type}/{id}/_history/{vid}`` vread of ServiceRequest, Task, Encounter (routed: each
  accepted version becomes an event on ``hub.ingress``) and of Patient, Organization, Practitioner
  (directory and patient index: stored, Patient identifiers linked in the identity crosswalk, never
  routed). ``If-None-Exist: identifier=[system|]value`` on create, ``If-Match`` on update.
* ``POST /Consent``, ``PUT /Consent/{id}``, ``GET /Consent/{id}``: consents (routed as ``consent-change``
  events on the patient's key, delivered to no one); operator and hospitals (their own patients) only.
  LEAP and R5-era shapes are normalised to R4 first and the 2xx is then a warning OperationOutcome naming
  each change (``fhir_consent_reading``; ``Prefer: return=`` honoured); a consent of another scope
  (research, treatment, adr) is stored, answered with a warning, and never used for privacy decisions;
  a Consent the consent engine still cannot use is refused (422). ``GET /Consent?patient=<reference or
  system|value>``: a searchset Bundle.
* ``POST /`` with a ``transaction`` or ``batch`` Bundle (``fhir_bundle``; Consent entries are read as
  above, their warnings in the entry's ``response.outcome``).
* ``POST /$process-message`` with a Da Vinci notification message Bundle (``davinci``).

A write is answered 2xx only after its event was acknowledged by the broker (acks=all) *and* its
version stored (``fhir_intake`` explains the order); nothing is written for a request answered with
an error. The checks run cheapest and least revealing first:

* a Content-Length over ``max_body_bytes`` -> 413 ``too-long``, before routing and authentication
  (the ASGI guard ``http_guard.BodyLimit`` around the whole app, which answers under ``/fhir`` with this
  module's OperationOutcome);
* no route for the path -> 404 ``not-supported``; a method the path does not serve -> 405
  ``not-supported`` with ``Allow`` (FastAPI's routing, answered by :func:`install_fhir_error_handlers`);
* no ``Authorization: Bearer`` token -> 401 ``login``; a token the hub never issued -> 401
  ``unknown`` (both with ``WWW-Authenticate: Bearer``); ``GET /metadata`` alone needs none;
* a resource type this server does not serve -> 404 ``not-supported``; a CBO creating anything (or
  updating anything but a Task, or sending a message) -> 403 ``forbidden``; ``$process-message?async=true``
  -> 400 ``not-supported``; on PUT, an id in the URL that is not a FHIR id -> 400 ``invalid``; on a read,
  such an id or version -> 404 ``not-found``; a search parameter other than ``patient`` -> 400;
* Content-Type other than ``application/fhir+json`` or ``application/json`` (parameters allowed:
  ``charset=utf-8``, ``fhirVersion=4.0``) -> 415 ``not-supported``;
* a body without (or with a false) Content-Length that grows over ``max_body_bytes`` -> 413 ``too-long``,
  counted while it is read (by the guard and by :func:`_read_body`), so no client can push more;
* not UTF-8, not JSON, not one object, duplicate property names -> 400 ``structure``; nested
  deeper than 64 -> 400 ``too-costly``;
* on PUT, a body without ``id`` or with another ``id`` than the URL -> 400 (as FHIR's update requires);
  a malformed ``If-Match`` -> 400;
* ``resourceType`` missing -> 422 ``required``, not R4 -> 422 ``not-supported``, another R4 type
  (a Patient posted to /ServiceRequest) -> 422 ``invalid``; all at expression ``resourceType``;
* not valid FHIR R4 (after a Consent's liberal reading) -> 422 ``structure`` / ``required`` / ``value`` /
  ``code-invalid`` / ``invariant`` with the FHIRPath of each problem (see ``fhir_validation``);
* then the plan (``fhir_intake``), against what is stored: a malformed ``If-None-Exist`` -> 400, one
  matching several -> 412 ``multiple-matches``; a partner's PUT of an id it may not know of outside its
  own id space (``<partner id>.<anything>``) -> 405 ``not-supported``, whether or not the id is used
  (``fhir_access.check_update_as_create``); an id in its own space the operator used, or a create whose
  id another resource holds -> 409 ``conflict``; ``If-Match`` naming another version -> 412
  ``conflict``; a change the caller may not make (another partner's resource it may read, a consent for
  a patient it does not serve) -> 403 ``forbidden``; hub rules (a referral's subject must be a Patient;
  Gravity's Task rules; a Consent the engine cannot use) -> 422 ``business-rule`` / ``required``;
* on a read, not found or not readable by this caller -> 404 ``not-found``, the same answer either way;
* the broker did not acknowledge, or the store did not answer (``RetryableError``) -> 503
  ``transient`` with ``Retry-After``; anything unexpected -> 500 ``exception`` with a generic message.

400 is for requests that could not be parsed (or that FHIR says are bad requests), 422 for parsed
resources that are not acceptable (FHIR RESTful API: "violated applicable FHIR profiles or server
business rules"). Every error body is an OperationOutcome; the OpenAPI document lists, per route, each
status it answers (:data:`_WRITE_RESPONSES` and its siblings).

Ids: a create's id is an HMAC, under the hub's id key, of (sender, type, exact bytes), so a client
retrying after a lost response gets the same id and ``ce_id`` and nothing is created twice (the retry
is answered 201 with the stored version 1), while no other partner can predict, squat or confirm it.
Reads show a partner what another partner sent only through the read gate (``fhir_disclosure``): the
same consent decision and redaction as delivery, audited. A PUT of content identical to the current
version is answered 200 and writes nothing. The event of a create or update carries the request body
byte for byte (a Bundle entry's: its resource with references resolved, a Consent's normalised); the
response is the resource as stored, with ``meta.versionId`` and ``meta.lastUpdated`` set by the server
(a Consent's: see above).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from email.utils import format_datetime
from importlib import metadata
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import PlainTextResponse

from hub.adapters import davinci
from hub.adapters.fhir_access import DIRECTORY_TYPES, SUPPORTED_TYPES, check_may_create, sender_of
from hub.adapters.fhir_bundle import process_bundle
from hub.adapters.fhir_consent_reading import answer as consent_answer
from hub.adapters.fhir_consent_reading import read_liberally
from hub.adapters.fhir_disclosure import ReadGate, Shown
from hub.adapters.fhir_facts import partner_namespace
from hub.adapters.fhir_intake import Intake, check_supported, parse_if_match
from hub.adapters.fhir_store import ResourceStore, StoredVersion, etag, render
from hub.adapters.fhir_validation import parse_fhir_json, validate_resource
from hub.adapters.operation_outcome import (
    FHIR_JSON_MEDIA_TYPE,
    AuthenticationRequired,
    PayloadTooLarge,
    ResourceNotFound,
    UnsupportedMediaType,
    http_status_for,
    issue,
    outcome,
    outcome_for,
)
from hub.errors import HubError, InvalidInput, NotAuthorized, RetryableError
from hub.ports import Authenticator, EventWriter, IngressWriter, Principal

#: Seconds a client should wait before retrying after a 503.
RETRY_AFTER_SECONDS = 5
#: When the CapabilityStatement last changed (update it with the capabilities).
CAPABILITY_DATE = "2026-12-04"
_ACCEPTED_MEDIA_TYPES = frozenset({"application/fhir+json", "application/json"})
_ACCEPTED_FHIR_VERSIONS = frozenset({"4.0", "4.0.1"})
_MEDIA_TYPE_HINT = (
    "send application/fhir+json (or application/json), optionally with charset=utf-8 and fhirVersion=4.0"
)
_REALM = 'Bearer realm="carehub"'
_FHIR_ID = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")

Handler = Callable[[Request, Any], Response | Awaitable[Response]]

#: OpenAPI: the schema of every error body under /fhir.
OPERATION_OUTCOME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"const": "OperationOutcome"},
        "issue": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {"enum": ["fatal", "error", "warning", "information"]},
                    "code": {"type": "string"},
                    "diagnostics": {"type": "string"},
                    "expression": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
_RESOURCE_SCHEMA: dict[str, Any] = {"type": "object", "required": ["resourceType"]}
_VERSION_HEADERS = {
    "ETag": {"description": 'The version, as W/"<versionId>"', "schema": {"type": "string"}},
    "Last-Modified": {"description": "When the version was stored", "schema": {"type": "string"}},
}


def _fhir_answer(description: str, *, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An OpenAPI response with an ``application/fhir+json`` resource (or Bundle) body."""
    answer: dict[str, Any] = {
        "description": description, "content": {FHIR_JSON_MEDIA_TYPE: {"schema": _RESOURCE_SCHEMA}},
    }
    if headers:
        answer["headers"] = headers
    return answer


def _outcome(description: str, *, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An OpenAPI error response: an ``application/fhir+json`` OperationOutcome."""
    answer: dict[str, Any] = {
        "description": f"{description} (OperationOutcome)",
        "content": {FHIR_JSON_MEDIA_TYPE: {"schema": OPERATION_OUTCOME_SCHEMA}},
    }
    if headers:
        answer["headers"] = headers
    return answer


_UNAUTHENTICATED = _outcome(
    "No or unknown bearer token",
    headers={"WWW-Authenticate": {"description": 'Bearer realm="carehub"', "schema": {"type": "string"}}},
)
_TOO_LARGE = _outcome("The body is over the hub's limit (HUB_MAX_BODY_BYTES), refused before it is parsed")
_UNAVAILABLE = _outcome(
    "The broker or the store did not answer; nothing was stored, retry",
    headers={"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
)
_STORED_HEADERS = {
    **_VERSION_HEADERS, "Location": {"description": "[base]/Type/id/_history/vid", "schema": {"type": "string"}},
}
#: Every status each FHIR route answers (besides 500, an unexpected failure), for the OpenAPI document.
_METADATA_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _fhir_answer("The CapabilityStatement"),
    413: _TOO_LARGE,
}
_READ_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _fhir_answer("The resource (the version) as the caller may see it", headers=_VERSION_HEADERS),
    401: _UNAUTHENTICATED,
    404: _outcome(
        "No such resource or version, none the caller may read (the same answer), or a resource type not served"
    ),
    413: _TOO_LARGE,
    503: _UNAVAILABLE,
}
_SEARCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _fhir_answer("A searchset Bundle of the current versions the caller may read"),
    400: _outcome("No patient parameter, more than one, or another search parameter"),
    401: _UNAUTHENTICATED,
    413: _TOO_LARGE,
    503: _UNAVAILABLE,
}
_BAD_BODY = _outcome(
    "The body is not one JSON object (or too deeply nested), or the request is malformed (an id in the URL, "
    "the id in the body, If-Match, If-None-Exist, a parameter)"
)
_UNSUPPORTED_MEDIA_TYPE = _outcome("Content-Type is not application/fhir+json (or application/json)")
_INVALID = _outcome("Not valid FHIR R4, or against a hub rule (each issue with its FHIRPath)")
_PRECONDITION = _outcome("If-None-Exist matched several, or If-Match names another version")
_WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _fhir_answer(
        "Updated, nothing changed, or an If-None-Exist match: the resource (a Consent that was normalised or is "
        "ignored for privacy: a warning OperationOutcome; Prefer: return= chooses)",
        headers=_STORED_HEADERS,
    ),
    201: _fhir_answer(
        "Created, acknowledged by the broker and stored (a Consent: as for 200)", headers=_STORED_HEADERS
    ),
    400: _BAD_BODY,
    401: _UNAUTHENTICATED,
    403: _outcome("The caller may not do this (a CBO creating, a change of another partner's resource, ...)"),
    404: _outcome("Resource type not served"),
    409: _outcome("The id is held by another resource"),
    412: _PRECONDITION,
    413: _TOO_LARGE,
    415: _UNSUPPORTED_MEDIA_TYPE,
    422: _INVALID,
    503: _UNAVAILABLE,
}
_CREATE_RESPONSES = _WRITE_RESPONSES
_UPDATE_RESPONSES: dict[int | str, dict[str, Any]] = dict(
    sorted(
        {
            **_WRITE_RESPONSES,
            405: _outcome(
                "A partner's PUT of an id it may not know of outside its own id space (<partner id>.<anything>), "
                "whether or not the id is used"
            ),
        }.items(),
        key=lambda item: str(item[0]),
    )
)
_BUNDLE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _fhir_answer(
        "A transaction-response or batch-response Bundle (a batch entry's own error in its response.outcome)"
    ),
    400: _BAD_BODY,
    401: _UNAUTHENTICATED,
    403: _outcome("A transaction entry the caller may not write (naming the entry)"),
    404: _outcome("A transaction's GET entry names no resource the caller may read"),
    405: _UPDATE_RESPONSES[405],
    409: _WRITE_RESPONSES[409],
    412: _PRECONDITION,
    413: _TOO_LARGE,
    415: _UNSUPPORTED_MEDIA_TYPE,
    422: _outcome("Not a transaction or batch Bundle, or a transaction entry not valid FHIR R4 or against a hub rule"),
    503: _UNAVAILABLE,
}
_MESSAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _fhir_answer("The response message Bundle"),
    400: _outcome("The body is not one JSON object, or async=true was asked for"),
    401: _UNAUTHENTICATED,
    403: _outcome("Community-based organizations send no notifications"),
    413: _TOO_LARGE,
    415: _UNSUPPORTED_MEDIA_TYPE,
    422: _outcome("Not a Da Vinci notification message Bundle this server processes"),
    503: _UNAVAILABLE,
}
_BODY = {"requestBody": {"required": True, "content": {FHIR_JSON_MEDIA_TYPE: {"schema": {"type": "object"}}}}}
_ASYNC_PARAMETER = {
    "parameters": [
        {"name": "async", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "Only false: messages are processed synchronously (true: 400)"}
    ]
}
_SEARCH_PARAMETERS_DOC = {
    "parameters": [
        {"name": "patient", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "Patient/<id>, an absolute reference, or an identifier as system|value (exactly one of "
         "patient and patient:identifier)"},
        {"name": "patient:identifier", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "An identifier of the patient as system|value"},
    ]
}


def build_fhir_router(
    *,
    authenticator: Authenticator,
    ingress: IngressWriter,
    store: ResourceStore,
    max_body_bytes: int,
    events: EventWriter | None = None,
    reads: ReadGate | None = None,
    id_key: bytes | None = None,
) -> APIRouter:
    """The FHIR R4 router (mount it with prefix ``/fhir``).

    Handlers close over ``authenticator``, ``ingress``, ``events`` (consent changes straight to
    ``hub.events``; None: through ``hub.ingress`` like the rest), ``store``, ``max_body_bytes`` and
    ``reads`` (the gate that decides a partner's read of what another partner sent; None: no such read
    is ever shown) and ``id_key`` (the key of server-assigned ids; keep it stable across restarts so a
    retried create finds its resource: the composition root keeps it in the control plane; None: random
    per router); nothing is global.
    """
    api = _FhirApi(
        authenticator=authenticator, ingress=ingress, store=store, max_body_bytes=max_body_bytes, events=events,
        reads=reads, id_key=id_key,
    )
    router = APIRouter(tags=["FHIR R4"])
    router.add_api_route(
        "/metadata", api.metadata, methods=["GET"], summary="CapabilityStatement (FHIR R4)",
        response_class=Response, responses=_METADATA_RESPONSES,
    )
    router.add_api_route(
        "/$process-message", api.process_message, methods=["POST"],
        summary="Process a Da Vinci notification message (admit, discharge, transfer)",
        response_class=Response, openapi_extra={**_BODY, **_ASYNC_PARAMETER}, responses=_MESSAGE_RESPONSES,
    )
    for path in ("", "/"):
        router.add_api_route(
            path, api.bundle, methods=["POST"], summary="Process a transaction or batch Bundle",
            response_class=Response, openapi_extra=_BODY, responses=_BUNDLE_RESPONSES, include_in_schema=path == "",
        )
    router.add_api_route(
        "/{resource_type}", api.create, methods=["POST"], status_code=201,
        summary="Create a resource (ServiceRequest, Task, Encounter, Consent, Patient, Organization, Practitioner)",
        response_class=Response, openapi_extra=_BODY, responses=_CREATE_RESPONSES,
    )
    for searchable in SEARCHABLE_TYPES:
        router.add_api_route(
            f"/{searchable}", _searcher(api, searchable), methods=["GET"],
            summary=f"Search {searchable} by patient=<reference or system|value> (a searchset Bundle)",
            response_class=Response, responses=_SEARCH_RESPONSES, openapi_extra=_SEARCH_PARAMETERS_DOC,
        )
    router.add_api_route(
        "/{resource_type}/{resource_id}", api.update, methods=["PUT"],
        summary="Update a resource, or create it with this id",
        response_class=Response, openapi_extra=_BODY, responses=_UPDATE_RESPONSES,
    )
    # Reads take their path parameters from the Request: typed ones would make FastAPI document a 422
    # HTTPValidationError that a str path parameter can never cause (and that /fhir would answer as 400).
    router.add_api_route(
        "/{resource_type}/{resource_id}", _from_path(api.read, "resource_type", "resource_id"), methods=["GET"],
        summary="Read a resource", response_class=Response, responses=_READ_RESPONSES,
        openapi_extra=_path_parameters("resource_type", "resource_id"),
    )
    router.add_api_route(
        "/{resource_type}/{resource_id}/_history/{version_id}",
        _from_path(api.vread, "resource_type", "resource_id", "version_id"), methods=["GET"],
        summary="Read one version of a resource", response_class=Response, responses=_READ_RESPONSES,
        openapi_extra=_path_parameters("resource_type", "resource_id", "version_id"),
    )
    return router


def _from_path(handler: Callable[..., Awaitable[Response]], *names: str) -> Callable[[Request], Awaitable[Response]]:
    """``handler(request, *path parameters)`` as an endpoint that takes only the request."""

    async def endpoint(request: Request) -> Response:
        return await handler(request, *(str(request.path_params[name]) for name in names))

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


_PATH_PARAMETERS: dict[str, str] = {
    "resource_type": "A resource type this server serves (another: 404 not-supported)",
    "resource_id": "The resource's id",
    "version_id": "The version (meta.versionId)",
}


def _path_parameters(*names: str) -> dict[str, Any]:
    return {
        "parameters": [
            {"name": name, "in": "path", "required": True, "description": _PATH_PARAMETERS[name],
             "schema": {"type": "string"}}
            for name in names
        ]
    }


def _searcher(api: _FhirApi, resource_type: str) -> Callable[[Request], Awaitable[Response]]:
    async def search(request: Request) -> Response:
        return await api.search(request, resource_type)

    search.__name__ = f"search_{resource_type.lower()}"
    return search


class _FhirApi:
    """The FHIR handlers, over the ports they were built with."""

    def __init__(
        self,
        *,
        authenticator: Authenticator,
        ingress: IngressWriter,
        store: ResourceStore,
        max_body_bytes: int,
        events: EventWriter | None = None,
        reads: ReadGate | None = None,
        id_key: bytes | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._ingress = ingress
        self._store = store
        self._max_body_bytes = max_body_bytes
        self._intake = Intake(ingress=ingress, store=store, events=events, reads=reads, id_key=id_key)
        self._software_version = _software_version()

    async def metadata(self, request: Request) -> Response:
        """``GET /metadata``: the CapabilityStatement, no token needed."""
        base = str(request.base_url).rstrip("/") + _base(request, "/metadata")
        return _fhir_json(200, capability_statement(base_url=base, software_version=self._software_version))

    async def _body(self, request: Request) -> bytes:
        _check_media_type(request.headers.get("content-type"))
        return await _read_body(request, self._max_body_bytes)

    async def process_message(self, request: Request) -> Response:
        """``POST /$process-message``: a Da Vinci notification (see ``hub.adapters.davinci``)."""
        try:
            principal = await _authenticate(request, self._authenticator)
            check_may_create(principal)
            if request.query_params.get("async", "false").lower() not in {"false", ""}:
                raise InvalidInput(
                    "this server processes messages synchronously only (async=true is not supported)",
                    code="not-supported",
                )
            body = await self._body(request)
            notification = davinci.read_notification(body, parse_fhir_json(body), sender=sender_of(principal))
            for record in notification.events:
                await self._ingress.write(key=record.key, value=record.value, headers=record.headers)
            await self._store.link_patients(notification.patient_groups)
        except HubError as error:
            return error_response(error)
        answer = davinci.response_message(
            notification,
            endpoint=_base(request, "/$process-message") + "/$process-message",
            software_version=self._software_version,
            first_event_id=notification.events[0].headers["ce_id"],
        )
        return _fhir_json(200, answer)

    async def bundle(self, request: Request) -> Response:
        """``POST /``: a transaction or batch Bundle (see ``hub.adapters.fhir_bundle``)."""
        try:
            principal = await _authenticate(request, self._authenticator)
            body = await self._body(request)
            answer = await process_bundle(principal, parse_fhir_json(body), intake=self._intake)
        except HubError as error:
            return error_response(error)
        return _fhir_json(200, answer)

    async def create(self, request: Request, resource_type: str) -> Response:
        """``POST /{type}``: create (``If-None-Exist`` honoured)."""
        try:
            principal = await _authenticate(request, self._authenticator)
            check_supported(resource_type)
            check_may_create(principal)
            body = await self._body(request)
            data = parse_fhir_json(body)
            data, notes = read_liberally(resource_type, data)
            model = validate_resource(data, expected_type=resource_type)
            planned = await self._intake.plan_create(
                principal,
                data,
                model,
                resource_id=self._intake.new_id(principal, resource_type, body),
                event_body=body.decode("utf-8"),
                if_none_exist=request.headers.get("if-none-exist"),
            )
            [version] = await self._intake.commit([planned])
        except HubError as error:
            return error_response(error)
        response = _resource_response(planned.status, version, _base(request, f"/{resource_type}"), planned.view)
        return consent_answer(resource_type, request.headers, notes, response)

    async def update(self, request: Request, resource_type: str, resource_id: str) -> Response:
        """``PUT /{type}/{id}``: update, or create with the client's id (``If-Match`` honoured)."""
        try:
            principal = await _authenticate(request, self._authenticator)
            check_supported(resource_type)
            if principal.kind == "cbo" and resource_type != "Task":
                raise NotAuthorized("community-based organizations may update only the Tasks they own")
            if not _is_fhir_id(resource_id):
                raise InvalidInput("the id in the URL is not a FHIR id ([A-Za-z0-9-.]{1,64})", code="invalid")
            body = await self._body(request)
            data = parse_fhir_json(body)
            data, notes = read_liberally(resource_type, data)
            _check_body_id(data, resource_type, resource_id)
            if_match = request.headers.get("if-match")
            expected_version = parse_if_match(if_match) if if_match is not None else None
            model = validate_resource(data, expected_type=resource_type)
            planned = await self._intake.plan_update(
                principal, data, model, resource_id=resource_id, event_body=body.decode("utf-8"),
                if_match=expected_version,
            )
            [version] = await self._intake.commit([planned])
        except HubError as error:
            return error_response(error)
        response = _resource_response(planned.status, version, _base(request, f"/{resource_type}/{resource_id}"))
        return consent_answer(resource_type, request.headers, notes, response)

    async def search(self, request: Request, resource_type: str) -> Response:
        """``GET /Consent?patient=...``: the current Consents of that patient the caller may read."""
        try:
            principal = await _authenticate(request, self._authenticator)
            source = search_patient_source(list(request.query_params.multi_items()), sender=sender_of(principal))
            found = await self._intake.search_about_patient(principal, resource_type, source)
        except HubError as error:
            return error_response(error)
        base = str(request.base_url).rstrip("/") + _base(request, f"/{resource_type}")
        return _fhir_json(200, searchset(found, base=base, self_url=str(request.url)))

    async def read(self, request: Request, resource_type: str, resource_id: str) -> Response:
        """``GET /{type}/{id}``: the newest version the caller may read."""
        return await self._read(request, resource_type, resource_id, None)

    async def vread(self, request: Request, resource_type: str, resource_id: str, version_id: str) -> Response:
        """``GET /{type}/{id}/_history/{vid}``: one version, if the caller may read it."""
        return await self._read(request, resource_type, resource_id, version_id)

    async def _read(self, request: Request, resource_type: str, resource_id: str, version_id: str | None) -> Response:
        try:
            principal = await _authenticate(request, self._authenticator)
            check_supported(resource_type)
            if not _is_fhir_id(resource_id) or (version_id is not None and not _is_version(version_id)):
                raise ResourceNotFound(f"there is no {resource_type} with that id")
            shown = await self._intake.read(
                principal, resource_type, resource_id, int(version_id) if version_id is not None else None
            )
        except HubError as error:
            return error_response(error)
        return _fhir_json(200, shown.resource, headers={**_version_headers(shown.version), **shown.headers})


#: Resource types with a search interaction (by patient).
SEARCHABLE_TYPES: tuple[str, ...] = ("Consent",)
_SEARCH_PARAMETERS = frozenset({"patient", "patient:identifier"})


def search_patient_source(params: list[tuple[str, str]], *, sender: str) -> str:
    """The crosswalk source a ``patient`` search names, in the caller's namespace (as its writes would).

    ``patient=Patient/123`` (or ``123``, an absolute URL, a ``urn:``), ``patient=system|value`` or
    ``patient:identifier=system|value`` (``|value``: an identifier local to the caller). Raises
    ``InvalidInput`` (400) for anything else.
    """
    unknown = sorted({name for name, _ in params if name not in _SEARCH_PARAMETERS and not name.startswith("_")})
    if unknown:
        raise InvalidInput(
            "this server searches by patient only (patient=<reference> or patient=<system>|<value>)",
            code="not-supported",
        )
    given = [(name, value.strip()) for name, value in params if name in _SEARCH_PARAMETERS]
    if len(given) != 1 or not given[0][1]:
        raise InvalidInput("give exactly one patient parameter with a value", code="required", expression="patient")
    name, value = given[0]
    namespace = partner_namespace(sender)
    if "|" in value or name == "patient:identifier":
        system, bar, identifier = value.rpartition("|") if "|" in value else ("", "|", value)
        if not identifier or not bar:
            raise InvalidInput("patient=<system>|<value> needs a value after the bar", expression="patient")
        return f"{system}|{identifier}" if system else f"{namespace}|{identifier}"
    reference = value.split("/_history/", 1)[0]
    if "://" in reference or reference.startswith("urn:"):
        return reference
    if "/" not in reference:
        reference = f"Patient/{reference}"
    kind, _, patient_id = reference.partition("/")
    if kind != "Patient" or not _is_fhir_id(patient_id):
        raise InvalidInput("patient must reference a Patient (Patient/<id>)", expression="patient")
    return f"{namespace}:{reference}"


def searchset(found: list[Shown], *, base: str, self_url: str) -> dict[str, Any]:
    """A FHIR searchset Bundle of ``found`` (each resource as the caller may see it)."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(found),
        "link": [{"relation": "self", "url": self_url}],
        "entry": [
            {
                "fullUrl": f"{base}/{shown.version.resource_type}/{shown.version.resource_id}",
                "resource": shown.resource,
                "search": {"mode": "match"},
            }
            for shown in found
        ],
    }


def capability_statement(*, base_url: str | None = None, software_version: str = "0.0.0") -> dict[str, Any]:
    """The R4 CapabilityStatement of exactly what this edge implements."""
    implementation: dict[str, Any] = {"description": "CareHub HIE integration hub, FHIR R4 API"}
    if base_url:
        implementation["url"] = base_url
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": CAPABILITY_DATE,
        "publisher": "CareHub",
        "kind": "instance",
        "instantiates": [davinci.NOTIFICATION_RECEIVER],
        "software": {"name": "CareHub", "version": software_version},
        "implementation": implementation,
        "fhirVersion": "4.0.1",
        "format": ["json", FHIR_JSON_MEDIA_TYPE],
        "rest": [
            {
                "mode": "server",
                "documentation": "Partners authenticate with the bearer token the HIE operator issued them. "
                "Hospitals and the operator create and update; community-based organizations update the "
                "Tasks they own. A partner reads what it sent, and what was delivered to it.",
                "security": {
                    "cors": False,
                    "description": "Authorization: Bearer <token> (partner token, or the HIE operator's admin token).",
                },
                "resource": [_resource_capability(resource_type) for resource_type in SUPPORTED_TYPES],
                "interaction": [
                    {
                        "code": "transaction",
                        "documentation": "POST, PUT and GET entries of the resource types above; urn:uuid "
                        "fullUrls are resolved; all or nothing.",
                    },
                    {"code": "batch", "documentation": "POST, PUT and GET entries, each processed on its own."},
                ],
                "operation": [
                    {
                        "name": "process-message",
                        "definition": "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message",
                        "documentation": "Da Vinci Unsolicited Notifications: notification-admit, "
                        "notification-discharge and notification-transfer messages, processed "
                        "synchronously (200 with a response message).",
                    }
                ],
            }
        ],
    }


def _resource_capability(resource_type: str) -> dict[str, Any]:
    routed = resource_type not in DIRECTORY_TYPES
    if resource_type == "Consent":
        return _consent_capability()
    documentation = (
        "Each accepted version becomes an event on hub.ingress; 201/200 only after the broker acknowledged it "
        "and it was stored."
        if routed
        else "Stored in the hub's directory and patient index; not routed to partners."
    )
    if resource_type == "Patient":
        documentation += " Its identifiers are linked in the identity crosswalk."
    return {
        "type": resource_type,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
        "documentation": documentation + " A create's id is derived (keyed) from the sender and the exact "
        "bytes, so resending them is idempotent. Partners create with PUT only ids in their own id space, "
        "<partner id>.<your id>; the HIE operator any id.",
        "interaction": [{"code": "read"}, {"code": "vread"}, {"code": "update"}, {"code": "create"}],
        "versioning": "versioned-update",
        "readHistory": False,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-supported",
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
        "referencePolicy": ["literal", "logical"],
    }


def _consent_capability() -> dict[str, Any]:
    return {
        "type": "Consent",
        "profile": "http://hl7.org/fhir/StructureDefinition/Consent",
        "documentation": "Patient-privacy consents (scope or category patient-privacy; LEAP and literal R4 "
        "readings). Written by the HIE operator, and by hospitals for their own patients; never by CBOs. Each "
        "accepted version (a new consent, a change, a revocation by status inactive) becomes a consent-change "
        "event on the patient's key, so every later event of that patient is decided under it; it is "
        "delivered to no partner. Consents in LEAP or R5-era shapes (scope only in category, R5 decision, a "
        "single object where R4 repeats, a Coding where R4 has a CodeableConcept or the reverse) are "
        "normalised to R4 and stored so; the 2xx then carries a warning OperationOutcome with one issue per "
        "change at its FHIRPath instead of the resource (Prefer: return=representation, =minimal or "
        "=OperationOutcome chooses), and in a transaction or batch Bundle those warnings are the entry's "
        "response.outcome. Consents of another scope (research, treatment, adr) are stored, answered with a "
        "warning, and ignored for privacy decisions. A Consent the consent engine still cannot use after "
        "normalisation (no scope, no patient, a privacy consent that says neither permit nor deny) is "
        "refused with 422.",
        "interaction": [
            {"code": "read"}, {"code": "vread"}, {"code": "update"}, {"code": "create"}, {"code": "search-type"},
        ],
        "versioning": "versioned-update",
        "readHistory": False,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-supported",
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
        "referencePolicy": ["literal", "logical"],
        "searchParam": [
            {
                "name": "patient",
                "definition": "http://hl7.org/fhir/SearchParameter/clinical-patient",
                "type": "reference",
                "documentation": "Patient/<id>, an absolute reference, or an identifier as system|value "
                "(also patient:identifier=system|value); matches every identifier the hub has linked to "
                "that patient.",
            }
        ],
    }


def _resource_response(status: int, version: StoredVersion, base: str, shown: Shown | None = None) -> Response:
    """A write's answer: the stored version, or (an ``If-None-Exist`` match) the match as the caller may see it."""
    headers = _version_headers(version)
    headers["Location"] = f"{base}/{version.resource_type}/{version.resource_id}/_history/{version.version_id}"
    if shown is not None:
        return _fhir_json(status, shown.resource, headers={**headers, **shown.headers})
    return _fhir_json(status, render(version), headers=headers)


def _version_headers(version: StoredVersion) -> dict[str, str]:
    return {"ETag": etag(version), "Last-Modified": format_datetime(version.last_updated, usegmt=True)}


def _base(request: Request, suffix: str) -> str:
    """The FHIR base path (``/fhir``) of a request whose path ends with ``suffix``."""
    return request.url.path.removesuffix(suffix)


def _is_fhir_id(value: str) -> bool:
    return 0 < len(value) <= 64 and all(char in _FHIR_ID for char in value)


def _is_version(value: str) -> bool:
    return value.isascii() and value.isdigit() and 0 < len(value) <= 9


def _check_body_id(data: dict[str, Any], resource_type: str, resource_id: str) -> None:
    """FHIR update: the body's id must be present and equal to the URL's (400 otherwise)."""
    if "id" not in data:
        raise InvalidInput(
            f"{resource_type}.id: an update must carry the resource's id (the one in the URL)",
            code="required",
            expression=f"{resource_type}.id",
        )
    if data["id"] != resource_id:
        raise InvalidInput(
            f"{resource_type}.id: the id in the body differs from the id in the URL",
            code="invalid",
            expression=f"{resource_type}.id",
        )


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


def _http_exception_outcome(exc: StarletteHTTPException) -> Response:
    code, diagnostics = {
        401: ("login", "authentication is required"),
        403: ("forbidden", "not allowed"),
        404: (
            "not-supported",
            "no such FHIR endpoint; see GET /metadata for what this server implements",
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
