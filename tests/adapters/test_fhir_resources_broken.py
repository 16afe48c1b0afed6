"""Create, update and read of the six types: every broken request gets its precise answer and writes nothing.

A table of broken requests (status, issue code, FHIRPath), then a property test over thousands of
mutated Task, Encounter and Patient bodies posted and put: never a 5xx, nothing written on a 4xx,
and a 2xx always readable afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.adapters import fhir_samples as samples
from tests.adapters.conftest import CBO_TOKEN, FHIR_JSON, HOSPITAL_TOKEN, auth
from tests.adapters.fuzzing import ReusableEdge, assert_operation_outcome, mutations

LIMIT = 64 * 1024
TASK = samples.dumps(samples.task())


def changed(make: Any, **changes: Any) -> bytes:
    """A sample with ``changes`` (``...`` deletes the key), as JSON bytes."""
    data = make()
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return orjson.dumps(data)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 4096):
        yield data[start : start + 4096]


@dataclass
class Broken:
    """One broken request and the exact answer it must get."""

    status: int
    code: str
    expression: str | None = None
    method: str = "POST"
    path: str = "/fhir/Task"
    body: bytes = TASK
    headers: dict[str, str] = field(default_factory=auth)
    broker_down: bool = False
    store_down: bool = False
    stream: bool = False


def p(case: Broken, name: str) -> Any:
    """A named table row."""
    return pytest.param(case, id=name)


HUGE = changed(samples.task, note=[{"text": "x" * (LIMIT + 10)}])
NESTED = changed(samples.task, extension=[{"url": "http://x", "valueString": "y"}]).replace(
    b'"valueString":"y"', b'"valueString":' + b'{"a":' * 70 + b"1" + b"}" * 70
)
PUT, TASK_URL = "PUT", "/fhir/Task/hosp-a.task-1"

BROKEN: list[Any] = [
    # who is calling
    p(Broken(401, "login", headers={"Content-Type": FHIR_JSON}), "no-token"),
    p(Broken(401, "unknown", headers=auth("nope")), "unknown-token"),
    p(Broken(403, "forbidden", headers=auth(CBO_TOKEN)), "cbo-creates"),
    p(Broken(403, "forbidden", method="PUT", path="/fhir/Patient/p1", body=changed(samples.patient, id="p1"),
             headers=auth(CBO_TOKEN)), "cbo-puts-a-patient"),
    # where
    p(Broken(404, "not-supported", path="/fhir/Condition"), "unsupported-type"),
    p(Broken(404, "not-supported", path="/fhir/Foo"), "unknown-type"),
    p(Broken(404, "not-supported", method="PUT", path="/fhir/Condition/c1"), "put-unsupported-type"),
    # what was sent
    p(Broken(415, "not-supported", headers=auth(content_type="text/plain")), "text-plain"),
    p(Broken(415, "not-supported", headers=auth(content_type="application/fhir+xml")), "xml"),
    p(Broken(415, "not-supported", headers=auth(content_type="application/fhir+json; fhirVersion=3.0")), "stu3"),
    p(Broken(415, "not-supported", headers=auth(content_type="application/fhir+json; fhirVersion=5.0")), "r5"),
    p(Broken(415, "not-supported", headers=auth(content_type="application/json; charset=latin-1")), "latin-1"),
    p(Broken(413, "too-long", body=HUGE), "huge"),
    p(Broken(413, "too-long", body=HUGE, stream=True), "huge-streamed"),
    p(Broken(400, "structure", body=b""), "empty"),
    p(Broken(400, "structure", body=TASK[:-12]), "truncated"),
    p(Broken(400, "structure", body=TASK.replace(b"requested", b"r\xe9quested")), "bad-utf8"),
    p(Broken(400, "structure", body=b"\xef\xbb\xbf" + TASK), "byte-order-mark"),
    p(Broken(400, "structure", body=b"[" + TASK + b"]"), "array"),
    p(Broken(400, "structure", body=TASK.replace(b'"status":', b'"status":"draft","status":')), "duplicate-key"),
    p(Broken(400, "too-costly", body=NESTED), "deeply-nested"),
    # not a valid resource
    p(Broken(422, "invalid", "resourceType", path="/fhir/Encounter"), "task-posted-as-encounter"),
    p(Broken(422, "required", "resourceType", body=changed(samples.task, resourceType=...)), "no-resourceType"),
    p(Broken(422, "required", "Task.status", body=changed(samples.task, status=...)), "task-no-status"),
    p(Broken(422, "code-invalid", "Task.status", body=changed(samples.task, status="doing")), "task-bad-status"),
    p(Broken(422, "structure", "Task.intent", body=changed(samples.task, intent=7)), "task-intent-number"),
    p(Broken(422, "structure", "Task.for", body=changed(samples.task, **{"for": "Patient/1"})), "task-for-string"),
    p(Broken(422, "structure", "Task.focus", body=changed(samples.task, focus=[{"reference": "X/1"}])),
      "task-focus-array"),
    p(Broken(422, "value", "Task.authoredOn", body=changed(samples.task, authoredOn="yesterday")), "task-bad-date"),
    p(Broken(422, "required", "Task.contained[0].resourceType",
             body=changed(samples.task, contained=[{"id": "x"}])), "contained-without-type"),
    p(Broken(422, "value", "Task.for",
             body=changed(samples.task, **{"for": {"identifier": {"system": "urn:x", "value": "v" * 600}}})),
      "patient-identifier-too-long"),
    p(Broken(422, "required", "Encounter.class", path="/fhir/Encounter",
             body=changed(samples.encounter, **{"class": ...})), "encounter-no-class"),
    p(Broken(422, "code-invalid", "Encounter.status", path="/fhir/Encounter",
             body=changed(samples.encounter, status="discharged")), "encounter-bad-status"),
    p(Broken(422, "value", "Encounter.period.start", path="/fhir/Encounter",
             body=changed(samples.encounter, period={"start": "2025-13-01"})), "encounter-bad-period"),
    p(Broken(422, "value", "Encounter.subject.reference", path="/fhir/Encounter",
             body=changed(samples.encounter, subject={"reference": "Organization/1"})), "encounter-subject-org"),
    p(Broken(422, "code-invalid", "Patient.gender", path="/fhir/Patient",
             body=changed(samples.patient, gender="f")), "patient-bad-gender"),
    p(Broken(422, "structure", "Patient.identifier[0].value", path="/fhir/Patient",
             body=changed(samples.patient, identifier=[{"system": "urn:x", "value": None}])), "patient-null"),
    p(Broken(422, "structure", "Organization.nmae", path="/fhir/Organization",
             body=changed(samples.organization, nmae="typo")), "organization-typo"),
    p(Broken(422, "structure", "Practitioner.name", path="/fhir/Practitioner",
             body=changed(samples.practitioner, name={"family": "Water"})), "practitioner-name-not-array"),
    # conditional create
    p(Broken(400, "not-supported", headers={**auth(), "If-None-Exist": "name=Doe"}), "if-none-exist-by-name"),
    p(Broken(400, "not-supported", headers={**auth(), "If-None-Exist": "identifier="}), "if-none-exist-empty"),
    p(Broken(400, "invalid", headers={**auth(), "If-None-Exist": "identifier=urn:x|"}), "if-none-exist-no-value"),
    p(Broken(400, "not-supported", headers={**auth(), "If-None-Exist": "identifier=a&identifier=b"}),
      "if-none-exist-two"),
    # update
    p(Broken(400, "invalid", "Task.id", body=changed(samples.task, id="task-2"), method=PUT, path=TASK_URL),
      "put-id-mismatch"),
    p(Broken(400, "required", "Task.id", body=changed(samples.task, id=...), method=PUT, path=TASK_URL),
      "put-without-id"),
    p(Broken(400, "invalid", "Task.id", body=changed(samples.task, id=7), method=PUT, path=TASK_URL),
      "put-id-number"),
    p(Broken(400, "invalid", method="PUT", path="/fhir/Task/bad%20id"), "put-bad-url-id"),
    p(Broken(400, "invalid", method="PUT", path="/fhir/Task/" + "x" * 65), "put-url-id-too-long"),
    p(Broken(400, "invalid", headers={**auth(), "If-Match": "yesterday"}, method=PUT, path=TASK_URL),
      "if-match-garbage"),
    p(Broken(412, "conflict", headers={**auth(), "If-Match": 'W/"1"'}, method=PUT, path=TASK_URL),
      "if-match-on-nothing"),
    # reads
    p(Broken(404, "not-found", method="GET", path="/fhir/Task/nothing", body=b""), "read-unknown"),
    p(Broken(404, "not-found", method="GET", path="/fhir/Task/bad%20id", body=b""), "read-bad-id"),
    p(Broken(404, "not-found", method="GET", path="/fhir/Task/t/_history/abc", body=b""), "vread-bad-version"),
    p(Broken(404, "not-found", method="GET", path="/fhir/Task/t/_history/0", body=b""), "vread-zero"),
    p(Broken(404, "not-supported", method="GET", path="/fhir/Foo/1", body=b""), "read-unknown-type"),
    p(Broken(401, "login", method="GET", path="/fhir/Task/t", body=b"", headers={}), "read-without-token"),
    # the hub's own troubles
    p(Broken(503, "transient", broker_down=True), "broker-down"),
    p(Broken(503, "transient", store_down=True), "store-down"),
]


@pytest.fixture(scope="module")
def shared() -> ReusableEdge:
    """One app for the whole module (reset before each case)."""
    return ReusableEdge(max_body_bytes=LIMIT)


@pytest.mark.parametrize("case", BROKEN)
async def test_each_broken_request_gets_its_precise_outcome_and_writes_nothing(
    shared: ReusableEdge, case: Broken
) -> None:
    shared.reset()
    shared.ingress.fail = case.broker_down
    shared.store.fail_saves = 1 if case.store_down else 0
    async with shared.client() as client:
        content: Any = _chunks(case.body) if case.stream else case.body
        response = await client.request(case.method, case.path, content=content, headers=case.headers)
    shared.store.fail_saves = 0

    assert case.status == response.status_code, response.text
    assert_operation_outcome(response)
    first = response.json()["issue"][0]
    assert (case.code, [case.expression] if case.expression else None) == (first["code"], first.get("expression"))
    if case.store_down:  # broker first: the event went out, nothing was stored, the retry re-sends the same ce_id
        assert 1 == len(shared.ingress.written)
        assert [] == shared.store.all_versions()
    else:
        assert shared.wrote_nothing()


def test_the_table_is_broad() -> None:
    """At least 30 broken requests (the issue asks for 30 per endpoint family)."""
    assert len(BROKEN) >= 30


# --- property: thousands of mutated bodies ---------------------------------------------------------

TARGETS = [
    ("POST", "/fhir/Task", samples.task()),
    ("PUT", "/fhir/Task/hosp-a.task-1", samples.task()),
    ("POST", "/fhir/Encounter", samples.encounter()),
    ("PUT", "/fhir/Encounter/hosp-a.enc-1", samples.encounter()),
    ("POST", "/fhir/Patient", samples.patient()),
]
requests = st.one_of(
    *(st.tuples(st.just(method), st.just(path), mutations(document)) for method, path, document in TARGETS)
)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests)
async def test_mutated_resources_never_cause_a_5xx_and_4xx_write_nothing(
    shared: ReusableEdge, request: tuple[str, str, bytes]
) -> None:
    """Whatever the body: a 2xx wrote what it says and is readable; a 4xx is an OperationOutcome and wrote nothing."""
    method, path, body = request
    shared.reset()
    async with shared.client() as client:
        response = await client.request(method, path, content=body, headers=auth(HOSPITAL_TOKEN))
        assert response.status_code < 500, response.text
        if response.status_code < 300:
            assert response.status_code in {200, 201}
            read = await client.get(response.headers["location"].split("/_history/")[0], headers=auth())
            assert (200, response.json()) == (read.status_code, read.json())
            assert (0 if "Patient" in path else 1) == len(shared.ingress.written)
            return
    assert response.status_code in {400, 409, 412, 413, 422}, response.text
    assert_operation_outcome(response)
    assert shared.wrote_nothing()
