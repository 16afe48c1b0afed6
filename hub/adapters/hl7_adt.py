"""HL7 v2 ADT (A01/A03/A04/A08, v2.3-2.8) in, FHIR R4 Encounter event and HL7 ACK out. Pure: no I/O.

Three steps, each total on its domain:

* :func:`parse_message` reads one message (the bytes of one MLLP frame) and checks what the hub
  needs of it, or raises :class:`Hl7Error` carrying the HL7 error location (``PID-3``,
  ``MSH-9.2``), the HL7 table 0357 error code and the acknowledgment code to answer with;
* :func:`map_adt` turns a parsed message into the canonical event: an FHIR R4 ``Encounter`` (JSON
  text) plus :class:`hub.events.RoutingFacts`, the original message text, its event id and key;
* :func:`ack` builds the original-mode acknowledgment (``MSH`` + ``MSA`` [+ ``ERR``]) for *any*
  bytes, including bytes whose MSH cannot be read (then ``AR`` with an empty MSA-2).

Reading (tolerant of what real feeds send, strict where identity or meaning is at stake; each
decision is argued in ``docs/adr/0004-hl7v2-leniency.md``):

* segments end with CR, LF or CRLF; when the text has any CR, only CR (and CRLF) end a segment, so a
  bare LF inside a CR-terminated message stays part of its field; blank lines are skipped, one
  leading UTF-8 byte order mark and leading whitespace are ignored;
* text is UTF-8; if it is not, the charset named in MSH-18 (ISO 8859 parts, ASCII) is used;
* every line must be a segment (``[A-Z][A-Z0-9]{2}`` then the field separator) - a line that is
  not (e.g. a field broken by a stray line end) is refused rather than guessed at;
* the trigger event comes from MSH-9.2 (EVN-1 only when MSH-9.2 is empty); MSH-9.3 (structure)
  and a missing EVN segment are ignored; values are unescaped (``\\F\\``, ``\\S\\``, ``\\T\\``,
  ``\\R\\``, ``\\E\\``, ``\\Xhh\\``, ``\\.br\\``; formatting sequences are dropped), stripped, and
  ``""`` (the HL7 null) is treated as empty.

Mapping (HL7 v2-to-FHIR IG where it has an answer):

==================== ====================================================================
Encounter.status     A01 in-progress; A03 finished; A04 arrived; A08 finished if PV1-45 is
                     valued, in-progress if PV1-44 is, else unknown
Encounter.class      PV1-2 (table 0004): E EMER, I IMP, O AMB, P PRENC (v3-ActCode); B, C, N,
                     R, U as v2-0004 codes; empty -> v3-NullFlavor UNK; any other code -> AE 103
Encounter.subject    PID-3: the first repetition with an assigning authority (CX-4), else the
                     first with a value; ``identifier.system`` per :func:`authority_system`
Encounter.identifier PV1-19 visit number (type VN)
Encounter.period     start PV1-44, end PV1-45 (HL7 DTM -> FHIR dateTime, see :func:`fhir_datetime`)
Encounter.location   PV1-3 as display text; status completed when the encounter is finished
Encounter.hospitalization.dischargeDisposition  PV1-36 (table 0112)
Encounter.serviceProvider                        MSH-4 (urn:oid identifier when it carries an ISO OID)
Encounter.meta.security  v3-Confidentiality R when PD1-12 (protection indicator) is Y or an ARV
                         (access restriction) segment other than a deletion is present
==================== ====================================================================

``RoutingFacts.patient_source`` is always ``f"{subject.identifier.system}|{subject.identifier.value}"``.

Validation of the generated Encounter: every element is built from a closed set of constructors
(table-mapped codes, dates checked and formatted here, identifiers and texts cleaned of control
characters, URIs built from validated OIDs/UUIDs or percent-encoded names), so the Encounter is
valid R4 by construction. The tests prove it with the ``fhir.resources.R4B`` model
(:func:`hub.adapters.fhir_validation.validate_resource`) on every public sample, every unit case
and thousands of mutated messages. At run time it is off by default (``validate=False``): it costs
about 0.5 ms on top of the ~0.4 ms that parsing and mapping take (the edge's throughput drops by
half or more), to catch a mapping bug the tests are built to catch first - and a bug caught at run
time would stop the hospital's feed with NAKs rather than deliver an imperfect Encounter.
``validate=True`` turns it on; a failure is then answered AE at the HL7 field the element came
from (or 207). See ``docs/adr/0004-hl7v2-leniency.md``.

Error texts name segments, fields, codes and limits, never a submitted value (they may be PHI).
"""

from __future__ import annotations

import calendar
import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Final, Literal
from urllib.parse import quote

import orjson

from hub.adapters.fhir_facts import partner_namespace
from hub.adapters.fhir_validation import FhirValidationError, validate_resource
from hub.errors import InvalidInput
from hub.events import HubEvent, RoutingFacts, event_id, event_type

#: ``HubEvent.original_media_type`` of an HL7 v2 message in its ER7 (pipe-and-hat) encoding.
HL7_V2_MEDIA_TYPE: Final = "x-application/hl7-v2+er7"
#: MSH-12 versions accepted (2.3 to 2.8 with their point releases).
SUPPORTED_VERSIONS: Final = frozenset(
    {"2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2"}
)
#: Trigger events accepted, and what each one means for routing (``RoutingFacts.event_kind``).
EVENT_KINDS: Final = {"A01": "admit", "A03": "discharge", "A04": "registration", "A08": "encounter-update"}
#: HL7 table 0357 (message error condition codes) used by this edge, with their HL7 names.
HL7_ERROR_NAMES: Final = {
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    104: "Value too long",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    205: "Duplicate key identifier",
    207: "Application internal error",
}
#: The largest identifier value (PID-3.1, PV1-19.1) the hub keys on; longer is answered AE 104.
MAX_IDENTIFIER_LENGTH: Final = 255

AckCode = Literal["AA", "AE", "AR"]

