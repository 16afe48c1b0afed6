"""The public corpus (``$HUB_CORPUS_DIR``) end to end through the real hub on the session's Tansu broker.

Each accepted input is sent as a partner sends it - FHIR REST with fhirpy's ``AsyncFHIRClient`` (PUT
with the example's own id, transaction Bundles, reads) and with raw httpx where the exact bytes matter
(POST of the file as is, Da Vinci ``$process-message``), HL7 v2 over MLLP with python-hl7's asyncio
client - and must come out on ``hub.events``: keyed by a hub patient id, with its resource type and
event kind, its original text untouched. A refused input gets its precise error (OperationOutcome
with the element, ACK with ERR) and writes nothing to ``hub.ingress``.

Which corpus inputs are accepted and which refused follows the adapter-level tests
(``tests/adapters/test_fhir_corpus_intake.py``, ``test_hl7_corpus.py``) and ADRs 0004 and 0005:

* ``fhir-r4-core-examples``: every Task (12) and Encounter (10) accepted;
* ``sdoh-clinicalcare`` JSON: Patient, ServiceRequest and Task accepted; Condition, Goal and Procedure
  are types the hub does not serve (404 ``not-supported``; as transaction entries, 422 at the entry);
* ``davinci-alerts``: all 6 notifications accepted;
* ``hl7v2``: all 17 messages accepted (AA).

The corpus refuses nothing in the last two folders, so the refusal path over ``$process-message`` and
MLLP is shown with corpus messages changed in one field (an event code the hub does not route, a
facility nobody registered, a trigger outside A01/A03/A04/A08).
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import pytest
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

from hub.app import RunningHub, running_hub
from hub.broker.embedded import EmbeddedBroker
from tests.adapters.fhir_samples import in_own_id_space
from tests.adapters.hl7_fakes import read_ack
from tests.e2e.conftest import ADMIN_TOKEN, settings_for
from tests.e2e.corpus_intake import EventLog, SeenEvent, ingress_end, msh, send_over_mllp

pytestmark = [pytest.mark.broker, pytest.mark.corpus]

CORE = "fhir-r4-core-examples"
SDOH = "sdoh-clinicalcare/json-draft-2020-11"
DAVINCI = "davinci-alerts"
HL7V2 = "hl7v2"
SERVED = {"ServiceRequest", "Task", "Encounter", "Patient", "Organization", "Practitioner"}
ROUTED = {"ServiceRequest", "Task", "Encounter"}
ADT_KINDS = {"A01": "admit", "A03": "discharge", "A04": "registration", "A08": "encounter-update"}
SDOH_MRN = "http://hospital.smarthealthit.org|1032702"
DAVINCI_PATIENT = "http://example.org/fhir/pid|06e1f0dd-5fbe-4480-9bb4-6b54ec02d31b"
NOTIFICATION_EVENT = "http://hl7.org/fhir/us/davinci-alerts/CodeSystem/notification-event"


def hl7_samples(corpus_dir: Path) -> list[Path]:
    return sorted(p for p in (corpus_dir / HL7V2).rglob("*") if p.is_file() and p.suffix != ".md")


@dataclass
class Intake:
    """The running hub, its hospital partners (one per corpus folder, one per HL7 facility) and the
    module's reader of ``hub.events``."""

    hub: RunningHub
    http: httpx.AsyncClient
    log: EventLog
    prefix: str
    tokens: dict[str, str]
    facilities: dict[str, str]

    @property
    def fhir_base(self) -> str:
        return f"{self.hub.http_url}/fhir"

    def partner(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def fhir(self, name: str) -> AsyncFHIRClient:
        """fhirpy's async client acting as partner ``name``."""
        return AsyncFHIRClient(
            self.fhir_base, authorization=f"Bearer {self.tokens[self.partner(name)]}",
            extra_headers={"Content-Type": "application/fhir+json"},
            aiohttp_config={"timeout": aiohttp.ClientTimeout(total=30)},
        )

    async def post(self, name: str, path: str, body: bytes) -> httpx.Response:
        """POST ``body`` byte for byte as partner ``name``."""
        return await self.http.post(f"/fhir/{path}", content=body, headers={
            "Authorization": f"Bearer {self.tokens[self.partner(name)]}", "Content-Type": "application/fhir+json"})


@pytest.fixture(scope="module")
async def intake(
    corpus_dir: Path, tansu: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Intake]:
    """One hub for the module, with every HL7 v2 sending facility of the corpus mapped to a hospital."""
    prefix = f"c{uuid.uuid4().hex[:8]}"
    facility_keys = sorted({msh(path.read_bytes()).facility for path in hl7_samples(corpus_dir)})
    facilities = {key: f"{prefix}-hl7-{n}" for n, key in enumerate(facility_keys)}
    settings = settings_for(tansu.bootstrap, tmp_path_factory.mktemp("intake"), mllp_facilities=facilities)
    async with (
        running_hub(settings) as hub,
        httpx.AsyncClient(base_url=hub.http_url or "", timeout=30) as http,
        EventLog(hub.bootstrap) as log,
    ):
        tokens: dict[str, str] = {}
        for partner_id in [f"{prefix}-{name}" for name in ("core", "sdoh", "davinci")] + sorted(facilities.values()):
            answer = await http.post("/admin/v1/partners", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, json={
                "id": partner_id, "kind": "hospital", "name": partner_id, "organization": f"Organization/{partner_id}",
            })
            assert 201 == answer.status_code, answer.text
            tokens[partner_id] = answer.json()["token"]
        yield Intake(hub=hub, http=http, log=log, prefix=prefix, tokens=tokens, facilities=facilities)


def assert_keyed_by_hub_patient(seen: SeenEvent, what: str) -> str:
    """The record's key and ``ce_subject`` are the hub patient id the normalize stage filled in."""
    hub_patient_id = seen.event.facts.hub_patient_id
    assert hub_patient_id is not None, what
    assert hub_patient_id.startswith("hp-"), what
    assert (hub_patient_id.encode(), f"Patient/{hub_patient_id}") == (seen.key, seen.headers["ce_subject"]), what
    return hub_patient_id


def entry_of(expression: str) -> str:
    """``Bundle.entry[n]`` of a FHIRPath into a Bundle entry (the whole expression otherwise)."""
    found = re.match(r"Bundle\.entry\[\d+\]", expression)
    return found.group(0) if found else expression


def focused_resource(message: dict[str, Any]) -> dict[str, Any]:
    """The entry of a message Bundle that its MessageHeader's one ``focus`` names."""
    [focus] = message["entry"][0]["resource"]["focus"]
    for entry in message["entry"]:
        resource: dict[str, Any] = entry["resource"]
        if focus["reference"] in (entry.get("fullUrl"), f"{resource['resourceType']}/{resource.get('id')}"):
            return resource
    raise AssertionError(f"the focus {focus['reference']} names no entry")


def transaction(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A transaction Bundle that PUTs each resource under its own id (so references between them hold)."""
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources
    ]}


def outcome_of(text: str) -> dict[str, Any]:
    """The OperationOutcome a refused request got (fhirpy's exception text)."""
    outcome: dict[str, Any] = orjson.loads(text)
    assert "OperationOutcome" == outcome["resourceType"], text
    return outcome


# --- FHIR R4 core examples: every Task and Encounter ------------------------------------------------


async def test_every_core_task_and_encounter_reaches_hub_events_posted_as_is_and_put_by_fhirpy(
    intake: Intake, corpus_dir: Path
) -> None:
    """Each example twice: POST of the file's bytes (server id; the event carries the bytes) and
    fhirpy's ``save()`` (PUT with the example's id moved into the partner's own id space, update-as-create).
    44 events, each its own kind."""
    paths = sorted((corpus_dir / CORE).glob("Task-*.json")) + sorted((corpus_dir / CORE).glob("Encounter-*.json"))
    assert {"Task": 12, "Encounter": 10} == Counter(p.name.split("-")[0] for p in paths)
    client = intake.fhir("core")
    expected: dict[tuple[str, str], tuple[Path, bytes | None]] = {}  # (type, id) -> file, bytes if sent as is
    for path in paths:
        raw = path.read_bytes()
        data = orjson.loads(raw)
        resource_type = data["resourceType"]
        answer = await intake.post("core", resource_type, raw)
        assert 201 == answer.status_code, f"{path.name}: {answer.text}"
        expected[(resource_type, answer.headers["location"].split("/")[3])] = (path, raw)

        [data] = in_own_id_space([data], intake.partner("core"))
        saved = await client.resource(resource_type, **data).save()
        assert (data["id"], "1") == (saved.id, saved["meta"]["versionId"]), path.name
        expected[(resource_type, data["id"])] = (path, None)

    seen = await intake.log.wait_for({intake.partner("core")}, expect=len(expected))
    assert [] == intake.log.dead_letters_of({intake.partner("core")})
    by_resource = {(s.event.facts.resource_type, s.event.facts.resource_id or ""): s for s in seen}
    assert sorted(expected) == sorted(by_resource), "missing or unexpected events"
    assert len(expected) == len(seen), "an input produced more than one event"
    for (resource_type, resource_id), (path, sent) in expected.items():
        event = by_resource[(resource_type, resource_id)]
        what = f"{path.name} ({'PUT' if sent is None else 'POST'})"
        data = orjson.loads(path.read_bytes())
        if sent is None:
            [data] = in_own_id_space([data], intake.partner("core"))
        assert_keyed_by_hub_patient(event, what)
        if sent is not None:
            assert (sent.decode("utf-8"), resource_id) == (event.event.body, event.headers["ce_id"]), what
        else:
            assert data == orjson.loads(event.event.body), what
        facts = event.event.facts
        if resource_type == "Encounter":
            kind = "discharge" if data["status"] == "finished" else "admit"
            assert (kind, f"org.carehub.encounter.{kind}") == (facts.event_kind, event.headers["ce_type"]), what
        else:
            focus = (data.get("focus") or {}).get("reference", "")
            kind = "referral-task" if focus.startswith("ServiceRequest/") else "task"
            assert (kind, "org.carehub.task.submitted") == (facts.event_kind, event.headers["ce_type"]), what
            assert ("for" in data) != (":unidentified|" in (facts.patient_source or "")), what


# --- Gravity SDOH Clinical Care (JSON) ---------------------------------------------------------------


async def test_sdoh_json_served_types_reach_hub_events_and_the_others_are_refused_writing_nothing(
    intake: Intake, corpus_dir: Path
) -> None:
    """Condition, Goal, Procedure: 404 ``not-supported`` alone and 422 at their entry in a transaction,
    nothing on hub.ingress. Patient, ServiceRequest, Task: as Gravity sends a referral (one transaction
    of PUTs with ids in its own id space, through fhirpy) and each POSTed; the four events are keyed by
    one hub patient, the one the Patient's MRN names."""
    paths = sorted((corpus_dir / SDOH).glob("*/*.json"))
    resources = {path: orjson.loads(path.read_bytes()) for path in paths}
    served = [p for p in paths if resources[p]["resourceType"] in SERVED]
    refused = [p for p in paths if p not in served]
    assert ({"Patient", "ServiceRequest", "Task"}, {"Condition", "Goal", "Procedure"}) == (
        {resources[p]["resourceType"] for p in served}, {resources[p]["resourceType"] for p in refused})
    client = intake.fhir("sdoh")
    sender = intake.partner("sdoh")

    before = await ingress_end(intake.hub.bootstrap)
    for path in refused:
        data = resources[path]
        with pytest.raises(ResourceNotFound) as not_served:
            await client.resource(data["resourceType"], **data).save()
        [issue] = outcome_of(str(not_served.value))["issue"]
        assert ("error", "not-supported") == (issue["severity"], issue["code"]), path.name
    with pytest.raises(OperationOutcome) as in_bundle:
        await client.execute("", method="post", data=transaction([resources[p] for p in paths]))
    issues = in_bundle.value.resource["issue"]
    refused_entries = {f"Bundle.entry[{paths.index(p)}]" for p in refused}
    assert issues, in_bundle.value
    assert all(issue["code"] == "not-supported" for issue in issues), issues
    named = {entry_of(expression) for issue in issues for expression in issue.get("expression", ())}
    assert refused_entries == named, issues
    assert before == await ingress_end(intake.hub.bootstrap), "a refused input reached hub.ingress"

    mine = dict(zip(served, in_own_id_space([resources[p] for p in served], sender), strict=True))
    response = await client.execute("", method="post", data=transaction([mine[p] for p in served]))
    assert ("transaction-response", ["201 Created"] * 3) == (
        response["type"], [e["response"]["status"] for e in response["entry"]])
    patient = next(mine[p] for p in served if mine[p]["resourceType"] == "Patient")
    assert patient["identifier"] == (await client.get("Patient", patient["id"]))["identifier"]

    posted: dict[str, bytes] = {}
    for path in served:
        raw = orjson.dumps(mine[path])  # references moved along with the Patient's id
        answer = await intake.post("sdoh", resources[path]["resourceType"], raw)
        assert 201 == answer.status_code, f"{path.name}: {answer.text}"
        if resources[path]["resourceType"] in ROUTED:
            posted[answer.headers["location"].split("/")[3]] = raw

    seen = await intake.log.wait_for({sender}, expect=4)
    assert [] == intake.log.dead_letters_of({sender})
    by_id = {s.event.facts.resource_id or "": s for s in seen}
    in_transaction = {mine[p]["id"]: mine[p] for p in served if mine[p]["resourceType"] in ROUTED}
    assert sorted([*in_transaction, *posted]) == sorted(by_id), "missing or unexpected events"
    assert 4 == len(seen), "an input produced more than one event"
    hub_patients = {assert_keyed_by_hub_patient(s, str(s.event.facts.resource_id)) for s in seen}
    assert 1 == len(hub_patients), "the referral's events are not keyed by one hub patient"
    for resource_id, data in in_transaction.items():
        facts = by_id[resource_id].event.facts
        kind = "referral" if data["resourceType"] == "ServiceRequest" else "referral-task"
        assert (data["resourceType"], kind, SDOH_MRN) == (facts.resource_type, facts.event_kind, facts.patient_source)
        body = orjson.loads(by_id[resource_id].event.body)
        assert {k: v for k, v in data.items() if k != "meta"} == {k: v for k, v in body.items() if k != "meta"}
    for resource_id, raw in posted.items():
        event = by_id[resource_id]
        assert (raw.decode("utf-8"), resource_id) == (event.event.body, event.headers["ce_id"])
        kind = "referral" if event.event.facts.resource_type == "ServiceRequest" else "referral-task"
        assert kind == event.event.facts.event_kind


# --- Da Vinci Unsolicited Notifications --------------------------------------------------------------


async def test_every_davinci_notification_reaches_hub_events_as_one_encounter_event_with_the_bundle(
    intake: Intake, corpus_dir: Path
) -> None:
    """``$process-message`` of each Bundle's bytes: 200 with a response message; one Encounter event
    of the MessageHeader's kind, the Encounter as body, the whole Bundle byte for byte as original.
    A notification of an event the hub does not route is refused at the event code, writing nothing."""
    paths = sorted((corpus_dir / DAVINCI).glob("*.json"))
    assert 6 == len(paths)
    sender = intake.partner("davinci")
    for path in paths:
        raw = path.read_bytes()
        answer = await intake.post("davinci", "$process-message", raw)
        assert 200 == answer.status_code, f"{path.name}: {answer.text}"
        header = answer.json()["entry"][0]["resource"]
        assert {"identifier": orjson.loads(raw)["entry"][0]["resource"]["id"], "code": "ok"} == header["response"]

    seen = await intake.log.wait_for({sender}, expect=len(paths))
    assert [] == intake.log.dead_letters_of({sender})
    by_original = {s.event.original: s for s in seen}
    assert len(paths) == len(seen), "a notification produced more or fewer than one event"
    for path in paths:
        raw = path.read_bytes()
        bundle = orjson.loads(raw)
        event = by_original.get(raw.decode("utf-8"))
        assert event is not None, f"{path.name}: no event carries the Bundle byte for byte"
        kind = path.name.split("-")[0]
        facts = event.event.facts
        assert ("Encounter", kind, f"org.carehub.encounter.{kind}", "application/fhir+json") == (
            facts.resource_type, facts.event_kind, event.headers["ce_type"], event.event.original_media_type), path.name
        assert focused_resource(bundle) == orjson.loads(event.event.body), path.name
        assert DAVINCI_PATIENT == facts.patient_source, path.name
    assert 1 == len({assert_keyed_by_hub_patient(s, str(s.event.original)[:60]) for s in seen}), "one patient"

    changed = orjson.loads(paths[0].read_bytes())
    changed["entry"][0]["resource"]["eventCoding"] = {"system": NOTIFICATION_EVENT, "code": "notification-lab"}
    before = await ingress_end(intake.hub.bootstrap)
    answer = await intake.post("davinci", "$process-message", orjson.dumps(changed))
    [issue] = answer.json()["issue"]
    assert (422, "not-supported", ["Bundle.entry[0].resource.event.ofType(Coding)"]) == (
        answer.status_code, issue["code"], issue["expression"])
    assert before == await ingress_end(intake.hub.bootstrap), "a refused notification reached hub.ingress"


# --- HL7 v2 ADT over MLLP ----------------------------------------------------------------------------


async def test_every_hl7v2_sample_is_acknowledged_aa_over_mllp_and_reaches_hub_events(
    intake: Intake, corpus_dir: Path
) -> None:
    """All 17 samples on one connection, each from the hospital registered for its MSH-4: AA echoing
    MSH-10, then one Encounter event per message with the kind of its trigger and the message as sent
    (byte order mark and LF line ends included). A sample from an unregistered facility, and one with
    a trigger the hub does not take, are refused AR with ERR at the field and write nothing."""
    paths = hl7_samples(corpus_dir)
    assert 17 == len(paths)
    messages = [path.read_bytes() for path in paths]
    assert intake.hub.mllp_port
    answers = await send_over_mllp(intake.hub.mllp_port, messages)

    for path, message, answer in zip(paths, messages, answers, strict=True):
        ack = read_ack(answer)
        assert ("AA", msh(message).control_id, "") == (ack.code, ack.control_id, ack.error_code), path.name
    senders = set(intake.facilities.values())
    seen = await intake.log.wait_for(senders, expect=len(messages))
    assert [] == intake.log.dead_letters_of(senders)
    assert len(messages) == len(seen), "a message produced more or fewer than one event"
    by_original = {s.event.original: s for s in seen}
    for path, message in zip(paths, messages, strict=True):
        header = msh(message)
        event = by_original.get(message.decode("utf-8"))
        assert event is not None, f"{path.name}: no event carries the message as sent"
        facts = event.event.facts
        kind = ADT_KINDS[header.trigger]
        assert (intake.facilities[header.facility], "Encounter", kind, f"org.carehub.encounter.{kind}") == (
            facts.sender, facts.resource_type, facts.event_kind, event.headers["ce_type"]), path.name
        encounter = orjson.loads(event.event.body)
        identifier = encounter["subject"]["identifier"]
        assert ("Encounter", f"{identifier['system']}|{identifier['value']}") == (
            encounter["resourceType"], facts.patient_source), path.name
        assert_keyed_by_hub_patient(event, path.name)

    first = messages[0]
    header = msh(first)
    unregistered = first.replace(f"|{header.facility}|".encode(), b"|NOBODY-REGISTERED-THIS|", 1)
    other_trigger = first.replace(f"^{header.trigger}".encode(), b"^A02", 1)
    assert first not in (unregistered, other_trigger)
    before = await ingress_end(intake.hub.bootstrap)
    refusals = [read_ack(a) for a in await send_over_mllp(intake.hub.mllp_port, [unregistered, other_trigger])]
    assert [("AR", header.control_id, "103", "MSH-4"), ("AR", header.control_id, "201", "MSH-9.2")] == [
        (a.code, a.control_id, a.error_code, a.location) for a in refusals]
    assert before == await ingress_end(intake.hub.bootstrap), "a refused message reached hub.ingress"
