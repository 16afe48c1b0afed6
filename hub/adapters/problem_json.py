"""RFC 9457 problem details (``application/problem+json``): the error shape of every HTTP route that is not
the FHIR API (which answers OperationOutcomes) or the CDS Hooks service (LEAP's error shape).

Holds :func:`problem` (one answer), :func:`validation_problem` (FastAPI's ``RequestValidationError`` as a
problem) and :func:`install_problem_handlers` (FastAPI's own errors, 404/405, validation and 500, as
problems). A problem keeps the ``detail`` member the admin API has always answered, so clients that read
``{"detail": ...}`` keep working.

An error never echoes the request: validation errors name the field (``loc``) and say what is wrong in
pydantic's words, without the ``input`` or ``ctx`` values FastAPI would put there; the number of errors
and the length of every text are capped, so a 12 MB body cannot become a 37 MB answer. A bad query,
path or header parameter is a 400 (the request line is unusable), a bad body a 422.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final

import orjson
import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger(__name__)

PROBLEM_JSON: Final = "application/problem+json"
#: At most this many validation errors are listed (the count of the rest is given).
MAX_ERRORS: Final = 10
#: Longest message, and longest ``loc`` part, an answer repeats.
MAX_TEXT: Final = 200
_MAX_LOC_PARTS: Final = 8
_MAX_DETAIL: Final = 1000
_PARAMETER_PLACES: Final = frozenset({"query", "path", "header", "cookie"})
#: RFC 9110's names where Python's ``HTTPStatus`` (3.11) still has the older ones.
_TITLES: Final = {413: "Content Too Large", 422: "Unprocessable Content"}

Handler = Callable[[Request, Exception], Response | Awaitable[Response]]

#: The OpenAPI description of every 4xx answer of a router that uses these handlers (FastAPI would
#: otherwise document its own ``HTTPValidationError`` shape, which the hub never answers).
CLIENT_ERROR_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    "4XX": {
        "description": "A problem (RFC 9457): 400 a bad parameter, 401/403 the credential, 404 unknown, "
        "409 a conflict, 413 the body is too large, 422 a bad body; ``detail`` says what and where, ``errors`` "
        "lists validation errors by location, never with the value sent.",
        "content": {
            PROBLEM_JSON: {
                "schema": {
                    "type": "object",
                    "required": ["type", "title", "status"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "errors": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                                    "msg": {"type": "string"},
                                    "type": {"type": "string"},
                                },
                            },
                        },
                    },
                }
            }
        },
    }
}


def problem(
    status: int, detail: str | None = None, *, headers: Mapping[str, str] | None = None, **members: Any
) -> Response:
    """A problem+json answer: ``type`` ``about:blank``, the status's ``title``, ``status`` and ``detail``."""
    body: dict[str, Any] = {"type": "about:blank", "title": _title(status), "status": status}
    if detail:
        body["detail"] = _cut(detail, _MAX_DETAIL)
    body.update(members)
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=dict(headers or {}))


def too_large(limit: int) -> Response:
    """The 413 for a body over ``limit`` bytes."""
    return problem(413, f"the body is larger than the limit of {limit} bytes")


def validation_problem(exc: RequestValidationError) -> Response:
    """400 (bad parameters) or 422 (bad body) naming each field, never repeating what was sent."""
    errors = list(exc.errors())
    listed = [
        {"loc": _loc(error.get("loc", ())), "msg": _cut(str(error.get("msg", "invalid")), MAX_TEXT),
         "type": _cut(str(error.get("type", "invalid")), 64)}
        for error in errors[:MAX_ERRORS]
    ]
    in_body = any(_place(error.get("loc", ())) == "body" for error in errors)
    detail = "; ".join(f"{field_name(item['loc'])}: {item['msg']}" for item in listed[:3]) or "the request is not valid"
    if len(errors) > 3:
        detail += f" (and {len(errors) - 3} more)"
    return problem(422 if in_body else 400, detail, errors=listed)


def field_name(loc: Sequence[str | int]) -> str:
    """``("body", "patients", 1)`` -> ``patients[1]``; ``("query", "limit")`` -> ``limit``."""
    parts = list(loc[1:]) if len(loc) > 1 and loc[0] in {*_PARAMETER_PLACES, "body"} else list(loc)
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "request"


def install_problem_handlers(app: FastAPI, *, except_under: Iterable[str] = ("/fhir",)) -> None:
    """Answer FastAPI's errors (HTTPException, validation, any other exception) as problems, except under the
    ``except_under`` path prefixes, whose errors go to whatever handler was installed before (FastAPI's
    defaults if none); so this composes with ``install_fhir_error_handlers`` in either order."""
    prefixes = tuple(except_under)
    previous_http: Handler = app.exception_handlers.get(StarletteHTTPException, http_exception_handler)
    previous_validation: Handler = app.exception_handlers.get(
        RequestValidationError, request_validation_exception_handler
    )
    previous_server_error: Handler | None = app.exception_handlers.get(Exception)

    def excluded(request: Request) -> bool:
        path = request.url.path
        return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        if excluded(request) or not isinstance(exc, StarletteHTTPException):
            return await _delegate(previous_http, request, exc)
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem(exc.status_code, detail, headers=exc.headers)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        if excluded(request) or not isinstance(exc, RequestValidationError):
            return await _delegate(previous_validation, request, exc)
        return validation_problem(exc)

    async def on_server_error(request: Request, exc: Exception) -> Response:
        if excluded(request) and previous_server_error is not None:
            return await _delegate(previous_server_error, request, exc)
        route = request.scope.get("route")
        log.error("http_server_error", route=getattr(route, "path", None), error=type(exc).__name__)
        return problem(500, "the server could not process the request")

    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_server_error)


async def _delegate(handler: Handler, request: Request, exc: Exception) -> Response:
    result = handler(request, exc)
    return await result if inspect.isawaitable(result) else result


def _title(status: int) -> str:
    if status in _TITLES:
        return _TITLES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _place(loc: Sequence[Any]) -> str | None:
    return str(loc[0]) if loc else None


def _loc(loc: Sequence[Any]) -> list[str | int]:
    """The error's location, each part cut (a dict key in a body is the client's text, of any length)."""
    parts: list[str | int] = [
        part if isinstance(part, int) else _cut(str(part), MAX_TEXT // 4) for part in list(loc)[:_MAX_LOC_PARTS]
    ]
    if len(loc) > _MAX_LOC_PARTS:
        parts.append("...")
    return parts