V3_ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V2_0004: Final = "http://terminology.hl7.org/CodeSystem/v2-0004"
V2_0112: Final = "http://terminology.hl7.org/CodeSystem/v2-0112"
V2_0203: Final = "http://terminology.hl7.org/CodeSystem/v2-0203"
V3_NULL_FLAVOR: Final = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
V3_CONFIDENTIALITY: Final = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"

#: PV1-2 patient class (table 0004) -> Encounter.class (HL7 v2-to-FHIR ConceptMap table-hl70004-to-v3-actcode).
PATIENT_CLASS: Final[dict[str, tuple[str, str, str]]] = {
    "E": (V3_ACT_CODE, "EMER", "emergency"),
    "I": (V3_ACT_CODE, "IMP", "inpatient encounter"),
    "O": (V3_ACT_CODE, "AMB", "ambulatory"),
    "P": (V3_ACT_CODE, "PRENC", "pre-admission"),
    "B": (V2_0004, "B", "Obstetrics"),
    "C": (V2_0004, "C", "Commercial Account"),
    "N": (V2_0004, "N", "Not Applicable"),
    "R": (V2_0004, "R", "Recurring patient"),
    "U": (V2_0004, "U", "Unknown"),
}
_UNKNOWN_CLASS: Final = (V3_NULL_FLAVOR, "UNK", "unknown")

_DEFAULT_ENCODING: Final = "^~\\&"
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
_VERSION = re.compile(r"\d\.\d{1,2}(?:\.\d{1,2})?")
_TOKEN = re.compile(r"[A-Za-z0-9_.\-]{1,20}")
_OID = re.compile(r"[0-2](?:\.(?:0|[1-9][0-9]*))+")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+")
_FHIR_CODE = re.compile(r"[^\s]+(?: [^\s]+)*")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DTM = re.compile(
    r"(?P<year>\d{4})(?:(?P<month>\d{2})(?:(?P<day>\d{2})(?:(?P<hour>\d{2})(?:(?P<minute>\d{2})"
    r"(?:(?P<second>\d{2})(?:\.(?P<fraction>\d{1,4}))?)?)?)?)?)?(?P<offset>[+-]\d{4})?"
)
_CHARSETS: Final = {
    "ASCII": "ascii",
    "8859/1": "iso8859_1",
    "8859/2": "iso8859_2",
    "8859/3": "iso8859_3",
    "8859/4": "iso8859_4",
    "8859/5": "iso8859_5",
    "8859/6": "iso8859_6",
    "8859/7": "iso8859_7",
    "8859/8": "iso8859_8",
    "8859/9": "iso8859_9",
    "8859/15": "iso8859_15",
    "UNICODE UTF-8": "utf-8",
}


# --- errors -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorLocation:
    """Where in a message a problem is: segment, its occurrence, field, component (1-based, HL7 ERL)."""

    segment: str
    field: int | None = None
    component: int | None = None
    sequence: int = 1

    def __str__(self) -> str:
        """The conventional notation: ``PID-3``, ``MSH-9.2``, ``PV1``, ``MSH[2]``."""
        text = self.segment if self.sequence == 1 else f"{self.segment}[{self.sequence}]"
        if self.field is not None:
            text += f"-{self.field}"
            if self.component is not None:
                text += f".{self.component}"
        return text


_FHIR_ISSUE_FOR_HL7: Final = {
    100: "structure",
    101: "required",
    102: "value",
    103: "code-invalid",
    104: "too-long",
    200: "not-supported",
    201: "not-supported",
    202: "not-supported",
    203: "not-supported",
    205: "duplicate",
    207: "exception",
}


class Hl7Error(InvalidInput):
    """An HL7 v2 message the hub refuses: where (``location``), why (``hl7_code``, table 0357), and
    which acknowledgment answers it (``ack_code``: ``AR`` for header-level rejections, ``AE`` for
    content errors).

    ``expression`` (from :class:`~hub.errors.InvalidInput`) is ``str(location)``; ``code`` is the
    matching FHIR issue type, so a dead-letter record or OperationOutcome reads the same way as the
    FHIR edge's. The message never contains a submitted value.
    """

    def __init__(
        self,
        message: str,
        *,
        hl7_code: int,
        location: ErrorLocation | None,
        ack_code: Literal["AE", "AR"] = "AE",
    ) -> None:
        super().__init__(
            message,
            expression=str(location) if location is not None else None,
            code=_FHIR_ISSUE_FOR_HL7.get(hl7_code, "invalid"),
        )
        self.hl7_code = hl7_code
        self.location = location
        self.ack_code: Literal["AE", "AR"] = ack_code

    @property
    def detail(self) -> ErrorDetail:
        """The ERR segment content for this error."""
        return ErrorDetail(hl7_code=self.hl7_code, location=self.location, text=str(self))


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """What an ERR segment says: table 0357 code, location (if any) and a text free of PHI."""

    hl7_code: int
    location: ErrorLocation | None = None
    text: str = ""


def _reject(message: str, code: int, location: ErrorLocation | None) -> Hl7Error:
    return Hl7Error(message, hl7_code=code, location=location, ack_code="AR")


def _error(message: str, code: int, location: ErrorLocation | None) -> Hl7Error:
    return Hl7Error(message, hl7_code=code, location=location, ack_code="AE")


# --- the tokenizer ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The separators of one message (MSH-1 and MSH-2)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as it is written."""
        return self.component + self.repetition + self.escape + self.subcomponent


