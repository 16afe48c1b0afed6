"""Minimum necessary: per partner kind, which top-level elements of each resource a recipient gets (pure).

A permit carries the profile as an :class:`~hub.consent.decision.Obligation` (kind
:data:`REDACTION_OBLIGATION`); delivery applies :func:`redact` to the FHIR JSON before it writes to the
partner's topic or webhook. HIPAA's minimum-necessary standard (45 CFR 164.502(b)) does not apply to
disclosures to a health-care provider for treatment, so hospitals get the ``full`` profile; CBOs are not
providers and get the ``cbo`` profile.

What every profile keeps: ``resourceType``, ``id``, ``meta`` (security labels travel with the data, as
DS4P requires), ``implicitRules``, ``language`` and ``modifierExtension`` (a modifier changes the meaning
of the resource: dropping one would make the copy say something else). ``text`` (the narrative) and
``extension`` are dropped by every restricted profile: a narrative re-states the elements removed, and
extensions are unknown content. Contained resources are kept only when their type is in the profile,
each redacted by the same profile. When anything was removed, ``meta.security`` gains the DS4P integrity
label ``v3-ObservationValue|REDACTED`` so the recipient knows it holds a partial copy.

The ``cbo`` profile (what a community organisation needs to act on a referral and close the loop, and no
clinical detail):

* **ServiceRequest**: ``identifier``, ``replaces``, ``status``, ``intent``, ``doNotPerform`` (a
  modifier), ``category`` and ``code`` (the social need and the service asked for, e.g. Gravity SDOH
  food-insecurity / food-pantry referral), ``priority``, ``subject`` (and the contained Patient for
  contact details), ``occurrence[x]`` (when), ``authoredOn``, ``requester`` and ``performer``,
  ``performerType``. Not kept: ``reasonCode``/``reasonReference`` (diagnoses: they may carry SUD,
  psychiatric or HIV codes the category and code do not need), ``note`` and ``patientInstruction`` (free
  text that cannot be labelled or filtered), ``supportingInfo``, ``insurance``, ``encounter``,
  ``orderDetail``, ``bodySite``, ``specimen``, ``relevantHistory``. An operator who needs notes relayed
  defines a profile of its own, with an ADR.
* **Encounter** (admit/discharge of a client on the roster): ``identifier``, ``status``, ``class``
  (inpatient, emergency), ``subject``, ``period`` (admitted/discharged when), ``serviceProvider``
  (which hospital). Not kept: ``type``/``serviceType``/``location`` (a psychiatric ward or detox unit says
  why), ``reasonCode``/``diagnosis``, ``participant``, and ``hospitalization`` (its dischargeDisposition
  codes include ``psy`` and ``alc-drug``).
* **Task** (the referral's workflow): identifiers, ``basedOn``, ``partOf``, ``focus``, ``for``,
  ``status``, ``statusReason``, ``businessStatus``, ``intent``, ``priority``, ``code``,
  ``executionPeriod``, ``authoredOn``, ``lastModified``, ``requester``, ``performerType``, ``owner``,
  ``restriction``. Not kept: ``description``, ``note``, ``input``, ``output``, ``reasonCode``.
* **Patient** (contained): who and how to reach them: ``identifier``, ``active``, ``name``,
  ``telecom``, ``gender``, ``birthDate``, ``deceased[x]``, ``address``, ``communication`` (language),
  ``link``. **Organization**, **Practitioner**, **PractitionerRole**, **Location**: names, identifiers,
  contact points.
* Any other resource type: only the elements every profile keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from hub.consent.decision import Obligation
from hub.errors import ConfigurationError

REDACTION_OBLIGATION: Final = "redaction-profile"
PROFILE_FULL: Final = "full"
PROFILE_CBO: Final = "cbo"

#: Elements no profile removes.
ALWAYS_KEPT: Final = frozenset({"resourceType", "id", "meta", "implicitRules", "language", "modifierExtension"})

REDACTED_LABEL: Final = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED"}


@dataclass(frozen=True, slots=True, eq=False)
class RedactionProfile:
    """Allowed top-level elements per resource type; ``elements is None`` keeps everything."""

    name: str
    description: str
    elements: Mapping[str, frozenset[str]] | None


def _choice(name: str, *types: str) -> frozenset[str]:
    """The JSON names of a choice element ``name[x]``."""
    return frozenset(f"{name}{kind}" for kind in types)


_CBO_ELEMENTS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "ServiceRequest": frozenset(
            {
                "identifier", "replaces", "status", "intent", "doNotPerform", "category", "code", "priority",
                "subject", "authoredOn", "requester", "performer", "performerType",
            },
        )
        | _choice("occurrence", "DateTime", "Period", "Timing"),
        "Encounter": frozenset({"identifier", "status", "class", "subject", "period", "serviceProvider"}),
        "Task": frozenset(
            {
                "identifier", "groupIdentifier", "basedOn", "partOf", "focus", "for", "status", "statusReason",
                "businessStatus", "intent", "priority", "code", "executionPeriod", "authoredOn", "lastModified",
                "requester", "performerType", "owner", "restriction",
            },
        ),
        "Patient": frozenset(
            {"identifier", "active", "name", "telecom", "gender", "birthDate", "address", "communication", "link"},
        )
        | _choice("deceased", "Boolean", "DateTime"),
        "Organization": frozenset({"identifier", "active", "type", "name", "alias", "telecom", "address"}),
        "Practitioner": frozenset({"identifier", "active", "name", "telecom"}),
        "PractitionerRole": frozenset({"identifier", "active", "practitioner", "organization", "code", "telecom"}),
        "Location": frozenset({"identifier", "status", "name", "telecom"}),
    },
)

PROFILES: Final[Mapping[str, RedactionProfile]] = MappingProxyType(
    {
        PROFILE_FULL: RedactionProfile(
            PROFILE_FULL,
            "everything: disclosures to a provider for treatment are exempt from minimum necessary",
            None,
        ),
        PROFILE_CBO: RedactionProfile(
            PROFILE_CBO,
            "what a community-based organisation needs to act on a referral or a discharge, no clinical detail",
            _CBO_ELEMENTS,
        ),
    },
)


def redaction_obligation(profile: str) -> Obligation:
    """The obligation that tells delivery which profile to apply."""
    return Obligation(kind=REDACTION_OBLIGATION, value=profile)


def redact(resource_json: Mapping[str, Any], profile: str) -> dict[str, Any]:
    """A copy of ``resource_json`` with only the elements ``profile`` allows (the input is not changed).

    Raises :class:`hub.errors.ConfigurationError` for an unknown profile name (``Policies`` rejects
    sharing rules naming one, so a decision never carries one).
    """
    chosen = PROFILES.get(profile)
    if chosen is None:
        raise ConfigurationError(f"unknown redaction profile {profile!r}; known: {', '.join(sorted(PROFILES))}")
    if chosen.elements is None:
        return dict(resource_json)
    return _redact(resource_json, chosen.elements)


def _redact(resource: Mapping[str, Any], elements: Mapping[str, frozenset[str]]) -> dict[str, Any]:
    kept, removed = _filter(resource, elements)
    if removed:
        kept["meta"] = _with_redacted_label(kept.get("meta"))
    return kept


def _filter(resource: Mapping[str, Any], elements: Mapping[str, frozenset[str]]) -> tuple[dict[str, Any], bool]:
    """The allowed elements of ``resource`` and whether anything was removed (contained ones included)."""
    allowed = ALWAYS_KEPT | elements.get(str(resource.get("resourceType")), frozenset())
    kept: dict[str, Any] = {}
    removed = False
    for name, value in resource.items():
        if name == "contained" and isinstance(value, list):
            contained: list[dict[str, Any]] = []
            for item in value:
                if isinstance(item, Mapping) and item.get("resourceType") in elements:
                    copy, inner_removed = _filter(item, elements)
                    if inner_removed:
                        copy["meta"] = _with_redacted_label(copy.get("meta"))
                    contained.append(copy)
                    removed = removed or inner_removed
                else:
                    removed = True
            if contained:
                kept[name] = contained
        elif name in allowed:
            kept[name] = value
        else:
            removed = True
    return kept, removed


def _with_redacted_label(meta: Any) -> dict[str, Any]:
    copy = dict(meta) if isinstance(meta, Mapping) else {}
    security = copy.get("security")
    labels = list(security) if isinstance(security, list) else []
    if REDACTED_LABEL not in labels:
        labels.append(dict(REDACTED_LABEL))
    copy["security"] = labels
    return copy
