"""Unit tests of the pure HL7 v2 ADT edge: reading, mapping to the Encounter event, acknowledgments."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from hub.adapters import hl7_adt
from hub.adapters.fhir_validation import FhirIssue, FhirValidationError, validate_resource
from hub.adapters.hl7_adt import (
    HL7_V2_MEDIA_TYPE,
    SUPPORTED_VERSIONS,
    Delimiters,
    ErrorDetail,
    ErrorLocation,
    Hl7Error,
    ack,
    adt_event_id,
    authority_system,
    escape,
    fhir_datetime,
    map_adt,
    parse_message,
    unescape,
)
from hub.errors import InvalidInput
from hub.events import decode, encode
from tests.adapters.hl7_fakes import HOSPITAL, adt, read_ack

OID_SYSTEM = "urn:oid:2.16.840.1.113883.19.5"


def mapped(data: bytes, *, sender: str = HOSPITAL, validate: bool = True, **kwargs: Any) -> hl7_adt.MappedAdt:
    """Parse and map in one step, validating the Encounter with the R4B model (unless told not to)."""
    return map_adt(parse_message(data), sender=sender, validate=validate, **kwargs)


def encounter(data: bytes, **kwargs: Any) -> dict[str, Any]:
    """The Encounter JSON the message maps to."""
    body: dict[str, Any] = orjson.loads(mapped(data, **kwargs).event.body)
    return body


def error_of(data: bytes, *, sender: str = HOSPITAL) -> Hl7Error:
    """The Hl7Error parsing or mapping raises (fails the test when none is raised)."""
    with pytest.raises(Hl7Error) as caught:
        mapped(data, sender=sender)
    return caught.value


# --- reading ----------------------------------------------------------------------------------


@pytest.mark.parametrize("separator", ["\r", "\n", "\r\n"], ids=["CR", "LF", "CRLF"])
def test_cr_lf_and_crlf_segment_ends_read_the_same(separator: str) -> None:
    """The three line-end styles of real feeds give the same Encounter and the same fingerprint."""
    reference = mapped(adt())
    result = mapped(adt(separator=separator))
    assert reference.event.body == result.event.body
    assert parse_message(adt()).fingerprint == parse_message(adt(separator=separator)).fingerprint


def test_a_leading_byte_order_mark_is_ignored_but_kept_in_the_original() -> None:
    """A UTF-8 BOM does not hide the MSH; the original text keeps it, so it re-encodes to the same bytes."""
    data = b"\xef\xbb\xbf" + adt(separator="\n")
    result = mapped(data)
    assert data == (result.event.original or "").encode("utf-8")
    assert HL7_V2_MEDIA_TYPE == result.event.original_media_type


def test_a_bare_lf_inside_a_cr_terminated_message_stays_in_its_field() -> None:
    """With CR segment ends, an LF is field content (free text), not a segment break."""
    message = parse_message(adt({"PID-11": "1 Main St\nApt 2"}))
    assert ("MSH", "EVN", "PID", "PV1") == tuple(s.id for s in message.segments)
    assert "1 Main St\nApt 2" == message.segments[2].raw(11)


def test_blank_lines_leading_whitespace_and_trailing_spaces_are_tolerated() -> None:
    """Blank lines, indentation and trailing blanks (seen in the public samples) do not matter."""
    text = adt().decode().replace("\rPID", "\r\r  PID").replace("\r", " \r")
    assert "PATID1234" == encounter(text.encode())["subject"]["identifier"]["value"]


def test_the_trigger_comes_from_evn_1_when_msh_9_has_none() -> None:
    """Old feeds send MSH-9 ``ADT`` only: EVN-1 names the event."""
    result = mapped(adt({"MSH-9": "ADT", "EVN-1": "A03"}))
    assert "discharge" == result.event.facts.event_kind


def test_msh_9_wins_over_a_contradicting_evn_1_and_evn_may_be_missing() -> None:
    """The FHIR-Converter samples carry EVN-1 A01 in A03/A04/A08 messages; one sample has no EVN."""
    assert "discharge" == mapped(adt({"MSH-9": "ADT^A03^ADT_A03", "EVN-1": "A01"})).event.facts.event_kind
    assert "admit" == mapped(adt(drop=("EVN",))).event.facts.event_kind


def test_msh_9_3_message_structure_is_not_checked() -> None:
    """``ADT^A04^ADT_A04`` (the standard says ADT_A01) is accepted as A04."""
    assert "registration" == mapped(adt({"MSH-9": "ADT^A04^ADT_A04"})).event.facts.event_kind


@pytest.mark.parametrize("version", sorted(SUPPORTED_VERSIONS))
def test_every_version_from_2_3_to_2_8_is_accepted(version: str) -> None:
    """MSH-12 2.3 ... 2.8.2, with or without a VID component after it."""
    assert version == parse_message(adt({"MSH-12": f"{version}^USA"})).header.version


@pytest.mark.parametrize("processing_id", ["P", "T", "D", ""])
def test_production_training_debug_and_missing_processing_ids_are_accepted(processing_id: str) -> None:
    """MSH-11 P/T/D (the public samples use all three); empty is read as P."""
    assert (processing_id or "P") == parse_message(adt({"MSH-11": processing_id})).header.processing_id


def test_latin_1_text_is_read_when_msh_18_declares_it() -> None:
    """A message that is not UTF-8 is decoded with the MSH-18 charset."""
    data = adt({"MSH-18": "8859/1", "PV1-3": "Ward\u00e9"}).decode().encode("iso8859_1")
    message = parse_message(data)
    assert "iso8859_1" == message.header.charset
    assert "Ward\u00e9" in encounter(data)["location"][0]["location"]["display"]


def test_valid_utf_8_is_read_as_utf_8_even_when_msh_18_says_latin_1() -> None:
    """Mislabelled UTF-8 is common; valid UTF-8 is taken as UTF-8 (no mojibake)."""
    data = adt({"MSH-18": "8859/1", "PV1-3": "Ward\u00e9"})
    assert "Ward\u00e9" in encounter(data)["location"][0]["location"]["display"]


def test_custom_delimiters_from_msh_1_and_msh_2_are_honoured() -> None:
    """MSH-1 ``#`` and MSH-2 ``*~\\$``: fields, components and subcomponents split on them."""
    text = adt().decode().replace("|", "#").replace("^", "*").replace("&", "$")
    identifier = encounter(text.encode())["subject"]["identifier"]
    assert {"system": OID_SYSTEM, "value": "PATID1234"} == {k: identifier[k] for k in ("system", "value")}