STANDARD_DELIMITERS: Final = Delimiters()


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment; ``fields[n]`` is field ``n`` (raw, still escaped), so ``fields[0]`` is the id and,
    for MSH, ``fields[1]`` the field separator and ``fields[2]`` the encoding characters."""

    id: str
    fields: tuple[str, ...]
    sequence: int = 1

    def raw(self, number: int) -> str:
        """Field ``number`` as written ('' when absent)."""
        return self.fields[number] if number < len(self.fields) else ""


def split_segments(text: str) -> list[str]:
    """The segment lines of a message: CR, CRLF or (when the text has no CR at all) LF end a segment."""
    lines = text.replace("\r\n", "\r").split("\r") if "\r" in text else text.split("\n")
    return [line.lstrip(" \t") for line in lines if line.strip()]


def unescape(text: str, delimiters: Delimiters) -> str:
    """Resolve HL7 escape sequences (never raises): delimiters, ``\\Xhh..\\`` (UTF-8, else Latin-1),
    ``\\.br\\`` as a line break; highlighting, formatting and charset switches are dropped; an
    unterminated sequence is kept as written."""
    esc = delimiters.escape
    if esc not in text:
        return text
    named = {
        "F": delimiters.field,
        "S": delimiters.component,
        "T": delimiters.subcomponent,
        "R": delimiters.repetition,
        "E": esc,
        ".br": "\n",
    }
    out: list[str] = []
    position = 0
    while True:
        start = text.find(esc, position)
        if start < 0:
            out.append(text[position:])
            break
        end = text.find(esc, start + 1)
        if end < 0:
            out.append(text[position:])
            break
        out.append(text[position:start])
        sequence = text[start + 1 : end]
        if sequence in named:
            out.append(named[sequence])
        elif sequence.startswith("X") and len(sequence) > 1:
            out.append(_hex_text(sequence[1:]))
        position = end + 1
    return "".join(out)


def _hex_text(digits: str) -> str:
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        return ""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("iso8859_1")


def escape(text: str, delimiters: Delimiters = STANDARD_DELIMITERS) -> str:
    """Escape a value for writing between ``delimiters``; control characters (line ends, and the MLLP
    block characters that would break framing) become ``\\Xhh\\``."""
    esc = delimiters.escape
    text = text.replace(esc, f"{esc}E{esc}")
    for char, name in (
        (delimiters.field, "F"),
        (delimiters.component, "S"),
        (delimiters.subcomponent, "T"),
        (delimiters.repetition, "R"),
    ):
        text = text.replace(char, f"{esc}{name}{esc}")
    return _ANY_CONTROL.sub(lambda m: f"{esc}X{ord(m.group()):02X}{esc}", text)


# --- what a message is ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageHeader:
    """The MSH fields the hub uses, unescaped and stripped (components as tuples)."""

    sending_application: tuple[str, ...]
    sending_facility: tuple[str, ...]
    receiving_application: tuple[str, ...]
    receiving_facility: tuple[str, ...]
    message_type: str
    trigger_event: str
    control_id: str
    processing_id: str
    version: str
    delimiters: Delimiters = STANDARD_DELIMITERS
    charset: str = "utf-8"

    @property
    def facility_key(self) -> str:
        """MSH-4 as one string, the form in which the operator registers a hospital's feed:
        its components joined by ``^`` without trailing empty ones (``GHH``, ``GHH^1.2.3^ISO``)."""
        return _joined(self.sending_facility)


@dataclass(frozen=True, slots=True)
class AdtMessage:
    """One parsed ADT message: header, segments, the text as received, and a content fingerprint."""

    header: MessageHeader
    segments: tuple[Segment, ...]
    text: str = field(repr=False)
    fingerprint: str = ""

    @property
    def event_kind(self) -> str:
        """``admit``, ``discharge``, ``registration`` or ``encounter-update``."""
        return EVENT_KINDS[self.header.trigger_event]

    def first(self, segment_id: str) -> Segment | None:
        """The first segment with this id, or None."""
        return next((s for s in self.segments if s.id == segment_id), None)

    def all(self, segment_id: str) -> list[Segment]:
        """Every segment with this id, in order."""
        return [s for s in self.segments if s.id == segment_id]


class _Fields:
    """Typed access to the fields of one segment (unescaped, stripped, ``""`` read as empty)."""

    def __init__(self, segment: Segment, delimiters: Delimiters) -> None:
        self.segment = segment
        self.d = delimiters
        self._components: dict[tuple[int, int], list[str]] = {}

    def repetitions(self, number: int) -> list[str]:
        raw = self.segment.raw(number)
        return raw.split(self.d.repetition) if raw else []

    def components(self, number: int, repetition: int = 0) -> list[str]:
        key = (number, repetition)
        found = self._components.get(key)
        if found is None:
            reps = self.repetitions(number)
            raw = reps[repetition] if repetition < len(reps) else ""
            found = [_clean(unescape(c, self.d)) for c in _components_raw(raw, self.d)] if raw else []
            self._components[key] = found
        return found

    def component(self, number: int, component: int = 1, repetition: int = 0) -> str:
        comps = self.components(number, repetition)
        return comps[component - 1] if component <= len(comps) else ""

    def subcomponents(self, number: int, component: int, repetition: int = 0) -> list[str]:
        reps = self.repetitions(number)
        if repetition >= len(reps):
            return []
        comps = reps[repetition].split(self.d.component)
        if component > len(comps):
            return []
        return [_clean(unescape(s, self.d)) for s in comps[component - 1].split(self.d.subcomponent)]

    def first_subcomponent(self, number: int, component: int = 1, repetition: int = 0) -> str:
        subs = self.subcomponents(number, component, repetition)
        return subs[0] if subs else ""

    def location(self, number: int, component: int | None = None) -> ErrorLocation:
        return ErrorLocation(self.segment.id, number, component, self.segment.sequence)


def _components_raw(repetition: str, delimiters: Delimiters) -> list[str]:
    """Components of one repetition; a component's subcomponents stay joined (first one wins when read)."""
    return [c.split(delimiters.subcomponent)[0] for c in repetition.split(delimiters.component)]


def _clean(value: str) -> str:
    value = value.strip()
    return "" if value == '""' else value


def _joined(parts: Sequence[str]) -> str:
    items = list(parts)
    while items and not items[-1]:
        items.pop()
    return "^".join(items)


# --- decoding and the header ------------------------------------------------------------------


