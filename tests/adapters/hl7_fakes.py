"""Fakes and message builders for the HL7 v2 / MLLP edge tests.

:class:`FakeHospitalDirectory` is the in-memory fake of :class:`hub.adapters.mllp.HospitalDirectory`;
:func:`adt` builds a valid ADT message field by field so each test can break exactly one thing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

import hl7
from hl7.client import MLLPClient

from hub.adapters.mllp import AdtIntake
from hub.errors import StoreUnavailable
from tests.fakes import FakeIngressWriter

HOSPITAL = "hosp-a"
FACILITY = "GHH"


@dataclass
class FakeHospitalDirectory:
    """MSH-4 facility keys -> hospital partner ids; ``fail`` simulates an unavailable control plane."""

    facilities: dict[str, str] = field(default_factory=lambda: {FACILITY: HOSPITAL})
    default: str | None = None
    fail: bool = False
    asked: list[str] = field(default_factory=list)

    async def hospital_for_facility(self, facility: str) -> str | None:
        self.asked.append(facility)
        if self.fail:
            raise StoreUnavailable("directory unavailable")
        return self.facilities.get(facility, self.default)


@dataclass
class GatedIngress(FakeIngressWriter):
    """An ingress whose writes wait for ``gate`` (a broker that has not acknowledged yet)."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: int = 0

    async def write(self, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        self.waiting += 1
        self.entered.set()
        await self.gate.wait()
        self.waiting -= 1
        await super().write(key=key, value=value, headers=headers)


#: The fields of a valid v2.5 ADT^A01, by segment; index n is field n (MSH: 1 = separator, 2 = MSH-2).
BASE: dict[str, dict[int, str]] = {
    "MSH": {
        2: "^~\\&",
        3: "ADT1",
        4: FACILITY,
        5: "CAREHUB",
        6: "HIE",
        7: "20250115103000+0100",
        9: "ADT^A01^ADT_A01",
        10: "MSG-0001",
        11: "P",
        12: "2.5",
    },
    "EVN": {1: "A01", 2: "20250115103000+0100"},
    "PID": {1: "1", 3: "PATID1234^^^GHH&2.16.840.1.113883.19.5&ISO^MR", 5: "DOE^JANE", 7: "19800101", 8: "F"},
    "PV1": {
        1: "1",
        2: "I",
        3: "WARD1^101^A^GHH",
        19: "V100^^^GHH^VN",
        36: "01^Discharged to home^HL70112",
        44: "20250115103000+0100",
        45: "",
    },
}
ORDER = ("MSH", "EVN", "PID", "PV1")


def adt(
    fields: Mapping[str, str | None] | None = None,
    *,
    drop: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
    separator: str = "\r",
) -> bytes:
    """A valid ADT message with ``fields`` replaced (``{"PID-3": "X"}``; ``None`` empties it).

    ``drop`` removes whole segments, ``extra`` appends segment lines, ``separator`` ends segments.
    """
    segments = {name: dict(values) for name, values in BASE.items()}
    for key, value in (fields or {}).items():
        name, number = key.split("-")
        segments[name][int(number)] = value or ""
    lines = []
    for name in ORDER:
        if name in drop:
            continue
        values = segments[name]
        last = max(values)
        if name == "MSH":
            lines.append("MSH|" + "|".join(values.get(n, "") for n in range(2, last + 1)))
        else:
            lines.append("|".join([name, *(values.get(n, "") for n in range(1, last + 1))]))
    lines.extend(extra)
    return (separator.join(lines) + separator).encode("utf-8")


def make_intake(
    ingress: FakeIngressWriter | None = None,
    hospitals: FakeHospitalDirectory | None = None,
    *,
    max_message_bytes: int = 1_048_576,
) -> AdtIntake:
    """An intake on fresh fakes (or the given ones)."""
    return AdtIntake(
        ingress=ingress if ingress is not None else FakeIngressWriter(),
        hospitals=hospitals if hospitals is not None else FakeHospitalDirectory(),
        max_message_bytes=max_message_bytes,
    )


@dataclass(frozen=True)
class Ack:
    """An acknowledgment as read back by python-hl7 (an independent parser)."""

    code: str
    control_id: str
    error_code: str
    location: str
    message: hl7.Message

    def field(self, key: str) -> str:
        """A value by python-hl7 accessor, e.g. ``MSH.F9.R1.C3``."""
        return str(self.message[key])

    def whole(self, segment: str, number: int) -> str:
        """A whole field as written (all components), e.g. ``whole("MSH", 9)`` -> ``ACK^A01^ACK``."""
        return str(self.message.segment(segment)(number))


def read_ack(data: bytes) -> Ack:
    """Parse an ACK (unframed or MLLP-framed) with python-hl7 and pull out code, MSA-2, ERR-3 and
    the ERR location written like :class:`hub.adapters.hl7_adt.ErrorLocation` (``PID-3``, ``MSH-9.2``)."""
    text = data.strip(b"\x0b\x1c\r").decode("utf-8")
    message = hl7.parse(text)
    error_code = location = ""
    try:
        err = message.segment("ERR")
    except KeyError:
        err = None
    if err is not None:
        modern = len(err) > 3  # from v2.5: ERR-2 location, ERR-3 code; before: ERR-1 seg^seq^field^code&...
        error_code = str(message["ERR.F3.R1.C1"] if modern else message["ERR.F1.R1.C4.S1"])
        where = "ERR.F2.R1" if modern else "ERR.F1.R1"
        segment = str(message[f"{where}.C1"])
        if segment:
            sequence = str(message[f"{where}.C2"])
            location = segment if sequence in {"", "1"} else f"{segment}[{sequence}]"
            field_number = str(message[f"{where}.C3"])
            component = str(message[f"{where}.C5"]) if modern else ""
            if field_number:
                location += f"-{field_number}"
                if component:
                    location += f".{component}"
    return Ack(
        code=str(message["MSA.F1"]),
        control_id=str(message["MSA.F2"]),
        error_code=error_code,
        location=location,
        message=message,
    )


def client_send(client: MLLPClient, data: bytes) -> bytes:
    """Send one message with python-hl7's blocking client and read its whole ACK frame."""
    received: bytes = client.send_message(data)
    while not received.endswith(b"\x1c\r"):
        more = client.socket.recv(4096)
        if not more:
            break
        received += more
    return received
