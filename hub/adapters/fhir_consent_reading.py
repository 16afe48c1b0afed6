"""The Consent API's liberal reading at the FHIR edge: normalise before validation, warn in the answer.

``POST /fhir/Consent`` and ``PUT /fhir/Consent/{id}`` call :func:`read_liberally` on the parsed JSON
*before* R4 validation, so the shapes LEAP and R5-era writers send (scope in ``category``, a provision
``code`` as one object, ...; see :mod:`hub.consent.consent_reading`) are stored as valid R4, once. The
request bytes still make the resource id and the event body (the engine reads either shape alike).

:func:`answer` shapes the 2xx (FHIR R4 http.html, ``Prefer: return=``): the status, ``Location``,
``ETag`` and ``Last-Modified`` never change; the body is

* ``return=minimal``: empty;
* ``return=representation``: the stored resource;
* ``return=OperationOutcome``: an OperationOutcome (the warnings, or one informational issue);
* no preference: the stored resource, unless something was normalised or the consent is kept but
  ignored (another scope): then a warning OperationOutcome, one issue per note (severity ``warning``,
  code ``informational``, ``expression`` the FHIRPath), so a client sees at once what the hub read
  differently from what it sent. A retried create answers the same way.

Inside a ``transaction`` or ``batch`` Bundle (``fhir_bundle``) each Consent entry is read the same way
and its warnings (:func:`warning_issues`, at ``Bundle.entry[n].resource...``) are that entry's
``response.outcome``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson
from fastapi import Response

from hub.adapters.operation_outcome import issue, outcome
from hub.consent.consent_reading import Normalization, normalize_consent

_PREFERENCES: Final = frozenset({"minimal", "representation", "OperationOutcome"})
_BODY_HEADERS: Final = frozenset({"content-length", "content-type"})


def read_liberally(resource_type: str, data: dict[str, Any]) -> tuple[dict[str, Any], tuple[Normalization, ...]]:
    """For a Consent: the R4 form of ``data`` and what was normalised; any other type as it is."""
    if resource_type != "Consent" or data.get("resourceType") != "Consent":
        return data, ()
    normalized = normalize_consent(data)
    return normalized.data, normalized.notes


def return_preference(headers: Mapping[str, str]) -> str | None:
    """The ``return`` preference of a ``Prefer`` header (``minimal``, ``representation``, ``OperationOutcome``)."""
    for part in headers.get("prefer", "").split(";"):
        for token in part.split(","):
            name, _, value = token.strip().partition("=")
            if name.strip().lower() == "return" and value.strip().strip('"') in _PREFERENCES:
                return value.strip().strip('"')
    return None


def answer(
    resource_type: str, headers: Mapping[str, str], notes: tuple[Normalization, ...], response: Response
) -> Response:
    """A Consent write's 2xx ``response`` with the body the client prefers (see the module docstring); the
    answer of any other type, or an error, as it is. ``headers``: the request's."""
    if resource_type != "Consent" or response.status_code >= 300:
        return response
    preference = return_preference(headers)
    if preference == "representation" or (preference is None and not notes):
        return response
    kept = {name: value for name, value in response.headers.items() if name.lower() not in _BODY_HEADERS}
    if preference == "minimal":
        return Response(status_code=response.status_code, headers=kept)
    issues = warning_issues(notes) or [issue("informational", "the Consent was stored as sent", severity="information")]
    return Response(
        content=orjson.dumps(outcome(issues)), status_code=response.status_code, media_type=response.media_type,
        headers=kept,
    )


def warning_issues(notes: tuple[Normalization, ...], *, at: str = "Consent") -> list[dict[str, Any]]:
    """One warning issue per note (code ``informational``, ``expression`` its FHIRPath); ``at`` replaces the
    leading ``Consent`` of each path (a Bundle entry's ``Bundle.entry[n].resource``)."""
    issues = []
    for note in notes:
        expression = at + note.expression.removeprefix("Consent")
        diagnostics = f"{expression}: {note.message}"
        issues.append(issue("informational", diagnostics, expression=expression, severity="warning"))
    return issues
