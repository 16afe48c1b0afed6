"""Public HL7 v2 ADT samples (``$HUB_CORPUS_DIR/hl7v2``, see its SOURCES.md) through the MLLP edge.

Every file must be accepted: parsed, mapped to an Encounter that is valid FHIR R4, and answered AA
over TCP by a listener using python-hl7's MLLP client. The samples' non-conformance (LF line ends,
byte order marks, EVN-1 contradicting MSH-9, a missing EVN, an empty PV1-2, local times, control ids
reused for different messages, ...) is tolerated as ``docs/adr/0004-hl7v2-leniency.md`` decides;
the tests named after a sample pin each decision.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from hl7.client import MLLPClient

from hub.adapters.fhir_validation import validate_resource
from hub.adapters.hl7_adt import MappedAdt, map_adt, parse_message
from hub.adapters.mllp import start_mllp_server
from hub.events import decode
from tests.adapters.hl7_fakes import FakeHospitalDirectory, read_ack
from tests.fakes import FakeIngressWriter

pytestmark = pytest.mark.corpus

SENDER = "corpus-hospital"


def _samples() -> list[Any]:
    root = os.environ.get("HUB_CORPUS_DIR")
    if not root:
        return [pytest.param(None, marks=pytest.mark.skip(reason="HUB_CORPUS_DIR is not set"), id="no-corpus")]
    folder = Path(root) / "hl7v2"
    found = [
        pytest.param(path, id=str(path.relative_to(folder)))
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix != ".md"
    ]
    return found or [pytest.param(None, marks=pytest.mark.skip(reason="no HL7 v2 samples"), id="none")]


SAMPLES = _samples()


def sample(corpus_dir: Path, name: str) -> bytes:
    """The bytes of one sample, by its path under ``hl7v2/``."""
    return (corpus_dir / "hl7v2" / name).read_bytes()


def mapped(data: bytes) -> MappedAdt:
    """Parse and map with the runtime validation on."""
    return map_adt(parse_message(data), sender=SENDER, validate=True)


def body(data: bytes) -> dict[str, Any]:
    """The Encounter JSON of a sample."""
    result: dict[str, Any] = orjson.loads(mapped(data).event.body)
    return result


def test_the_corpus_holds_the_seventeen_samples_of_its_sources_file(corpus_dir: Path) -> None:
    """SOURCES.md lists 17 files (2 CDC, 13 FHIR-Converter, 2 HAPI); none went missing."""
    assert 17 == len([p for p in SAMPLES if p.values[0] is not None])
    assert (corpus_dir / "hl7v2" / "SOURCES.md").is_file()


@pytest.mark.parametrize("path", SAMPLES)
def test_every_sample_maps_to_a_valid_encounter_event(path: Path) -> None:
    """Accepted, R4-valid, the event kind of its MSH-9, and its original bytes carried exactly."""
    data = path.read_bytes()
    result = mapped(data)
    encounter = orjson.loads(result.event.body)
    assert "Encounter" == validate_resource(encounter, expected_type="Encounter").get_resource_type()
    trigger = parse_message(data).header.trigger_event
    kinds = {"A01": "admit", "A03": "discharge", "A04": "registration", "A08": "encounter-update"}
    assert kinds[trigger] == result.event.facts.event_kind
    assert data == (result.event.original or "").encode("utf-8")
    identifier = encounter["subject"]["identifier"]
    assert f"{identifier['system']}|{identifier['value']}" == result.event.facts.patient_source


@pytest.mark.parametrize("path", SAMPLES)
async def test_every_sample_is_acknowledged_aa_over_mllp(path: Path) -> None:
    """End to end through the edge: python-hl7's client, AA echoing MSH-10, one canonical event."""
    data = await asyncio.to_thread(path.read_bytes)
    ingress = FakeIngressWriter()
    server = await start_mllp_server(
        host="127.0.0.1", port=0, ingress=ingress, hospitals=FakeHospitalDirectory(default=SENDER)
    )
    try:

        def send() -> bytes:
            with MLLPClient("127.0.0.1", server.port) as client:
                answer: bytes = client.send_message(data)
                return answer

        answer = read_ack(await asyncio.to_thread(send))
    finally:
        await server.stop()
    assert ("AA", parse_message(data).header.control_id) == (answer.code, answer.control_id)
    [(_, value, headers)] = ingress.written
    assert headers["ce_id"] == decode(value).facts.resource_id


