"""Required bindings that ``fhir.resources`` truncates are checked against the full R4 value sets."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest
from pydantic import BaseModel

from hub.adapters import fhir_validation
from hub.adapters.fhir_validation import FhirValidationError, validate_resource


def _truncated_bindings() -> set[tuple[str, str]]:
    package = importlib.import_module("fhir.resources.R4B")
    found: set[tuple[str, str]] = set()
    for module_info in pkgutil.iter_modules(package.__path__):
        try:
            module = importlib.import_module(f"fhir.resources.R4B.{module_info.name}")
        except ImportError:  # pragma: no cover - helper modules without models
            continue
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == module.__name__:
                for name, info in value.model_fields.items():
                    extra = info.json_schema_extra
                    codes = extra.get("enum_values") if isinstance(extra, dict) else None
                    if isinstance(codes, list) and "+" in codes:
                        found.add((value.__name__, info.alias or name))
    return found


def test_every_truncated_binding_of_the_library_is_completed_here() -> None:
    """A library upgrade that truncates another value set fails here instead of refusing valid R4."""
    assert _truncated_bindings() == set(fhir_validation._TRUNCATED_VALUE_SETS)


@pytest.mark.parametrize(
    ("resource", "valid"),
    [
        ({"resourceType": "Task", "status": "in-progress", "intent": "order"}, True),
        ({"resourceType": "Task", "status": "completed", "intent": "order"}, True),
        ({"resourceType": "Task", "status": "entered-in-error", "intent": "order"}, True),
        ({"resourceType": "Task", "status": "in-progres", "intent": "order"}, False),
        ({"resourceType": "Encounter", "status": "entered-in-error", "class": {"code": "IMP"}}, True),
        ({"resourceType": "Encounter", "status": "unknown", "class": {"code": "IMP"}}, True),
        ({"resourceType": "Encounter", "status": "discharged", "class": {"code": "IMP"}}, False),
        (
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"code": "IMP"},
                "statusHistory": [{"status": "onleave", "period": {"start": "2020-01-01"}}],
            },
            True,
        ),
        (
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"code": "IMP"},
                "statusHistory": [{"status": "gone", "period": {"start": "2020-01-01"}}],
            },
            False,
        ),
    ],
)
def test_codes_beyond_the_truncation_are_accepted_and_bogus_ones_refused(resource: dict[str, Any], valid: bool) -> None:
    """Valid R4 codes after the library's '+' pass; a code outside the full value set is code-invalid."""
    if valid:
        validate_resource(resource, expected_type=resource["resourceType"])
        return
    with pytest.raises(FhirValidationError) as caught:
        validate_resource(resource, expected_type=resource["resourceType"])
    assert "code-invalid" == caught.value.issues[0].code
