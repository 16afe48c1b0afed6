"""Parsing and R4 validation at the edge: precise issue codes, FHIRPaths, and the R4B gaps closed here."""



from __future__ import annotations

from typing import Any

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from hub.adapters.fhir_validation import (
    R4_RESOURCE_TYPES,
    R4_TYPES_WITHOUT_R4B_MODEL,
    FhirValidationError,
    fhirpath_from_loc,
    model_class,
    parse_fhir_json,
    reference_type,
    validate_resource,
)
from hub.errors import InvalidInput
from tests.adapters.conftest import valid_body, valid_service_request


def nested(depth: int) -> bytes:
    """A JSON object whose innermost value sits ``depth`` containers deep."""
    return b'{"a":' * depth + b"1" + b"}" * depth


# --- parse_fhir_json ----------------------------------------------------------------------------

PARSE_FAILURES = [
    pytest.param(b"", "structure", "empty", id="empty"),
    pytest.param(b"  \n", "structure", "empty", id="whitespace-only"),
    pytest.param(b"not json", "structure", "not valid JSON", id="not-json"),
    pytest.param(b'{"a":1,}', "structure", "line 1 column", id="trailing-comma"),
    pytest.param(b"[1, 2]", "structure", "not an array", id="array"),
    pytest.param(b'"text"', "structure", "not a string", id="string"),
    pytest.param(b"42", "structure", "not a number", id="number"),
    pytest.param(b"null", "structure", "not null", id="null"),
    pytest.param(b'{"a":"caf\xe9"}', "structure", "not valid UTF-8", id="latin-1"),
    pytest.param(b"\xef\xbb\xbf{}", "structure", "byte order mark", id="bom"),
    pytest.param(b'{"a":NaN}', "structure", "not valid JSON", id="nan"),
    pytest.param(b'{"a":"\\ud800"}', "structure", "not valid JSON", id="lone-surrogate"),
    pytest.param(b'{"status":"a","status":"b"}', "structure", "'status'", id="duplicate-name"),
    pytest.param(b'{"a":{"b":1,"b":2}}', "structure", "repeats", id="nested-duplicate"),
    pytest.param(nested(65), "too-costly", "64 levels", id="depth-65"),
    pytest.param(b"[" * 3000 + b"]" * 3000, "too-costly", "nested too deeply", id="depth-3000-orjson-limit"),
]


@pytest.mark.parametrize(("body", "code", "fragment"), PARSE_FAILURES)
def test_parse_rejects_bodies_that_are_not_one_json_object(body: bytes, code: str, fragment: str) -> None:
    """Each unparseable body raises InvalidInput with the right issue code and a message saying why."""
    with pytest.raises(InvalidInput) as caught:
        parse_fhir_json(body)
    assert code == caught.value.code
    assert caught.value.expression is None
    assert fragment in str(caught.value)


def test_parse_accepts_exactly_max_depth_levels() -> None:
    """64 levels pass, 65 do not: the limit is inclusive and configurable."""
    assert {"a": {"a": 1}} == parse_fhir_json(nested(2), max_depth=2)
    assert parse_fhir_json(nested(64))["a"] is not None
    with pytest.raises(InvalidInput):
        parse_fhir_json(nested(3), max_depth=2)


def test_parse_error_messages_do_not_echo_content() -> None:
    """A syntax error next to PHI reports a position, never the text around it."""
    with pytest.raises(InvalidInput) as caught:
        parse_fhir_json(b'{"name": "Jane Doe" "ssn": "123-45-6789"}')
    assert "Jane" not in str(caught.value)
    assert "123-45" not in str(caught.value)


def test_parse_returns_the_object() -> None:
    """A valid body parses to the same object as the source dict."""
    assert valid_service_request() == parse_fhir_json(valid_body())