def test_escape_sequences_are_resolved_and_the_hl7_null_is_empty() -> None:
    """``\\T\\`` in an id is a literal ``&``; ``""`` in PV1-44 means no value."""
    result = encounter(adt({"PID-3": "A\\T\\B^^^GHH", "PV1-44": '""'}))
    assert "A&B" == result["subject"]["identifier"]["value"]
    assert "period" not in result


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f", "a|b^c&d~e\\f"),
        ("line\\.br\\two", "line\ntwo"),
        ("\\H\\bold\\N\\", "bold"),
        ("caf\\XC3A9\\", "caf\u00e9"),
        ("\\XE9\\", "\u00e9"),
        ("\\XZZ\\", ""),
        ("open \\F", "open \\F"),
    ],
)
def test_unescape_resolves_the_standard_sequences(text: str, expected: str) -> None:
    """Delimiter escapes, hex (UTF-8, else Latin-1), line breaks; formatting dropped; unterminated kept."""
    assert expected == unescape(text, Delimiters())


def test_escape_protects_delimiters_and_mllp_control_characters() -> None:
    """Delimiters are escaped and no raw control character (CR, VT, FS) survives."""
    escaped = escape("a|b^c&d~e\\f\rg\x1ch\x0b")
    assert "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\X0D\\g\\X1C\\h\\X0B\\" == escaped
    assert "a|b^c&d~e\\f\rg\x1ch\x0b" == unescape(escaped, Delimiters())