def decode_text(data: bytes) -> tuple[str, str]:
    """The message text and the codec used: UTF-8, else the MSH-18 charset (AE 102 at MSH-18 if none fits)."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    declared = _declared_charset(data.decode("iso8859_1"))
    codec = _CHARSETS.get(declared.upper()) if declared else None
    if codec is not None and codec != "utf-8":
        try:
            return data.decode(codec), codec
        except UnicodeDecodeError:
            pass
    raise _error(
        "the message is not UTF-8 and MSH-18 names no character set it is encoded in "
        f"(supported: UTF-8, {', '.join(sorted(k for k in _CHARSETS if k != 'UNICODE UTF-8'))})",
        102,
        ErrorLocation("MSH", 18),
    )


def _declared_charset(text: str) -> str:
    body = text.removeprefix("\ufeff").lstrip()
    if not body.startswith("MSH") or len(body) < 4:
        return ""
    lines = split_segments(body)
    fields = lines[0].split(body[3]) if lines else []
    # fields[n] is MSH-(n+1): fields[17] is MSH-18; its first repetition, first component.
    return fields[17].split("~")[0].split("^")[0].strip() if len(fields) > 17 else ""


def _delimiters(line: str) -> Delimiters:
    if len(line) < 4:
        raise _reject("MSH-1 (field separator) is required", 101, _at("MSH", 1))
    separator = line[3]
    if separator.isalnum() or separator.isspace() or not separator.isprintable():
        raise _reject("MSH-1 (field separator) must be a printable, non-alphanumeric character", 102, _at("MSH", 1))
    end = line.find(separator, 4)
    encoding = line[4:end] if end >= 0 else line[4:]
    problems = (
        len(encoding) not in (4, 5)
        or len(set(encoding)) != len(encoding)
        or separator in encoding
        or any(c.isalnum() or c.isspace() or not c.isprintable() for c in encoding)
    )
    if problems:
        raise _reject(
            "MSH-2 (encoding characters) must be 4 (or, from v2.7, 5) distinct non-alphanumeric characters "
            "other than the field separator, e.g. ^~\\&",
            102,
            _at("MSH", 2),
        )
    return Delimiters(separator, encoding[0], encoding[1], encoding[2], encoding[3])


def _at(segment: str, number: int, component: int | None = None) -> ErrorLocation:
    return ErrorLocation(segment, number, component)


def _segments(lines: list[str], delimiters: Delimiters) -> list[Segment]:
    counts: dict[str, int] = {}
    segments: list[Segment] = []
    for index, line in enumerate(lines):
        seg_id = line[:3]
        if not _SEGMENT_ID.fullmatch(seg_id) or (len(line) > 3 and line[3] != delimiters.field):
            previous = segments[-1] if segments else None
            where = f"after {previous.id}" if previous is not None else "at the start"
            raise _error(
                f"line {index + 1} ({where}) is not a segment: a segment starts with a three-character "
                "segment id and the field separator; a line break inside a field must be escaped",
                100,
                ErrorLocation(previous.id, None, None, previous.sequence) if previous else ErrorLocation("MSH"),
            )
        counts[seg_id] = counts.get(seg_id, 0) + 1
        parts = line.split(delimiters.field)
        if seg_id == "MSH":
            parts.insert(1, delimiters.field)
        segments.append(Segment(seg_id, tuple(parts), counts[seg_id]))
    return segments


def parse_message(data: bytes, *, max_bytes: int | None = None) -> AdtMessage:
    """Parse one HL7 v2 ADT message and check what the hub needs; raise :class:`Hl7Error` otherwise.

    Header problems are rejected ``AR`` (original-mode acknowledgment rules: MSH unreadable or
    missing, MSH-9 not ADT A01/A03/A04/A08 (200/201), MSH-12 not 2.3-2.8 (203), MSH-11 not P/T/D (202),
    MSH-10 or MSH-4 empty (101)); content problems ``AE`` (PID or PV1 missing (100), a line that is
    not a segment (100), text that is not UTF-8 or the MSH-18 charset (102)). Field-level checks of
    PID and PV1 happen in :func:`map_adt`.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise _reject(f"the message is larger than the limit of {max_bytes} bytes", 104, None)
    start = data.removeprefix(b"\xef\xbb\xbf").lstrip()[:3]
    if start != b"MSH":
        if start in {b"FHS", b"BHS"}:
            raise _reject(
                "batches (FHS/BHS) are not accepted: send one message per MLLP frame", 100, ErrorLocation("MSH")
            )
        raise _reject("the message does not start with an MSH segment", 100, ErrorLocation("MSH"))
    text, codec = decode_text(data)
    body = text.removeprefix("\ufeff").lstrip()
    lines = split_segments(body)
    delimiters = _delimiters(lines[0])
    segments = _segments(lines, delimiters)
    msh = _Fields(segments[0], delimiters)
    header = _header(msh, segments, delimiters, codec)
    for segment in segments[1:]:
        if segment.id == "MSH":
            raise _reject("one message per MLLP frame: a second MSH segment was found", 100, segment_location(segment))
        if segment.id in {"FHS", "BHS", "FTS", "BTS"}:
            raise _reject("batch segments (FHS/BHS/BTS/FTS) are not accepted", 100, segment_location(segment))
    present = {s.id for s in segments}
    for required in ("PID", "PV1"):
        if required not in present:
            raise _error(
                f"the {required} segment is required in ADT^{header.trigger_event}", 100, ErrorLocation(required)
            )
    return AdtMessage(header=header, segments=tuple(segments), text=text, fingerprint=_fingerprint(header, lines))


def segment_location(segment: Segment) -> ErrorLocation:
    """The location of a whole segment."""
    return ErrorLocation(segment.id, None, None, segment.sequence)


