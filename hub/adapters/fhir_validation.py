"""Parse and validate inbound FHIR R4 JSON once, at the edge, with the ``fhir.resources.R4B`` models.

Pure: no FastAPI, no I/O. Two steps, two error kinds:

* :func:`parse_fhir_json` turns request bytes into a JSON object or raises
  :class:`hub.errors.InvalidInput` (the HTTP edge answers 400): empty body, invalid UTF-8, a byte
  order mark, text that is not JSON, JSON that is not an object, nesting deeper than ``max_depth``,
  or a property name repeated within one object (parsers disagree on which duplicate wins, so a
  duplicated ``meta`` could show one recipient a security label that the hub never saw).
* :func:`validate_resource` checks that object as a FHIR R4 resource of the expected type and returns
  the R4B model instance, or raises :class:`FhirValidationError` (the edge answers 422) carrying one
  :class:`FhirIssue` per problem, each with the FHIRPath of the offending element
  (``ServiceRequest.code.coding[0].system``). Pydantic ``loc`` tuples are translated by
  :func:`fhirpath_from_loc`: list indexes become ``[n]``, ``_status`` (a primitive's extension) is
  addressed as ``status``, choice elements as ``occurrence.ofType(dateTime)`` (as the HL7 validator
  does), and pydantic-internal parts (``root``) are dropped.

Why R4B and an R4 allow-list: the default ``fhir.resources`` models are R5 and reject most R4
payloads. R4B (4.3.0) is structurally R4 for every resource the hub exchanges, but it adds 13
resource types that R4 does not have and lacks 18 that R4 has; :data:`R4_RESOURCE_TYPES` is the
R4 4.0.1 list, and the types without an R4B model are answered ``not-supported``.

What ``fhir.resources`` 8.3 R4B enforces, found by experiment (``tests/adapters`` pins each):

* unknown elements (``extra="forbid"``), cardinality (array vs single), required elements that are
  missing or ``null`` (``ServiceRequest.status``, ``.intent``, ``.subject``), primitive formats
  (``code`` and ``id`` patterns, date/dateTime/instant, decimal), at most one type of a choice
  element (``occurrence[x]``), ``resourceType`` when it is present and differs from the model.

What it does NOT enforce, and what this module adds on top:

* a missing ``resourceType`` is accepted -> checked here (``required`` at ``resourceType``);
* required value-set bindings are carried as ``enum_values`` metadata but never checked:
  ``"status": "bogus"`` validates -> checked here for every coded element (``code-invalid``). The
  library cuts twelve of those lists short (``['draft', 'requested', 'received', 'accepted', '+']``
  for ``Task.status``); they are completed from the R4 value sets in :data:`_TRUNCATED_VALUE_SETS`;
* reference targets are carried as ``enum_reference_types`` but not checked:
  ``subject: {"reference": "Organization/1"}`` validates -> checked here for typed literal
  references (``value``);
* JSON primitive types are coerced: ``"doNotPerform": "true"`` or ``1``, ``"value": "1.5"``, and a
  complex element given as a *string holding JSON* (``"subject": "{\\"reference\\": ...}"``) all
  validate -> checked here against the raw JSON (``structure``);
* ``null`` is accepted for optional and even for required complex elements (``"subject": null``
  passes), empty objects and arrays pass (FHIR ele-1), ``null`` inside primitive arrays passes
  without the ``_name`` sibling that alone justifies it -> checked here (``structure``);
* Python field names are accepted besides the FHIR names (``populate_by_name``: ``resource_type``,
  ``class_fhir``), and so is ``fhir_comments`` -> names must be FHIR JSON names (``structure``);
* a contained resource without ``resourceType`` is read as a bare ``Resource``, and one whose type
  has no R4B model raises ``KeyError`` instead of a validation error -> checked here first; any
  other unexpected exception from the library is turned into an issue, never a crash.

Still not checked (known gaps): FHIRPath invariants other than ele-1 and the choice rule, the XHTML
of ``text.div``, URI syntax, extensible/preferred bindings, R4 value sets that changed in R4B for
resources the hub does not exchange, and references into ``contained``.

Diagnostics never echo submitted values (they may be PHI): only element paths, FHIR type names
from the allow-list, and the allowed codes of a value set.
"""

from __future__ import annotations

import functools
import json
import re
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ValidationError

from hub.errors import InvalidInput

# --- the R4 allow-list ------------------------------------------------------------------------