# --- resourceType -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource_type", "code", "fragment"),
    [
        pytest.param(None, "required", "missing", id="missing"),
        pytest.param(7, "structure", "JSON string", id="not-a-string"),
        pytest.param("Foo", "not-supported", "not a FHIR R4 resource type", id="unknown"),
        pytest.param("SubscriptionTopic", "not-supported", "not a FHIR R4", id="r4b-only"),
        pytest.param(
            "Patient", "invalid", "'Patient' but this endpoint accepts only 'ServiceRequest'", id="other"
        ),
        pytest.param("MedicinalProduct", "invalid", "'MedicinalProduct'", id="r4-only-other"),
    ],
)
def test_resource_type_problems_point_at_resource_type(
    resource_type: object, code: str, fragment: str
) -> None:
    """Missing, unknown, R4B-only and mismatched resourceTypes are told apart, all at ``resourceType``."""
    data = valid_service_request()
    if resource_type is None:
        del data["resourceType"]
    else:
        data["resourceType"] = resource_type
    with pytest.raises(FhirValidationError) as caught:
        validate_resource(data, expected_type="ServiceRequest")
    assert [(code, "resourceType")] == [(i.code, i.expression) for i in caught.value.issues]
    assert fragment in caught.value.issues[0].diagnostics


def test_expected_type_without_r4b_model_is_not_supported() -> None:
    """An R4 type that R4B dropped cannot be validated, and says so."""
    with pytest.raises(FhirValidationError) as caught:
        validate_resource({"resourceType": "MedicinalProduct"}, expected_type="MedicinalProduct")
    assert "not-supported" == caught.value.code


def test_expected_type_must_be_r4() -> None:
    """Asking for a non-R4 type is a programming error, not an input error."""
    with pytest.raises(ValueError, match="not an R4 resource type"):
        validate_resource({}, expected_type="SubscriptionTopic")


# --- validation issues --------------------------------------------------------------------------


def _with(**changes: Any) -> dict[str, Any]:
    data = valid_service_request()
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return data


