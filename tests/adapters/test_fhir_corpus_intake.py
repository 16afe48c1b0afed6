"""The public corpus (``$HUB_CORPUS_DIR``) through the HTTP edge: every ServiceRequest, Task and Encounter of
the FHIR R4 examples, the JSON of the Gravity SDOH IG, and every Da Vinci notification.

The decisions for the corpus's real-world non-conformance are in ``docs/adr/0005-fhir-rest-intake.md``;
each is pinned here:

* ``Task.status`` ``in-progress``/``completed`` (Task-example1, 4, 5, 6, fm-example6): valid R4 that
  ``fhir.resources`` refused (it truncates the value set) -> accepted;
* Tasks without ``for`` (the financial-management examples): keyed as an unidentified patient of
  their own, never linked; a Task whose focus is display text only (Task-example2) is a ``task``;
* an Encounter that is ``finished`` the first time the hub sees it is a ``discharge``;
* the SDOH draft's Task has no ``owner`` and its ServiceRequest no ``performer``: accepted (valid R4),
  they route to no one;
* the SDOH draft's Condition, Goal and Procedure: types the hub does not serve -> 404 ``not-supported``;
* Da Vinci: the admit example's Encounter has a ``period.end`` -> the event kind comes from the
  MessageHeader, not from the Encounter; the Patient's SSN is not linked in the crosswalk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle

from hub.events import decode
from tests.adapters import fhir_samples as samples
from tests.adapters.conftest import auth, make_app
from tests.adapters.resource_fakes import FakeResourceStore
from tests.fakes import FakeIngressWriter

pytestmark = pytest.mark.corpus

ROOT = Path(os.environ["HUB_CORPUS_DIR"]) if os.environ.get("HUB_CORPUS_DIR") else None
SDOH = "sdoh-clinicalcare/json-draft-2020-11"
NO_CORPUS = [pytest.param(None, marks=pytest.mark.skip(reason="HUB_CORPUS_DIR is not set"), id="no-corpus")]


def _files(*patterns: str) -> list[Any]:
    if ROOT is None:
        return NO_CORPUS
    paths = sorted(path for pattern in patterns for path in ROOT.glob(pattern))
    return [pytest.param(path, id=path.name) for path in paths] or [
        pytest.param(None, marks=pytest.mark.skip(reason=f"nothing matches {patterns}"), id="none")
    ]


CORE = _files(*(f"fhir-r4-core-examples/{t}-*.json" for t in ("ServiceRequest", "Task", "Encounter")))
SDOH_FILES = _files(f"{SDOH}/*/*.json")
DAVINCI = _files("davinci-alerts/*.json")
SERVED = {"ServiceRequest", "Task", "Encounter", "Patient", "Organization", "Practitioner"}


class Hub:
    """A client on a fresh app, and the fakes behind it."""

    def __init__(self) -> None:
        self.ingress = FakeIngressWriter()
        self.store = FakeResourceStore()
        app = make_app(self.ingress, store=self.store, max_body_bytes=1_048_576)
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub.test")


@pytest.fixture
async def hub() -> Any:
    """A fresh hub per test."""
    made = Hub()
    async with made.client:
        yield made


def test_the_corpus_holds_what_the_tests_expect() -> None:
    """20 ServiceRequests, 12 Tasks and 10 Encounters; 6 SDOH JSON files; 6 Da Vinci notifications."""
    if ROOT is None:
        pytest.skip("HUB_CORPUS_DIR is not set")
    names = [p.values[0].name.split("-")[0] for p in CORE]
    assert (20, 12, 10) == (names.count("ServiceRequest"), names.count("Task"), names.count("Encounter"))
    assert (6, 6) == (len(SDOH_FILES), len(DAVINCI))


@pytest.mark.parametrize("path", CORE)
async def test_every_core_example_is_created_by_post_and_by_put_and_reads_back(hub: Hub, path: Path) -> None:
    """POST (server id) and PUT (its own id, in the hospital's id space) both succeed; each is readable; each
    version is one event."""
    posted = path.read_bytes()
    data = orjson.loads(posted)
    resource_type = data["resourceType"]
    created = await hub.client.post(f"/fhir/{resource_type}", content=posted, headers=auth())
    assert 201 == created.status_code, f"{path.name}: {created.text}"
    own_id = f"hosp-a.{data['id']}"
    put = await hub.client.put(
        f"/fhir/{resource_type}/{own_id}", content=orjson.dumps({**data, "id": own_id}), headers=auth()
    )
    assert 201 == put.status_code, f"{path.name}: {put.text}"
    for response in (created, put):
        read = await hub.client.get(response.headers["location"].split("/_history/")[0], headers=auth())
        assert (200, response.json()) == (read.status_code, read.json())
    facts = [decode(value).facts for _, value, _ in hub.ingress.written]
    assert [resource_type, resource_type] == [f.resource_type for f in facts]
    assert facts[0].patient_source is not None
    if resource_type == "Encounter":
        assert ("discharge" if data["status"] == "finished" else "admit") == facts[0].event_kind
        assert f"{data['class']['system']}|{data['class']['code']}" == facts[0].encounter_class
    if resource_type == "Task":
        assert facts[0].event_kind in {"referral-task", "task"}
        if "for" not in data:
            assert ":unidentified|" in (facts[0].patient_source or "")


@pytest.mark.parametrize("path", SDOH_FILES)
async def test_every_sdoh_json_example_is_created_or_refused_as_documented(hub: Hub, path: Path) -> None:
    posted = path.read_bytes()
    resource_type = orjson.loads(posted)["resourceType"]
    response = await hub.client.post(f"/fhir/{resource_type}", content=posted, headers=auth())
    if resource_type in SERVED:
        assert 201 == response.status_code, response.text
    else:
        assert (404, "not-supported") == (response.status_code, response.json()["issue"][0]["code"])
        assert [] == hub.store.all_versions()


async def test_the_sdoh_referral_as_one_transaction_keeps_its_own_ids_and_links_the_patient(hub: Hub) -> None:
    """PUT entries keep the examples' ids (moved into the hospital's id space, references along), so their
    references resolve as written; the Task and the ServiceRequest are keyed by the Patient's MRN from the
    same Bundle."""
    if ROOT is None:
        pytest.skip("HUB_CORPUS_DIR is not set")
    resources = [
        orjson.loads(sorted((ROOT / SDOH / folder).glob("*.json"))[0].read_bytes())
        for folder in ("patient", "servicerequest", "task")
    ]
    entries = [
        {"resource": resource, "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}
        for resource in samples.in_own_id_space(resources, "hosp-a")
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = await hub.client.post("/fhir", content=orjson.dumps(bundle), headers=auth())
    assert 200 == response.status_code, response.text
    assert ["201 Created"] * 3 == [e["response"]["status"] for e in response.json()["entry"]]
    facts = [decode(value).facts for _, value, _ in hub.ingress.written]
    assert [("ServiceRequest", "referral"), ("Task", "referral-task")] == [
        (f.resource_type, f.event_kind) for f in facts
    ]
    assert ["http://hospital.smarthealthit.org|1032702"] * 2 == [f.patient_source for f in facts]
    assert [("urn:carehub:partner:hosp-a:Patient/hosp-a.pat-53234", "http://hospital.smarthealthit.org|1032702")] == (
        hub.store.linked
    )


@pytest.mark.parametrize("path", DAVINCI)
async def test_every_davinci_notification_is_processed_into_one_encounter_event(hub: Hub, path: Path) -> None:
    posted = path.read_bytes()
    response = await hub.client.post("/fhir/$process-message", content=posted, headers=auth())
    assert 200 == response.status_code, response.text
    answer = response.json()
    Bundle.model_validate(answer)
    request_header = orjson.loads(posted)["entry"][0]["resource"]
    assert {"identifier": request_header["id"], "code": "ok"} == answer["entry"][0]["resource"]["response"]

    [(_, value, headers)] = hub.ingress.written
    event = decode(value)
    expected_kind = path.name.split("-")[0]
    assert (expected_kind, "Encounter") == (event.facts.event_kind, event.facts.resource_type)
    assert (posted.decode(), "application/fhir+json") == (event.original, event.original_media_type)
    assert "Encounter" == orjson.loads(event.body)["resourceType"]
    assert "http://example.org/fhir/pid|06e1f0dd-5fbe-4480-9bb4-6b54ec02d31b" == event.facts.patient_source
    assert f"org.carehub.encounter.{expected_kind}" == headers["ce_type"]
    assert all("us-ssn" not in source for group in hub.store.linked for source in group)
    assert any("http://example.org/fhir/mrn|" in source for group in hub.store.linked for source in group)
