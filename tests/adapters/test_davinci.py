"""Da Vinci Unsolicited Notifications at ``POST /fhir/$process-message``.

One Encounter-shaped event per notification (event kind from the MessageHeader, the Encounter JSON as
body, the whole Bundle as the original), the patient named by its identifier, the answer a response
message; then a table of broken notifications and a property test over thousands of mutated ones.
The IG's own examples are in ``test_fhir_corpus_intake.py``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.adapters.davinci import read_notification
from hub.events import FHIR_JSON, decode
from tests.adapters import fhir_samples as samples
from tests.adapters.conftest import CBO_TOKEN, Edge, auth
from tests.adapters.fuzzing import ReusableEdge, assert_operation_outcome, mutations

PATH = "/fhir/$process-message"
MRN = f"{samples.MRN_SYSTEM}|MRN-1"


@pytest.mark.parametrize(
    ("event", "kind"),
    [("notification-admit", "admit"), ("notification-discharge", "discharge"), ("notification-transfer", "transfer")],
)
async def test_a_notification_becomes_one_encounter_event_keyed_by_the_patients_identifier(
    edge: Edge, event: str, kind: str
) -> None:
    posted = samples.dumps(samples.notification(event))
    response = await edge.client.post(PATH, content=posted, headers=auth())
    assert 200 == response.status_code, response.text

    [(key, value, headers)] = edge.ingress.written
    hub_event = decode(value)
    encounter = samples.notification(event)["entry"][1]["resource"]
    assert (kind, "Encounter", MRN, f"{samples.ACT_CODE}|EMER") == (
        hub_event.facts.event_kind, hub_event.facts.resource_type, hub_event.facts.patient_source,
        hub_event.facts.encounter_class,
    )
    assert encounter == orjson.loads(hub_event.body)
    assert (posted.decode(), FHIR_JSON) == (hub_event.original, hub_event.original_media_type)
    assert (f"org.carehub.encounter.{kind}", "/partners/hosp-a") == (headers["ce_type"], headers["ce_source"])
    assert f"hosp-a|{MRN}".encode() == key


async def test_the_answer_is_a_response_message_saying_ok_to_the_notification(edge: Edge) -> None:
    response = await edge.client.post(PATH, content=samples.dumps(samples.notification()), headers=auth())
    answer = response.json()
    Bundle.model_validate(answer)
    header = answer["entry"][0]["resource"]
    assert ("message", "MessageHeader") == (answer["type"], header["resourceType"])
    assert {"identifier": "aaaaaaaa-0000-4000-8000-000000000001", "code": "ok"} == header["response"]
    assert {"system": samples.NOTIFICATION_EVENT, "code": "notification-admit"} == header["eventCoding"]
    assert [{"endpoint": "https://general.example/fhir"}] == header["destination"]
    assert header["source"]["endpoint"].endswith("/fhir/$process-message")


async def test_a_retransmitted_notification_keeps_its_event_id_and_its_answer(edge: Edge) -> None:
    posted = samples.dumps(samples.notification())
    first = await edge.client.post(PATH, content=posted, headers=auth())
    again = await edge.client.post(PATH, content=posted, headers=auth())
    assert edge.ingress.written[0][2]["ce_id"] == edge.ingress.written[1][2]["ce_id"]
    assert first.json()["id"] == again.json()["id"]


async def test_the_patients_identifiers_are_linked_but_not_its_ssn(edge: Edge) -> None:
    await edge.client.post(PATH, content=samples.dumps(samples.notification()), headers=auth())
    assert [(MRN,)] == edge.store.linked
    assert [] == edge.store.all_versions()


async def test_a_notification_whose_patient_has_no_identifier_keys_on_the_reference() -> None:
    bundle = samples.notification()
    del bundle["entry"][2]["resource"]["identifier"]
    body = orjson.dumps(bundle)
    notification = read_notification(body, orjson.loads(body), sender="hosp-a")
    [record] = notification.events
    assert samples.PATIENT_URL == decode(record.value).facts.patient_source
    assert () == notification.patient_groups


async def test_the_event_kind_comes_from_the_message_not_the_encounter_status(edge: Edge) -> None:
    """The IG's admit example carries a period.end; the MessageHeader says admit, so it is an admit."""
    bundle = samples.notification()
    bundle["entry"][1]["resource"]["period"]["end"] = "2025-01-15T11:00:00Z"
    await edge.client.post(PATH, content=orjson.dumps(bundle), headers=auth())
    assert "admit" == decode(edge.ingress.written[0][1]).facts.event_kind


