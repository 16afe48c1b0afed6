"""DS4P security labels: read them from the routing facts, add the ones the codes imply (pure).

Labels are handled as canonical ``'system|code'`` strings (the form of ``RoutingFacts.security_labels``),
with the legacy and OID spellings of the HL7 v3 code systems mapped to the ``terminology.hl7.org``
URIs, so a label written ``http://hl7.org/fhir/v3/Confidentiality|R`` or ``urn:oid:2.16.840.1.113883.5.25|R``
in a payload matches ``...CodeSystem/v3-Confidentiality|R`` in a Consent.

Two kinds of labels matter to the consent engine:

* **confidentiality** (v3-Confidentiality, ordered U < L < M < N < R < V): how tightly the data is held;
* **sensitivity** (v3-ActCode InformationSensitivityPolicy: ETH, SUD, ETHUD, OPIOIDUD, PSY, HIV, SDV, ...):
  what kind of sensitive information the data contains.

``effective_labels(facts)`` is the label set a decision works on. It follows the two steps of LEAP's
labeling service (``sdhealthconnect/leap-cds`` ``lib/labeling/labeler.js``; the code sets come from its
``sensitivity-rules.json`` fixture and ``sdhealthconnect/leap-sls`` ``sens-codes.csv``):

1. **sensitivity from codes**: every ``code`` and ``category`` coding of the event is looked up in
   :data:`DEFAULT_LABEL_RULES` (table below); a hit adds the rule's sensitivity labels.
2. **confidentiality from sensitivity**: any sensitivity label adds ``R`` (LEAP's confidentiality rule
   maps SUD, ETH and HIV to R; CareHub applies it to every sensitivity label it knows).

Code-derived labels are added even when the payload is already labelled (as LEAP does): adding a label
can only make a decision stricter. Two more strict readings:

* ``v3-ActCode|PROCESSINLINELABEL`` (DS4P: "some elements carry their own labels") means parts of the
  payload are labelled where the routing facts cannot see them, so the payload counts as ``R``.
* a label's DS4P basis ``v3-ActCode|42CFRPart2`` (``extension-sec-label-basis``) is carried as a label of
  its own by :func:`security_labels_from_meta`, so Part 2 data stays recognisable after extraction.

Rule table (``DEFAULT_LABEL_RULES``; ICD-10 codes compared without dots, by their 3-character category):

=========================  =========================================================  ==============
rule                       codes                                                      labels
=========================  =========================================================  ==============
sud-icd10                  ICD-10(-CM) F10-F16, F18, F19 (F17 nicotine is not SUD     SUD (+ETHUD for
                           under 42 CFR 2.11, which excludes tobacco and caffeine)    F10, +OPIOIDUD
                                                                                      for F11)
sud-snomed                 SNOMED CT 7200002 alcoholism, 66590003 alcohol             SUD (+ETHUD,
                           dependence, 15167005 alcohol abuse, 5602001 opioid         +OPIOIDUD)
                           abuse, 75544000 opioid dependence, 724713006 harmful
                           use of ketamine, 145121000119106 intravenous
                           nondependent opioid abuse (the last two: LEAP fixture)
sud-procedures             HCPCS H0008-H0014 (alcohol/drug detoxification), CPT       SUD
                           4306F (opioid addiction counselling) (leap-sls csv)
hiv                        ICD-10 B20, Z21; SNOMED 86406008; CPT 86701-86703,         HIV
                           87534-87539 (leap-sls csv)
psy                        ICD-10 F20-F29 (psychoses), F30-F31 (mania, bipolar);      PSY
                           SNOMED 58214004 schizophrenia, 13746004 bipolar disorder
=========================  =========================================================  ==============

Depression and anxiety codes are deliberately not labelled: they are common on SDOH referrals and not
specially protected by federal law; a jurisdiction that protects them passes its own :class:`LabelRules`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from hub.events import RoutingFacts

CONFIDENTIALITY_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_CODE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OBSERVATION_VALUE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"

#: Other spellings of the label code systems seen in the wild (legacy FHIR URIs, OIDs, value-set URLs).
SYSTEM_ALIASES: Final[Mapping[str, str]] = {
    "http://hl7.org/fhir/v3/Confidentiality": CONFIDENTIALITY_SYSTEM,
    "urn:oid:2.16.840.1.113883.5.25": CONFIDENTIALITY_SYSTEM,
    "2.16.840.1.113883.5.25": CONFIDENTIALITY_SYSTEM,
    "http://terminology.hl7.org/ValueSet/v3-ConfidentialityClassification": CONFIDENTIALITY_SYSTEM,
    "http://hl7.org/fhir/v3/ActCode": ACT_CODE_SYSTEM,
    "urn:oid:2.16.840.1.113883.5.4": ACT_CODE_SYSTEM,
    "2.16.840.1.113883.5.4": ACT_CODE_SYSTEM,
    "http://terminology.hl7.org/ValueSet/v3-InformationSensitivityPolicy": ACT_CODE_SYSTEM,
    "http://terminology.hl7.org/ValueSet/v3-ActCode": ACT_CODE_SYSTEM,
    "http://hl7.org/fhir/v3/ObservationValue": OBSERVATION_VALUE_SYSTEM,
    "urn:oid:2.16.840.1.113883.5.1063": OBSERVATION_VALUE_SYSTEM,
}


def _conf(code: str) -> str:
    return f"{CONFIDENTIALITY_SYSTEM}|{code}"


def _act(code: str) -> str:
    return f"{ACT_CODE_SYSTEM}|{code}"


U, L, M, N, R, V = (_conf(c) for c in ("U", "L", "M", "N", "R", "V"))
#: Confidentiality codes from least to most restricted.
CONFIDENTIALITY_ORDER: Final = (U, L, M, N, R, V)

ETH, SUD, ETHUD, OPIOIDUD = _act("ETH"), _act("SUD"), _act("ETHUD"), _act("OPIOIDUD")
PSY, PSYTHPN, BH, HIV, STD, SDV, SEX = (_act(c) for c in ("PSY", "PSYTHPN", "BH", "HIV", "STD", "SDV", "SEX"))
PART2_BASIS = _act("42CFRPart2")
PROCESS_INLINE_LABEL = _act("PROCESSINLINELABEL")
REDACTED = f"{OBSERVATION_VALUE_SYSTEM}|REDACTED"

#: Labels that mark 42 CFR Part 2 (substance use disorder) data.
PART2_LABELS: Final = frozenset({SUD, ETH, ETHUD, OPIOIDUD, PART2_BASIS})

#: Sensitivity codes (v3-ActCode InformationSensitivityPolicy) the engine knows; each implies ``R``.
SENSITIVITY_LABELS: Final = frozenset(
    {ETH, SUD, ETHUD, OPIOIDUD, PSY, PSYTHPN, BH, HIV, STD, SDV, SEX}
    | {_act(c) for c in ("GDIS", "MST", "SCA", "SICKLE", "SPI", "TBOO", "COMPT", "MH", "DEMO", "DOB")},
)

_SENSITIVITY_CODES = frozenset(label.partition("|")[2] for label in SENSITIVITY_LABELS)
_CONFIDENTIALITY_CODES = frozenset(("U", "L", "M", "N", "R", "V"))

#: What a *deny* on a label also covers: the confidentiality levels at and above it, a family's members.
_DENY_EXPANSION: Final[Mapping[str, frozenset[str]]] = {
    **{
        level: frozenset(CONFIDENTIALITY_ORDER[index:])
        for index, level in enumerate(CONFIDENTIALITY_ORDER)
    },
    **dict.fromkeys((SUD, ETH, PART2_BASIS), PART2_LABELS),
    PSY: frozenset({PSY, PSYTHPN}),
    BH: frozenset({BH, PSY, PSYTHPN, _act("MH")}),
}
#: What a *permit* on a label covers: itself, and the whole Part 2 family for its umbrella codes.
_PERMIT_EXPANSION: Final[Mapping[str, frozenset[str]]] = dict.fromkeys((SUD, ETH, PART2_BASIS), PART2_LABELS)


def normalize_label(label: str) -> str:
    """The canonical ``'system|code'`` of a label: aliases mapped, system-less known codes placed."""
    system, bar, code = label.partition("|")
    if not bar:
        system, code = "", label
    if not system:
        if code in _CONFIDENTIALITY_CODES:
            return _conf(code)
        if code in _SENSITIVITY_CODES or code in ("42CFRPart2", "PROCESSINLINELABEL"):
            return _act(code)
        return f"|{code}"
    return f"{SYSTEM_ALIASES.get(system, system)}|{code}"


def normalize_labels(labels: Iterable[str]) -> frozenset[str]:
    """:func:`normalize_label` over many labels."""
    return frozenset(normalize_label(label) for label in labels)


def deny_scope(labels: Iterable[str]) -> frozenset[str]:
    """Every data label a deny on ``labels`` applies to (stricter: levels above, family members)."""
    scope: set[str] = set()
    for label in labels:
        scope |= _DENY_EXPANSION.get(label, frozenset((label,)))
    return frozenset(scope)


def permit_scope(labels: Iterable[str]) -> frozenset[str]:
    """Every data label a permit on ``labels`` covers (exact, plus the Part 2 family for SUD/ETH)."""
    scope: set[str] = set()
    for label in labels:
        scope |= _PERMIT_EXPANSION.get(label, frozenset((label,)))
    return frozenset(scope)


def part2_labels(labels: frozenset[str]) -> frozenset[str]:
    """The 42 CFR Part 2 labels among ``labels``."""
    return labels & PART2_LABELS


# --- the rule table -------------------------------------------------------------------------------

ICD10_SYSTEMS: Final = frozenset(
    {
        "http://hl7.org/fhir/sid/icd-10-cm",
        "http://hl7.org/fhir/sid/icd-10",
        "urn:oid:2.16.840.1.113883.6.90",
        "urn:oid:2.16.840.1.113883.6.3",
        "2.16.840.1.113883.6.90",
        "2.16.840.1.113883.6.3",
    },
)
SNOMED_SYSTEMS: Final = frozenset(
    {"http://snomed.info/sct", "urn:oid:2.16.840.1.113883.6.96", "2.16.840.1.113883.6.96"},
)
PROCEDURE_SYSTEMS: Final = frozenset(
    {
        "http://www.ama-assn.org/go/cpt",
        "urn:oid:2.16.840.1.113883.6.12",
        "2.16.840.1.113883.6.12",
        "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
        "urn:oid:2.16.840.1.113883.6.285",
        "2.16.840.1.113883.6.285",
    },
)


@dataclass(frozen=True, slots=True, eq=False)
class LabelRule:
    """Codes that imply sensitivity labels: exact codes per system family, or ICD-10 3-character categories."""

    id: str
    description: str
    labels: tuple[str, ...]
    systems: frozenset[str]
    codes: frozenset[str] = frozenset()
    icd10_categories: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True, eq=False)
class LabelRules:
    """A labeling table, indexed once for O(1) lookups; identity-hashed so it can key a cache."""

    rules: tuple[LabelRule, ...]
    _exact: dict[tuple[str, str], frozenset[str]] = field(init=False, repr=False)
    _categories: dict[tuple[str, str], frozenset[str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        exact: dict[tuple[str, str], frozenset[str]] = {}
        categories: dict[tuple[str, str], frozenset[str]] = {}
        for rule in self.rules:
            labels = normalize_labels(rule.labels)
            for system in rule.systems:
                for code in rule.codes:
                    key = (system, _code_key(code))
                    exact[key] = exact.get(key, frozenset()) | labels
                for category in rule.icd10_categories:
                    key = (system, category.upper())
                    categories[key] = categories.get(key, frozenset()) | labels
        object.__setattr__(self, "_exact", exact)
        object.__setattr__(self, "_categories", categories)

    def labels_for(self, coding: str) -> frozenset[str]:
        """The sensitivity labels one ``'system|code'`` coding implies (empty when none)."""
        system, _, code = coding.partition("|")
        key = _code_key(code)
        found = self._exact.get((system, key), frozenset())
        if system in ICD10_SYSTEMS:
            found = found | self._categories.get((system, key[:3]), frozenset())
        return found


def _code_key(code: str) -> str:
    return code.strip().upper().replace(".", "")


def _icd_range(prefix: str, first: int, last: int) -> frozenset[str]:
    return frozenset(f"{prefix}{number:02d}" for number in range(first, last + 1))


DEFAULT_LABEL_RULES: Final = LabelRules(
    rules=(
        LabelRule(
            "sud-icd10",
            "Mental and behavioural disorders due to psychoactive substance use (F17 tobacco excluded)",
            (SUD,),
            ICD10_SYSTEMS,
            icd10_categories=_icd_range("F", 10, 16) | {"F18", "F19"},
        ),
        LabelRule(
            "sud-icd10-alcohol",
            "Alcohol related disorders",
            (ETHUD,),
            ICD10_SYSTEMS,
            icd10_categories=frozenset({"F10"}),
        ),
        LabelRule(
            "sud-icd10-opioid",
            "Opioid related disorders",
            (OPIOIDUD,),
            ICD10_SYSTEMS,
            icd10_categories=frozenset({"F11"}),
        ),
        LabelRule(
            "sud-snomed-alcohol",
            "Alcoholism, alcohol dependence, alcohol abuse",
            (SUD, ETHUD),
            SNOMED_SYSTEMS,
            codes=frozenset({"7200002", "66590003", "15167005"}),
        ),
        LabelRule(
            "sud-snomed-opioid",
            "Opioid abuse, opioid dependence, intravenous nondependent opioid abuse",
            (SUD, OPIOIDUD),
            SNOMED_SYSTEMS,
            codes=frozenset({"5602001", "75544000", "145121000119106"}),
        ),
        LabelRule(
            "sud-snomed-other",
            "Harmful use of ketamine",
            (SUD,),
            SNOMED_SYSTEMS,
            codes=frozenset({"724713006"}),
        ),
        LabelRule(
            "sud-procedures",
            "Alcohol and/or drug detoxification services; opioid addiction counselling",
            (SUD,),
            PROCEDURE_SYSTEMS,
            codes=frozenset({f"H00{n:02d}" for n in range(8, 15)} | {"4306F"}),
        ),
        LabelRule(
            "hiv-icd10",
            "HIV disease; asymptomatic HIV infection status",
            (HIV,),
            ICD10_SYSTEMS,
            icd10_categories=frozenset({"B20", "Z21"}),
        ),
        LabelRule(
            "hiv-snomed",
            "Human immunodeficiency virus infection",
            (HIV,),
            SNOMED_SYSTEMS,
            codes=frozenset({"86406008"}),
        ),
        LabelRule(
            "hiv-procedures",
            "HIV antibody and nucleic-acid tests",
            (HIV,),
            PROCEDURE_SYSTEMS,
            codes=frozenset({"86701", "86702", "86703"} | {str(n) for n in range(87534, 87540)}),
        ),
        LabelRule(
            "psy-icd10",
            "Schizophrenia, schizotypal and delusional disorders; manic episode; bipolar disorder",
            (PSY,),
            ICD10_SYSTEMS,
            icd10_categories=_icd_range("F", 20, 31),
        ),
        LabelRule(
            "psy-snomed",
            "Schizophrenia; bipolar disorder",
            (PSY,),
            SNOMED_SYSTEMS,
            codes=frozenset({"58214004", "13746004"}),
        ),
    ),
)


def effective_labels(facts: RoutingFacts, rules: LabelRules = DEFAULT_LABEL_RULES) -> frozenset[str]:
    """The canonical labels a decision works on: the payload's own, those its codes imply, and R if sensitive."""
    return _effective(facts.security_labels, facts.codes, facts.categories, rules)