INVALID_RESOURCES = [
    pytest.param(_with(status=...), "required", "ServiceRequest.status", id="missing-status"),
    pytest.param(_with(intent=...), "required", "ServiceRequest.intent", id="missing-intent"),
    pytest.param(_with(subject=...), "required", "ServiceRequest.subject", id="missing-subject"),
    pytest.param(
        _with(status="bogus"), "code-invalid", "ServiceRequest.status", id="status-not-in-value-set"
    ),
    pytest.param(_with(intent="wish"), "code-invalid", "ServiceRequest.intent", id="intent-not-in-value-set"),
    pytest.param(
        _with(priority="soon"), "code-invalid", "ServiceRequest.priority", id="priority-not-in-value-set"
    ),
    pytest.param(_with(status=5), "structure", "ServiceRequest.status", id="status-number"),
    pytest.param(_with(status=""), "value", "ServiceRequest.status", id="status-empty"),
    pytest.param(_with(subject="Patient/1"), "structure", "ServiceRequest.subject", id="subject-string"),
    pytest.param(
        _with(subject='{"reference": "Patient/1"}'),
        "structure",
        "ServiceRequest.subject",
        id="subject-json-in-string",
    ),
    pytest.param(
        _with(subject=[{"reference": "Patient/1"}]), "structure", "ServiceRequest.subject", id="subject-array"
    ),
    pytest.param(_with(subject=None), "structure", "ServiceRequest.subject", id="subject-null"),
    pytest.param(_with(subject={}), "structure", "ServiceRequest.subject", id="subject-empty-object"),
    pytest.param(
        _with(subject={"reference": "Organization/1"}),
        "value",
        "ServiceRequest.subject.reference",
        id="subject-wrong-target-type",
    ),
    pytest.param(
        _with(code={"coding": [{"system": 5, "code": "x"}]}),
        "structure",
        "ServiceRequest.code.coding[0].system",
        id="system-number",
    ),
    pytest.param(
        _with(code={"coding": [{"system": "http://x", "code": " x"}]}),
        "value",
        "ServiceRequest.code.coding[0].code",
        id="code-leading-space",
    ),
    pytest.param(
        _with(code={"coding": {"system": "http://x", "code": "x"}}),
        "structure",
        "ServiceRequest.code.coding",
        id="coding-not-array",
    ),
    pytest.param(_with(category=[]), "structure", "ServiceRequest.category", id="empty-array"),
    pytest.param(_with(category=["x"]), "structure", "ServiceRequest.category[0]", id="category-item-string"),
    pytest.param(
        _with(doNotPerform="true"), "structure", "ServiceRequest.doNotPerform", id="boolean-as-string"
    ),
    pytest.param(_with(doNotPerform=1), "structure", "ServiceRequest.doNotPerform", id="boolean-as-number"),
    pytest.param(
        _with(quantityQuantity={"value": "1.5"}),
        "structure",
        "ServiceRequest.quantity.ofType(Quantity).value",
        id="decimal-as-string",
    ),
    pytest.param(
        _with(occurrenceTiming={"repeat": {"count": 1.5}}),
        "value",
        "ServiceRequest.occurrence.ofType(Timing).repeat.count",
        id="integer-as-fraction",
    ),
    pytest.param(
        _with(occurrenceTiming={"repeat": {"count": 2.0}}),
        "structure",
        "ServiceRequest.occurrence.ofType(Timing).repeat.count",
        id="integer-as-float",
    ),
    pytest.param(
        _with(occurrenceDateTime="yesterday"),
        "value",
        "ServiceRequest.occurrence.ofType(dateTime)",
        id="bad-datetime",
    ),
    pytest.param(
        _with(occurrenceDateTime="2025-01-01", occurrencePeriod={"start": "2025-01-01"}),
        "invariant",
        "ServiceRequest.occurrence",
        id="choice-twice",
    ),
    pytest.param(_with(authoredOn="2025-13"), "value", "ServiceRequest.authoredOn", id="month-13"),
    pytest.param(_with(foo=1), "structure", "ServiceRequest.foo", id="unknown-element"),
    pytest.param(
        _with(resource_type="ServiceRequest"), "structure", "ServiceRequest.resource_type", id="python-name"
    ),
    pytest.param(_with(fhir_comments=["x"]), "structure", "ServiceRequest.fhir_comments", id="fhir-comments"),
    pytest.param(_with(id="bad id!"), "value", "ServiceRequest.id", id="bad-id"),
    pytest.param(
        _with(instantiatesUri=["http://a", None]),
        "structure",
        "ServiceRequest.instantiatesUri[1]",
        id="null-in-array",
    ),
    pytest.param(
        _with(_status={"extension": [{"valueString": "x"}]}),
        "required",
        "ServiceRequest.status.extension[0].url",
        id="primitive-extension-without-url",
    ),
    pytest.param(
        _with(extension=[{"url": "http://x", "valueDate": "nope"}]),
        "value",
        "ServiceRequest.extension[0].value.ofType(date)",
        id="extension-value",
    ),
    pytest.param(
        _with(contained=[{"id": "p"}]),
        "required",
        "ServiceRequest.contained[0].resourceType",
        id="contained-no-type",
    ),
    pytest.param(
        _with(contained=[{"resourceType": "Foo"}]),
        "not-supported",
        "ServiceRequest.contained[0].resourceType",
        id="contained-unknown-type",
    ),
    pytest.param(
        _with(contained=[{"resourceType": "MedicinalProduct"}]),
        "not-supported",
        "ServiceRequest.contained[0].resourceType",
        id="contained-without-r4b-model",
    ),
    pytest.param(
        _with(contained=[{"resourceType": "Patient", "id": "p", "birthDate": "1970-02-30x"}]),
        "value",
        "ServiceRequest.contained[0].birthDate",
        id="contained-bad-date",
    ),
    pytest.param(
        _with(contained=[{"resourceType": "Patient", "id": "p", "gender": "x"}]),
        "code-invalid",
        "ServiceRequest.contained[0].gender",
        id="contained-code",
    ),
    pytest.param(
        _with(contained=[{"resourceType": "Patient", "id": "p", "deceasedBoolean": "yes"}]),
        "structure",
        "ServiceRequest.contained[0].deceased.ofType(boolean)",
        id="contained-choice-type",
    ),
]


@pytest.mark.parametrize(("data", "code", "expression"), INVALID_RESOURCES)
def test_invalid_resources_raise_one_precise_issue(data: dict[str, Any], code: str, expression: str) -> None:
    """Each broken ServiceRequest yields exactly one issue, with the right code and FHIRPath."""
    with pytest.raises(FhirValidationError) as caught:
        validate_resource(data, expected_type="ServiceRequest")
    assert [(code, expression)] == [(i.code, i.expression) for i in caught.value.issues]
    assert caught.value.issues[0].diagnostics.startswith(expression.split("[", 1)[0].split(".ofType", 1)[0])


