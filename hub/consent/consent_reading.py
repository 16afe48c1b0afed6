"""Liberal reading of FHIR Consent JSON: normalise the shapes LEAP and R5-era writers send into R4, once.

Pure, no I/O. :func:`normalize_consent` returns the Consent as FHIR R4 4.0.1 expects it, plus one
:class:`Normalization` (FHIRPath, message) per thing it changed, so the FHIR edge can store valid R4 and
answer the client with a warning OperationOutcome naming each change. The consent engine's reader
(:func:`hub.consent.model.consent_from_fhir`) calls it too, so a Consent stored or carried in either shape
is read alike. Be liberal in what is accepted here; the engine stays strict in what it decides.

What is normalised (nothing else is touched; messages never quote submitted values, only paths and the
consent's scope code):

* **Scope in ``category``** (FHIR R5 has no ``scope``; LEAP's R4 processor matches on ``category``): when
  ``scope`` is absent, the first ``category`` coding in the consent-scope system becomes ``scope``. LOINC
  59284-0 "Patient Consent" is a category, never a scope. ``category`` absent (R4 requires one): the scope's
  coding is copied there, where LEAP looks for it. A Coding given where a CodeableConcept is expected
  (``scope``, a ``category``) is wrapped.
* **R5 ``decision``** at the root: moved to the root ``provision.type`` when that has none.
* **Single objects where R4 repeats** (``category``; ``provision.actor``, ``action``, ``securityLabel``,
  ``purpose``, ``class``, ``code``, ``data``, ``provision``): read as a one-element array. A root
  ``provision`` given as a one-element array (R5) is read as that element.
* **Coding vs CodeableConcept**: a CodeableConcept where R4 has a Coding (``securityLabel``, ``purpose``,
  ``class``) is replaced by its codings; a bare Coding where R4 has a CodeableConcept (``action``, ``code``,
  ``actor.role``) is wrapped in one.
* **Another scope** (research, treatment, adr): nothing changes, but a warning says the consent is kept
  and ignored for privacy decisions (the engine uses patient-privacy consents only).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

CONSENT_SCOPE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/consentscope"
#: The consent-scope system as DSTU2/STU3-era (and some LEAP) consents spell it.
LEGACY_SCOPE_SYSTEM: Final = "http://hl7.org/fhir/consentscope"
SCOPE_SYSTEMS: Final = frozenset({CONSENT_SCOPE_SYSTEM, LEGACY_SCOPE_SYSTEM})
PATIENT_PRIVACY: Final = "patient-privacy"

#: Provision elements that repeat in R4, and what each item is.
_CODINGS: Final = ("securityLabel", "purpose", "class")
_CONCEPTS: Final = ("action", "code")
_OTHER_ARRAYS: Final = ("actor", "data", "provision")
_MAX_DEPTH: Final = 32


@dataclass(frozen=True, slots=True)
class Normalization:
    """One thing read liberally: where (FHIRPath) and what was done, for a warning issue."""

    expression: str
    message: str
    rewrites: bool = True
    """False for a warning that changes nothing (a consent of another scope, kept and ignored)."""


@dataclass(frozen=True, slots=True)
class NormalizedConsent:
    """The Consent as R4 (``data``: a new dict when anything changed) and what was normalised."""

    data: dict[str, Any]
    notes: tuple[Normalization, ...] = ()

    @property
    def changed(self) -> bool:
        """Whether ``data`` differs from what was submitted (a scope warning alone changes nothing)."""
        return any(note.rewrites for note in self.notes)


#: FHIR R4 consentscope codes, the only scope codes a warning quotes (anything else could be free text).
KNOWN_SCOPES: Final = frozenset({"adr", "research", PATIENT_PRIVACY, "treatment"})


def normalize_consent(data: Mapping[str, Any]) -> NormalizedConsent:
    """``data`` as R4 plus what was normalised. Anything but a Consent is returned as it is (a copy)."""
    if data.get("resourceType") != "Consent":
        return NormalizedConsent(dict(data))
    out: dict[str, Any] = copy.deepcopy(dict(data))
    notes: list[Normalization] = []
    _scope(out, notes)
    root = out.get("provision")
    if isinstance(root, list) and len(root) == 1 and isinstance(root[0], dict):
        out["provision"] = root[0]
        notes.append(
            Normalization(
                "Consent.provision",
                "an array of one provision (R5) where R4 has one root provision: read as that provision",
            )
        )
    _decision(out, notes)
    if isinstance(out.get("provision"), dict):
        _provision(out["provision"], "Consent.provision", notes, depth=0)
    other = _other_scope(out)
    if other is not None:
        notes.append(
            Normalization(
                "Consent.scope",
                f"a {other} consent is stored but ignored for privacy decisions (the consent engine uses "
                f"patient-privacy consents only)",
                rewrites=False,
            )
        )
    return NormalizedConsent(out, tuple(notes))


def _is_coding(value: Any) -> bool:
    return isinstance(value, dict) and "coding" not in value and ("code" in value or "system" in value)


def _as_concept(value: Any, path: str, notes: list[Normalization]) -> Any:
    """A Coding given where a CodeableConcept is expected, wrapped; anything else as it is."""
    if _is_coding(value):
        notes.append(Normalization(path, "a Coding where R4 expects a CodeableConcept: wrapped in one"))
        return {"coding": [value]}
    return value


def _scope_codings(concept: Any) -> list[dict[str, Any]]:
    if not isinstance(concept, dict) or not isinstance(concept.get("coding"), list):
        return []
    return [
        coding for coding in concept["coding"] if isinstance(coding, dict) and coding.get("system") in SCOPE_SYSTEMS
    ]


def _scope(out: dict[str, Any], notes: list[Normalization]) -> None:
    category = out.get("category")
    if isinstance(category, dict):
        out["category"] = category = [category]
        notes.append(
            Normalization("Consent.category", "a single object where R4 expects an array: read as a one-element array")
        )
    if isinstance(category, list):
        out["category"] = category = [
            _as_concept(item, f"Consent.category[{index}]", notes) for index, item in enumerate(category)
        ]
    if "scope" in out:
        out["scope"] = _as_concept(out["scope"], "Consent.scope", notes)
    elif isinstance(category, list):
        for index, concept in enumerate(category):
            found = _scope_codings(concept)
            if found:
                out["scope"] = {"coding": [dict(found[0])]}
                notes.append(
                    Normalization(
                        "Consent.scope",
                        f"absent: taken from Consent.category[{index}] (the consent-scope coding, where FHIR R5 "
                        f"and LEAP carry the scope)",
                    )
                )
                break
    if "category" not in out and isinstance(out.get("scope"), dict) and _scope_codings(out["scope"]):
        out["category"] = [copy.deepcopy(out["scope"])]
        notes.append(
            Normalization(
                "Consent.category",
                "absent (R4 requires one): the scope's coding is used as the category, where LEAP reads it",
            )
        )


def _decision(out: dict[str, Any], notes: list[Normalization]) -> None:
    decision = out.get("decision")
    if decision not in ("permit", "deny"):
        return
    root = out.get("provision")
    if root is None:
        root = out["provision"] = {}
    if isinstance(root, dict) and "type" not in root:
        root["type"] = decision
        del out["decision"]
        notes.append(
            Normalization("Consent.provision.type", "taken from Consent.decision (R5), which R4 does not have")
        )


def _provision(node: dict[str, Any], path: str, notes: list[Normalization], *, depth: int) -> None:
    if depth > _MAX_DEPTH:
        return  # the reader refuses such nesting with its own error
    for key in (*_CODINGS, *_CONCEPTS, *_OTHER_ARRAYS):
        value = node.get(key)
        if isinstance(value, dict):
            node[key] = value = [value]
            notes.append(
                Normalization(
                    f"{path}.{key}", "a single object where R4 expects an array: read as a one-element array"
                )
            )
        if not isinstance(value, list):
            continue
        if key in _CODINGS:
            node[key] = _codings(value, f"{path}.{key}", notes)
        elif key in _CONCEPTS:
            node[key] = [_as_concept(item, f"{path}.{key}[{index}]", notes) for index, item in enumerate(value)]
    for index, actor in enumerate(node.get("actor") or ()):
        if isinstance(actor, dict) and "role" in actor:
            actor["role"] = _as_concept(actor["role"], f"{path}.actor[{index}].role", notes)
    for index, child in enumerate(node.get("provision") or ()):
        if isinstance(child, dict):
            _provision(child, f"{path}.provision[{index}]", notes, depth=depth + 1)


def _codings(items: list[Any], path: str, notes: list[Normalization]) -> list[Any]:
    """Coding-typed items; a CodeableConcept among them is replaced by its codings."""
    found: list[Any] = []
    for index, item in enumerate(items):
        if isinstance(item, dict) and isinstance(item.get("coding"), list) and "code" not in item:
            found.extend(item["coding"])
            notes.append(
                Normalization(f"{path}[{index}]", "a CodeableConcept where R4 expects a Coding: its codings are used")
            )
        else:
            found.append(item)
    return found


def _other_scope(out: Mapping[str, Any]) -> str | None:
    """The consent's scope code when it is a consent-scope code other than patient-privacy, else None."""
    concepts = [out.get("scope")]
    if isinstance(out.get("category"), list):
        concepts.extend(out["category"])
    codes = {str(coding.get("code")) for concept in concepts for coding in _scope_codings(concept)}
    if not codes or PATIENT_PRIVACY in codes:
        return None
    known = sorted(codes & KNOWN_SCOPES)
    return f"'{known[0]}'" if known else "non-privacy"
