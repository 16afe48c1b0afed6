"""The checks of the partner-isolation test, as pure functions over recorded answers (so they can be proven
on fake answers: ``tests/unit/test_isolation_oracle.py`` shows each one fails on a leaky answer).

* :func:`difference`: two answers differ in anything but the names the two requests differed in (the
  target's id, identifier, MRN or partner id, each replaced by a placeholder for its role) and what is
  random per answer (a response Bundle's own ``id`` and ``timestamp``). Status, every header a client
  could read a hint from, and the body are compared.
* :func:`leaked`: the secrets (markers, MRNs) an answer contains that the caller may not see and did not
  send itself.
* :func:`beyond_cbo_profile`: the top-level elements of a resource the ``cbo`` minimum-necessary profile
  does not keep. The lists are written out here from the profile's documentation
  (``hub/consent/redaction.py``), not imported, so a change to the profile has to change this test too.
* :func:`shown_resources`: every resource an answer shows (a read's body, the resources of a Bundle's
  entries), to compare with what delivery showed the caller.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

#: Headers a client can read a hint from (``date`` and ``content-length`` say nothing the body does not).
COMPARED_HEADERS: Final = frozenset({
    "content-type", "location", "etag", "last-modified", "www-authenticate", "retry-after", "cache-control",
    "allow", "x-hub-part2-notice", "x-hub-part2-consent", "content-location",
})
#: Elements every redaction profile keeps.
ALWAYS_KEPT: Final = frozenset({"resourceType", "id", "meta", "implicitRules", "language", "modifierExtension"})
#: What the ``cbo`` profile keeps of the types a CBO can be shown.
CBO_KEEPS: Final[Mapping[str, frozenset[str]]] = {
    "ServiceRequest": frozenset({
        "identifier", "replaces", "status", "intent", "doNotPerform", "category", "code", "priority", "subject",
        "occurrenceDateTime", "occurrencePeriod", "occurrenceTiming", "authoredOn", "requester", "performer",
        "performerType",
    }),
    "Encounter": frozenset({"identifier", "status", "class", "subject", "period", "serviceProvider"}),
    "Task": frozenset({
        "identifier", "groupIdentifier", "basedOn", "partOf", "focus", "for", "status", "statusReason",
        "businessStatus", "intent", "priority", "code", "executionPeriod", "authoredOn", "lastModified",
        "requester", "performerType", "owner", "restriction",
    }),
}
_RANDOM_BUNDLE_ELEMENTS: Final = ("id", "timestamp")


@dataclass(frozen=True)
class Answer:
    """One HTTP answer as the checks need it: status, headers (lower-case names) and body text."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    text: str = ""

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return orjson.loads(self.text)
        except orjson.JSONDecodeError:
            return None


def normalised(answer: Answer, names: Mapping[str, str]) -> tuple[int, dict[str, str], Any]:
    """The answer with each name replaced by ``<role>`` (longest names first) and random parts removed."""
    def scrub(text: str) -> str:
        for role, name in sorted(names.items(), key=lambda item: -len(item[1])):
            if name:
                text = text.replace(name, f"<{role}>")
        return text

    headers = {k: scrub(v) for k, v in answer.headers.items() if k.lower() in COMPARED_HEADERS}
    body: Any = scrub(answer.text)
    try:
        body = orjson.loads(body)
    except orjson.JSONDecodeError:
        return answer.status, headers, body
    if isinstance(body, dict) and body.get("resourceType") == "Bundle":
        for element in _RANDOM_BUNDLE_ELEMENTS:
            body.pop(element, None)
    return answer.status, headers, body


def difference(
    target: Answer, target_names: Mapping[str, str], twin: Answer, twin_names: Mapping[str, str]
) -> str | None:
    """None when the two answers are the same but for the names the requests differed in; else what differs."""
    first, second = normalised(target, target_names), normalised(twin, twin_names)
    if first == second:
        return None
    for part, one, other in zip(("status", "headers", "body"), first, second, strict=True):
        if one != other:
            return f"{part} differs: {one!r} != {other!r}"
    return "differs"  # pragma: no cover - tuples differ in one of their parts


def leaked(
    answer: Answer, *, secrets: Collection[str], allowed: Collection[str], request_text: str = ""
) -> set[str]:
    """The secrets in the answer (body or any header) that the caller may not see and did not send."""
    seen = answer.text + "\n" + "\n".join(answer.headers.values())
    return {s for s in secrets if s in seen and s not in allowed and s not in request_text}


def beyond_cbo_profile(resource: Mapping[str, Any]) -> set[str]:
    """Top-level elements of ``resource`` that the ``cbo`` profile removes (every element of a type it has no
    list for, but those every profile keeps)."""
    kept = ALWAYS_KEPT | CBO_KEEPS.get(str(resource.get("resourceType")), frozenset())
    return set(resource) - kept


def shown_resources(body: Any) -> Iterator[dict[str, Any]]:
    """Every resource an answer shows: the body itself, or each ``entry.resource`` of a Bundle (an
    OperationOutcome is not a resource shown)."""
    if not isinstance(body, dict):
        return
    if body.get("resourceType") == "Bundle":
        for entry in body.get("entry") or ():
            if isinstance(entry, dict):
                yield from shown_resources(entry.get("resource"))
        return
    if body.get("resourceType") not in {None, "OperationOutcome"}:
        yield body


def without_meta(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The resource without ``meta`` and ``id`` (what a delivered copy and a read agree on)."""
    return {k: v for k, v in resource.items() if k not in {"meta", "id"}}
