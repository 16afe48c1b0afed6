"""Property tests: thousands of mutated and random inputs through the HL7 parser, mapper and ACK builder.

Invariants: nothing but :class:`~hub.adapters.hl7_adt.Hl7Error` ever escapes parsing or mapping;
every input, however broken, is answered with an acknowledgment python-hl7 can read, whose MSA-1
is AA, AE or AR and never the internal-error 207; every accepted message yields an Encounter that
is valid FHIR R4 (checked here with the R4B model, which is why the edge can skip it at run time).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.adapters.fhir_validation import validate_resource
from hub.adapters.hl7_adt import (
    Delimiters,
    ErrorDetail,
    ErrorLocation,
    Hl7Error,
    ack,
    escape,
    map_adt,
    parse_message,
    unescape,
)
from hub.events import decode
from tests.adapters.hl7_fakes import FakeHospitalDirectory, adt, make_intake, read_ack
from tests.fakes import FakeIngressWriter

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

#: Valid messages of several shapes to mutate: versions, line ends, BOM, optional segments.
SEEDS = [
    adt(),
    adt({"MSH-12": "2.3", "MSH-9": "ADT^A03"}, separator="\n"),
    adt({"MSH-12": "2.8", "MSH-9": "ADT^A04^ADT_A01", "PV1-45": "20250117090000+0100"}, separator="\r\n"),
    b"\xef\xbb\xbf" + adt({"MSH-9": "ADT^A08", "PV1-2": "E"}, extra=("ARV|1|A|DEM|PAT", "ZZZ|1|custom")),
    adt({"PID-3": "X1^^^^MR~X2^^^&1.2.3&ISO^PI", "PV1-3": "W^1^2^GHH^^^B^F^Desc"}, drop=("EVN",)),
]
ALPHABET = b'|^~\\&\r\n\x0b\x1c\x00\xff\xc3\xa9 "AMSHPIDV0123456789+-.'
SETTINGS = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed message with one to five random mutations (bytes, fields, segments, truncation)."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 5))):
        operation = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "field", "segment"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if operation == "flip" and data:
            data[position] = draw(st.integers(0, 255))
        elif operation == "insert":
            data[position:position] = bytes(draw(st.lists(st.sampled_from(list(ALPHABET)), max_size=8)))
        elif operation == "delete":
            del data[position : position + draw(st.integers(1, 12))]
        elif operation == "truncate":
            del data[position:]
        elif operation == "field":
            fields = bytes(data).split(b"|")
            index = draw(st.integers(0, len(fields) - 1))
            fields[index] = draw(st.text(max_size=12)).encode("utf-8", "surrogatepass")
            data = bytearray(b"|".join(fields))
        else:
            lines = bytes(data).split(b"\r")
            index = draw(st.integers(0, len(lines) - 1))
            lines.insert(draw(st.integers(0, len(lines))), lines[index])
            data = bytearray(b"\r".join(lines))
    return bytes(data)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A private event loop for the synchronous hypothesis tests."""
    private = asyncio.new_event_loop()
    yield private
    private.close()


@SETTINGS
@given(data=mutated())
def test_every_mutated_message_is_answered_and_every_accepted_one_is_valid_fhir(
    loop: asyncio.AbstractEventLoop, data: bytes
) -> None:
    """Through the whole intake: a readable ACK (never 207); a write only with AA, and its
    Encounter validates as R4 with ``patient_source`` equal to its subject identifier."""
    ingress = FakeIngressWriter()
    intake = make_intake(ingress, FakeHospitalDirectory(default="fuzz-hospital"))
    answer = read_ack(loop.run_until_complete(intake.handle(data)))
    assert answer.code in {"AA", "AE", "AR"}
    assert "207" != answer.error_code
    assert (1 if answer.code == "AA" else 0) == len(ingress.written)
    for _, value, _ in ingress.written:
        event = decode(value)
        body = orjson.loads(event.body)
        validate_resource(body, expected_type="Encounter")
        identifier = body["subject"]["identifier"]
        assert f"{identifier['system']}|{identifier['value']}" == event.facts.patient_source


@SETTINGS
@given(data=mutated())
def test_parsing_and_mapping_raise_nothing_but_hl7_errors(data: bytes) -> None:
    """The pure functions alone: success or an Hl7Error with a table 0357 code and AE/AR."""
    refused: Hl7Error | None = None
    try:
        map_adt(parse_message(data), sender="s", validate=True)
    except Hl7Error as error:
        refused = error
    if refused is not None:
        assert refused.ack_code in {"AE", "AR"}
        assert refused.hl7_code in {100, 101, 102, 103, 104, 200, 201, 202, 203}


@SETTINGS
@given(
    data=st.one_of(st.binary(max_size=300), st.binary(max_size=200).map(lambda b: b"MSH" + b)),
    code=st.sampled_from(["AA", "AE", "AR"]),
    segment=st.sampled_from(["MSH", "PID", "PV1"]),
    field_number=st.none() | st.integers(1, 99),
    text=st.text(max_size=40),
)
def test_any_bytes_get_an_acknowledgment_python_hl7_can_read(
    data: bytes, code: str, segment: str, field_number: int | None, text: str
) -> None:
    """The ACK builder is total: random bytes (and bytes that start like an MSH) are answered."""
    raw = ack(data, code, ErrorDetail(102, ErrorLocation(segment, field_number), text))  # type: ignore[arg-type]
    assert raw.startswith(b"MSH|^~\\&|")
    assert b"\x1c" not in raw
    assert b"\x0b" not in raw
    assert code == read_ack(raw).code


@settings(max_examples=1000, deadline=None)
@given(text=st.text())
def test_escape_then_unescape_gives_the_text_back(text: str) -> None:
    """Whatever a value holds, escaping it for an ACK loses nothing."""
    assert text == unescape(escape(text), Delimiters())