async def test_a_relative_focus_reference_resolves_by_type_and_id(edge: Edge) -> None:
    bundle = samples.notification()
    bundle["entry"][0]["resource"]["focus"] = [{"reference": "Encounter/aaaaaaaa-0000-4000-8000-000000000002"}]
    response = await edge.client.post(PATH, content=orjson.dumps(bundle), headers=auth())
    assert 200 == response.status_code
    assert 1 == len(edge.ingress.written)


# --- broken notifications -------------------------------------------------------------------------


def changed(change: Any) -> bytes:
    """The sample notification after ``change(bundle)``."""
    bundle = samples.notification()
    change(bundle)
    return orjson.dumps(bundle)


def header(**changes: Any) -> Any:
    """A change of the MessageHeader (``...`` deletes)."""

    def apply(bundle: dict[str, Any]) -> None:
        for key, value in changes.items():
            if value is ...:
                del bundle["entry"][0]["resource"][key]
            else:
                bundle["entry"][0]["resource"][key] = value

    return apply


def encounter(**changes: Any) -> Any:
    """A change of the Encounter entry (``...`` deletes)."""

    def apply(bundle: dict[str, Any]) -> None:
        for key, value in changes.items():
            if value is ...:
                del bundle["entry"][1]["resource"][key]
            else:
                bundle["entry"][1]["resource"][key] = value

    return apply


GOOD = samples.dumps(samples.notification())
HEADER = "Bundle.entry[0].resource"
EVENT = f"{HEADER}.event.ofType(Coding)"


@dataclass
class Broken:
    """One broken notification and the exact answer it must get."""

    status: int
    code: str
    expression: str | None = None
    body: bytes = GOOD
    headers: dict[str, str] = field(default_factory=auth)
    path: str = PATH
    broker_down: bool = False
    store_down: bool = False


def p(case: Broken, name: str) -> Any:
    """A named table row."""
    return pytest.param(case, id=name)


BROKEN: list[Any] = [
    p(Broken(401, "login", headers={"Content-Type": "application/fhir+json"}), "no-token"),
    p(Broken(401, "unknown", headers=auth("nope")), "unknown-token"),
    p(Broken(403, "forbidden", headers=auth(CBO_TOKEN)), "cbo"),
    p(Broken(400, "not-supported", path=f"{PATH}?async=true"), "async"),
    p(Broken(415, "not-supported", headers=auth(content_type="application/fhir+xml")), "xml"),
    p(Broken(415, "not-supported", headers=auth(content_type="application/fhir+json; fhirVersion=1.0")), "dstu2"),
    p(Broken(413, "too-long", body=changed(encounter(text={"status": "generated", "div": "x" * 70_000}))), "huge"),
    p(Broken(400, "structure", body=b""), "empty"),
    p(Broken(400, "structure", body=GOOD[:-40]), "truncated"),
    p(Broken(400, "structure", body=GOOD.replace(b"General", b"G\xe9n\xe9ral")), "bad-utf8"),
    p(Broken(400, "structure", body=b"\xef\xbb\xbf" + GOOD), "byte-order-mark"),
    p(Broken(400, "structure", body=GOOD.replace(b'"type":"message"', b'"type":"message","type":"message"')),
      "duplicate-key"),
    p(Broken(400, "too-costly", body=changed(encounter(extension=[{"url": "x", "valueString": "y"}])).replace(
        b'"valueString":"y"', b'"valueString":' + b'{"a":' * 70 + b"1" + b"}" * 70)), "deeply-nested"),
    p(Broken(422, "invalid", "resourceType", body=samples.dumps(samples.encounter())), "a-bare-encounter"),
    p(Broken(422, "invalid", "Bundle.type", body=changed(lambda b: b.update(type="transaction"))), "transaction"),
    p(Broken(422, "code-invalid", "Bundle.type", body=changed(lambda b: b.update(type="mesage"))), "type-typo"),
    p(Broken(422, "required", "Bundle.entry", body=changed(lambda b: b.pop("entry"))), "no-entries"),
    p(Broken(422, "required", HEADER, body=changed(lambda b: b["entry"].reverse())), "header-not-first"),
    p(Broken(422, "required", "Bundle.entry[3].resource", body=changed(lambda b: b["entry"][3].pop("resource"))),
      "entry-without-resource"),
    p(Broken(422, "required", EVENT,
             body=changed(header(eventCoding=..., eventUri="http://example.org/admit"))), "event-uri"),
    p(Broken(422, "not-supported", EVENT,
             body=changed(header(eventCoding={"system": samples.NOTIFICATION_EVENT, "code": "notification-lab"}))),
      "unknown-event"),
    p(Broken(422, "not-supported", EVENT,
             body=changed(header(eventCoding={"system": "http://terminology.hl7.org/CodeSystem/v2-0003",
                                              "code": "A01"}))), "v2-event-code"),
    p(Broken(422, "required", f"{HEADER}.source", body=changed(header(source=...))), "no-source"),
    p(Broken(422, "required", f"{HEADER}.focus", body=changed(header(focus=...))), "no-focus"),
    p(Broken(422, "required", f"{HEADER}.focus",
             body=changed(header(focus=[{"reference": samples.PATIENT_URL}]))), "focus-on-patient"),
    p(Broken(422, "required", f"{HEADER}.focus",
             body=changed(header(focus=[{"reference": "urn:uuid:00000000-0000-4000-8000-00000000dead"}]))),
      "focus-dangling"),
    p(Broken(422, "structure", f"{HEADER}.focus", body=changed(header(focus={"reference": samples.ENCOUNTER_URL}))),
      "focus-not-array"),
    p(Broken(422, "code-invalid", "Bundle.entry[1].resource.status", body=changed(encounter(status="admitted"))),
      "encounter-bad-status"),
    p(Broken(422, "required", "Bundle.entry[1].resource.class", body=changed(encounter(**{"class": ...}))),
      "encounter-no-class"),
    p(Broken(422, "value", "Bundle.entry[1].resource.period.start",
             body=changed(encounter(period={"start": "15/01/2025"}))), "encounter-bad-date"),
    p(Broken(422, "value", "Bundle.entry[1].resource.subject.reference",
             body=changed(encounter(subject={"reference": "Organization/1"}))), "encounter-subject-org"),
    p(Broken(422, "code-invalid", "Bundle.entry[2].resource.gender",
             body=changed(lambda b: b["entry"][2]["resource"].update(gender="F"))), "patient-bad-gender"),
    p(Broken(422, "not-supported", "Bundle.entry[3].resource.resourceType",
             body=changed(lambda b: b["entry"][3]["resource"].update(resourceType="Referral"))), "unknown-type"),
    p(Broken(422, "value", "Bundle.entry[1].resource.subject",
             body=changed(lambda b: b["entry"][2]["resource"].update(
                 identifier=[{"system": "urn:x", "value": "v" * 600}]))), "patient-identifier-too-long"),
    p(Broken(503, "transient", broker_down=True), "broker-down"),
    p(Broken(503, "transient", store_down=True), "store-down"),
]