def _header(msh: _Fields, segments: list[Segment], delimiters: Delimiters, codec: str) -> MessageHeader:
    version = msh.component(12)
    if not version:
        raise _reject("MSH-12 (version id) is required", 101, _at("MSH", 12))
    if version not in SUPPORTED_VERSIONS:
        raise _reject("MSH-12: this hub accepts HL7 v2.3 to v2.8 only", 203, _at("MSH", 12))
    if not msh.segment.raw(9).strip():
        raise _reject("MSH-9 (message type) is required", 101, _at("MSH", 9))
    message_type = msh.component(9, 1)
    if message_type != "ADT":
        raise _reject("MSH-9.1: this hub accepts ADT messages only", 200, _at("MSH", 9, 1))
    trigger = msh.component(9, 2)
    if not trigger:
        evn = next((s for s in segments if s.id == "EVN"), None)
        trigger = _Fields(evn, delimiters).component(1) if evn is not None else ""
    if not trigger:
        raise _reject("MSH-9.2 (trigger event) is required", 101, _at("MSH", 9, 2))
    if trigger not in EVENT_KINDS:
        raise _reject("MSH-9.2: this hub accepts ADT A01, A03, A04 and A08 only", 201, _at("MSH", 9, 2))
    control_id = msh.component(10)
    if not control_id:
        raise _reject("MSH-10 (message control id) is required", 101, _at("MSH", 10))
    if len(control_id) > 199:
        raise _reject("MSH-10 is longer than 199 characters", 104, _at("MSH", 10))
    processing_id = msh.component(11)
    if processing_id and processing_id not in {"P", "T", "D"}:
        raise _reject("MSH-11 (processing id) must be P, T or D", 202, _at("MSH", 11))
    facility = tuple(msh.components(4))
    if not any(facility):
        raise _reject(
            "MSH-4 (sending facility) is required: it tells the hub which hospital sent the message", 101, _at("MSH", 4)
        )
    return MessageHeader(
        sending_application=tuple(msh.components(3)),
        sending_facility=facility,
        receiving_application=tuple(msh.components(5)),
        receiving_facility=tuple(msh.components(6)),
        message_type=message_type,
        trigger_event=trigger,
        control_id=control_id,
        processing_id=processing_id or "P",
        version=version,
        delimiters=delimiters,
        charset=codec,
    )