# --- mapping ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "fields", "kind", "status"),
    [
        ("A01", {}, "admit", "in-progress"),
        ("A03", {"PV1-45": "20250117090000+0100"}, "discharge", "finished"),
        ("A03", {}, "discharge", "finished"),
        ("A04", {}, "registration", "arrived"),
        ("A08", {"PV1-45": "20250117090000+0100"}, "encounter-update", "finished"),
        ("A08", {}, "encounter-update", "in-progress"),
        ("A08", {"PV1-44": ""}, "encounter-update", "unknown"),
    ],
)
def test_each_trigger_maps_to_its_event_kind_status_and_type(
    trigger: str, fields: dict[str, str], kind: str, status: str
) -> None:
    """A01 admit, A03 discharge, A04 registration, A08 encounter-update, with the Encounter status."""
    result = mapped(adt({"MSH-9": f"ADT^{trigger}", **fields}))
    assert (kind, status) == (result.event.facts.event_kind, result.event.facts.status)
    assert status == orjson.loads(result.event.body)["status"]
    assert f"org.carehub.encounter.{kind}" == result.event_type


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("I", "http://terminology.hl7.org/CodeSystem/v3-ActCode|IMP"),
        ("O", "http://terminology.hl7.org/CodeSystem/v3-ActCode|AMB"),
        ("E", "http://terminology.hl7.org/CodeSystem/v3-ActCode|EMER"),
        ("P", "http://terminology.hl7.org/CodeSystem/v3-ActCode|PRENC"),
        ("B", "http://terminology.hl7.org/CodeSystem/v2-0004|B"),
        ("R", "http://terminology.hl7.org/CodeSystem/v2-0004|R"),
        ("U", "http://terminology.hl7.org/CodeSystem/v2-0004|U"),
        ("i", "http://terminology.hl7.org/CodeSystem/v3-ActCode|IMP"),
        ("I^Inpatient^HL70004", "http://terminology.hl7.org/CodeSystem/v3-ActCode|IMP"),
        ("", "http://terminology.hl7.org/CodeSystem/v3-NullFlavor|UNK"),
    ],
)
def test_pv1_2_maps_to_encounter_class(code: str, expected: str) -> None:
    """Table 0004 per the v2-to-FHIR ConceptMap; a CWE (2.7+) uses its code; empty is UNK."""
    result = mapped(adt({"PV1-2": code}))
    assert expected == result.event.facts.encounter_class
    klass = orjson.loads(result.event.body)["class"]
    assert expected == f"{klass['system']}|{klass['code']}"


@pytest.mark.parametrize(
    ("pid3", "system", "value"),
    [
        ("X1^^^GHH&2.16.840.1.113883.19.5&ISO^MR", OID_SYSTEM, "X1"),
        ("X1^^^&2.16.840.1.113883.19.5&ISO", OID_SYSTEM, "X1"),
        ("X1^^^ADT1^MR", f"urn:carehub:partner:{HOSPITAL}:assigner:ADT1", "X1"),
        ("X1^^^GOOD HEALTH^MR", f"urn:carehub:partner:{HOSPITAL}:assigner:GOOD%20HEALTH", "X1"),
        ("X1^^^^MR", f"urn:carehub:partner:{HOSPITAL}", "X1"),
        ("X1", f"urn:carehub:partner:{HOSPITAL}", "X1"),
        ("X1^^^^MR~X2^^^MPI^PI", f"urn:carehub:partner:{HOSPITAL}:assigner:MPI", "X2"),
        ("~X2^^^MPI", f"urn:carehub:partner:{HOSPITAL}:assigner:MPI", "X2"),
        ("X1^^^test&2.16.1&HCD", f"urn:carehub:partner:{HOSPITAL}:assigner:test", "X1"),
        ("X1^^^GHH&1.2.bad&ISO", f"urn:carehub:partner:{HOSPITAL}:assigner:GHH", "X1"),
        (
            "X1^^^&F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6&UUID",
            "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            "X1",
        ),
        ("X1^^^&https://mpi.example.org/id&URI", "https://mpi.example.org/id", "X1"),
    ],
)
def test_the_patient_is_the_first_pid_3_identifier_with_an_assigning_authority(
    pid3: str, system: str, value: str
) -> None:
    """OIDs, UUIDs and URIs are global; namespace ids and bare ids are scoped to the sender."""
    result = mapped(adt({"PID-3": pid3}))
    identifier = orjson.loads(result.event.body)["subject"]["identifier"]
    assert (system, value) == (identifier["system"], identifier["value"])
    assert f"{system}|{value}" == result.event.facts.patient_source
    assert f"{HOSPITAL}|{system}|{value}".encode() == result.key


