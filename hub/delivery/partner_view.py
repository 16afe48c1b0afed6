"""What a partner is shown of a resource once a decision permitted it (pure: decision and JSON in, view out).

The one place that turns a permit's obligations into what leaves the hub, for every path that shows a
partner a resource: the route stage's records on ``partner.<id>`` (:func:`delivered_body`,
:func:`obligation_headers`) and the FHIR REST reads (:func:`read_view`). Both apply the decision's
redaction profile (:mod:`hub.consent.redaction`, minimum necessary) and carry a 42 CFR Part 2
disclosure's obligations: as ``hub_part2_*`` headers on a Kafka record, and on a REST read as the DS4P
refrain-policy label ``NORDSCLCD`` (prohibition on redisclosure without consent) in ``meta.security`` plus
the notice text in a response header, so the label travels with the resource even inside a Bundle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from hub.consent import engine
from hub.consent.decision import Decision
from hub.consent.redaction import PROFILE_FULL, REDACTION_OBLIGATION, redact

#: Partner-record headers carrying a 42 CFR Part 2 disclosure's obligations.
PART2_NOTICE_HEADER: Final = "hub_part2_notice"
PART2_CONSENT_HEADER: Final = "hub_part2_consent"
#: The same obligations on an HTTP answer (header names may not contain ``_`` behind some proxies).
HTTP_PART2_NOTICE_HEADER: Final = "X-Hub-Part2-Notice"
HTTP_PART2_CONSENT_HEADER: Final = "X-Hub-Part2-Consent"
_OBLIGATION_HEADERS: Final = {
    engine.PART2_NOTICE_OBLIGATION: PART2_NOTICE_HEADER,
    engine.PART2_CONSENT_OBLIGATION: PART2_CONSENT_HEADER,
}
_HTTP_OBLIGATION_HEADERS: Final = {
    engine.PART2_NOTICE_OBLIGATION: HTTP_PART2_NOTICE_HEADER,
    engine.PART2_CONSENT_OBLIGATION: HTTP_PART2_CONSENT_HEADER,
}
#: DS4P refrain policy: prohibition on redisclosure without patient consent directive (v3-ActCode).
NO_REDISCLOSURE_LABEL: Final = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "NORDSCLCD"}


def redaction_profile(decision: Decision) -> str:
    """The redaction profile a permit obliges delivery to apply (``full`` when it names none)."""
    for obligation in decision.obligations:
        if obligation.kind == REDACTION_OBLIGATION:
            return obligation.value
    return PROFILE_FULL


def obligation_headers(decision: Decision) -> dict[str, str]:
    """The ``hub_part2_*`` headers of a permit's 42 CFR Part 2 obligations (empty for other data)."""
    return {
        _OBLIGATION_HEADERS[obligation.kind]: obligation.value
        for obligation in decision.obligations
        if obligation.kind in _OBLIGATION_HEADERS
    }


def http_obligation_headers(decision: Decision) -> dict[str, str]:
    """The same obligations as HTTP response headers (``X-Hub-Part2-*``); header values are made ASCII."""
    return {
        _HTTP_OBLIGATION_HEADERS[obligation.kind]: " ".join(obligation.value.split()).encode("ascii", "replace")
        .decode("ascii")
        for obligation in decision.obligations
        if obligation.kind in _HTTP_OBLIGATION_HEADERS
    }


def delivered_body(body: str, profile: str) -> bytes:
    """The FHIR JSON a recipient under ``profile`` gets: the original bytes for ``full``, or when the
    profile removes nothing; otherwise the redacted resource."""
    original = body.encode("utf-8")
    if profile == PROFILE_FULL:
        return original
    resource = orjson.loads(original)
    redacted = redact(resource, profile)
    return original if redacted == resource else orjson.dumps(redacted)


def read_view(resource: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
    """The resource (as the store renders it) that a permitted partner reads over REST: redacted to the
    decision's profile and, for a Part 2 disclosure, labelled ``NORDSCLCD`` in ``meta.security``."""
    profile = redaction_profile(decision)
    view: dict[str, Any] = dict(resource) if profile == PROFILE_FULL else redact(dict(resource), profile)
    if any(obligation.kind == engine.PART2_NOTICE_OBLIGATION for obligation in decision.obligations):
        meta = dict(view.get("meta") or {})
        security = list(meta.get("security") or [])
        if NO_REDISCLOSURE_LABEL not in security:
            security.append(dict(NO_REDISCLOSURE_LABEL))
        meta["security"] = security
        view["meta"] = meta
    return view
