"""The CDS Hooks consent decision service (LEAP ``patient-consent-consult``), mounted at the root.

* ``GET /cds-services``: the discovery document (no token needed; it holds no data).
* ``POST /cds-services/patient-consent-consult``: a consult. Order of work: authenticate (bearer token
  of a partner or the operator's admin token) -> read and parse the body (``cds_hooks_model``) ->
  gather (``ConsultStore``: the patient's hub id, the actor's names, the consents and, for a partner, who
  sent each) -> decide (``hub.consent.cds_cards.consult``, pure) -> audit (the full answer) -> answer
  ``{"cards": [<LEAP card>]}``, shown as the caller may see it (``cds_cards.shown_to_caller``: a partner's
  card names no Consent it cannot read through the FHIR API, ``fhir_access.unreadable_consents``).

This module does I/O only; everything it decides is in the pure modules. Answers:

* 200 with one card (CONSENT_PERMIT / CONSENT_DENY / NO_CONSENT), only after the decision was appended
  to the decision audit (``consent_decisions``, rule ``cds:<engine rule>``);
* 400 ``bad_request`` (LEAP's error shape, plus ``expression``): not JSON, not an object, wrong ``hook``,
  no ``hookInstance``/``context``/``patientId``, an unusable member; an operator consult without actor;
* 401 ``unauthorized`` with ``WWW-Authenticate: Bearer``: no or unknown token;
* 403 ``forbidden``: a partner asking about a patient it has no relationship with (or one the hub does
  not know: the same answer, so a consult never reveals who is in the HIE);
* 404 ``not_found``: another service id; 413 ``payload_too_large``; 415 ``unsupported_media_type``
  (JSON only); 503 ``service_unavailable`` with ``Retry-After`` when the store does not answer.

The OpenAPI document lists the same answers per route (:data:`DISCOVERY_RESPONSES`, :data:`CONSULT_RESPONSES`;
the 404 belongs to no documented operation).

Audit record of a consult: ``event_id`` ``cds-consult:<sha-256 of caller and hookInstance>`` (a retried
consult is recorded once; the id can never equal an event id, so it never grants a FHIR read),
``recipient_id`` the actor's partner id (``(unregistered-actor)`` when the actor is no partner),
``hub_patient_id`` (``(unresolved)`` when unknown), verdict ``permit`` for CONSENT_PERMIT and ``deny``
otherwise (a NO_CONSENT answer permits nothing), the purposes and classes asked about; its rule and reason
name every Consent id (the audit is the operator's). Logs carry the decision, the rule as the caller is
shown it and the caller, never identifiers.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Final

import orjson
import structlog
from fastapi import APIRouter, Request, Response

from hub import events
from hub.adapters.cds_hooks_model import discovery, error_body, parse_request
from hub.adapters.cds_hooks_store import ConsultStore
from hub.adapters.fhir_access import unreadable_consents
from hub.consent.cds_cards import SERVICE_ID, CardDecision, ConsultAnswer, ConsultRequest, card, shown_to_caller
from hub.consent.cds_cards import consult as decide_consult
from hub.control.audit import CONSULT_RULE_PREFIX, DecisionRecord
from hub.errors import InvalidInput, RetryableError
from hub.ports import Authenticator, Principal

log = structlog.get_logger(__name__)

SOURCE_LABEL: Final = "CareHub Consent Decision Service"
RETRY_AFTER_SECONDS: Final = 5
UNRESOLVED_PATIENT: Final = "(unresolved)"
UNREGISTERED_ACTOR: Final = "(unregistered-actor)"
_JSON_TYPES: Final = frozenset({"application/json", "application/fhir+json"})
_REALM: Final = 'Bearer realm="carehub"'
_RULE_MAX: Final = 128


#: OpenAPI: LEAP's error body, every error answer of the service.
ERROR_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["error", "errorMessage"],
    "properties": {
        "error": {"type": "string"},
        "errorMessage": {"type": "string"},
        "expression": {"type": "string", "description": "The JSON path of the problem, when known"},
    },
}


def _answer(description: str, schema: dict[str, Any], **headers: str) -> dict[str, Any]:
    documented: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        documented["headers"] = {
            name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()
        }
    return documented


def _error(error: str, description: str, **headers: str) -> dict[str, Any]:
    return _answer(f"{error}: {description} (LEAP error)", ERROR_SCHEMA, **headers)


_TOO_LARGE: Final = _error("payload_too_large", "the body is over the hub's limit (HUB_MAX_BODY_BYTES)")
#: Every status each route answers (besides 500, an unexpected failure), for the OpenAPI document.
DISCOVERY_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    200: _answer("The discovery document", {"type": "object", "required": ["services"]}),
    413: _TOO_LARGE,
}
CONSULT_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    200: _answer("One LEAP card (CONSENT_PERMIT, CONSENT_DENY or NO_CONSENT), audited", {
        "type": "object", "required": ["cards"],
        "properties": {"cards": {"type": "array", "items": {"type": "object"}}},
    }),
    400: _error("bad_request", "not JSON, not a consult this service can use, or an operator's without actor"),
    401: _error("unauthorized", "no or unknown bearer token", **{"WWW-Authenticate": 'Bearer realm="carehub"'}),
    403: _error("forbidden", "a partner asking about a patient it has no relationship with (or one the hub does "
                "not know: the same answer)"),
    413: _TOO_LARGE,
    415: _error("unsupported_media_type", "the body is not application/json"),
    503: _error("service_unavailable", "the consent store did not answer; retry", **{"Retry-After": "Seconds to wait"}),
}


class _Refused(Exception):
    """An error answer: HTTP status, LEAP error code, message, JSON path, extra headers."""

    def __init__(
        self, status: int, error: str, message: str, *, expression: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.expression = expression
        self.headers = headers or {}


def build_cds_router(*, authenticator: Authenticator, store: ConsultStore, max_body_bytes: int) -> APIRouter:
    """The CDS Hooks router (mount it without a prefix: it serves ``/cds-services``)."""
    service = _CdsService(authenticator=authenticator, store=store, max_body_bytes=max_body_bytes)
    router = APIRouter(tags=["CDS Hooks consent service"])
    router.add_api_route(
        "/cds-services", service.discovery, methods=["GET"], summary="CDS Hooks discovery", response_class=Response,
        responses=DISCOVERY_RESPONSES,
    )
    router.add_api_route(
        f"/cds-services/{SERVICE_ID}", service.consult, methods=["POST"], response_class=Response,
        summary="Consult the patient's consents (LEAP patient-consent-consult)",
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
        },
        responses=CONSULT_RESPONSES,
    )
    router.add_api_route(
        "/cds-services/{service_id}", service.unknown_service, methods=["POST"], response_class=Response,
        include_in_schema=False,
    )
    return router


class _CdsService:
    def __init__(self, *, authenticator: Authenticator, store: ConsultStore, max_body_bytes: int) -> None:
        self._authenticator = authenticator
        self._store = store
        self._max_body_bytes = max_body_bytes

    async def discovery(self) -> Response:
        """``GET /cds-services``."""
        return _json(200, discovery())

    async def unknown_service(self, service_id: str) -> Response:
        """``POST /cds-services/<other>``: 404 (the id is not echoed)."""
        del service_id
        return _json(404, error_body("not_found", f"this server offers only the {SERVICE_ID} service"))

    async def consult(self, request: Request) -> Response:
        """``POST /cds-services/patient-consent-consult``."""
        try:
            principal = await self._authenticate(request)
            body = await self._body(request)
            try:
                parsed = parse_request(body, sender=principal.partner_id)
            except InvalidInput as error:
                raise _Refused(400, "bad_request", str(error), expression=error.expression) from None
            answer, record = await self._decide(principal, parsed)
        except _Refused as refused:
            return _json(
                refused.status, error_body(refused.error, refused.message, expression=refused.expression),
                headers=refused.headers,
            )
        except RetryableError:
            log.warning("cds_consult_store_unavailable")
            return _json(
                503, error_body("service_unavailable", "the consent store did not answer; retry"),
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        log.info(
            "cds_consult", decision=answer.decision.value, rule=answer.rule,
            caller=principal.partner_id or "operator", actor_partner=record.recipient_id,
        )
        base = str(request.base_url).rstrip("/")
        answer_card = card(
            answer, source_label=SOURCE_LABEL, source_url=f"{base}/cds-services", consent_base=f"{base}/fhir/"
        )
        return _json(200, {"cards": [answer_card]})

    async def _decide(self, principal: Principal, parsed: ConsultRequest) -> tuple[ConsultAnswer, DecisionRecord]:
        """Gather, decide, audit the full answer; return the answer as the caller is shown it, and the audit row."""
        actors = parsed.actors
        if not actors:
            if principal.organization is None:
                raise _Refused(
                    400, "bad_request",
                    "Invalid request: context.actor is required (the operator consults on behalf of an actor)",
                    expression="context.actor",
                )
            actors = (principal.organization,)
        patients = await self._store.patients(parsed.patient_ids)
        await self._check_may_consult(principal, patients)
        actor = await self._store.actor(actors)
        consents = await self._store.consents(patients[0]) if len(patients) == 1 else ()
        hidden: frozenset[str] = frozenset()
        if not principal.is_operator and consents:
            senders = await self._store.consent_senders([c.id for c in consents if c.id])
            hidden = unreadable_consents(principal, senders)
        answer = decide_consult(parsed, consents, patients=patients, recipient_ids=actor.names, at=time.time())
        record = audit_record(
            answer,
            parsed,
            caller=principal.partner_id or "operator",
            patient=patients[0] if len(patients) == 1 else None,
            recipient=actor.partner_ids[0] if actor.partner_ids else None,
        )
        await self._store.record(record)
        return shown_to_caller(answer, hidden), record

    async def _check_may_consult(self, principal: Principal, patients: tuple[str, ...]) -> None:
        """A partner consults only about a patient it has a relationship with (ADR 0007): otherwise 403,
        the same answer whether the hub knows the patient or not, so a consult never tells a partner
        that a stranger is in the HIE, or has a consent. The operator may consult about anyone."""
        if principal.is_operator or principal.partner_id is None:
            return
        if patients and all([await self._store.knows(principal.partner_id, p) for p in patients]):
            return
        raise _Refused(
            403, "forbidden",
            "a partner may consult only about patients it has a relationship with: a patient it registered or "
            "sent data about, one on its roster, or one whose data the hub shared with it",
        )

    async def _authenticate(self, request: Request) -> Principal:
        header = request.headers.get("authorization")
        if not header:
            raise _Refused(
                401, "unauthorized", "a bearer token is required (Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": _REALM},
            )
        scheme, _, token = header.partition(" ")
        principal = await self._authenticator.authenticate(token.strip()) if scheme.lower() == "bearer" else None
        if principal is None:
            raise _Refused(
                401, "unauthorized", "the bearer token is not valid",
                headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
            )
        return principal

    async def _body(self, request: Request) -> bytes:
        content_type = request.headers.get("content-type")
        if content_type is not None and content_type.split(";")[0].strip().lower() not in _JSON_TYPES:
            raise _Refused(415, "unsupported_media_type", "send the consult as application/json")
        declared = request.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self._max_body_bytes:
            raise _Refused(413, "payload_too_large", f"the body is larger than {self._max_body_bytes} bytes")
        chunks: list[bytes] = []
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > self._max_body_bytes:
                raise _Refused(413, "payload_too_large", f"the body is larger than {self._max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def payload_too_large(limit: int) -> Response:
    """The service's 413 (LEAP error shape) for a body over ``limit`` bytes; ``hub.adapters.http_guard`` answers
    it under ``/cds-services`` before the body is read."""
    return _json(413, error_body("payload_too_large", f"the body is larger than {limit} bytes"))


def consult_event_id(caller: str, hook_instance: str) -> str:
    """The audit ``event_id`` of a consult: stable per caller and hook instance, never an event's id."""
    digest = hashlib.sha256(f"{caller}\x00{hook_instance}".encode()).hexdigest()
    return f"cds-consult:{digest}"