#: Every resource type of FHIR R4 4.0.1 (146 of them; the abstract Resource and DomainResource excluded).
R4_RESOURCE_TYPES: frozenset[str] = frozenset(
    """
    Account ActivityDefinition AdverseEvent AllergyIntolerance Appointment AppointmentResponse
    AuditEvent Basic Binary BiologicallyDerivedProduct BodyStructure Bundle CapabilityStatement
    CarePlan CareTeam CatalogEntry ChargeItem ChargeItemDefinition Claim ClaimResponse
    ClinicalImpression CodeSystem Communication CommunicationRequest CompartmentDefinition
    Composition ConceptMap Condition Consent Contract Coverage CoverageEligibilityRequest
    CoverageEligibilityResponse DetectedIssue Device DeviceDefinition DeviceMetric DeviceRequest
    DeviceUseStatement DiagnosticReport DocumentManifest DocumentReference
    EffectEvidenceSynthesis Encounter Endpoint EnrollmentRequest EnrollmentResponse
    EpisodeOfCare EventDefinition Evidence EvidenceVariable ExampleScenario ExplanationOfBenefit
    FamilyMemberHistory Flag Goal GraphDefinition Group GuidanceResponse HealthcareService
    ImagingStudy Immunization ImmunizationEvaluation ImmunizationRecommendation
    ImplementationGuide InsurancePlan Invoice Library Linkage List Location Measure
    MeasureReport Media Medication MedicationAdministration MedicationDispense
    MedicationKnowledge MedicationRequest MedicationStatement MedicinalProduct
    MedicinalProductAuthorization MedicinalProductContraindication MedicinalProductIndication
    MedicinalProductIngredient MedicinalProductInteraction MedicinalProductManufactured
    MedicinalProductPackaged MedicinalProductPharmaceutical MedicinalProductUndesirableEffect
    MessageDefinition MessageHeader MolecularSequence NamingSystem NutritionOrder Observation
    ObservationDefinition OperationDefinition OperationOutcome Organization
    OrganizationAffiliation Parameters Patient PaymentNotice PaymentReconciliation Person
    PlanDefinition Practitioner PractitionerRole Procedure Provenance Questionnaire
    QuestionnaireResponse RelatedPerson RequestGroup ResearchDefinition
    ResearchElementDefinition ResearchStudy ResearchSubject RiskAssessment RiskEvidenceSynthesis
    Schedule SearchParameter ServiceRequest Slot Specimen SpecimenDefinition StructureDefinition
    StructureMap Subscription Substance SubstanceNucleicAcid SubstancePolymer SubstanceProtein
    SubstanceReferenceInformation SubstanceSourceMaterial SubstanceSpecification SupplyDelivery
    SupplyRequest Task TerminologyCapabilities TestReport TestScript ValueSet VerificationResult
    VisionPrescription
    """.split()  # noqa: SIM905 - a word list reads better than 146 quoted strings
)

#: R4 types that R4B dropped: no model to validate them with, so they are answered ``not-supported``.
R4_TYPES_WITHOUT_R4B_MODEL: frozenset[str] = frozenset(
    """
    EffectEvidenceSynthesis RiskEvidenceSynthesis MedicinalProduct MedicinalProductAuthorization
    MedicinalProductContraindication MedicinalProductIndication MedicinalProductIngredient
    MedicinalProductInteraction MedicinalProductManufactured MedicinalProductPackaged
    MedicinalProductPharmaceutical MedicinalProductUndesirableEffect SubstanceNucleicAcid
    SubstancePolymer SubstanceProtein SubstanceReferenceInformation SubstanceSourceMaterial
    SubstanceSpecification
    """.split()  # noqa: SIM905
)

IssueCode = Literal[
    "invalid",
    "structure",
    "required",
    "value",
    "invariant",
    "code-invalid",
    "not-supported",
    "too-costly",
    "business-rule",
]