async def test_the_whole_corpus_on_one_connection_gives_seventeen_events(corpus_dir: Path) -> None:
    """Control ids are reused across samples for *different* messages (MSG00001 ten times, eight of
    them from GHHSFacility; 1270326314 twice from RDX): sent as from one hospital, each is a new
    event, none is taken for a retransmission."""
    paths = [p.values[0] for p in SAMPLES]
    ingress = FakeIngressWriter()
    server = await start_mllp_server(
        host="127.0.0.1", port=0, ingress=ingress, hospitals=FakeHospitalDirectory(default=SENDER)
    )
    try:

        def send_all() -> list[bytes]:
            with MLLPClient("127.0.0.1", server.port) as client:
                return [client.send_message(path.read_bytes()) for path in paths]

        answers = await asyncio.to_thread(send_all)
    finally:
        await server.stop()
    assert ["AA"] * 17 == [read_ack(a).code for a in answers]
    assert 17 == len({headers["ce_id"] for _, _, headers in ingress.written})
    control_ids = [parse_message(p.read_bytes()).header.control_id for p in paths]
    assert (10, 2) == (control_ids.count("MSG00001"), control_ids.count("1270326314"))


def test_hapi_adt_a01_empty_patient_class_and_local_time(corpus_dir: Path) -> None:
    """CR line ends; PV1-2 empty -> class v3-NullFlavor UNK; PV1-44 without offset -> its date only."""
    encounter = body(sample(corpus_dir, "hapi/ADT_A01.hl7"))
    assert ("UNK", {"start": "2001-05-23"}) == (encounter["class"]["code"], encounter["period"])


def test_hapi_adt_a03_without_evn_1_and_with_only_a_discharge_time(corpus_dir: Path) -> None:
    """EVN-1 empty (MSH-9 names A03); PV1-45 without PV1-44 -> period.end only, finished."""
    encounter = body(sample(corpus_dir, "hapi/adt_a03.hl7"))
    assert ("finished", {"end": "2008-03-03"}) == (encounter["status"], encounter["period"])


def test_fhir_converter_evn_1_contradicts_msh_9_and_msh_9_wins(corpus_dir: Path) -> None:
    """ADT-A03-01 carries EVN-1 A01: it is read as the A03 (discharge) its MSH-9 says."""
    result = mapped(sample(corpus_dir, "fhir-converter/ADT-A03-01.hl7"))
    assert ("discharge", "finished") == (result.event.facts.event_kind, result.event.facts.status)


def test_fhir_converter_a04_without_evn_segment(corpus_dir: Path) -> None:
    """ADT04-251 has no EVN at all (required by the standard): accepted, nothing in it is needed."""
    assert "registration" == mapped(sample(corpus_dir, "fhir-converter/ADT04-251.hl7")).event.facts.event_kind


def test_fhir_converter_access_restriction_marks_the_event_restricted(corpus_dir: Path) -> None:
    """ADT-A01-01 has ARV segments (access restricted): security label R on the event."""
    result = mapped(sample(corpus_dir, "fhir-converter/ADT-A01-01.hl7"))
    assert ("http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R",) == result.event.facts.security_labels


def test_fhir_converter_odd_utc_offsets_and_fractional_seconds_are_kept(corpus_dir: Path) -> None:
    """PV1-44/45 ``20150208113419+0110``: the offset is the sender's statement, kept as +01:10."""
    period = body(sample(corpus_dir, "fhir-converter/ADT-A03-01.hl7"))["period"]
    assert {"start": "2015-02-08T11:34:19+01:10", "end": "2015-02-09T11:34:19+01:10"} == period


def test_identifiers_without_a_usable_assigning_authority_are_scoped_to_the_sender(corpus_dir: Path) -> None:
    """ADT04-23 ``123456789^^^^MR`` (no CX-4) and ADT04-28 ``0000000001^^^MR`` (a type code in CX-4)
    are only meaningful inside the sending hospital: their system is the sender's namespace."""
    first = mapped(sample(corpus_dir, "fhir-converter/ADT04-23.hl7")).event.facts.patient_source
    second = mapped(sample(corpus_dir, "fhir-converter/ADT04-28.hl7")).event.facts.patient_source
    assert f"urn:carehub:partner:{SENDER}|123456789" == first
    assert f"urn:carehub:partner:{SENDER}:assigner:MR|0000000001" == second


def test_trailing_blanks_after_the_last_field_are_ignored(corpus_dir: Path) -> None:
    """ADT01-23 ends each segment with ``| ``: values are stripped (BOM and LF line ends too)."""
    encounter = body(sample(corpus_dir, "fhir-converter/ADT01-23.hl7"))
    assert "10006579" == encounter["subject"]["identifier"]["value"]