@pytest.fixture(scope="module")
def shared() -> ReusableEdge:
    """One app for the module."""
    return ReusableEdge(max_body_bytes=64 * 1024)


@pytest.mark.parametrize("case", BROKEN)
async def test_each_broken_notification_gets_its_precise_outcome_and_writes_nothing(
    shared: ReusableEdge, case: Broken
) -> None:
    shared.reset()
    shared.ingress.fail = case.broker_down
    shared.store.fail_saves = 1 if case.store_down else 0
    async with shared.client() as client:
        response = await client.post(case.path, content=case.body, headers=case.headers)
    shared.store.fail_saves = 0
    assert case.status == response.status_code, response.text
    assert_operation_outcome(response)
    first = response.json()["issue"][0]
    assert (case.code, [case.expression] if case.expression else None) == (first["code"], first.get("expression"))
    if case.store_down:  # the event was acknowledged before the crosswalk failed: the retry re-sends the same ce_id
        assert 1 == len(shared.ingress.written)
    else:
        assert shared.wrote_nothing()


def test_the_table_is_broad() -> None:
    assert len(BROKEN) >= 30


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(*(mutations(samples.notification(e)) for e in ("notification-admit", "notification-discharge"))))
async def test_mutated_notifications_never_cause_a_5xx_and_4xx_write_nothing(shared: ReusableEdge, body: bytes) -> None:
    shared.reset()
    async with shared.client() as client:
        response = await client.post(PATH, content=body, headers=auth())
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        Bundle.model_validate(response.json())
        assert len(shared.ingress.written) >= 1
        assert all(decode(v).original == body.decode() for _, v, _ in shared.ingress.written)
        return
    assert response.status_code in {400, 413, 422}
    assert_operation_outcome(response)
    assert shared.wrote_nothing()


def test_the_sample_is_a_valid_notification() -> None:
    """Guard for the table: the unbroken sample is accepted (else every row would pass for the wrong reason)."""
    body = samples.dumps(copy.deepcopy(samples.notification()))
    assert 1 == len(read_notification(body, orjson.loads(body), sender="hosp-a").events)