def _fingerprint(header: MessageHeader, lines: list[str]) -> str:
    """What makes a retransmission the same message: the type and every segment after MSH (MSH-7 and
    the line-end style may differ between a message and its retransmission)."""
    digest = hashlib.sha256(f"{header.message_type}^{header.trigger_event}".encode())
    for line in lines[1:]:
        digest.update(b"\r")
        digest.update(line.rstrip().encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


# --- mapping ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MappedAdt:
    """The canonical event for one ADT message: what the MLLP edge writes to ``hub.ingress``."""

    event_id: str
    event_type: str
    key: bytes
    event: HubEvent


def adt_event_id(sender: str, message: AdtMessage) -> str:
    """The ``ce_id`` of a message: derived from the sender, MSH-10 and the content fingerprint.

    A retransmission (same sender, same MSH-10, same segments; MSH-7 may differ) keeps its ce_id, so
    it is recognised at the edge and de-duplicated downstream. A sender that reuses a control id for
    a *different* message (counters reset, test systems; the public samples do it) gets a new ce_id:
    keying on sender and MSH-10 alone would make the pipeline drop that message as a duplicate.
    """
    key = f"{sender}|{message.header.control_id}|{message.fingerprint}"
    return event_id(sender, "ADT", key.encode())


def map_adt(
    message: AdtMessage,
    *,
    sender: str,
    local_timezone: tzinfo | None = None,
    validate: bool = False,
) -> MappedAdt:
    """Map a parsed ADT message sent by partner ``sender`` to the Encounter event (see the module table).

    ``local_timezone`` is the sender's time zone for times without a UTC offset (HL7 allows them;
    FHIR does not): ``None`` keeps only their date. ``validate`` checks the Encounter with the R4B
    model (see the module docstring). Raises :class:`Hl7Error` (``AE``) naming the
    field of the problem: PID-3 missing (101) or unusable (102/104), PV1-2 not in table 0004 (103),
    PV1-44/45 not a date (102) or discharge before admission (102 at PV1-45).
    """
    d = message.header.delimiters
    pid = message.first("PID")
    pv1 = message.first("PV1")
    if pid is None or pv1 is None:  # parse_message guarantees both; keep the mapping total anyway
        raise _error("PID and PV1 segments are required", 100, ErrorLocation("PID" if pid is None else "PV1"))
    pid_f, pv1_f = _Fields(pid, d), _Fields(pv1, d)
    system, value, id_type = _patient_identifier(pid_f, sender)
    trigger = message.header.trigger_event
    start = _datetime_field(pv1_f, 44, local_timezone)
    end = _datetime_field(pv1_f, 45, local_timezone)
    if start is not None and end is not None and _before(end, start):
        raise _error("PV1-45 (discharge date/time) is earlier than PV1-44 (admit date/time)", 102, pv1_f.location(45))
    status = _status(trigger, start=start, end=end)
    class_system, class_code, class_display = _patient_class(pv1_f)

    encounter: dict[str, Any] = {"resourceType": "Encounter"}
    if _restricted(message, d):
        encounter["meta"] = {"security": [{"system": V3_CONFIDENTIALITY, "code": "R", "display": "restricted"}]}
    visit = _visit_identifier(pv1_f, sender)
    if visit is not None:
        encounter["identifier"] = [visit]
    encounter["status"] = status
    encounter["class"] = {"system": class_system, "code": class_code, "display": class_display}
    subject_identifier: dict[str, Any] = {"system": system, "value": value}
    if id_type:
        subject_identifier["type"] = {"coding": [{"system": V2_0203, "code": id_type}]}
    encounter["subject"] = {"identifier": subject_identifier}
    period = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    if period:
        encounter["period"] = period
    disposition = _discharge_disposition(pv1_f)
    if disposition is not None:
        encounter["hospitalization"] = {"dischargeDisposition": disposition}
    location = _location(pv1_f)
    if location is not None:
        entry: dict[str, Any] = {"location": {"display": location}}
        if status == "finished":
            entry["status"] = "completed"
        elif status in {"in-progress", "arrived"}:
            entry["status"] = "active"
        encounter["location"] = [entry]
    provider = _service_provider(message.header.sending_facility)
    if provider is not None:
        encounter["serviceProvider"] = provider
    if validate:
        _validate(encounter)
    return _mapped(message, encounter, sender=sender, patient_source=f"{system}|{value}")


def _mapped(message: AdtMessage, encounter: dict[str, Any], *, sender: str, patient_source: str) -> MappedAdt:
    klass = encounter["class"]
    ce_id = adt_event_id(sender, message)
    kind = message.event_kind
    facts = RoutingFacts(
        resource_type="Encounter",
        resource_id=ce_id,
        sender=sender,
        patient_source=patient_source,
        status=encounter["status"],
        event_kind=kind,
        encounter_class=f"{klass['system']}|{klass['code']}",
        security_labels=(f"{V3_CONFIDENTIALITY}|R",) if "meta" in encounter else (),
    )
    event = HubEvent(
        facts=facts,
        body=orjson.dumps(encounter).decode("utf-8"),
        original=message.text,
        original_media_type=HL7_V2_MEDIA_TYPE,
    )
    return MappedAdt(
        event_id=ce_id,
        event_type=event_type("Encounter", kind),
        key=f"{sender}|{patient_source}".encode(),
        event=event,
    )


def authority_system(authority: Sequence[str], sender: str) -> str | None:
    """The identifier system for an HL7 assigning authority (HD: namespace ^ universal id ^ type).

    Globally unique authorities keep their global name: ISO OID -> ``urn:oid:...``, UUID ->
    ``urn:uuid:...``, URI -> the URI. A namespace id alone (``ADT1``, ``MR``) only means something
    inside the sender's own systems, so it is scoped to the sender:
    ``urn:carehub:partner:{sender}:assigner:{namespace}`` (percent-encoded) - two hospitals that
    both call their MRN authority ``MR`` never share patients. ``None`` when the HD is empty.
    """
    parts = [*authority, "", "", ""]
    namespace, universal, kind = parts[0], parts[1], parts[2].upper()
    if universal and kind == "ISO" and _OID.fullmatch(universal):
        return f"urn:oid:{universal}"
    if universal and kind == "UUID":
        try:
            return f"urn:uuid:{uuid.UUID(universal)}"
        except ValueError:
            pass
    if universal and kind in {"URI", "URL"} and _URI.fullmatch(universal):
        return universal
    name = namespace or universal
    if not name:
        return None
    return f"{partner_namespace(sender)}:assigner:{quote(name, safe='')}"


def _patient_identifier(pid: _Fields, sender: str) -> tuple[str, str, str]:
    repetitions = pid.repetitions(3)
    if not any(r.strip() for r in repetitions):
        raise _error("PID-3 (patient identifier list) is required", 101, pid.location(3))
    candidates: list[tuple[str, list[str], int]] = []
    for index in range(len(repetitions)):
        value = pid.component(3, 1, index)
        if value:
            candidates.append((value, pid.subcomponents(3, 4, index), index))
    if not candidates:
        raise _error("PID-3.1 (ID number) is empty in every repetition of PID-3", 101, pid.location(3, 1))
    chosen = next((c for c in candidates if any(c[1])), candidates[0])
    value, authority, index = chosen
    if len(value) > MAX_IDENTIFIER_LENGTH:
        raise _error(f"PID-3.1 is longer than {MAX_IDENTIFIER_LENGTH} characters", 104, pid.location(3, 1))
    if _CONTROL.search(value):
        raise _error("PID-3.1 contains control characters", 102, pid.location(3, 1))
    system = authority_system(authority, sender) or partner_namespace(sender)
    id_type = pid.component(3, 5, index)
    return system, value, id_type if _FHIR_CODE.fullmatch(id_type) and len(id_type) <= 10 else ""


def _visit_identifier(pv1: _Fields, sender: str) -> dict[str, Any] | None:
    value = pv1.component(19)
    if not value or len(value) > MAX_IDENTIFIER_LENGTH or _CONTROL.search(value):
        return None
    system = authority_system(pv1.subcomponents(19, 4), sender) or f"{partner_namespace(sender)}:visit"
    return {
        "type": {"coding": [{"system": V2_0203, "code": "VN", "display": "Visit number"}]},
        "system": system,
        "value": value,
    }


def _patient_class(pv1: _Fields) -> tuple[str, str, str]:
    code = pv1.component(2)
    if not code:
        return _UNKNOWN_CLASS
    mapped = PATIENT_CLASS.get(code.upper())
    if mapped is None:
        raise _error(
            "PV1-2 (patient class) is not a code of HL7 table 0004 (E, I, O, P, B, C, N, R, U)", 103, pv1.location(2)
        )
    return mapped


def _status(trigger: str, *, start: str | None, end: str | None) -> str:
    if trigger == "A03":
        return "finished"
    if trigger == "A01":
        return "in-progress"
    if trigger == "A04":
        return "arrived"
    if end is not None:
        return "finished"
    return "in-progress" if start is not None else "unknown"


def _datetime_field(pv1: _Fields, number: int, local_timezone: tzinfo | None) -> str | None:
    value = pv1.component(number)  # TS (<= 2.5: time ^ precision) or DTM: the first component
    if not value:
        return None
    converted = fhir_datetime(value, local_timezone=local_timezone)
    if converted is None:
        raise _error(
            f"PV1-{number} is not an HL7 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])", 102, pv1.location(number)
        )
    return converted


def fhir_datetime(value: str, *, local_timezone: tzinfo | None = None) -> str | None:
    """An HL7 DTM as an FHIR dateTime, or ``None`` when it is not a valid DTM.

    Precision is kept down to the day (``2015``, ``2015-02``, ``2015-02-08``). A time needs a UTC
    offset in FHIR: the DTM's own (``+0215`` -> ``+02:15``), else ``local_timezone``'s at that
    moment; with neither, only the date is kept. Missing minutes and seconds are ``00``; a fraction
    of a second is kept.
    """
    match = _DTM.fullmatch(value)
    if match is None:
        return None
    parts = match.groupdict()
    year = int(parts["year"])
    month = int(parts["month"]) if parts["month"] else None
    day = int(parts["day"]) if parts["day"] else None
    if year < 1 or (month is not None and not 1 <= month <= 12):
        return None
    if day is not None and (month is None or not 1 <= day <= calendar.monthrange(year, month)[1]):
        return None
    hour, minute, second = (int(parts[k]) if parts[k] else 0 for k in ("hour", "minute", "second"))
    if hour > 23 or minute > 59 or second > 59:
        return None
    offset = parts["offset"]
    if offset is not None and (int(offset[1:3]) > 14 or int(offset[3:5]) > 59):
        return None
    if month is None:
        return f"{year:04d}"
    if day is None:
        return f"{year:04d}-{month:02d}"
    date = f"{year:04d}-{month:02d}-{day:02d}"
    if parts["hour"] is None:
        return date
    fraction = f".{parts['fraction']}" if parts["fraction"] else ""
    if offset is not None:
        zone = f"{offset[:3]}:{offset[3:]}"
    elif local_timezone is not None:
        delta = datetime(year, month, day, hour, minute, second, tzinfo=local_timezone).utcoffset()
        if delta is None:
            return date
        minutes = int(delta.total_seconds() // 60)
        sign = "-" if minutes < 0 else "+"
        zone = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    else:
        return date
    return f"{date}T{hour:02d}:{minute:02d}:{second:02d}{fraction}{zone}"


def _before(end: str, start: str) -> bool:
    """True when ``end`` is certainly before ``start`` (instants compared as instants, else by date)."""
    if "T" in end and "T" in start:
        return datetime.fromisoformat(end) < datetime.fromisoformat(start)
    common = min(len(end[:10]), len(start[:10]))
    return end[:common] < start[:common]


def _discharge_disposition(pv1: _Fields) -> dict[str, Any] | None:
    code, text, system = (pv1.component(36, n) for n in (1, 2, 3))
    code, text = _CONTROL.sub("", " ".join(code.split())), _CONTROL.sub("", text)
    if not code:
        return {"text": text} if text else None
    coding: dict[str, Any] = {}
    if system.upper() in {"", "HL70112", "HL7-0112"}:
        coding["system"] = V2_0112
    coding["code"] = code
    if text:
        coding["display"] = text
    return {"coding": [coding]}


def _location(pv1: _Fields) -> str | None:
    description = pv1.component(3, 9)
    if description:
        return _CONTROL.sub("", description)
    point_of_care = pv1.first_subcomponent(3, 1)
    room, bed = pv1.component(3, 2), pv1.component(3, 3)
    facility = pv1.first_subcomponent(3, 4)
    building, floor = pv1.component(3, 7), pv1.component(3, 8)
    parts = [
        point_of_care,
        f"room {room}" if room else "",
        f"bed {bed}" if bed else "",
        f"building {building}" if building else "",
        f"floor {floor}" if floor else "",
        facility,
    ]
    text = ", ".join(p for p in parts if p)
    return _CONTROL.sub("", text) or None


def _service_provider(facility: tuple[str, ...]) -> dict[str, Any] | None:
    namespace, universal, kind = ([*facility, "", "", ""])[:3]
    reference: dict[str, Any] = {}
    if universal and kind.upper() == "ISO" and _OID.fullmatch(universal):
        reference["identifier"] = {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{universal}"}
    display = _CONTROL.sub("", namespace or universal)
    if display:
        reference["display"] = display
    return reference or None


def _restricted(message: AdtMessage, delimiters: Delimiters) -> bool:
    pd1 = message.first("PD1")
    if pd1 is not None and _Fields(pd1, delimiters).component(12).upper() == "Y":
        return True
    return any(_Fields(arv, delimiters).component(2).upper() != "D" for arv in message.all("ARV"))


#: Which HL7 field each generated Encounter element comes from (to place a validation failure).
_SOURCE_OF: Final = (
    ("Encounter.subject", ErrorLocation("PID", 3)),
    ("Encounter.class", ErrorLocation("PV1", 2)),
    ("Encounter.identifier", ErrorLocation("PV1", 19)),
    ("Encounter.period.start", ErrorLocation("PV1", 44)),
    ("Encounter.period.end", ErrorLocation("PV1", 45)),
    ("Encounter.location", ErrorLocation("PV1", 3)),
    ("Encounter.hospitalization", ErrorLocation("PV1", 36)),
    ("Encounter.serviceProvider", ErrorLocation("MSH", 4)),
)


def _validate(encounter: dict[str, Any]) -> None:
    try:
        validate_resource(encounter, expected_type="Encounter")
    except FhirValidationError as exc:
        path = exc.issues[0].expression or ""
        location = next((loc for prefix, loc in _SOURCE_OF if path.startswith(prefix)), None)
        if location is None:
            raise _error("the message could not be mapped to a valid FHIR Encounter", 207, None) from exc
        raise _error(f"{location} does not map to a valid FHIR value ({path})", 102, location) from exc


# --- acknowledgments --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AckHeader:
    """What could be read from the MSH of any input, for answering it (empty strings when unreadable)."""

    sending_application: tuple[str, ...] = ()
    sending_facility: tuple[str, ...] = ()
    receiving_application: tuple[str, ...] = ()
    receiving_facility: tuple[str, ...] = ()
    trigger_event: str = ""
    control_id: str = ""
    processing_id: str = "P"
    version: str = "2.5"
    codec: str = "utf-8"


def read_header_leniently(data: bytes) -> AckHeader:
    """Read what can be read of an MSH for an acknowledgment; never raises."""
    try:
        text, codec = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text = data.decode("iso8859_1")
        declared = _CHARSETS.get(_declared_charset(text).upper(), "utf-8")
        codec = declared if declared != "ascii" else "utf-8"
    body = text.removeprefix("\ufeff").lstrip()
    if not body.startswith("MSH") or len(body) < 5:
        return AckHeader(codec=codec)
    separator = body[3]
    if separator.isalnum() or separator.isspace() or not separator.isprintable():
        return AckHeader(codec=codec)
    lines = split_segments(body)
    raw = lines[0].split(separator) if lines else []
    raw.insert(1, separator)
    try:
        delimiters = _delimiters(lines[0])
    except Hl7Error:
        delimiters = None

    def components(number: int) -> tuple[str, ...]:
        value = raw[number] if number < len(raw) else ""
        if delimiters is None:
            return (value.strip(),)
        first = value.split(delimiters.repetition)[0]
        return tuple(_clean(unescape(c, delimiters)) for c in _components_raw(first, delimiters))

    version = (components(12) or ("",))[0]
    trigger = components(9)[1] if len(components(9)) > 1 else ""
    processing = (components(11) or ("",))[0]
    return AckHeader(
        sending_application=components(3),
        sending_facility=components(4),
        receiving_application=components(5),
        receiving_facility=components(6),
        trigger_event=trigger if _TOKEN.fullmatch(trigger) and len(trigger) <= 3 else "",
        control_id=(components(10) or ("",))[0][:199],
        processing_id=processing if processing in {"P", "T", "D"} else "P",
        version=version if _VERSION.fullmatch(version) else "2.5",
        codec=codec,
    )


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def ack(
    message: bytes | AdtMessage,
    code: AckCode = "AA",
    error: Hl7Error | ErrorDetail | None = None,
    *,
    control_id: str | None = None,
    timestamp: datetime | None = None,
    application: str = "CAREHUB",
) -> bytes:
    """The original-mode acknowledgment of ``message`` (ER7 bytes, segments ended by CR, no MLLP framing).

    * MSH: sending and receiving application/facility swapped (``application`` when the message named
      no receiving application), MSH-7 ``timestamp`` (now, UTC), MSH-9 ``ACK^<trigger>^ACK``
      (``ACK^<trigger>`` before v2.3.1), a new MSH-10 (``control_id`` or random), MSH-11 and MSH-12 as
      received (v2.5 and P when unreadable), in the message's own character set;
    * MSA: MSA-1 ``code``, MSA-2 the received MSH-10 (empty when unreadable); MSA-3 the error text
      before v2.5;
    * ERR (AE/AR with ``error``): from v2.5 ERR-2 location (segment ^ sequence ^ field ^ ^ component),
      ERR-3 the table 0357 code, ERR-4 ``E``, ERR-8 the text; before v2.5 ERR-1 (segment ^ sequence
      ^ field ^ code&name&HL70357).

    Total: any bytes yield an acknowledgment.
    """
    header = _ack_header(message)
    detail = error.detail if isinstance(error, Hl7Error) else error
    d = STANDARD_DELIMITERS
    version = header.version
    modern = _version_tuple(version) >= (2, 5)
    stamp = (timestamp or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")
    if header.trigger_event:
        with_structure = _version_tuple(version) >= (2, 3, 1)
        message_type = f"ACK^{header.trigger_event}^ACK" if with_structure else f"ACK^{header.trigger_event}"
    else:
        message_type = "ACK"
    receiving_app = header.receiving_application if any(header.receiving_application) else (application,)
    msh = [
        "MSH",
        d.encoding_characters,
        _hd(receiving_app),
        _hd(header.receiving_facility),
        _hd(header.sending_application),
        _hd(header.sending_facility),
        stamp,
        "",
        message_type,
        escape(control_id or uuid.uuid4().hex[:20]),
        header.processing_id,
        escape(version),
    ]
    segments = [d.field.join(msh)]
    msa = ["MSA", code, escape(header.control_id)]
    if detail is not None and not modern and detail.text:
        msa.append(escape(detail.text))
    segments.append(d.field.join(msa))
    if detail is not None and code != "AA":
        segments.append(_err(detail, modern=modern))
    return ("\r".join(segments) + "\r").encode(header.codec, "replace")


def _ack_header(message: bytes | AdtMessage) -> AckHeader:
    if isinstance(message, AdtMessage):
        h = message.header
        return AckHeader(
            sending_application=h.sending_application,
            sending_facility=h.sending_facility,
            receiving_application=h.receiving_application,
            receiving_facility=h.receiving_facility,
            trigger_event=h.trigger_event,
            control_id=h.control_id,
            processing_id=h.processing_id,
            version=h.version,
            codec=h.charset,
        )
    return read_header_leniently(message)


def _hd(parts: Sequence[str]) -> str:
    items = [escape(p) for p in parts]
    while items and not items[-1]:
        items.pop()
    return "^".join(items)


def _err(detail: ErrorDetail, *, modern: bool) -> str:
    name = HL7_ERROR_NAMES.get(detail.hl7_code, "Application internal error")
    loc = detail.location
    if modern:
        erl = ""
        if loc is not None:
            repetition = "1" if loc.component is not None else ""
            parts = [loc.segment, str(loc.sequence), _num(loc.field), repetition, _num(loc.component)]
            erl = "^".join(parts).rstrip("^")
        fields = ["ERR", "", erl, f"{detail.hl7_code}^{name}^HL70357", "E", "", "", "", escape(detail.text)]
        return "|".join(fields).rstrip("|")
    eld = ["", "", ""]
    if loc is not None:
        eld = [loc.segment, str(loc.sequence), _num(loc.field)]
    return "|".join(["ERR", "^".join([*eld, f"{detail.hl7_code}&{name}&HL70357"])])


def _num(value: int | None) -> str:
    return str(value) if value is not None else ""