def test_several_problems_are_all_reported() -> None:
    """Missing status and intent are two issues in one answer, not two round trips."""
    with pytest.raises(FhirValidationError) as caught:
        validate_resource(_with(status=..., intent=...), expected_type="ServiceRequest")
    assert {"ServiceRequest.status", "ServiceRequest.intent"} == {i.expression for i in caught.value.issues}
    assert "and 1 more issue" in str(caught.value)


def test_valid_resources_pass_and_come_back_as_r4b_models() -> None:
    """The valid referral, with primitive-array nulls lined up with their extensions, validates."""
    data = _with(
        instantiatesUri=["http://a.example", "http://b.example"],
        _instantiatesUri=[None, {"extension": [{"url": "http://x.example", "valueString": "y"}]}],
        contained=[{"resourceType": "Patient", "id": "p", "identifier": [{"system": "urn:x", "value": "1"}]}],
    )
    resource = validate_resource(data, expected_type="ServiceRequest")
    assert "ServiceRequest" == resource.get_resource_type()
    assert "active" == resource.status
    assert "Patient" == resource.contained[0].get_resource_type()


def test_validation_does_not_modify_its_input() -> None:
    """The caller's dict is what it forwards in the 201 body, so validation must leave it alone."""
    data = valid_service_request()
    validate_resource(data, expected_type="ServiceRequest")
    assert valid_service_request() == data


@pytest.mark.parametrize(
    "marker_in",
    [
        {"status": "Jane-Doe-1970"},
        {"code": {"coding": [{"system": "http://x", "code": " Jane-Doe-1970"}]}},
        {"authoredOn": "Jane-Doe-1970"},
        {"subject": "Jane-Doe-1970"},
        {"contained": [{"resourceType": "Patient", "id": "p", "birthDate": "Jane-Doe-1970"}]},
        {"doNotPerform": "Jane-Doe-1970"},
        {"Jane-Doe-1970": True},
        {"subject": {"reference": "Patient/1", "Jane Doe 1970": 1}},
    ],
)
def test_diagnostics_never_echo_submitted_values(marker_in: dict[str, Any]) -> None:
    """Values may be PHI: the issues name the element, never its content."""
    with pytest.raises(FhirValidationError) as caught:
        validate_resource({**valid_service_request(), **marker_in}, expected_type="ServiceRequest")
    rendered = orjson.dumps([i.diagnostics for i in caught.value.issues]).decode() + str(caught.value)
    assert "Jane-Doe" not in rendered


# --- what R4B itself enforces (pins: these fail if fhir.resources changes behaviour) -----------


def _r4b_accepts(data: dict[str, Any]) -> bool:
    try:
        get_fhir_model_class("ServiceRequest").model_validate(data)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(
    ("data", "code", "expression"),
    [
        pytest.param(_with(resourceType=...), "required", "resourceType", id="no-resourceType"),
        pytest.param(_with(status="bogus"), "code-invalid", "ServiceRequest.status", id="value-set"),
        pytest.param(
            _with(subject={"reference": "Organization/1"}),
            "value",
            "ServiceRequest.subject.reference",
            id="reference-target",
        ),
        pytest.param(
            _with(doNotPerform="true"), "structure", "ServiceRequest.doNotPerform", id="bool-coercion"
        ),
        pytest.param(
            _with(subject='{"reference": "Patient/1"}'),
            "structure",
            "ServiceRequest.subject",
            id="json-string",
        ),
        pytest.param(_with(subject=None), "structure", "ServiceRequest.subject", id="null-required"),
        pytest.param(_with(subject={}), "structure", "ServiceRequest.subject", id="empty-object"),
        pytest.param(
            _with(resource_type="Patient"), "structure", "ServiceRequest.resource_type", id="python-name"
        ),
        pytest.param(
            _with(instantiatesUri=["http://a", None]),
            "structure",
            "ServiceRequest.instantiatesUri[1]",
            id="unpaired-null",
        ),
    ],
)
def test_gaps_in_r4b_are_closed_here(data: dict[str, Any], code: str, expression: str) -> None:
    """R4B accepts each of these; validate_resource does not (documented in the module docstring)."""
    assert _r4b_accepts(data)
    with pytest.raises(FhirValidationError) as caught:
        validate_resource(data, expected_type="ServiceRequest")
    assert (code, expression) == (caught.value.code, caught.value.expression)


