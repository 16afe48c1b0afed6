"""FHIR R4 OperationOutcome bodies and HTTP statuses for the hub's errors (pure: values in, dicts out).

One table decides what every error looks like on the FHIR API (error -> status, issue code):

* :class:`AuthenticationRequired` -> 401, ``login`` (no bearer token) or ``unknown`` (a token the
  hub never issued); the edge adds ``WWW-Authenticate: Bearer``.
* ``NotAuthorized`` -> 403, ``forbidden`` (a partner acting outside its rights).
* :class:`PayloadTooLarge` -> 413, ``too-long``.
* :class:`UnsupportedMediaType` -> 415, ``not-supported``.
* :class:`ResourceNotFound` -> 404, ``not-found`` (also for a resource the caller may not see: the
  hub does not confirm that someone else's resource exists); ``not-supported`` for a resource type
  this server does not serve.
* :class:`UpdateCreateRefused` -> 405, ``not-supported`` (a partner's update-as-create of an id outside
  its own id space; answered the same whether or not the id is in use).
* :class:`ResourceConflict` -> 409, ``conflict`` (a create whose id is already held).
* :class:`PreconditionFailed` -> 412, ``multiple-matches`` (``If-None-Exist`` matched several
  resources) or ``conflict`` (``If-Match`` names another version).
* ``FhirValidationError`` -> 422, one issue per problem with its FHIRPath.
* ``InvalidInput`` -> 400, its own ``code`` (``structure``, ``too-costly``): bytes that are not one
  JSON object.
* ``RetryableError`` -> 503, ``transient``; the edge adds ``Retry-After``.
* any other ``HubError`` -> 500, ``exception`` with a generic message.

400 vs 422 follows the FHIR RESTful API: 400 when the body "could not be parsed", 422 when it
parsed but "violated applicable FHIR profiles or server business rules". A wrong or unknown
``resourceType`` is a 422 too: the JSON was fine, the resource was not acceptable here.

The HTTP-edge errors are defined here because the one error tree (``hub/errors.py``) has no
place for them yet; they subclass its types, so the core treats them as what they are.
"""

from __future__ import annotations

from typing import Any, Literal

from hub.adapters.fhir_validation import FhirIssue, FhirValidationError
from hub.errors import Conflict, HubError, InvalidInput, NotAuthorized, RetryableError
from hub.events import FHIR_JSON

FHIR_JSON_MEDIA_TYPE = FHIR_JSON


class AuthenticationRequired(NotAuthorized):
    """No usable credential (answered 401 with a ``WWW-Authenticate: Bearer`` challenge).

    ``code`` is ``login`` when no bearer token was sent and ``unknown`` when the token is not one
    the hub issued.
    """

    def __init__(self, message: str, *, code: Literal["login", "unknown"] = "login") -> None:
        super().__init__(message)
        self.code = code


class Forbidden(NotAuthorized):
    """A partner acting outside its rights, at a known place of the request (403 with an expression)."""

    def __init__(self, message: str, *, expression: str | None = None) -> None:
        super().__init__(message)
        self.expression = expression


class PayloadTooLarge(InvalidInput):
    """The body is larger than the configured limit (413)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="too-long")


class UnsupportedMediaType(InvalidInput):
    """The request's Content-Type is not a FHIR JSON media type this server reads (415)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="not-supported")


class ResourceNotFound(InvalidInput):
    """No such resource (or none the caller may see), or a resource type this server does not serve (404)."""

    def __init__(self, message: str, *, code: Literal["not-found", "not-supported"] = "not-found") -> None:
        super().__init__(message, code=code)


class UpdateCreateRefused(InvalidInput):
    """A PUT of an id the caller does not know of, outside the ids it may choose (405, FHIR's answer when
    "the server does not allow client defined ids")."""

    def __init__(self, message: str, *, expression: str | None = None) -> None:
        super().__init__(message, code="not-supported", expression=expression)


class ResourceConflict(Conflict):
    """The request conflicts with the current state of the resource (409)."""


class PreconditionFailed(InvalidInput):
    """A conditional request's condition does not hold (412)."""

    def __init__(self, message: str, *, code: Literal["multiple-matches", "conflict"] = "conflict") -> None:
        super().__init__(message, code=code)


def http_status_for(error: HubError) -> int:
    """The HTTP status a FHIR client gets for ``error`` (see the table in the module docstring)."""
    if isinstance(error, AuthenticationRequired):
        return 401
    if isinstance(error, NotAuthorized):
        return 403
    if isinstance(error, ResourceNotFound):
        return 404
    if isinstance(error, UpdateCreateRefused):
        return 405
    if isinstance(error, Conflict):
        return 409
    if isinstance(error, PreconditionFailed):
        return 412
    if isinstance(error, PayloadTooLarge):
        return 413
    if isinstance(error, UnsupportedMediaType):
        return 415
    if isinstance(error, FhirValidationError):
        return 422
    if isinstance(error, InvalidInput):
        return 400
    if isinstance(error, RetryableError):
        return 503
    return 500


def issue(
    code: str,
    diagnostics: str,
    *,
    expression: str | None = None,
    severity: str = "error",
) -> dict[str, Any]:
    """One ``OperationOutcome.issue`` as a dict (``expression`` omitted when ``None``)."""
    entry: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression is not None:
        entry["expression"] = [expression]
    return entry


def outcome(issues: list[dict[str, Any]]) -> dict[str, Any]:
    """An OperationOutcome resource (R4) holding ``issues``; at least one issue is required."""
    if not issues:
        raise ValueError("an OperationOutcome needs at least one issue")
    return {"resourceType": "OperationOutcome", "issue": issues}


def outcome_from_issues(issues: list[FhirIssue] | tuple[FhirIssue, ...]) -> dict[str, Any]:
    """An OperationOutcome from validation issues, in order."""
    return outcome(
        [issue(i.code, i.diagnostics, expression=i.expression, severity=i.severity) for i in issues]
    )


def outcome_for(error: HubError) -> dict[str, Any]:
    """The OperationOutcome for a hub error. Diagnostics come from the error's own message, which the
    error tree guarantees free of PHI; an unexpected error gets a generic message, never its text."""
    if isinstance(error, FhirValidationError):
        return outcome_from_issues(error.issues)
    if isinstance(error, InvalidInput):
        return outcome([issue(error.code, str(error), expression=error.expression)])
    if isinstance(error, AuthenticationRequired):
        return outcome([issue(error.code, str(error))])
    if isinstance(error, NotAuthorized):
        return outcome([issue("forbidden", str(error), expression=getattr(error, "expression", None))])
    if isinstance(error, RetryableError):
        return outcome([issue("transient", f"{error}; nothing was stored, retry the same request later")])
    return outcome([issue("exception", "the server could not process the request", severity="fatal")])