def audit_record(
    answer: ConsultAnswer, request: ConsultRequest, *, caller: str, patient: str | None, recipient: str | None
) -> DecisionRecord:
    """The decision-audit row of a consult (pure)."""
    asked = f"purposes {', '.join(request.purposes) or 'unspecified'}; classes {', '.join(request.classes) or 'any'}"
    obligations = ", ".join(obligation.code for obligation in answer.obligations) or "none"
    reason = (
        f"CDS Hooks consult by {caller} answered {answer.decision.value} ({asked}; obligations: {obligations}): "
        f"{answer.reason}"
    )
    return DecisionRecord(
        event_id=consult_event_id(caller, request.hook_instance),
        hub_patient_id=patient or UNRESOLVED_PATIENT,
        recipient_id=recipient or UNREGISTERED_ACTOR,
        verdict="permit" if answer.decision is CardDecision.PERMIT else "deny",
        rule=f"{CONSULT_RULE_PREFIX}{answer.rule}"[:_RULE_MAX],
        reason=reason[:10_000],
        purpose=(",".join(request.purposes) or "unspecified")[:64],
        resource_type=(",".join(request.classes) or "any")[:64],
        decided_at=events.now(),
    )


def _json(status: int, content: dict[str, Any], *, headers: dict[str, str] | None = None) -> Response:
    return Response(content=orjson.dumps(content), status_code=status, media_type="application/json", headers=headers)