def test_r4b_enforces_required_elements_itself() -> None:
    """status, intent and subject are required by the R4B model (so their issues come from it)."""
    for element in ("status", "intent", "subject"):
        assert not _r4b_accepts(_with(**{element: ...}))


def test_r4b_crashes_on_an_unknown_contained_type_and_we_do_not() -> None:
    """R4B raises KeyError (a 500 waiting to happen) where we answer not-supported."""
    data = _with(contained=[{"resourceType": "MedicinalProduct"}])
    with pytest.raises(KeyError):
        get_fhir_model_class("ServiceRequest").model_validate(data)
    with pytest.raises(FhirValidationError) as caught:
        validate_resource(data, expected_type="ServiceRequest")
    assert "not-supported" == caught.value.code


# --- the allow-list -----------------------------------------------------------------------------


def test_allow_list_is_r4_and_matches_what_r4b_can_validate() -> None:
    """146 R4 types; exactly those 18 that R4B dropped lack a model; R4B additions are not allowed."""
    assert 146 == len(R4_RESOURCE_TYPES)
    assert R4_TYPES_WITHOUT_R4B_MODEL <= R4_RESOURCE_TYPES
    without_model = set()
    for name in R4_RESOURCE_TYPES:
        try:
            get_fhir_model_class(name)
        except (ValueError, KeyError, AttributeError):
            without_model.add(name)
    assert set(R4_TYPES_WITHOUT_R4B_MODEL) == without_model
    for r4b_only in ("SubscriptionTopic", "SubscriptionStatus", "Citation", "Ingredient", "NutritionProduct"):
        assert r4b_only not in R4_RESOURCE_TYPES
        assert model_class(r4b_only) is None
    assert model_class("ServiceRequest") is get_fhir_model_class("ServiceRequest")


# --- FHIRPath translation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loc", "expected"),
    [
        ((), "ServiceRequest"),
        (("status",), "ServiceRequest.status"),
        (("code", "coding", 0, "system"), "ServiceRequest.code.coding[0].system"),
        (("subject", "root"), "ServiceRequest.subject"),
        (("category", 2), "ServiceRequest.category[2]"),
        (("_status", "extension", 0, "url"), "ServiceRequest.status.extension[0].url"),
        (("occurrenceDateTime",), "ServiceRequest.occurrence.ofType(dateTime)"),
        (("occurrencePeriod", "start"), "ServiceRequest.occurrence.ofType(Period).start"),
        (("_occurrenceDateTime", "id"), "ServiceRequest.occurrence.ofType(dateTime).id"),
        (
            ("extension", 0, "valueCodeableConcept", "text"),
            "ServiceRequest.extension[0].value.ofType(CodeableConcept).text",
        ),
        (("subject", "function-after[validate(), str]", "reference"), "ServiceRequest.subject.reference"),
        (("unknownThing",), "ServiceRequest.unknownThing"),
    ],
)
def test_fhirpath_from_pydantic_loc(loc: tuple[str | int, ...], expected: str) -> None:
    """Indexes become [n], primitive extensions and choice types are named as FHIRPath does, internals go."""
    assert expected == fhirpath_from_loc("ServiceRequest", loc)


def test_fhirpath_resolves_contained_resource_types_from_the_data() -> None:
    """Inside contained[n] the path follows that resource's own model (its choice elements)."""
    data = {"contained": [{"resourceType": "Patient", "deceasedBoolean": True}]}
    assert "ServiceRequest.contained[0].deceased.ofType(boolean)" == fhirpath_from_loc(
        "ServiceRequest", ("contained", 0, "deceasedBoolean"), data=data
    )
    assert "ServiceRequest.contained[0].deceasedBoolean" == fhirpath_from_loc(
        "ServiceRequest", ("contained", 0, "deceasedBoolean")
    )


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("Patient/1", "Patient"),
        ("Patient/1/_history/2", "Patient"),
        ("https://ehr.example/fhir/Group/abc-1", "Group"),
        ("#p1", None),
        ("urn:uuid:6f1c0e7a-5b0f-4d55-9a53-6c1a2f0c4e11", None),
        ("Patient", None),
    ],
)
def test_reference_type(reference: str, expected: str | None) -> None:
    """Typed literal references give their type; contained, urn and malformed ones give None."""
    assert expected == reference_type(reference)