@lru_cache(maxsize=16384)
def _effective(
    security_labels: tuple[str, ...],
    codes: tuple[str, ...],
    categories: tuple[str, ...],
    rules: LabelRules,
) -> frozenset[str]:
    found = set(normalize_labels(security_labels))
    for coding in (*codes, *categories):
        found |= rules.labels_for(_canonical_coding(coding))
    if PROCESS_INLINE_LABEL in found or not found.isdisjoint(SENSITIVITY_LABELS):
        found.add(R)
    return frozenset(found)


def _canonical_coding(coding: str) -> str:
    system, _, code = coding.partition("|")
    return f"{system.strip()}|{code}"


def security_labels_from_meta(resource: Mapping[str, Any]) -> tuple[str, ...]:
    """``'system|code'`` of ``meta.security`` plus each label's DS4P basis (``extension-sec-label-basis``).

    For the edge: the basis (e.g. ``v3-ActCode|42CFRPart2`` on an ``R`` label) is what tells Part 2 data
    apart from other restricted data, and ``RoutingFacts.security_labels`` only carries codes.
    """
    meta = resource.get("meta")
    security = meta.get("security") if isinstance(meta, Mapping) else None
    if not isinstance(security, list):
        return ()
    found: list[str] = []
    for coding in security:
        if not isinstance(coding, Mapping):
            continue
        _append_coding(found, coding)
        for extension in coding.get("extension") or ():
            if isinstance(extension, Mapping) and extension.get("url") == SEC_LABEL_BASIS_URL:
                basis = extension.get("valueCoding")
                if isinstance(basis, Mapping):
                    _append_coding(found, basis)
    return tuple(dict.fromkeys(found))


SEC_LABEL_BASIS_URL: Final = "http://hl7.org/fhir/uv/security-label-ds4p/StructureDefinition/extension-sec-label-basis"


def _append_coding(found: list[str], coding: Mapping[str, Any]) -> None:
    code = coding.get("code")
    if isinstance(code, str) and code:
        system = coding.get("system")
        found.append(f"{system if isinstance(system, str) else ''}|{code}")
