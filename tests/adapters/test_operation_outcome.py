"""OperationOutcome bodies and HTTP statuses for every kind of hub error."""



from __future__ import annotations

from typing import Any

import pytest
from fhir.resources.R4B.operationoutcome import OperationOutcome

from hub.adapters.fhir_validation import FhirIssue, FhirValidationError
from hub.adapters.operation_outcome import (
    AuthenticationRequired,
    Forbidden,
    PayloadTooLarge,
    PreconditionFailed,
    ResourceConflict,
    ResourceNotFound,
    UnsupportedMediaType,
    http_status_for,
    issue,
    outcome,
    outcome_for,
)
from hub.errors import (
    BrokerUnavailable,
    ConfigurationError,
    HubError,
    InvalidInput,
    NotAuthorized,
    StoreUnavailable,
)

CASES: list[Any] = [
    pytest.param(AuthenticationRequired("no token"), 401, "login", None, id="no-token"),
    pytest.param(
        AuthenticationRequired("bad token", code="unknown"), 401, "unknown", None, id="unknown-token"
    ),
    pytest.param(NotAuthorized("cbo"), 403, "forbidden", None, id="forbidden"),
    pytest.param(
        Forbidden("cbo", expression="Bundle.entry[0]"), 403, "forbidden", "Bundle.entry[0]", id="forbidden-at"
    ),
    pytest.param(ResourceNotFound("gone"), 404, "not-found", None, id="not-found"),
    pytest.param(ResourceNotFound("Condition", code="not-supported"), 404, "not-supported", None, id="no-such-type"),
    pytest.param(ResourceConflict("id taken", expression="Task.id"), 409, "conflict", "Task.id", id="conflict"),
    pytest.param(PreconditionFailed("2 matches", code="multiple-matches"), 412, "multiple-matches", None, id="matches"),
    pytest.param(PreconditionFailed("version 3 is current"), 412, "conflict", None, id="if-match"),
    pytest.param(PayloadTooLarge("big"), 413, "too-long", None, id="too-large"),
    pytest.param(UnsupportedMediaType("xml"), 415, "not-supported", None, id="media-type"),
    pytest.param(InvalidInput("not json", code="structure"), 400, "structure", None, id="unparseable"),
    pytest.param(
        FhirValidationError([FhirIssue("required", "missing", "ServiceRequest.status")]),
        422,
        "required",
        "ServiceRequest.status",
        id="validation",
    ),
    pytest.param(BrokerUnavailable("broker did not acknowledge"), 503, "transient", None, id="broker"),
    pytest.param(StoreUnavailable("db down"), 503, "transient", None, id="store"),
    pytest.param(ConfigurationError("port in use"), 500, "exception", None, id="other"),
]


@pytest.mark.parametrize(("error", "status", "code", "expression"), CASES)
def test_each_error_maps_to_status_and_a_valid_operation_outcome(
    error: HubError, status: int, code: str, expression: str | None
) -> None:
    """The status table and the first issue's code/expression; every body is a valid R4 OperationOutcome."""
    body = outcome_for(error)
    assert status == http_status_for(error)
    assert code == body["issue"][0]["code"]
    assert ([expression] if expression else None) == body["issue"][0].get("expression")
    OperationOutcome.model_validate(body)


def test_validation_error_lists_every_issue_in_order() -> None:
    """All issues of a FhirValidationError travel, in order."""
    error = FhirValidationError(
        [
            FhirIssue("required", "status missing", "ServiceRequest.status"),
            FhirIssue("code-invalid", "bad intent", "ServiceRequest.intent"),
        ]
    )
    assert [
        {
            "severity": "error",
            "code": "required",
            "diagnostics": "status missing",
            "expression": ["ServiceRequest.status"],
        },
        {
            "severity": "error",
            "code": "code-invalid",
            "diagnostics": "bad intent",
            "expression": ["ServiceRequest.intent"],
        },
    ] == outcome_for(error)["issue"]


def test_unexpected_errors_do_not_leak_their_message() -> None:
    """A non-input error's text may be internal detail; the client gets a generic message."""
    body = outcome_for(ConfigurationError("secret path /etc/carehub"))
    assert "secret" not in str(body)


def test_transient_outcome_tells_the_client_to_retry() -> None:
    """A 503 says nothing was stored and that retrying is right."""
    assert "retry" in outcome_for(BrokerUnavailable("broker did not acknowledge"))["issue"][0]["diagnostics"]


def test_outcome_needs_an_issue() -> None:
    """An OperationOutcome without issues is invalid FHIR; refuse to build one."""
    with pytest.raises(ValueError, match="at least one issue"):
        outcome([])
    assert {"severity": "warning", "code": "x", "diagnostics": "y"} == issue("x", "y", severity="warning")


def test_validation_error_needs_an_issue() -> None:
    """A FhirValidationError always says what is wrong."""
    with pytest.raises(ValueError, match="at least one issue"):
        FhirValidationError([])