def test_two_hospitals_with_the_same_local_authority_never_share_a_patient() -> None:
    """``MR`` at hospital A is not ``MR`` at hospital B; an OID is the same everywhere."""
    local = adt({"PID-3": "123^^^MR"})
    assert mapped(local, sender="a").event.facts.patient_source != mapped(local, sender="b").event.facts.patient_source
    shared = adt({"PID-3": "123^^^&1.2.3.4&ISO"})
    assert (
        mapped(shared, sender="a").event.facts.patient_source == mapped(shared, sender="b").event.facts.patient_source
    )


def test_authority_system_is_none_for_an_empty_assigning_authority() -> None:
    """No namespace and no universal id: no system (the caller falls back to the sender's namespace)."""
    assert authority_system(["", "", ""], "s") is None


def test_the_full_encounter_mapping_of_a_discharge() -> None:
    """Every mapped element, on one A03: the whole FHIR Encounter, compared as a value."""
    data = adt(
        {
            "MSH-4": "GHH^2.16.840.1.113883.19.1^ISO",
            "MSH-9": "ADT^A03^ADT_A03",
            "PV1-45": "20250117090000+0100",
        }
    )
    expected = {
        "resourceType": "Encounter",
        "identifier": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                            "code": "VN",
                            "display": "Visit number",
                        }
                    ]
                },
                "system": f"urn:carehub:partner:{HOSPITAL}:assigner:GHH",
                "value": "V100",
            }
        ],
        "status": "finished",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "IMP",
            "display": "inpatient encounter",
        },
        "subject": {
            "identifier": {
                "system": OID_SYSTEM,
                "value": "PATID1234",
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
            }
        },
        "period": {"start": "2025-01-15T10:30:00+01:00", "end": "2025-01-17T09:00:00+01:00"},
        "hospitalization": {
            "dischargeDisposition": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v2-0112",
                        "code": "01",
                        "display": "Discharged to home",
                    }
                ]
            }
        },
        "location": [{"location": {"display": "WARD1, room 101, bed A, GHH"}, "status": "completed"}],
        "serviceProvider": {
            "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:2.16.840.1.113883.19.1"},
            "display": "GHH",
        },
    }
    result = encounter(data)
    assert expected == result
    assert "Encounter" == validate_resource(result, expected_type="Encounter").get_resource_type()


def test_routing_facts_and_event_envelope_of_an_admit() -> None:
    """The facts the pipeline routes on, the ce_id, the HubEvent round trip and the original text."""
    data = adt()
    result = mapped(data)
    facts = result.event.facts
    assert ("Encounter", HOSPITAL, "admit", "in-progress") == (
        facts.resource_type,
        facts.sender,
        facts.event_kind,
        facts.status,
    )
    assert adt_event_id(HOSPITAL, parse_message(data)) == result.event_id == facts.resource_id
    assert data.decode() == result.event.original
    assert result.event == decode(encode(result.event))


def test_the_event_id_depends_on_sender_control_id_and_content() -> None:
    """A retransmission (new MSH-7, other line ends) keeps its ce_id; another sender, MSH-10 or
    content (a reused control id) gets another one."""
    first = mapped(adt()).event_id
    assert first == mapped(adt({"MSH-7": "20250116000000+0100"}, separator="\n")).event_id
    assert first != mapped(adt(), sender="hosp-b").event_id
    assert first != mapped(adt({"MSH-10": "MSG-0002"})).event_id
    assert first != mapped(adt({"PV1-45": "20250117090000+0100"})).event_id


