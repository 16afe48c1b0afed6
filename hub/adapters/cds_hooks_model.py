"""The CDS Hooks consent service's wire formats, pure: request parsing, discovery and error bodies.

Holds :func:`parse_request` (the body of ``POST /cds-services/patient-consent-consult`` -> a
:class:`hub.consent.cds_cards.ConsultRequest`, or one :class:`hub.errors.InvalidInput` naming the JSON
path of the first problem), :func:`discovery` and :func:`error_body`. No I/O, no framework.

Both LEAP request generations are read (``sdhealthconnect/leap-cds``, see ADR 0007):

* ``context.patientId``: a list of identifiers ``{system, value}`` (later LEAP) or one identifier
  (first LEAP); at least one is required. An identifier without ``system`` is local to the calling
  partner (``partner_namespace``), as in the FHIR API's patient search; the operator must give a system.
* ``context.category``: a list of codings ``{system, code}`` (later LEAP), or ``context.scope``: a consent
  scope code such as ``patient-privacy`` (first LEAP; a bare code is read in the consentscope system).
  Neither: every consent of the patient is considered, as LEAP does.
* ``context.purposeOfUse``: a code or a list of codes (bare v3 PurposeOfUse codes; a coding object is
  also accepted).
* ``context.actor``: a list of identifiers (later LEAP) or one (first LEAP). Missing: a partner asks
  about itself (its registered organization); the operator must name the actor.
* ``context.class``: a list of content classes ``{system, code}`` (LEAP's README writes ``value``;
  both are read). Resource types (system ``http://hl7.org/fhir/resource-types`` or none) are compared
  as bare type names.

Members CDS Hooks or LEAP define that the consult does not use (``fhirServer``, ``fhirAuthorization``,
``prefetch``, other ``context`` members) are ignored. Error bodies follow LEAP's shape
``{"error": "bad_request", "errorMessage": "Invalid request: ..."}`` plus ``expression``, the path of
the problem. Messages quote neither identifiers nor values (they may be PHI).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from hub.adapters.fhir_facts import partner_namespace
from hub.consent.cds_cards import HOOK, ConsultRequest, service_definition
from hub.consent.model import CONSENT_SCOPE_SYSTEM, RESOURCE_TYPES_SYSTEM
from hub.errors import InvalidInput

MAX_ITEMS: Final = 64
MAX_TEXT: Final = 512
_MAX_DEPTH: Final = 16


def discovery() -> dict[str, Any]:
    """The CDS Hooks discovery document (``GET /cds-services``)."""
    return {"services": [service_definition()]}


def error_body(error: str, message: str, *, expression: str | None = None) -> dict[str, Any]:
    """LEAP's error JSON (``{"error", "errorMessage"}``), with the JSON path of the problem if known."""
    body: dict[str, Any] = {"error": error, "errorMessage": message}
    if expression:
        body["expression"] = expression
    return body


def parse_request(body: bytes, *, sender: str | None) -> ConsultRequest:
    """Validate a consult body; ``sender`` is the calling partner's id (None for the operator).

    Raises :class:`InvalidInput` (message and ``expression``) for the first thing it cannot use.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidInput("Invalid request: the body is not JSON", expression="$") from None
    _check_depth(data)
    root = _object(data, "$")
    hook = root.get("hook")
    if hook is None:
        raise InvalidInput(f"Invalid request: hook is required and must be {HOOK!r}", expression="hook")
    if hook != HOOK:
        raise InvalidInput(f"Invalid request: hook must be {HOOK!r}", expression="hook")
    instance = _text(root.get("hookInstance"), "hookInstance", required=True)
    context = _object(root.get("context"), "context")
    patients = _identifiers(context.get("patientId"), "context.patientId", sender=sender)
    if not patients:
        raise InvalidInput(
            "Invalid request: context.patientId must name the patient (at least one {system, value})",
            expression="context.patientId",
        )
    actors = _identifiers(context.get("actor"), "context.actor", sender=sender)
    return ConsultRequest(
        hook_instance=instance or "",
        patient_ids=patients,
        actors=actors,
        categories=_categories(context),
        purposes=_purposes(context.get("purposeOfUse"), "context.purposeOfUse"),
        classes=_classes(context.get("class"), "context.class"),
    )


def _check_depth(value: Any) -> None:
    """Refuse JSON nested deeper than anything a consult needs (cheap protection for the walkers)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise InvalidInput("Invalid request: the body is nested too deeply", expression="$")
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def _object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"Invalid request: {path} is required and must be a JSON object", expression=path)
    return value


