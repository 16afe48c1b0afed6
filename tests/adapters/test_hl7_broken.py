"""Broken HL7 v2 input, one row each: the exact acknowledgment code, ERR-3 code and ERR location.

Every row goes through :class:`hub.adapters.mllp.AdtIntake` (parse, facility, map, write) on
in-memory fakes; none may reach the ingress, and no ACK may echo a patient value.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hub.adapters.mllp import AdtIntake
from tests.adapters.hl7_fakes import FakeHospitalDirectory, adt, make_intake, read_ack
from tests.fakes import FakeIngressWriter

MAX_BYTES = 64 * 1024
GOOD = adt()
TEXT = GOOD.decode()
MSH_LINE = TEXT.split("\r")[0]


@dataclass(frozen=True)
class Case:
    """One broken input and its expected answer (``location`` in ``SEG-field.component`` notation)."""

    name: str
    data: bytes
    code: str
    error: str
    location: str
    control_id: str = "MSG-0001"


def _replace_msh_prefix(prefix: str) -> bytes:
    """The good message with ``MSH|^~\\&`` replaced by ``prefix``."""
    return TEXT.replace("MSH|^~\\&", prefix, 1).encode()


CASES = [
    # --- not an HL7 message at all / no readable MSH
    Case("empty", b"", "AR", "100", "MSH", ""),
    Case("whitespace only", b" \r\n\t", "AR", "100", "MSH", ""),
    Case("plain text", b"hello, is this the hospital?", "AR", "100", "MSH", ""),
    Case("binary garbage", bytes(range(256)), "AR", "100", "MSH", ""),
    Case("json instead of hl7", b'{"resourceType": "Encounter"}', "AR", "100", "MSH", ""),
    Case("PID before MSH", ("PID|1||X\r" + TEXT).encode(), "AR", "100", "MSH", ""),
    Case("batch header", ("BHS|^~\\&|ADT1\r" + TEXT).encode(), "AR", "100", "MSH", ""),
    # --- MSH-1 / MSH-2 (encoding characters)
    Case("MSH only", b"MSH", "AR", "101", "MSH-1", ""),
    Case("alphanumeric field separator", _replace_msh_prefix("MSHX^~\\&"), "AR", "102", "MSH-1", ""),
    Case("encoding characters too short", _replace_msh_prefix("MSH|^~"), "AR", "102", "MSH-2"),
    Case("encoding characters repeated", _replace_msh_prefix("MSH|^^\\&"), "AR", "102", "MSH-2"),
    Case("alphanumeric encoding characters", _replace_msh_prefix("MSH|ab\\&"), "AR", "102", "MSH-2"),
    Case("encoding characters too long", _replace_msh_prefix("MSH|^~\\&#!"), "AR", "102", "MSH-2"),
    # --- MSH-12 version
    Case("truncated inside MSH", MSH_LINE[:30].encode(), "AR", "101", "MSH-12", ""),
    Case("version missing", adt({"MSH-12": ""}), "AR", "101", "MSH-12"),
    Case("version 2.2", adt({"MSH-12": "2.2"}), "AR", "203", "MSH-12"),
    Case("version 2.9", adt({"MSH-12": "2.9"}), "AR", "203", "MSH-12"),
    Case("version 3.0", adt({"MSH-12": "3.0"}), "AR", "203", "MSH-12"),
    Case("version not a number", adt({"MSH-12": "two point five"}), "AR", "203", "MSH-12"),
    # --- MSH-9 message type and trigger
    Case("message type missing", adt({"MSH-9": ""}), "AR", "101", "MSH-9"),
    Case("ORU instead of ADT", adt({"MSH-9": "ORU^R01^ORU_R01"}), "AR", "200", "MSH-9.1"),
    Case("an ACK sent to the hub", adt({"MSH-9": "ACK^A01^ACK"}), "AR", "200", "MSH-9.1"),
    Case("lower-case adt", adt({"MSH-9": "adt^a01"}), "AR", "200", "MSH-9.1"),
    Case("A02 transfer", adt({"MSH-9": "ADT^A02^ADT_A02"}), "AR", "201", "MSH-9.2"),
    Case("A40 merge", adt({"MSH-9": "ADT^A40^ADT_A39"}), "AR", "201", "MSH-9.2"),
    Case("no trigger anywhere", adt({"MSH-9": "ADT", "EVN-1": ""}), "AR", "101", "MSH-9.2"),
    # --- MSH-10, MSH-11, MSH-4
    Case("control id missing", adt({"MSH-10": ""}), "AR", "101", "MSH-10", ""),
    Case("control id too long", adt({"MSH-10": "C" * 200}), "AR", "104", "MSH-10", "C" * 199),
    Case("processing id Q", adt({"MSH-11": "Q"}), "AR", "202", "MSH-11"),
    Case("sending facility missing", adt({"MSH-4": ""}), "AR", "101", "MSH-4"),
    Case("unknown sending facility", adt({"MSH-4": "ELSEWHERE"}), "AR", "103", "MSH-4"),
    # --- segment structure
    Case("two messages in one frame", GOOD + GOOD, "AR", "100", "MSH[2]"),
    Case("batch trailer inside", adt(extra=("BTS|1",)), "AR", "100", "BTS"),
    Case("PID missing", adt(drop=("PID",)), "AE", "100", "PID"),
    Case("PV1 missing", adt(drop=("PV1",)), "AE", "100", "PV1"),
    Case("truncated before PV1", TEXT[: TEXT.index("PV1")].encode(), "AE", "100", "PV1"),
    Case("a line that is not a segment", TEXT.replace("\rPV1", "\rnot a segment\rPV1").encode(), "AE", "100", "PID"),
    Case("lower-case segment id", TEXT.replace("\rPV1", "\rpv1").encode(), "AE", "100", "PID"),
    Case("segment id without separator", TEXT.replace("\rPV1|", "\rPV1X|").encode(), "AE", "100", "PID"),
    # --- PID-3
    Case("patient identifier missing", adt({"PID-3": ""}), "AE", "101", "PID-3"),
    Case("patient identifier only repetitions", adt({"PID-3": "~~"}), "AE", "101", "PID-3"),
    Case("patient identifier without id number", adt({"PID-3": "^^^GHH^MR"}), "AE", "101", "PID-3.1"),
    Case("patient identifier huge", adt({"PID-3": "9" * 300 + "^^^GHH"}), "AE", "104", "PID-3.1"),
    Case("patient identifier with a control character", adt({"PID-3": "12\\X07\\3^^^GHH"}), "AE", "102", "PID-3.1"),
    # --- PV1 codes and dates
    Case("patient class not in table 0004", adt({"PV1-2": "Z"}), "AE", "103", "PV1-2"),
    Case("patient class a word", adt({"PV1-2": "Inpatient"}), "AE", "103", "PV1-2"),
    Case("admit time ISO formatted", adt({"PV1-44": "2025-01-15T10:30:00Z"}), "AE", "102", "PV1-44"),
    Case("admit month 13", adt({"PV1-44": "20251315"}), "AE", "102", "PV1-44"),
    Case("admit on 30 February", adt({"PV1-44": "20250230"}), "AE", "102", "PV1-44"),
    Case("admit minute 61", adt({"PV1-44": "202501151261"}), "AE", "102", "PV1-44"),
    Case("admit offset out of range", adt({"PV1-44": "202501151030+2500"}), "AE", "102", "PV1-44"),
    Case("discharge time a word", adt({"PV1-45": "yesterday"}), "AE", "102", "PV1-45"),
    Case("discharge before admission", adt({"PV1-45": "20240101"}), "AE", "102", "PV1-45"),
    # --- encoding and size
    Case("not UTF-8 and no charset", adt({"PV1-3": "Ward\u00e9"}).decode().encode("iso8859_1"), "AE", "102", "MSH-18"),
    Case("not UTF-8 and declared UTF-8", adt({"MSH-18": "UNICODE UTF-8"}) + b"\xff\xfe", "AE", "102", "MSH-18"),
    Case("huge message", adt(extra=("NTE|1||" + "x" * MAX_BYTES,)), "AR", "104", "", "MSG-0001"),
]


def test_the_table_has_at_least_thirty_broken_inputs() -> None:
    """The issue asks for at least 30 rows; every row has a distinct name."""
    assert len(CASES) >= 30
    assert len(CASES) == len({case.name for case in CASES})


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_each_broken_input_gets_its_exact_acknowledgment(case: Case) -> None:
    """MSA-1, ERR-3 and the ERR-2 location are exactly as tabled; nothing is written; no PHI echoed."""
    ingress = FakeIngressWriter()
    intake: AdtIntake = make_intake(ingress, FakeHospitalDirectory(), max_message_bytes=MAX_BYTES)
    raw = await intake.handle(case.data)
    answer = read_ack(raw)
    assert (case.code, case.error, case.location, case.control_id) == (
        answer.code,
        answer.error_code,
        answer.location,
        answer.control_id,
    )
    assert [] == ingress.written
    for value in (b"PATID1234", b"DOE", b"JANE"):
        assert value not in raw


async def test_the_intake_still_accepts_a_good_message_after_every_broken_one() -> None:
    """One intake through the whole table, then a valid message: AA and exactly one write."""
    ingress = FakeIngressWriter()
    intake = make_intake(ingress, max_message_bytes=MAX_BYTES)
    for case in CASES:
        await intake.handle(case.data)
    assert "AA" == read_ack(await intake.handle(adt({"MSH-10": "AFTER"}))).code
    assert 1 == len(ingress.written)