def test_the_fingerprint_ignores_msh_but_not_content() -> None:
    """MSH-7 may change on a resend; a different PID is a different message."""
    base = parse_message(adt()).fingerprint
    assert base == parse_message(adt({"MSH-7": "20990101"})).fingerprint
    assert base != parse_message(adt({"PID-3": "OTHER^^^GHH"})).fingerprint
    assert base != parse_message(adt({"MSH-9": "ADT^A08"})).fingerprint


@pytest.mark.parametrize(
    "extra",
    ["PD1" + "|" * 12 + "Y", "ARV|1|A|DEM|PAT"],
    ids=["PD1-12", "ARV"],
)
def test_protection_indicators_become_a_restricted_security_label(extra: str) -> None:
    """PD1-12 Y or an ARV access restriction marks the event R (restricted) for consent and redaction."""
    result = mapped(adt(extra=(extra,)))
    label = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R"
    assert (label,) == result.event.facts.security_labels
    assert [{"system": label.split("|", maxsplit=1)[0], "code": "R", "display": "restricted"}] == orjson.loads(
        result.event.body
    )["meta"]["security"]


def test_an_arv_deleting_a_restriction_does_not_restrict() -> None:
    """ARV-2 D removes a restriction: no label."""
    assert () == mapped(adt(extra=("ARV|1|D|DEM|PAT",))).event.facts.security_labels


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025", "2025"),
        ("202501", "2025-01"),
        ("20250115", "2025-01-15"),
        ("20250115+0100", "2025-01-15"),
        ("2025011510+0100", "2025-01-15T10:00:00+01:00"),
        ("202501151030-0500", "2025-01-15T10:30:00-05:00"),
        ("20250115103015.25+0215", "2025-01-15T10:30:15.25+02:15"),
        ("20250115103015", "2025-01-15"),
        ("20240229", "2024-02-29"),
        ("20250229", None),
        ("20251301", None),
        ("20250115246000", None),
        ("202501151060", None),
        ("20250115103000+1500", None),
        ("2025-01-15", None),
        ("0000", None),
        ("yesterday", None),
    ],
)
def test_fhir_datetime_converts_hl7_dtm(value: str, expected: str | None) -> None:
    """Precision down to the day is kept; a time needs an offset; impossible dates are refused."""
    assert expected == fhir_datetime(value)


def test_a_local_time_zone_supplies_the_missing_offset() -> None:
    """With the sender's zone known, a local time keeps its time (DST-aware)."""
    zone = ZoneInfo("America/Chicago")
    assert "2025-01-15T10:30:00-06:00" == fhir_datetime("202501151030", local_timezone=zone)
    assert "2025-07-15T10:30:00-05:00" == fhir_datetime("202507151030", local_timezone=zone)
    assert {"start": "2025-07-15T10:30:00-05:00"} == encounter(adt({"PV1-44": "202507151030"}), local_timezone=zone)[
        "period"
    ]


def test_a_discharge_disposition_with_a_local_code_system_keeps_code_and_text() -> None:
    """PV1-36 ``Admitted as Inpatient^Sample^ACR`` (a sample): code without the v2-0112 system."""
    result = encounter(adt({"PV1-36": "Admitted as Inpatient^Sample^ACR"}))
    assert {"coding": [{"code": "Admitted as Inpatient", "display": "Sample"}]} == result["hospitalization"][
        "dischargeDisposition"
    ]


def test_a_location_description_wins_over_the_composed_display() -> None:
    """PL-9 (location description) is used as it is when present."""
    assert (
        "Cardiology ward"
        == encounter(adt({"PV1-3": "W1^1^2^GHH^^^^^Cardiology ward"}))["location"][0]["location"]["display"]
    )