_FHIR_NAME = re.compile(r"_?[A-Za-z][A-Za-z0-9]*")
# Names shown back in diagnostics must look like identifiers (``resource_type``), not free text.
_LOOSE_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
# A typed literal reference: ``Type/id`` or ``http(s)://base/Type/id``, optionally versioned.
_TYPED_REFERENCE = re.compile(
    r"(?:https?://\S+/)?(?P<type>[A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)
# FHIR primitive type names as they appear, capitalised, as the suffix of a choice element.
_PRIMITIVE_SUFFIXES = frozenset(
    """
    Base64Binary Boolean Canonical Code Date DateTime Decimal Id Instant Integer Markdown Oid
    PositiveInt String Time UnsignedInt Uri Url Uuid Xhtml
    """.split()  # noqa: SIM905
)
_MAX_ISSUES = 50


def reference_type(reference: str) -> str | None:
    """The resource type a literal reference names (``Patient/1``, ``https://x/fhir/Patient/1/_history/2``
    -> ``Patient``), or ``None`` for ``#contained``, ``urn:uuid:`` and anything else untyped."""
    match = _TYPED_REFERENCE.fullmatch(reference)
    return match.group("type") if match is not None else None


# --- issues and the error ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FhirIssue:
    """One problem found in a resource: an OperationOutcome.issue in waiting.

    ``expression`` is the FHIRPath of the offending element (``None`` when the problem is the
    whole body); ``diagnostics`` is human-readable and never contains submitted values.
    """

    code: IssueCode
    diagnostics: str
    expression: str | None = None
    severity: Literal["fatal", "error", "warning", "information"] = "error"


class FhirValidationError(InvalidInput):
    """The body is JSON but not an acceptable FHIR R4 resource; ``issues`` lists every problem found."""

    def __init__(self, issues: Sequence[FhirIssue]) -> None:
        if not issues:
            raise ValueError("a FhirValidationError needs at least one issue")
        self.issues: tuple[FhirIssue, ...] = tuple(issues)
        first = self.issues[0]
        more = f" (and {len(self.issues) - 1} more issue(s))" if len(self.issues) > 1 else ""
        super().__init__(first.diagnostics + more, expression=first.expression, code=first.code)


# --- parsing ----------------------------------------------------------------------------------


def parse_fhir_json(body: bytes, *, max_depth: int = 64) -> dict[str, Any]:
    """Parse request bytes as one JSON object (a FHIR resource), strictly.

    Raises :class:`hub.errors.InvalidInput` with code ``structure`` (empty, invalid UTF-8, byte
    order mark, not JSON, not an object, duplicate property name) or ``too-costly`` (nested deeper
    than ``max_depth`` objects/arrays). Messages give positions, never content.
    """
    if not body.strip():
        raise InvalidInput("the request body is empty; send one FHIR resource as JSON", code="structure")
    if body.startswith(b"\xef\xbb\xbf"):
        raise InvalidInput(
            "the body starts with a UTF-8 byte order mark, which JSON does not allow; send it without",
            code="structure",
        )
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _json_error(body, exc) from exc
    if not isinstance(data, dict):
        raise InvalidInput(
            f"the body must be a JSON object (one FHIR resource), not {_json_kind(data)}",
            code="structure",
        )
    if _depth_exceeding(data, max_depth):
        raise InvalidInput(
            f"the JSON is nested more than {max_depth} levels deep; no FHIR resource needs that",
            code="too-costly",
        )
    _reject_duplicate_names(body)
    return data


def _json_error(body: bytes, exc: orjson.JSONDecodeError) -> InvalidInput:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as bad:
        return InvalidInput(
            f"the body is not valid UTF-8 (first bad byte at offset {bad.start}); FHIR JSON is UTF-8",
            code="structure",
        )
    if "depth" in exc.msg or "recursion" in exc.msg:
        return InvalidInput("the JSON is nested too deeply", code="too-costly")
    return InvalidInput(
        f"the body is not valid JSON: {_safe_json_reason(exc.msg)} at line {exc.lineno} column {exc.colno}",
        code="structure",
    )


def _safe_json_reason(msg: str) -> str:
    # orjson's reasons are fixed phrases ("trailing comma is not allowed"); guard anyway.
    return msg if len(msg) <= 120 and msg.isprintable() else "syntax error"


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"


def _depth_exceeding(node: dict[str, Any] | list[Any], remaining: int) -> bool:
    if remaining <= 0:
        return True
    children = node.values() if isinstance(node, dict) else node
    return any(
        isinstance(child, dict | list) and _depth_exceeding(child, remaining - 1) for child in children
    )


class _DuplicateNameError(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise _DuplicateNameError(name)
        result[name] = value
    return result


def _reject_duplicate_names(body: bytes) -> None:
    # orjson silently keeps the last duplicate; the stdlib parser can report them (about 30 us per 4 KB).
    try:
        json.loads(body, object_pairs_hook=_no_duplicates)
    except _DuplicateNameError as dup:
        shown = f" '{dup.name}'" if _FHIR_NAME.fullmatch(dup.name) and len(dup.name) <= 64 else ""
        raise InvalidInput(
            f"the JSON repeats the property name{shown} within one object; FHIR JSON forbids duplicates",
            code="structure",
        ) from None
    except ValueError:  # pragma: no cover - orjson accepted it, the stdlib disagrees: orjson decides
        return


# --- validation -------------------------------------------------------------------------------


def model_class(resource_type: str) -> type[BaseModel] | None:
    """The R4B model class of an R4 resource type, or ``None`` when the type is not R4 or has no R4B model."""
    if resource_type not in R4_RESOURCE_TYPES or resource_type in R4_TYPES_WITHOUT_R4B_MODEL:
        return None
    from fhir.resources.R4B import get_fhir_model_class  # noqa: PLC0415 - heavy import, first use only

    klass: type[BaseModel] = get_fhir_model_class(resource_type)
    return klass


def validate_resource(data: dict[str, Any], *, expected_type: str) -> Any:
    """Validate a parsed JSON object as an R4 resource of ``expected_type``; return the R4B model instance.

    Raises :class:`FhirValidationError`; the first issue says what is wrong at which FHIRPath:

    * no ``resourceType`` -> ``required`` at ``resourceType``;
    * a ``resourceType`` that is not R4 (or has no R4B model) -> ``not-supported`` at ``resourceType``;
    * another R4 type than ``expected_type`` -> ``invalid`` at ``resourceType``, naming both;
    * structural problems -> ``structure``; missing required elements -> ``required``; bad primitive
      values -> ``value``; codes outside a required value set -> ``code-invalid``; two types of one
      choice element -> ``invariant``.

    The input dict is not modified.
    """
    if expected_type not in R4_RESOURCE_TYPES:
        raise ValueError(f"{expected_type} is not an R4 resource type")
    _check_resource_type(data, expected_type)
    klass = model_class(expected_type)
    if klass is None:
        raise FhirValidationError(
            [
                FhirIssue(
                    "not-supported",
                    f"{expected_type} is an R4 resource type that this server cannot validate",
                    "resourceType",
                )
            ]
        )
    issues = _structural_issues(data, expected_type)
    if issues:
        raise FhirValidationError(issues[:_MAX_ISSUES])
    try:
        instance = klass.model_validate(data)
    except ValidationError as exc:
        raise FhirValidationError(_issues_from_pydantic(exc, expected_type, data)[:_MAX_ISSUES]) from exc
    except Exception as exc:  # any library failure on input is the input's problem, never a 500
        raise FhirValidationError(
            [
                FhirIssue(
                    "invalid",
                    f"the {expected_type} could not be validated ({type(exc).__name__}); check its structure",
                    expected_type,
                )
            ]
        ) from exc
    issues = list(_model_issues(instance, data, expected_type))
    if issues:
        raise FhirValidationError(issues[:_MAX_ISSUES])
    return instance


def _check_resource_type(data: Mapping[str, Any], expected_type: str) -> None:
    if "resourceType" not in data:
        raise FhirValidationError(
            [
                FhirIssue(
                    "required",
                    f"resourceType is missing; a FHIR resource names its type (expected '{expected_type}')",
                    "resourceType",
                )
            ]
        )
    given = data["resourceType"]
    if not isinstance(given, str):
        raise FhirValidationError(
            [FhirIssue("structure", "resourceType must be a JSON string", "resourceType")]
        )
    if given not in R4_RESOURCE_TYPES:
        raise FhirValidationError(
            [FhirIssue("not-supported", "resourceType is not a FHIR R4 resource type", "resourceType")]
        )
    if given != expected_type:
        raise FhirValidationError(
            [
                FhirIssue(
                    "invalid",
                    f"resourceType is '{given}' but this endpoint accepts only '{expected_type}'",
                    "resourceType",
                )
            ]
        )


def _structural_issues(data: Mapping[str, Any], resource_type: str) -> list[FhirIssue]:
    """FHIR JSON rules the models do not enforce, checked on the raw JSON before the models see it."""
    issues: list[FhirIssue] = []
    stack: list[_Frame] = [(data, resource_type, model_class(resource_type))]
    while stack and len(issues) < _MAX_ISSUES:
        obj, path, klass = stack.pop()
        for key, value in obj.items():
            if not _FHIR_NAME.fullmatch(key):
                issues.append(
                    FhirIssue("structure", f"{path}.{key}: not a FHIR element name", f"{path}.{key}")
                    if _LOOSE_NAME.fullmatch(key)
                    else FhirIssue("structure", f"{path}: a property name is not a FHIR element name", path)
                )
                continue
            child = f"{path}.{_segment(klass, key)}"
            if value is None:
                issues.append(FhirIssue("structure", f"{child}: null is not allowed in FHIR JSON", child))
            elif isinstance(value, dict):
                if not value:
                    issues.append(FhirIssue("structure", f"{child}: an empty object is not allowed", child))
                else:
                    stack.append((value, child, _child_class(klass, key)))
            elif isinstance(value, list):
                issues.extend(
                    _array_issues(obj, key, value, child, klass=_child_class(klass, key), stack=stack)
                )
            elif key == "resourceType" and obj is not data and isinstance(value, str):
                issues.extend(_nested_type_issues(value, child))
    return issues


_Frame = tuple[Mapping[str, Any], str, "type[BaseModel] | None"]


def _array_issues(
    obj: Mapping[str, Any],
    key: str,
    items: list[Any],
    path: str,
    *,
    klass: type[BaseModel] | None,
    stack: list[_Frame],
) -> Iterator[FhirIssue]:
    if not items:
        yield FhirIssue("structure", f"{path}: an empty array is not allowed", path)
        return
    paired = (key.startswith("_") and key[1:] in obj) or f"_{key}" in obj
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]"
        if item is None:
            if not paired:
                yield FhirIssue(
                    "structure",
                    f"{item_path}: null is allowed in an array only to line values up with their extensions",
                    item_path,
                )
        elif isinstance(item, dict):
            if not item:
                yield FhirIssue("structure", f"{item_path}: an empty object is not allowed", item_path)
            elif key == "contained" and "resourceType" not in item:
                yield FhirIssue(
                    "required",
                    f"{item_path}: a contained resource needs a resourceType",
                    f"{item_path}.resourceType",
                )
            else:
                item_type = item.get("resourceType")
                item_class = model_class(item_type) if isinstance(item_type, str) else None
                stack.append((item, item_path, item_class or klass))
        elif isinstance(item, list):
            yield FhirIssue("structure", f"{item_path}: arrays cannot be nested in FHIR JSON", item_path)


def _nested_type_issues(value: str, path: str) -> Iterator[FhirIssue]:
    if value not in R4_RESOURCE_TYPES:
        yield FhirIssue("not-supported", f"{path}: not a FHIR R4 resource type", path)
    elif value in R4_TYPES_WITHOUT_R4B_MODEL:
        yield FhirIssue(
            "not-supported", f"{path}: {value} resources cannot be validated by this server", path
        )


# --- pydantic errors -> issues ----------------------------------------------------------------

_REQUIRED_ERRORS = frozenset({"missing", "model_field_validation.missing"})
_STRUCTURE_ERRORS = frozenset(
    {
        "extra_forbidden",
        "string_type",
        "int_type",
        "float_type",
        "decimal_type",
        "bool_type",
        "list_type",
        "dict_type",
        "model_type",
        "model_attributes_type",
        "json_invalid",
        "json_type",
        "model_validation_format",
        "is_instance_of",
        "date_type",
        "datetime_type",
        "time_type",
        "bytes_type",
        "tuple_type",
        "none_required",
        "fhir-validation-wrong-resource-type",
    }
)


def _issues_from_pydantic(
    exc: ValidationError, resource_type: str, data: Mapping[str, Any]
) -> list[FhirIssue]:
    issues: list[FhirIssue] = []
    for error in exc.errors(include_url=False):
        path = fhirpath_from_loc(resource_type, error["loc"], data=data)
        kind = error["type"]
        if kind in _REQUIRED_ERRORS:
            issues.append(FhirIssue("required", f"{path}: a required element is missing", path))
        elif kind == "extra_forbidden":
            issues.append(FhirIssue("structure", f"{path}: unknown element", path))
        elif kind in _STRUCTURE_ERRORS:
            issues.append(FhirIssue("structure", f"{path}: {_expected(kind)}", path))
        elif kind == "value_error" and "but got multiple" in error["msg"]:
            choice = _choice_path(resource_type, error, data)
            issues.append(
                FhirIssue("invariant", f"{choice}: give this choice element in one type only", choice)
            )
        else:
            issues.append(FhirIssue("value", f"{path}: {_safe_message(error)}", path))
    return issues


def _expected(kind: str) -> str:
    return {
        "string_type": "must be a JSON string",
        "int_type": "must be a JSON integer",
        "float_type": "must be a JSON number",
        "decimal_type": "must be a JSON number",
        "bool_type": "must be a JSON boolean",
        "list_type": "must be a JSON array (this element repeats)",
        "json_invalid": "must be a JSON object",
        "model_validation_format": "must be a single JSON object (this element does not repeat)",
        "fhir-validation-wrong-resource-type": "has the wrong resourceType",
    }.get(kind, "has the wrong JSON type")


_CHOICE_FIELD = re.compile(r"\['([A-Za-z][A-Za-z0-9]*)'")
_SPEC_REGEX = re.compile(r"([A-Za-z]+) value string does not match spec regex\.")


def _choice_path(resource_type: str, error: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """``occurrence[x]`` given twice: fhir_core names the candidate fields (names, never values)."""
    path = fhirpath_from_loc(resource_type, error["loc"], data=data)
    match = _CHOICE_FIELD.search(str(error["msg"]))
    if match is None:
        return path
    klass = _class_at(resource_type, error["loc"], data)
    found = _field(klass, match.group(1))
    extra = found[1].json_schema_extra if found is not None else None
    prefix = extra.get("one_of_many") if isinstance(extra, dict) else None
    return f"{path}.{prefix}" if isinstance(prefix, str) else path


def _safe_message(error: Mapping[str, Any]) -> str:
    kind = str(error["type"])
    message = str(error["msg"]).removeprefix("Value error, ").strip()
    if kind == "string_pattern_mismatch":
        pattern = (error.get("ctx") or {}).get("pattern")
        return (
            f"the value does not match the FHIR format {pattern}"
            if pattern
            else "the value has the wrong format"
        )
    spec = _SPEC_REGEX.fullmatch(message)
    if spec is not None:
        type_name = spec.group(1)
        return f"not a valid FHIR {type_name[0].lower()}{type_name[1:]}"
    given = error.get("input")
    echoed = isinstance(given, str | int | float | Decimal) and len(str(given)) >= 4 and str(given) in message
    if not message or echoed or len(message) > 200:
        return f"invalid value ({kind})"
    return message


# --- FHIRPath from pydantic locations ---------------------------------------------------------


def fhirpath_from_loc(
    resource_type: str,
    loc: Sequence[str | int],
    *,
    data: Mapping[str, Any] | None = None,
) -> str:
    """Translate a pydantic error location into a FHIRPath rooted at ``resource_type``.

    ``('code', 'coding', 0, 'system')`` -> ``ServiceRequest.code.coding[0].system``;
    ``('subject', 'root')`` -> ``ServiceRequest.subject``; ``('_status', 'extension', 0, 'url')`` ->
    ``ServiceRequest.status.extension[0].url``; ``('occurrenceDateTime',)`` ->
    ``ServiceRequest.occurrence.ofType(dateTime)``. With ``data`` (the raw JSON), contained
    resources are resolved to their own type so their choice elements translate too.
    """
    return _walk_loc(resource_type, loc, data)[0]


def _class_at(
    resource_type: str, loc: Sequence[str | int], data: Mapping[str, Any] | None
) -> type[BaseModel] | None:
    return _walk_loc(resource_type, loc, data)[1]


def _walk_loc(
    resource_type: str, loc: Sequence[str | int], data: Mapping[str, Any] | None
) -> tuple[str, type[BaseModel] | None]:
    path = resource_type
    klass: type[BaseModel] | None = model_class(resource_type)
    raw: Any = data
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            raw = raw[part] if isinstance(raw, list) and 0 <= part < len(raw) else None
            if isinstance(raw, Mapping) and isinstance(raw.get("resourceType"), str):
                klass = model_class(raw["resourceType"]) or klass
            continue
        if part == "root" or not _FHIR_NAME.fullmatch(part):
            continue  # pydantic-internal location parts
        path += "." + _segment(klass, part)
        klass = _child_class(klass, part)
        raw = raw.get(part) if isinstance(raw, Mapping) else None
    return path, klass


@functools.lru_cache(maxsize=1024)
def _fields_by_json_name(klass: type[BaseModel]) -> dict[str, tuple[str, Any]]:
    """JSON property name (the alias) -> (python name, FieldInfo) of one model class."""
    return {(info.alias or name): (name, info) for name, info in klass.model_fields.items()}


def _field(klass: type[BaseModel] | None, key: str) -> tuple[str, Any] | None:
    return None if klass is None else _fields_by_json_name(klass).get(key)


@functools.lru_cache(maxsize=4096)
def _segment(klass: type[BaseModel] | None, key: str) -> str:
    name = key.removeprefix("_")
    found = _field(klass, name)
    if found is not None:
        extra = found[1].json_schema_extra
        prefix = extra.get("one_of_many") if isinstance(extra, dict) else None
        if isinstance(prefix, str) and name.startswith(prefix) and len(name) > len(prefix):
            suffix = name[len(prefix) :]
            type_name = suffix[0].lower() + suffix[1:] if suffix in _PRIMITIVE_SUFFIXES else suffix
            return f"{prefix}.ofType({type_name})"
    return name


@functools.lru_cache(maxsize=4096)
def _child_class(klass: type[BaseModel] | None, key: str) -> type[BaseModel] | None:
    found = _field(klass, key)
    return _model_in(found[1].annotation) if found is not None else None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    getter = getattr(annotation, "get_model_klass", None)
    if callable(getter):
        klass = getter()
        return klass if isinstance(klass, type) and issubclass(klass, BaseModel) else None
    for arg in typing.get_args(annotation):
        klass = _model_in(arg)
        if klass is not None:
            return klass
    return None


# --- checks on the validated model against the raw JSON ---------------------------------------


def _model_issues(model: BaseModel, raw: Mapping[str, Any], path: str) -> Iterator[FhirIssue]:
    """Walk the validated model beside the raw JSON: JSON types, required bindings, reference targets."""
    klass = type(model)
    fields = _fields_by_json_name(klass)
    for key, raw_value in raw.items():
        found = fields.get(key)
        if found is None:
            continue  # resourceType; unknown names were rejected before
        name, info = found
        value = getattr(model, name, None)
        extra = _binding(
            info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}, klass.__name__, key
        )
        child = f"{path}.{_segment(klass, key)}"
        if isinstance(value, list):
            if not isinstance(raw_value, list) or len(raw_value) != len(value):
                continue  # the models already rejected a shape mismatch; nothing sensible to add
            for index, (item, raw_item) in enumerate(zip(value, raw_value, strict=True)):
                yield from _value_issues(item, raw_item, f"{child}[{index}]", extra)
        else:
            yield from _value_issues(value, raw_value, child, extra)


def _value_issues(value: Any, raw: Any, path: str, extra: Mapping[str, Any]) -> Iterator[FhirIssue]:
    if value is None:
        return
    if isinstance(value, BaseModel):
        if not isinstance(raw, Mapping):
            yield FhirIssue("structure", f"{path}: must be a JSON object", path)
            return
        yield from _reference_target_issues(value, path, extra)
        yield from _model_issues(value, raw, path)
    elif isinstance(value, bool):
        if not isinstance(raw, bool):
            yield FhirIssue("structure", f"{path}: must be a JSON boolean (true or false)", path)
    elif isinstance(value, int):
        if isinstance(raw, bool) or not isinstance(raw, int):
            yield FhirIssue("structure", f"{path}: must be a JSON integer", path)
    elif isinstance(value, Decimal | float):
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            yield FhirIssue("structure", f"{path}: must be a JSON number", path)
    elif not isinstance(raw, str):
        yield FhirIssue("structure", f"{path}: must be a JSON string", path)
    else:
        allowed = extra.get("enum_values")
        if isinstance(allowed, list) and allowed and value not in allowed:
            yield FhirIssue(
                "code-invalid",
                f"{path}: the code is not in the required value set ({' | '.join(map(str, allowed))})",
                path,
            )


_OBSERVATION_STATUS = (
    "registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown",
)
_ENCOUNTER_STATUS = (
    "planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled", "entered-in-error", "unknown",
)
#: R4 value sets that ``fhir.resources`` cuts short (it keeps the first codes, then ``"+"``), in full,
#: keyed by (model class, JSON name). Without this, ``Task.status`` "in-progress" or
#: ``Encounter.status`` "entered-in-error" (both valid R4) would be refused.
_TRUNCATED_VALUE_SETS: dict[tuple[str, str], tuple[str, ...]] = {
    ("Task", "status"): (
        "draft", "requested", "received", "accepted", "rejected", "ready", "cancelled", "in-progress",
        "on-hold", "failed", "completed", "entered-in-error",
    ),
    ("Encounter", "status"): _ENCOUNTER_STATUS,
    ("EncounterStatusHistory", "status"): _ENCOUNTER_STATUS,
    ("Observation", "status"): _OBSERVATION_STATUS,
    ("DetectedIssue", "status"): _OBSERVATION_STATUS,
    ("RiskAssessment", "status"): _OBSERVATION_STATUS,
    ("DiagnosticReport", "status"): (
        "registered", "partial", "preliminary", "final", "amended", "corrected", "appended", "cancelled",
        "entered-in-error", "unknown",
    ),
    ("DeviceUseStatement", "status"): ("active", "completed", "entered-in-error", "intended", "stopped", "on-hold"),
    ("DeviceUdiCarrier", "entryType"): ("barcode", "rfid", "manual", "card", "self-reported", "unknown"),
    ("SupplyRequest", "status"): (
        "draft", "active", "suspended", "cancelled", "completed", "entered-in-error", "unknown",
    ),
    ("QuestionnaireItem", "type"): (
        "group", "display", "boolean", "decimal", "integer", "date", "dateTime", "time", "string", "text", "url",
        "choice", "open-choice", "attachment", "reference", "quantity",
    ),
    ("StructureMapGroupRuleTarget", "transform"): (
        "create", "copy", "truncate", "escape", "cast", "append", "translate", "reference", "dateOp", "uuid",
        "pointer", "evaluate", "cc", "c", "qty", "id", "cp",
    ),
}


def _binding(extra: Mapping[str, Any], owner: str, key: str) -> Mapping[str, Any]:
    """``extra`` with a truncated ``enum_values`` list completed from :data:`_TRUNCATED_VALUE_SETS`.

    A truncated list this module does not know is dropped (not checked at all): refusing valid R4
    would be worse than letting an unknown code through.
    """
    allowed = extra.get("enum_values")
    if not isinstance(allowed, list) or "+" not in allowed:
        return extra
    completed = _TRUNCATED_VALUE_SETS.get((owner, key))
    return {**extra, "enum_values": list(completed) if completed else None}


def _reference_target_issues(value: BaseModel, path: str, extra: Mapping[str, Any]) -> Iterator[FhirIssue]:
    targets = extra.get("enum_reference_types")
    reference = getattr(value, "reference", None)
    if (
        not isinstance(targets, list)
        or not targets
        or "Resource" in targets
        or not isinstance(reference, str)
    ):
        return
    target = reference_type(reference)
    if target is None:
        return  # urn:uuid:, #contained, or a URL this check cannot type
    if target in R4_RESOURCE_TYPES and target not in R4_TYPES_WITHOUT_R4B_MODEL and target not in targets:
        yield FhirIssue(
            "value",
            f"{path}.reference: a reference to {target} is not allowed here (allowed: {', '.join(targets)})",
            f"{path}.reference",
        )


def rebase_issues(issues: Sequence[FhirIssue], old_root: str, new_root: str) -> list[FhirIssue]:
    """Move issues found in a resource validated on its own under the path it has in its container.

    ``Task.status`` with ``old_root`` "Task" and ``new_root`` "Bundle.entry[2].resource" becomes
    ``Bundle.entry[2].resource.status``; ``resourceType`` becomes ``Bundle.entry[2].resource.resourceType``;
    an issue without an expression gets ``new_root``. Diagnostics that start with the old path are
    rewritten the same way.
    """
    moved = []
    for found in issues:
        old = found.expression
        if old is None:
            new = new_root
        elif old == "resourceType":
            new = f"{new_root}.resourceType"
        elif old == old_root or old.startswith((f"{old_root}.", f"{old_root}[")):
            new = new_root + old[len(old_root) :]
        else:
            new = f"{new_root}.{old}"
        diagnostics = found.diagnostics
        if old is not None and diagnostics.startswith(old):
            diagnostics = new + diagnostics[len(old) :]
        moved.append(FhirIssue(found.code, diagnostics, new, found.severity))
    return moved


_ENTRY_STUB: dict[str, Any] = {"resourceType": "Basic", "code": {"text": "stub"}}


def validate_bundle_structure(data: dict[str, Any]) -> None:
    """Validate a Bundle's own elements with R4B, each entry's resource replaced by a stub.

    The entries' resources are validated one by one by the caller (so their issues name
    ``Bundle.entry[n].resource``); this checks everything around them. Raises ``FhirValidationError``.
    """
    entries = data.get("entry")
    shell = dict(data)
    if isinstance(entries, list):
        shell["entry"] = [
            {**entry, "resource": _ENTRY_STUB} if isinstance(entry, dict) and isinstance(entry.get("resource"), dict)
            else entry
            for entry in entries
        ]
    validate_resource(shell, expected_type="Bundle")