def _text(value: Any, path: str, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"Invalid request: {path} must be a non-empty string", expression=path)
    if len(value) > MAX_TEXT or any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise InvalidInput(
            f"Invalid request: {path} must be at most {MAX_TEXT} characters, without control characters",
            expression=path,
        )
    return value.strip()


def _items(value: Any, path: str) -> list[tuple[Any, str]]:
    """A list (or, for the first LEAP generation, one object) as ``(item, path)`` pairs."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [(value, path)]
    if not isinstance(value, list):
        raise InvalidInput(f"Invalid request: {path} must be a JSON array", expression=path)
    if len(value) > MAX_ITEMS:
        raise InvalidInput(f"Invalid request: {path} has more than {MAX_ITEMS} entries", expression=path)
    return [(item, f"{path}[{index}]") for index, item in enumerate(value)]


def _identifiers(value: Any, path: str, *, sender: str | None) -> tuple[str, ...]:
    found: list[str] = []
    for item, where in _items(value, path):
        entry = _object(item, where)
        number = _text(entry.get("value"), f"{where}.value", required=True) or ""
        system = _text(entry.get("system"), f"{where}.system")
        if system is None:
            if sender is None:
                raise InvalidInput(
                    f"Invalid request: {where}.system is required (an identifier without a system is local to "
                    "the partner that sends it, and the operator has no namespace)",
                    expression=f"{where}.system",
                )
            system = partner_namespace(sender)
        if "|" in system or "|" in number:
            raise InvalidInput(f"Invalid request: {where} must not contain '|'", expression=where)
        found.append(f"{system}|{number}")
    return tuple(dict.fromkeys(found))


def _coding(entry: Mapping[str, Any], where: str, *, value_key: bool = False) -> tuple[str | None, str]:
    code = entry.get("code")
    if code is None and value_key:
        code = entry.get("value")
    text = _text(code, f"{where}.code", required=True) or ""
    return _text(entry.get("system"), f"{where}.system"), text


def _categories(context: Mapping[str, Any]) -> frozenset[str]:
    found: set[str] = set()
    for item, where in _items(context.get("category"), "context.category"):
        system, code = _coding(_object(item, where), where)
        found.add(f"{system or CONSENT_SCOPE_SYSTEM}|{code}")
    scope = context.get("scope")
    if isinstance(scope, str):
        found.add(f"{CONSENT_SCOPE_SYSTEM}|{_text(scope, 'context.scope', required=True)}")
    elif scope is not None:
        for item, where in _items(scope, "context.scope"):
            entry = _object(item, where)
            codings = entry.get("coding")
            if codings is not None:  # a CodeableConcept
                for coding, at in _items(codings, f"{where}.coding"):
                    system, code = _coding(_object(coding, at), at)
                    found.add(f"{system or CONSENT_SCOPE_SYSTEM}|{code}")
            else:
                system, code = _coding(entry, where)
                found.add(f"{system or CONSENT_SCOPE_SYSTEM}|{code}")
    return frozenset(found)


def _purposes(value: Any, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [(value, path)] if isinstance(value, str) else _items(value, path)
    found: list[str] = []
    for item, where in items:
        if isinstance(item, dict):
            found.append(_coding(item, where)[1])
        else:
            found.append(_text(item, where, required=True) or "")
    if value is not None and not found:
        raise InvalidInput(f"Invalid request: {path} must hold at least one code", expression=path)
    return tuple(dict.fromkeys(found))


def _classes(value: Any, path: str) -> tuple[str, ...]:
    found: list[str] = []
    for item, where in _items(value, path):
        system, code = _coding(_object(item, where), where, value_key=True)
        found.append(code if system in (None, RESOURCE_TYPES_SYSTEM) else f"{system}|{code}")
    return tuple(dict.fromkeys(found))