def test_an_encounter_that_fails_validation_is_refused_at_its_hl7_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """A validation issue at ``Encounter.period.start`` is reported at PV1-44 (AE 102)."""

    def invalid(_data: dict[str, Any], *, expected_type: str) -> None:
        raise FhirValidationError([FhirIssue("value", f"{expected_type}.period.start: bad", "Encounter.period.start")])

    monkeypatch.setattr(hl7_adt, "validate_resource", invalid)
    error = error_of(adt())
    assert ("AE", 102, "PV1-44") == (error.ack_code, error.hl7_code, error.expression)
    assert mapped(adt(), validate=False).event.facts.status == "in-progress"


def test_an_unplaceable_validation_failure_is_an_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An issue on an element with no HL7 source is AE 207 without a location."""

    def invalid(_data: dict[str, Any], *, expected_type: str) -> None:
        raise FhirValidationError([FhirIssue("structure", f"{expected_type}: bad", expected_type)])

    monkeypatch.setattr(hl7_adt, "validate_resource", invalid)
    error = error_of(adt())
    assert (207, None) == (error.hl7_code, error.location)


# --- errors -----------------------------------------------------------------------------------


def test_hl7_error_is_invalid_input_with_location_and_fhir_issue_code() -> None:
    """The error tree: an HL7 refusal is permanent InvalidInput, its expression the HL7 location."""
    error = error_of(adt({"PID-3": ""}))
    assert isinstance(error, InvalidInput)
    assert ("PID-3", "required", 101, "AE") == (error.expression, error.code, error.hl7_code, error.ack_code)


@pytest.mark.parametrize(
    ("location", "text"),
    [
        (ErrorLocation("PID", 3), "PID-3"),
        (ErrorLocation("MSH", 9, 2), "MSH-9.2"),
        (ErrorLocation("PV1"), "PV1"),
        (ErrorLocation("MSH", None, None, 2), "MSH[2]"),
        (ErrorLocation("OBX", 5, None, 3), "OBX[3]-5"),
    ],
)
def test_error_locations_read_like_hl7_notation(location: ErrorLocation, text: str) -> None:
    """``SEG-field.component``, with ``[n]`` for a later occurrence of the segment."""
    assert text == str(location)


def test_error_texts_never_contain_submitted_values() -> None:
    """PHI stays out of error texts: only segment/field names and limits are named."""
    secret = "SECRETMRN42"
    cases = [
        adt({"PID-3": f"{secret}\\X01\\"}),
        adt({"PID-3": secret * 30}),
        adt({"PV1-44": secret}),
        adt({"PV1-2": secret}),
        adt({"PID-3": secret, "PV1-45": "19990101"}),
    ]
    for data in cases:
        error = error_of(data)
        assert secret not in str(error)
        assert secret not in ack(data, error.ack_code, error).decode()


# --- acknowledgments --------------------------------------------------------------------------

STAMP = datetime(2025, 1, 15, 9, 30, tzinfo=UTC)


def test_an_aa_swaps_applications_and_echoes_control_id_version_and_processing_id() -> None:
    """MSH-3..6 swapped, MSH-9 ACK^A01^ACK, new MSH-10, MSH-11/12 as received, MSA-2 = MSH-10."""
    data = adt({"MSH-11": "T", "MSH-12": "2.5.1"})
    expected = b"MSH|^~\\&|CAREHUB|HIE|ADT1|GHH|20250115093000+0000||ACK^A01^ACK|ACK-1|T|2.5.1\rMSA|AA|MSG-0001\r"
    assert expected == ack(parse_message(data), "AA", control_id="ACK-1", timestamp=STAMP)
    assert expected == ack(data, "AA", control_id="ACK-1", timestamp=STAMP)


def test_an_ae_from_v2_5_names_the_location_in_err_2_and_the_code_in_err_3() -> None:
    """ERR-2 ``PID^1^3``, ERR-3 ``101^Required field missing^HL70357``, ERR-4 ``E``, ERR-8 the text."""
    data = adt({"PID-3": ""})
    error = error_of(data)
    read = read_ack(ack(data, error.ack_code, error))
    assert ("AE", "MSG-0001", "101", "PID-3") == (read.code, read.control_id, read.error_code, read.location)
    assert "E" == read.field("ERR.F4")
    assert "Required field missing" == read.field("ERR.F3.R1.C2")
    assert "PID-3 (patient identifier list) is required" == read.field("ERR.F8")


def test_a_component_location_uses_err_2_components_4_and_5() -> None:
    """``MSH-9.2`` is written ``MSH^1^9^1^2``."""
    data = adt({"MSH-9": "ADT^A02"})
    error = error_of(data)
    raw = ack(data, error.ack_code, error).decode()
    assert "ERR||MSH^1^9^1^2|201^Unsupported event code^HL70357|E" in raw


def test_before_v2_5_the_error_goes_in_err_1_and_msa_3() -> None:
    """v2.3: MSH-9 ``ACK^A01`` (no structure), ERR-1 ``PID^1^3^101&Required field missing&HL70357``."""
    data = adt({"MSH-12": "2.3", "PID-3": ""})
    error = error_of(data)
    lines = ack(data, error.ack_code, error, control_id="C", timestamp=STAMP).decode().split("\r")
    assert "MSH|^~\\&|CAREHUB|HIE|ADT1|GHH|20250115093000+0000||ACK^A01|C|P|2.3" == lines[0]
    assert "MSA|AE|MSG-0001|PID-3 (patient identifier list) is required" == lines[1]
    assert "ERR|PID^1^3^101&Required field missing&HL70357" == lines[2]


def test_v2_3_1_acks_carry_the_message_structure() -> None:
    """From 2.3.1 MSH-9 has three components."""
    assert "ACK^A01^ACK" == read_ack(ack(adt({"MSH-12": "2.3.1"}))).whole("MSH", 9)


def test_an_unreadable_message_gets_an_ar_with_an_empty_msa_2() -> None:
    """No MSH: AR, MSA-2 empty, version 2.5, our application as sender."""
    detail = ErrorDetail(100, ErrorLocation("MSH"), "no MSH")
    read = read_ack(ack(b"\x00garbage\xff", "AR", detail))
    assert ("AR", "", "100", "MSH") == (read.code, read.control_id, read.error_code, read.location)
    assert ("CAREHUB", "2.5", "ACK") == (read.field("MSH.F3"), read.field("MSH.F12"), read.whole("MSH", 9))


def test_an_error_without_location_leaves_err_2_empty() -> None:
    """An internal error (207) names no field."""
    read = read_ack(ack(adt(), "AE", ErrorDetail(207, None, "try again")))
    assert ("AE", "207", "") == (read.code, read.error_code, read.location)


def test_an_ack_escapes_what_it_echoes() -> None:
    """A control id with our delimiters, or a hex-escaped FS, cannot break the ACK or its MLLP frame."""
    raw = ack(adt({"MSH-10": "A\\F\\B\\X1C\\C"}))
    assert b"\x1c" not in raw
    assert "A|B\x1cC" == read_ack(raw).control_id  # python-hl7 unescapes what it reads


def test_custom_delimiters_are_echoed_in_standard_form() -> None:
    """A message written with ``#*~\\$`` is answered with ``|^~\\&``, components intact."""
    text = adt({"MSH-4": "GHH^1.2.3^ISO"}).decode().replace("|", "#").replace("^", "*").replace("&", "$")
    read = read_ack(ack(text.encode()))
    assert ("GHH", "1.2.3", "ISO") == tuple(read.field(f"MSH.F6.R1.C{n}") for n in (1, 2, 3))


def test_an_ack_uses_the_character_set_of_the_message() -> None:
    """A Latin-1 message gets a Latin-1 ACK (its facility name echoed readably)."""
    data = adt({"MSH-3": "H\u00f4pital", "MSH-18": "8859/1"}).decode().encode("iso8859_1")
    assert "H\u00f4pital".encode("iso8859_1") in ack(data)
    assert "H\u00f4pital".encode("iso8859_1") in ack(parse_message(data))


def test_a_receiving_application_is_named_when_the_message_named_none() -> None:
    """MSH-5 empty: the ACK's MSH-3 is the hub's own application name."""
    assert "HUB" == read_ack(ack(adt({"MSH-5": ""}), application="HUB")).field("MSH.F3")
