"""Intake benchmark: the hub's HL7 v2 MLLP and FHIR REST edges beside same-run ceilings, on one Tansu broker.

``python -m bench.intake [--messages N] [--requests R]`` measures, in one run on one embedded Tansu broker
(memory only):

1. **MLLP** - ADT^A01/A03 messages (v2.5.1, ~2 KB, 15 segments, a distinct MSH-10 each, ``PATIENTS``
   distinct patients) sent to the hub's MLLP listener from a separate client process
   (``bench._mllp_load``: raw sockets, ``<VT> message <FS><CR>``): N messages on 1 connection, then N
   other messages over 8 concurrent connections, each ACK read before the next message on that
   connection; then the same two runs again with pipelining senders, each connection keeping up to
   ``--window`` frames unacknowledged (default 16; ACKs must come in frame order).
   Every message must be answered ``AA`` (i.e. its event was acknowledged by the broker on
   ``hub.ingress``). Ceilings, same run:

   * **produce** - raw aiokafka of the same records (the HubEvent bytes, key and CloudEvent headers
     the edge writes for those messages) to a bench topic with the hub's producer settings (acks=all,
     linger 0): ``send_and_wait`` one at a time, and 8 tasks doing so at once on one producer (the
     hub's 8 connections share one producer too);
   * **parse+map** - ``hl7_adt.parse_message`` + ``map_adt`` alone, in-process, over the same messages.

   A decomposition, one message at a time in-process: ``AdtIntake.handle`` (the edge without sockets:
   parse, facility lookup in the control plane, map, encode, ACK) with a no-op ingress, and with the
   real producer writing to the bench topic.
2. **FHIR REST** - ``POST /fhir/ServiceRequest`` and ``POST /fhir/Encounter`` (~2 KB and ~1.7 KB, distinct)
   with the hospital's token at concurrency 32 (``--concurrency``) from a separate client process (``bench._fhir_load``,
   HTTP/1.1 keep-alive on raw sockets), every answer ``201``; beside ``parse_fhir_json`` +
   ``validate_resource`` alone in-process, and beside raw aiokafka produce (as many tasks, one producer) of
   the HubEvent records the edge writes for the same bodies. The headline ceiling (issue 13) is a **bare
   endpoint** on the same server stack (``hub.app``'s uvicorn configuration, FastAPI) in the same process
   and the same run, served to the same client with the same bodies: it only parses, validates (R4B,
   ``hub.adapters.fhir_validation``) and answers 201 with the body; ``hub / bare`` for ServiceRequest at
   the default concurrency (32) is the ratio printed first.

The hub is started with ``running_hub(Settings(...))`` inside this process, pipeline workers included
(they normalize and route each phase's events on the same event loop while it runs, as in production);
between phases the bench waits until both pipeline stages have committed everything, so a phase never
pays for the one before. The in-process ceilings run before the hub starts.

Diagnostics: ``--profile`` runs one more ServiceRequest run under py-spy (all threads: the event loop and
aiosqlite's) and prints where the samples fall and the top functions; ``--py-spy PATH`` / ``--cprofile
PATH`` add one more 8-connection MLLP run and one more ServiceRequest run, profiled (the measured runs
never are; the HTTP profile goes to ``PATH.http``), and print where py-spy's samples fall;
``--no-workers`` starts the hub without its pipeline workers; ``--sections`` runs a subset.

Prints a table and, last, one line of JSON with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import inspect
import json
import math
import os
import platform
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite.core
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI, Request, Response
from rich.console import Console
from rich.table import Table

from bench.pipeline import (
    ADMIN_TOKEN,
    HOSPITAL_ID,
    HOSPITAL_ORG,
    MRN_SYSTEM,
    PATIENTS,
    PROJECT_ROOT,
    CpuMeter,
    Throughput,
    end_offset_total,
    fhir_body,
    fmt,
    free_port,
    json_safe,
    make_producer,
    mrn_of,
    percentile,
    print_report,
    ratio,
    register_bench_partners,
)
from hub import logs
from hub.adapters.fhir_facts import encounter_facts, servicerequest_facts
from hub.adapters.fhir_validation import parse_fhir_json, validate_resource
from hub.adapters.hl7_adt import ack, adt_event_id, map_adt, parse_message
from hub.adapters.mllp import AdtIntake
from hub.app import RunningHub, _start_http, running_hub
from hub.broker.embedded import EmbeddedBroker
from hub.broker.topics import ensure_topics
from hub.control.facilities import FacilityDirectory
from hub.events import CloudEvent, HubEvent, encode, event_id, event_type, now
from hub.pipeline.publisher import AioKafkaRecordPublisher
from hub.record_proof import RecordProof
from hub.settings import Settings
from hub.topics.registry import DLQ, EVENTS, INGRESS, TopicSpec

FACILITY = "BENCHGH"
FACILITY_OID = "2.16.840.1.113883.19.5.99999"
MSH4 = f"{FACILITY}^{FACILITY_OID}^ISO"
ENCOUNTER_SYSTEM = "urn:oid:2.16.840.1.113883.19.5.99999.3"
SECTIONS = frozenset({"mllp", "http"})

BENCH_ADT = TopicSpec(name="bench.intake.adt", partitions=INGRESS.partitions, key="as hub.ingress",
                      retention_ms=3_600_000, payload=HubEvent, description="raw produce ceiling, ADT events")
BENCH_FHIR = TopicSpec(name="bench.intake.fhir", partitions=INGRESS.partitions, key="as hub.ingress",
                       retention_ms=3_600_000, payload=HubEvent, description="raw produce ceiling, FHIR events")


# --- inputs ----------------------------------------------------------------------------------------

_GIVEN = ("JANE", "JOHN", "MARIA", "DAVID", "AISHA", "WEI", "FATIMA", "CARLOS", "OLGA", "KWAME")
_FAMILY = ("DOE", "SMITH", "GARCIA", "NGUYEN", "JOHNSON", "OKAFOR", "MULLER", "ROSSI", "KOWALSKI", "TANAKA")
_STREETS = ("1200 N ELM ST", "45 OAK AVE", "9 MARKET PL", "310 RIVER RD", "77 HILLSIDE DR")


def _segment(name: str, fields: dict[int, str]) -> str:
    """One ER7 segment from field number -> value (missing numbers are empty fields)."""
    last = max(fields)
    return "|".join([name, *(fields.get(n, "") for n in range(1, last + 1))])


def hl7_message(seq: int, tag: str) -> bytes:
    """A realistic ADT^A01 or ^A03 (v2.5.1, ~2 KB, fictional patient), with MSH-10 unique per ``(tag, seq)``.

    Patient ``seq % PATIENTS``; each patient is admitted (A01) in one round of ``PATIENTS`` messages and
    discharged (A03, with a discharge disposition and time) in the next.
    """
    patient = seq % PATIENTS
    cycle = seq // PATIENTS
    discharge = cycle % 2 == 1
    trigger = "A03" if discharge else "A01"
    visit = f"V{cycle // 2:04d}{patient:04d}"
    mrn = mrn_of(seq)
    given, family = _GIVEN[patient % len(_GIVEN)], _FAMILY[(patient // len(_GIVEN)) % len(_FAMILY)]
    street = _STREETS[patient % len(_STREETS)]
    address = f"{street}^APT {patient % 40 + 1}^GREENSBORO^NC^27401-{patient:04d}^USA^H"
    phone = f"^PRN^PH^^1^336^555{patient:04d}"
    admitted = f"202611{10 + patient % 10:02d}{8 + patient % 12:02d}{patient % 60:02d}00+0000"
    discharged = f"202611{21 + patient % 7:02d}1430{patient % 60:02d}+0000"
    event_time = discharged if discharge else admitted
    attending = "1234567890^WELBY^MARCUS^^^DR^MD^^NPI"
    segments = [
        "MSH|" + "|".join([
            "^~\\&", "EPICADT", MSH4, "CAREHUB", "HIE", event_time, "", f"ADT^{trigger}^ADT_{trigger}",
            f"{tag}{seq:08d}", "P", "2.5.1", "", "", "AL", "NE", "USA", "UNICODE UTF-8",
        ]),
        _segment("EVN", {1: trigger, 2: event_time, 5: "JSMITH^SMITH^JOHN^^^^^^^^^^^EI", 6: event_time}),
        _segment("PID", {
            1: "1",
            3: f"{mrn}^^^{FACILITY}&{MRN_SYSTEM.removeprefix('urn:oid:')}&ISO^MR"
               f"~999{patient:02d}{seq % 10}{patient:04d}^^^SSA&2.16.840.1.113883.4.1&ISO^SS",
            5: f"{family}^{given}^Q^^^^L", 6: "SMITH^^^^^^M", 7: f"19{50 + patient % 50:02d}0{1 + patient % 9}15",
            8: "F" if patient % 2 else "M", 10: "2106-3^White^CDCREC", 11: address,
            13: f"{phone}~^NET^Internet^patient{patient}@example.org", 14: "^WPN^PH^^1^336^5559876",
            15: "eng^English^ISO6392", 16: "M^Married^HL70002", 17: "CHR^Christian^HL70006",
            18: f"ACCT{seq:08d}^^^{FACILITY}^AN", 22: "N^Not Hispanic or Latino^HL70189",
        }),
        _segment("PD1", {3: "BENCH GENERAL HOSPITAL^^12345", 4: attending}),
        _segment("NK1", {1: "1", 2: f"{family}^ALEX^^^^^L", 3: "SPO^Spouse^HL70063", 4: address, 5: phone,
                         7: "EC^Emergency Contact^HL70131"}),
        _segment("PV1", {
            1: "1", 2: "I", 3: f"4WEST^{400 + patient % 30}^{'AB'[patient % 2]}^{FACILITY}^^^MAIN^4^4 West Medical",
            4: "E^Emergency^HL70007", 7: attending, 8: "2345678901^KILDARE^JAMES^^^DR^MD^^NPI", 10: "MED",
            14: "7^Physician referral^HL70023", 17: attending, 18: "IP^Inpatient^HL70018",
            19: f"{visit}^^^{FACILITY}&{FACILITY_OID}&ISO^VN", 20: "SP^Self pay^HL70064",
            36: "01^Discharged to home or self care^HL70112" if discharge else "",
            44: admitted, 45: discharged if discharge else "",
        }),
        _segment("PV2", {3: "J18.9^Pneumonia, unspecified organism^I10", 8: "20261124", 10: "4"}),
        _segment("OBX", {1: "1", 2: "NM", 3: "8302-2^Body height^LN", 5: f"{150 + patient % 40}",
                         6: "cm^centimeter^UCUM", 11: "F"}),
        _segment("OBX", {1: "2", 2: "NM", 3: "29463-7^Body weight^LN", 5: f"{50 + patient % 50}.5",
                         6: "kg^kilogram^UCUM", 11: "F"}),
        _segment("AL1", {1: "1", 2: "DA", 3: "70618^Penicillin^RXNORM", 4: "SV", 5: "Hives", 6: "20150101"}),
        _segment("AL1", {1: "2", 2: "FA", 3: "256349002^Peanut^SCT", 4: "MO", 5: "Anaphylaxis"}),
        _segment("DG1", {1: "1", 3: "J18.9^Pneumonia, unspecified organism^I10", 5: admitted, 6: "A"}),
        _segment("GT1", {1: "1", 3: f"{family}^{given}^Q^^^^L", 5: address, 6: phone, 11: "SEL^Self^HL70063"}),
        _segment("IN1", {
            1: "1", 2: "BCBS-PPO^Blue Cross PPO^HL70072", 3: "60054^^^^NAIC", 4: "BLUE CROSS BLUE SHIELD OF NC",
            5: "PO BOX 2291^^DURHAM^NC^27702^USA", 7: "^WPN^PH^^1^800^4460329", 8: "GRP-554433",
            9: "BENCH EMPLOYER GROUP", 16: f"{family}^{given}^Q", 17: "SEL^Self^HL70063", 18: "19800101",
            19: address, 36: f"POL{patient:06d}",
        }),
    ]
    return ("\r".join(segments) + "\r").encode("utf-8")


def encounter_body(seq: int, mrn: str) -> bytes:
    """A realistic ~1.7 KB inpatient Encounter (US Core profile, fictional patient), unique per ``seq``."""
    patient = seq % PATIENTS
    finished = seq % 2 == 1
    period: dict[str, str] = {"start": f"2026-11-{10 + patient % 10:02d}T{8 + patient % 12:02d}:15:00Z"}
    if finished:
        period["end"] = f"2026-11-{21 + patient % 7:02d}T14:30:00Z"
    encounter: dict[str, Any] = {
        "resourceType": "Encounter",
        "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-encounter"],
                 "lastUpdated": "2026-11-20T10:15:00Z"},
        "identifier": [{"use": "official", "system": ENCOUNTER_SYSTEM, "value": f"ENC-{seq:08d}"}],
        "status": "finished" if finished else "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP",
                  "display": "inpatient encounter"},
        "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "32485007",
                              "display": "Hospital admission (procedure)"}], "text": "Hospital admission"}],
        "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActPriority", "code": "EM",
                                 "display": "emergency"}]},
        "subject": {"identifier": {"system": MRN_SYSTEM, "value": mrn}, "display": f"Patient {mrn}"},
        "participant": [{
            "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                  "code": "ATND", "display": "attender"}]}],
            "individual": {"identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567890"},
                           "display": "Dr. Marcus Welby"},
        }],
        "period": period,
        "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J18.9",
                                    "display": "Pneumonia, unspecified organism"}]}],
        "hospitalization": {
            "admitSource": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/admit-source",
                                        "code": "emd", "display": "From accident/emergency department"}]},
        },
        "location": [{"location": {"display": f"4 West Medical, room {400 + patient % 30}"},
                      "status": "completed" if finished else "active"}],
        "serviceProvider": {"reference": HOSPITAL_ORG, "display": "Bench General Hospital"},
    }
    if finished:
        encounter["hospitalization"]["dischargeDisposition"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/discharge-disposition", "code": "home",
                        "display": "Home"}]}
    return orjson.dumps(encounter)


@dataclass(frozen=True)
class Record:
    """One ``hub.ingress`` record as an edge writes it."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def _headers(envelope: CloudEvent) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in envelope.to_headers().items()]


def adt_record(message: bytes) -> Record:
    """The record the MLLP edge writes for ``message`` (what ``AdtIntake`` does, minus the I/O)."""
    mapped = map_adt(parse_message(message), sender=HOSPITAL_ID)
    envelope = CloudEvent(id=mapped.event_id, source=f"/partners/{HOSPITAL_ID}", type=mapped.event_type, time=now())
    return Record(key=mapped.key, value=encode(mapped.event), headers=_headers(envelope))


def fhir_record(resource_type: str, body: bytes) -> Record:
    """The record the FHIR edge writes for a create of ``body`` (the same facts extraction and envelope)."""
    model = validate_resource(parse_fhir_json(body), expected_type=resource_type)
    resource_id = event_id(HOSPITAL_ID, resource_type, body)
    if resource_type == "Encounter":
        facts = encounter_facts(model, sender=HOSPITAL_ID, resource_id=resource_id)
        action = facts.event_kind or "submitted"
    else:
        facts = servicerequest_facts(model, sender=HOSPITAL_ID, resource_id=resource_id)
        action = "submitted"
    envelope = CloudEvent(id=resource_id, source=f"/partners/{HOSPITAL_ID}", type=event_type(resource_type, action),
                          time=now())
    return Record(key=f"{HOSPITAL_ID}|{facts.patient_source}".encode(),
                  value=encode(HubEvent(facts=facts, body=body.decode())), headers=_headers(envelope))


class Inputs:
    """Distinct inputs for the whole run: a run-wide sequence number makes every MSH-10 and body unique."""

    def __init__(self) -> None:
        self._seq = 0
        self.tag = f"B{uuid.uuid4().hex[:6].upper()}"

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def hl7(self, count: int) -> list[bytes]:
        return [hl7_message(self._next(), self.tag) for _ in range(count)]

    def fhir(self, resource_type: str, count: int) -> list[bytes]:
        out: list[bytes] = []
        for _ in range(count):
            seq = self._next()
            build = encounter_body if resource_type == "Encounter" else fhir_body
            out.append(build(seq, mrn_of(seq)))
        return out


# --- ceilings --------------------------------------------------------------------------------------


def cpu_ceiling(items: Sequence[bytes], work: Any) -> Throughput:
    """Run ``work(item)`` over ``items`` in-process, one after the other; the CPU floor of an edge step."""
    cpu0 = time.process_time()
    started = time.perf_counter()
    for item in items:
        work(item)
    return Throughput(count=len(items), seconds=time.perf_counter() - started,
                      cpu_bench_s=time.process_time() - cpu0)


def parse_map(message: bytes) -> None:
    """The MLLP edge's parse+map step."""
    map_adt(parse_message(message), sender=HOSPITAL_ID)


def edge_cpu(message: bytes) -> None:
    """All of the MLLP edge's CPU work per message except I/O: what ``AdtIntake`` does around the write."""
    parsed = parse_message(message)
    adt_event_id(HOSPITAL_ID, parsed)
    mapped = map_adt(parsed, sender=HOSPITAL_ID)
    envelope = CloudEvent(id=mapped.event_id, source=f"/partners/{HOSPITAL_ID}", type=mapped.event_type, time=now())
    encode(mapped.event)
    envelope.to_headers()
    ack(parsed, "AA")


def validator(resource_type: str) -> Any:
    """The FHIR edge's parse+validate step for ``resource_type``."""
    def work(body: bytes) -> None:
        validate_resource(parse_fhir_json(body), expected_type=resource_type)
    return work


async def produce(bootstrap: str, topic: str, records: Sequence[Record], tasks: int,
                  broker_pid: int | None) -> Throughput:
    """``tasks`` tasks share one producer (acks=all, linger 0), each ``send_and_wait``-ing one record at a time."""
    producer = make_producer(bootstrap, client_id="bench")
    await producer.start()
    meter = CpuMeter(broker_pid)
    try:
        for record in records[:5]:  # connect and fetch metadata outside the clock (like the hub's warm-up)
            await producer.send_and_wait(topic, record.value, key=record.key, headers=record.headers)
        shares = [records[i::tasks] for i in range(tasks)]

        async def one(share: Sequence[Record]) -> None:
            for record in share:
                await producer.send_and_wait(topic, record.value, key=record.key, headers=record.headers)

        with meter.measure():
            started = time.perf_counter()
            await asyncio.gather(*(one(share) for share in shares))
            seconds = time.perf_counter() - started
    finally:
        await producer.stop()
    return Throughput(count=len(records), seconds=seconds, cpu_bench_s=meter.bench_s, cpu_broker_s=meter.broker_s)


# --- the hub ---------------------------------------------------------------------------------------


@dataclass
class HubSession:
    """A running hub with a hospital (mapped to the MLLP facility) and a CBO registered."""

    hub: RunningHub
    host: str
    http_port: int
    mllp_port: int
    hospital_token: str
    worker_group: str


@contextlib.asynccontextmanager
async def started_hub(bootstrap: str, workdir: Path, *, workers: bool) -> AsyncIterator[HubSession]:
    """Start the hub against ``bootstrap``; register the hospital (MSH-4 ``FACILITY``) and the CBO."""
    group = f"bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka_bootstrap=bootstrap,
        database_url=f"sqlite+aiosqlite:///{workdir / 'hub.db'}",
        http_port=0,
        mllp_port=0,
        admin_token=ADMIN_TOKEN,
        mllp_facilities={FACILITY: HOSPITAL_ID},
        consumer_session_timeout_ms=2000,
        worker_group=group,
    )
    async with running_hub(settings, workers=workers) as hub:
        url = httpx.URL(hub.http_url or "")
        tokens = await register_bench_partners(url)
        if hub.mllp_port is None or url.port is None:
            raise SystemExit("the hub started without its HTTP or MLLP listener")
        yield HubSession(hub=hub, host=url.host, http_port=url.port, mllp_port=hub.mllp_port,
                         hospital_token=tokens[HOSPITAL_ID], worker_group=group)


async def wait_pipeline_idle(session: HubSession, timeout_s: float = 120.0) -> float:
    """Wait until both pipeline stages committed up to the end of their input topics; return the seconds.

    Returns at once for a hub started without workers.
    """
    if not session.worker_group:
        return 0.0
    started = time.perf_counter()
    admin = AIOKafkaAdminClient(bootstrap_servers=session.hub.bootstrap, request_timeout_ms=10_000)
    reader = AIOKafkaConsumer(bootstrap_servers=session.hub.bootstrap, group_id=None, enable_auto_commit=False)
    await admin.start()
    await reader.start()
    try:
        stages = ((f"{session.worker_group}.normalize", INGRESS), (f"{session.worker_group}.route", EVENTS))
        while True:
            behind = 0
            for group, spec in stages:
                partitions = [TopicPartition(spec.name, p) for p in range(spec.partitions)]
                ends = await reader.end_offsets(partitions)
                committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
                for tp in partitions:
                    done = committed.get(tp)
                    behind += max(0, int(ends[tp]) - (done.offset if done is not None and done.offset >= 0 else 0))
            if behind == 0:
                return time.perf_counter() - started
            if time.perf_counter() - started > timeout_s:
                raise SystemExit(f"the pipeline is still {behind} records behind after {timeout_s:.0f} s")
            await asyncio.sleep(0.1)
    finally:
        await reader.stop()
        await admin.close()


@dataclass
class LoadResult:
    """One run of a load client process against the hub."""

    throughput: Throughput
    p50_ms: float
    p99_ms: float
    codes: dict[str, int]
    client_cpu_ms: float
    pipeline_drain_s: float = math.nan

    def as_json(self) -> dict[str, Any]:
        return {**self.throughput.as_json(), "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "codes": self.codes,
                "client_cpu_ms_per_msg": self.client_cpu_ms, "pipeline_drain_s": self.pipeline_drain_s}


async def run_load(module: str, job: dict[str, Any], count: int, broker_pid: int | None, *,
                   expect: str, profile: Profile | None = None) -> LoadResult:
    """Run load client ``module`` on ``job`` in its own process; every answer must be ``expect``."""
    meter = CpuMeter(broker_pid)
    if profile is not None:
        await profile.start()  # attached before the client starts
    try:
        with meter.measure():
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", module, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                cwd=str(PROJECT_ROOT),
            )
            assert process.stdin is not None
            assert process.stdout is not None
            process.stdin.write(orjson.dumps(job))
            process.stdin.close()
            out = await process.stdout.read()
            await process.wait()
    finally:
        if profile is not None:
            await profile.stop()
    if process.returncode != 0:
        raise SystemExit(f"the load client {module} failed with exit code {process.returncode}")
    result = json.loads(out)
    codes = {str(k): int(v) for k, v in result.get("codes", result.get("statuses", {})).items()}
    warm = {str(k): int(v) for k, v in result.get("warmup_codes", result.get("warmup_statuses", {})).items()}
    if result["errors"] or set(codes) != {expect} or set(warm) - {expect} or codes.get(expect) != count:
        raise SystemExit(f"{module}: expected {count} x {expect}, got {codes} (warm-up {warm}); errors "
                         f"{result['errors'][:3]}; sample answer {result.get('sample_error_body')!r}")
    latencies_ms = [s * 1000 for s in result["latencies_s"]]
    # The meter spans the client's start and warm-up too: only the client's own timed span is exact.
    return LoadResult(
        throughput=Throughput(count=count, seconds=float(result["elapsed_s"]), cpu_bench_s=meter.bench_s,
                              cpu_broker_s=meter.broker_s),
        p50_ms=percentile(latencies_ms, 50), p99_ms=percentile(latencies_ms, 99), codes=codes,
        client_cpu_ms=float(result["client_cpu_s"]) * 1000 / count,
    )


def mllp_job(session: HubSession, frames: Sequence[bytes], warmup: Sequence[bytes], connections: int, *,
             window: int = 1) -> dict[str, Any]:
    """The job for ``bench._mllp_load`` (``window``: frames each connection keeps unacknowledged)."""
    return {"host": session.host, "port": session.mllp_port, "connections": connections, "window": window,
            "frames": [f.decode() for f in frames], "warmup": [f.decode() for f in warmup]}


def fhir_job(session: HubSession, resource_type: str, bodies: Sequence[bytes], warmup: Sequence[bytes],
             concurrency: int, *, port: int | None = None) -> dict[str, Any]:
    """The job for ``bench._fhir_load`` (against the hub, or the server on ``port``)."""
    return {"host": session.host, "port": port or session.http_port, "path": f"/fhir/{resource_type}",
            "token": session.hospital_token, "concurrency": concurrency,
            "bodies": [b.decode() for b in bodies], "warmup": [b.decode() for b in warmup]}


# --- the bare endpoint (issue 13's ceiling) ---------------------------------------------------------


def bare_app() -> FastAPI:
    """A FastAPI app whose ``POST /fhir/{resource_type}`` only parses, validates (R4B) and answers 201 with
    the body: the hub's create path without authentication, planning, the broker or the store."""
    app = FastAPI()

    @app.post("/fhir/{resource_type}", status_code=201)
    async def create(request: Request, resource_type: str) -> Response:
        body = await request.body()
        validate_resource(parse_fhir_json(body), expected_type=resource_type)
        return Response(content=body, status_code=201, media_type="application/fhir+json")

    return app


@contextlib.asynccontextmanager
async def started_bare(session: HubSession) -> AsyncIterator[int]:
    """Serve :func:`bare_app` with the hub's own uvicorn configuration (``hub.app``) on this event loop; yield
    its port."""
    settings = session.hub.settings.model_copy(update={"http_host": session.host, "http_port": 0})
    async with contextlib.AsyncExitStack() as stack:
        url = httpx.URL(await _start_http(bare_app(), settings, stack))
        if url.port is None:
            raise SystemExit("the bare endpoint started without a port")
        yield url.port


@dataclass
class NullIngress:
    """An ingress that acknowledges at once: the MLLP edge without the broker."""

    writes: int = 0

    async def write(self, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        del key, value, headers
        self.writes += 1


@dataclass
class BenchTopicIngress:
    """The hub's producer class, writing to the bench topic instead of ``hub.ingress`` (no pipeline work)."""

    publisher: AioKafkaRecordPublisher
    topic: str

    async def write(self, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        await self.publisher.publish(self.topic, key=key, value=value, headers=headers)


@contextlib.contextmanager
def counting_aiosqlite_calls() -> Iterator[list[int]]:
    """Count aiosqlite's calls into its connection threads (each is a hand-off to that thread and back through
    the event loop) while the block runs; the count is the list's one element."""
    calls = [0]
    original: Any = aiosqlite.core.Connection._execute

    async def counted(conn: aiosqlite.core.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return await original(conn, fn, *args, **kwargs)

    aiosqlite.core.Connection._execute = counted  # type: ignore[method-assign, assignment]
    try:
        yield calls
    finally:
        aiosqlite.core.Connection._execute = original  # type: ignore[method-assign]


async def intake_in_process(session: HubSession, messages: Sequence[bytes], *, kafka: bool,
                            broker_pid: int | None) -> tuple[Throughput, float]:
    """``AdtIntake.handle`` one message at a time, with the hub's facility directory (its SQLite control plane)
    and either a no-op ingress or the hub's producer class writing to the bench topic. Every ACK must be AA.
    Also returns the aiosqlite thread hand-offs per message (the pipeline is idle meanwhile)."""
    # The bench topic is not a proven topic, so the proof's key does not matter here.
    proof = RecordProof(b"bench-intake-unused-record-key-32")
    publisher = AioKafkaRecordPublisher(session.hub.bootstrap, proof=proof) if kafka else None
    ingress: Any = NullIngress() if publisher is None else BenchTopicIngress(publisher, BENCH_ADT.name)
    if publisher is not None:
        await publisher.start()
    try:
        intake = AdtIntake(ingress=ingress, hospitals=FacilityDirectory(session.hub.sessions, {FACILITY: HOSPITAL_ID}))
        meter = CpuMeter(broker_pid)
        codes: Counter[str] = Counter()
        for message in messages[:5]:  # warm (connections, caches) outside the clock; these are not timed
            await intake.handle(message)
        timed = messages[5:]
        with meter.measure(), counting_aiosqlite_calls() as calls:
            started = time.perf_counter()
            for message in timed:
                answer = await intake.handle(message)
                codes[answer.split(b"\rMSA|", 1)[1][:2].decode()] += 1
            seconds = time.perf_counter() - started
    finally:
        if publisher is not None:
            await publisher.stop()
    if set(codes) != {"AA"}:
        raise SystemExit(f"in-process intake answered {dict(codes)}")
    throughput = Throughput(count=len(timed), seconds=seconds, cpu_bench_s=meter.bench_s, cpu_broker_s=meter.broker_s)
    return throughput, calls[0] / len(timed)


# --- profiling -------------------------------------------------------------------------------------


@dataclass
class Profile:
    """py-spy (raw collapsed stacks) or cProfile of this process while one load runs."""

    py_spy: str | None = None
    cprofile: str | None = None
    seconds: float = math.nan
    _process: asyncio.subprocess.Process | None = None
    _profiler: cProfile.Profile | None = None
    _started: float = math.nan

    async def start(self) -> None:
        if self.py_spy:
            self._process = await asyncio.create_subprocess_exec(
                _py_spy_binary(), "record", "-o", self.py_spy, "-f", "raw", "-r", str(PY_SPY_RATE_HZ),
                "--nonblocking", "--pid", str(os.getpid()),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )
            await asyncio.sleep(1.0)  # let it attach before the load starts
        self._started = time.perf_counter()
        if self.cprofile:
            self._profiler = cProfile.Profile()
            self._profiler.enable()

    async def stop(self) -> None:
        self.seconds = time.perf_counter() - self._started
        if self._profiler is not None:
            self._profiler.disable()
            assert self.cprofile is not None
            self._profiler.dump_stats(self.cprofile)
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGINT)
            await asyncio.wait_for(self._process.wait(), timeout=60)


def _py_spy_binary() -> str:
    candidate = Path(sys.executable).with_name("py-spy")
    return str(candidate) if candidate.exists() else "py-spy"


PY_SPY_RATE_HZ = 200


def _aiosqlite_idle_leaf() -> str:
    """The py-spy frame of an aiosqlite worker thread waiting for work (the ``tx.get()`` line)."""
    lines, first = inspect.getsourcelines(aiosqlite.core._connection_worker_thread)
    offset = next((i for i, text in enumerate(lines) if "tx.get()" in text), 0)
    return f"_connection_worker_thread (aiosqlite/core.py:{first + offset})"


#: Idle waits, not work: a sample whose innermost frame is one of these is counted apart.
IDLE_LEAVES = (_aiosqlite_idle_leaf(), "EpollSelector.select (", "Condition.wait (", "._do_waitpid (",
               "Thread.join (", "Event.wait (")
#: The component of an event-loop sample: the first rule matching any frame of its stack. (aiosqlite hands each
#: call to a worker thread; the event loop's time in ``Connection._execute`` is that hand-off.)
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pipeline workers", ("hub/pipeline/workers.py", "hub/pipeline/stage.py", "hub/pipeline/normalize.py",
                          "hub/pipeline/route.py", "faststream/")),
    ("MLLP edge", ("hub/adapters/mllp.py", "hl7/mllp.py")),
    ("HTTP edge", ("uvicorn/", "starlette/", "fastapi/")),
    # SQLAlchemy's asyncio layer runs the ORM in greenlets; py-spy often sees such a stack without its caller.
    ("control-plane SQL, caller not visible (SQLAlchemy greenlet, aiosqlite)", ("sqlalchemy/", "aiosqlite/",
                                                                              "greenlet")),
    ("wake-ups from aiosqlite's threads (self-pipe)", ("_read_from_self (",)),
    ("aiokafka background tasks", ("aiokafka/",)),
)
#: Rules naming the step of an edge's sample: the innermost frame matching a rule (walking from the leaf up).
Steps = tuple[tuple[str, tuple[str, ...]], ...]
MLLP_STEPS: Steps = (
    ("parse_message", ("parse_message (hub/adapters/hl7_adt.py",)),
    ("map_adt", ("map_adt (hub/adapters/hl7_adt.py",)),
    ("ack (build the ACK)", ("ack (hub/adapters/hl7_adt.py",)),
    ("facility lookup (FacilityDirectory: SQLAlchemy session, SELECT partner)", ("hospital_for_facility (",)),
    ("write to hub.ingress (AioKafkaRecordPublisher, acks=all)", ("(hub/pipeline/publisher.py",)),
    ("RecentlyAcknowledged / turn lock", ("RecentlyAcknowledged", "_Turn")),
    ("event id, CloudEvent, encode, logging", ("adt_event_id (", "(hub/events.py", "structlog/")),
    ("MLLP framing and socket I/O", ("read_frame (", "_send (", "hl7/mllp.py", "asyncio/streams.py",
                                     "selector_events.py")),
)
HTTP_STEPS: Steps = (
    ("authenticate (token cache, SQL on a miss)", ("_authenticate (hub/adapters/fhir_rest.py",)),
    ("parse_fhir_json", ("parse_fhir_json (",)),
    ("validate_resource (fhir.resources R4B model)", ("validate_resource (",)),
    ("plan_create (store lookups, facts, event)", ("plan_create (",)),
    ("write to hub.ingress (AioKafkaRecordPublisher, acks=all)", ("(hub/pipeline/publisher.py",)),
    ("store the version (SqlResourceStore.save, SQLite)", ("save (hub/control/resources.py",)),
    ("build the response", ("_resource_response (", "render (")),
    ("HTTP server (uvicorn, Starlette, FastAPI routing)", ("uvicorn/", "h11", "httptools", "starlette/",
                                                           "fastapi/", "selector_events.py")),
)


def _first(frames: Sequence[str], rules: tuple[tuple[str, tuple[str, ...]], ...]) -> str | None:
    for label, needles in rules:
        if any(needle in frame for frame in frames for needle in needles):
            return label
    return None


def _innermost(frames: Sequence[str], rules: tuple[tuple[str, tuple[str, ...]], ...]) -> str | None:
    for frame in reversed(frames):
        for label, needles in rules:
            if any(needle in frame for needle in needles):
                return label
    return None


def profile_summary(path: str, seconds: float, rate_hz: int, *, edge: str, steps: Steps) -> dict[str, Any]:
    """Read py-spy ``-f raw`` output (``frame;frame;... count`` lines) into where the busy samples fall.

    Event-loop (main thread) samples go to a component (pipeline workers, MLLP edge, ...) and, for the
    component ``edge``, to one of ``steps``; other threads' samples are SQLite statements (aiosqlite's worker
    threads) or other. Samples whose innermost frame is an idle wait are counted apart, and so are empty
    ones (py-spy ``--nonblocking`` may read a stack mid-change). ``seconds`` and ``rate_hz`` give the share
    of the time the event loop was busy.
    """
    components: Counter[str] = Counter()
    by_step: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total: Counter[str] = Counter()  # samples a function is anywhere on the stack of (inclusive time)
    idle = busy = loop_busy = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame for frame in stack.split(";") if frame.strip()]
        if not frames or any(leaf in frames[-1] for leaf in IDLE_LEAVES):
            idle += count
            continue
        busy += count
        leaves[frames[-1].rsplit(":", 1)[0] + ")"] += count
        for function in {frame.rsplit(":", 1)[0] + ")" for frame in frames}:
            total[function] += count
        if frames[0].startswith("Thread._bootstrap"):
            other = "SQLite statements (aiosqlite worker threads)" if any(
                "aiosqlite/" in frame for frame in frames) else "other threads"
            components[other] += count
            continue
        loop_busy += count
        component = _first(frames, COMPONENTS) or "asyncio event loop itself"
        components[f"event loop: {component}"] += count
        if component == edge:
            by_step[_innermost(frames, steps) or f"rest of the {edge}"] += count

    def shares(counter: Counter[str]) -> dict[str, float]:
        return {k: round(v / busy, 3) for k, v in counter.most_common()} if busy else {}

    return {
        "busy_samples": busy, "idle_samples": idle,
        "event_loop_busy": round(loop_busy / (seconds * rate_hz), 3) if seconds > 0 else None,
        "by_component": shares(components), "edge_steps": shares(by_step),
        "top_self": [(k, round(v / busy, 3)) for k, v in leaves.most_common(12)] if busy else [],
        "top_total": [(k, round(v / busy, 3)) for k, v in total.most_common(20)] if busy else [],
    }

# --- orchestration ---------------------------------------------------------------------------------


@dataclass
class Options:
    """Command-line options."""

    messages: int
    requests: int
    connections: int
    window: int
    concurrency: int
    sections: frozenset[str]
    workers: bool
    py_spy: str | None
    cprofile: str | None
    profile: bool = False


@dataclass
class Results:
    """Everything measured in one run."""

    hl7_bytes: float = math.nan
    adt_value_bytes: float = math.nan
    fhir_bytes: dict[str, float] = field(default_factory=dict)
    parse_map: Throughput | None = None
    edge_cpu: Throughput | None = None
    produce_1: Throughput | None = None
    produce_n: Throughput | None = None
    mllp_1: LoadResult | None = None
    mllp_n: LoadResult | None = None
    mllp_1_window: LoadResult | None = None
    mllp_n_window: LoadResult | None = None
    intake_null: Throughput | None = None
    intake_kafka: Throughput | None = None
    sqlite_handoffs: float = math.nan
    profiled: dict[str, LoadResult] = field(default_factory=dict)
    profile: dict[str, dict[str, Any]] = field(default_factory=dict)
    validate: dict[str, Throughput] = field(default_factory=dict)
    produce_fhir: dict[str, Throughput] = field(default_factory=dict)
    http: dict[str, LoadResult] = field(default_factory=dict)
    bare: dict[str, LoadResult] = field(default_factory=dict)
    hub_start_s: float = math.nan
    dlq_records: int = 0
    total_s: float = math.nan


FHIR_TYPES = ("ServiceRequest", "Encounter")


async def run(options: Options, console: Console) -> Results:
    """Run every selected section on one embedded broker."""
    started = time.perf_counter()
    results = Results()
    inputs = Inputs()
    n, conns = options.messages, options.connections
    adt_warm = inputs.hl7(2 * conns)
    adt_1, adt_n = inputs.hl7(n), inputs.hl7(n)
    adt_direct_null, adt_direct_kafka = inputs.hl7(max(n // 2, 10)), inputs.hl7(max(n // 2, 10))
    adt_profiled, adt_profiled_warm = inputs.hl7(n), inputs.hl7(2 * conns)
    adt_1w, adt_nw = inputs.hl7(n), inputs.hl7(n)
    bodies = {t: inputs.fhir(t, options.requests) for t in FHIR_TYPES}
    fhir_warm = {t: inputs.fhir(t, 2 * options.concurrency) for t in FHIR_TYPES}
    bodies["profiled"] = inputs.fhir("ServiceRequest", options.requests)
    fhir_warm["profiled"] = inputs.fhir("ServiceRequest", 2 * options.concurrency)
    results.hl7_bytes = sum(map(len, adt_1)) / len(adt_1)
    results.fhir_bytes = {t: sum(map(len, bodies[t])) / len(bodies[t]) for t in FHIR_TYPES}

    broker = EmbeddedBroker(port=free_port())
    await broker.start()
    try:
        await ensure_topics(broker.bootstrap, (BENCH_ADT, BENCH_FHIR))
        if "mllp" in options.sections:
            console.log(f"mllp ceilings: parse+map over {2 * n} messages of ~{results.hl7_bytes:.0f} B")
            results.parse_map = cpu_ceiling([*adt_1, *adt_n], parse_map)
            results.edge_cpu = cpu_ceiling([*adt_1, *adt_n], edge_cpu)
            records_1, records_n = [adt_record(m) for m in adt_1], [adt_record(m) for m in adt_n]
            results.adt_value_bytes = sum(len(r.value) for r in records_1) / len(records_1)
            console.log(f"mllp ceilings: raw produce of {n} HubEvents (~{results.adt_value_bytes:.0f} B), "
                        f"1 task and {conns} tasks")
            results.produce_1 = await produce(broker.bootstrap, BENCH_ADT.name, records_1, 1, broker.pid)
            results.produce_n = await produce(broker.bootstrap, BENCH_ADT.name, records_n, conns, broker.pid)
        if "http" in options.sections:
            for resource_type in FHIR_TYPES:
                console.log(f"http ceilings: parse+validate and raw produce of {options.requests} {resource_type}")
                results.validate[resource_type] = cpu_ceiling(bodies[resource_type],
                                                              validator(resource_type))
                records = [fhir_record(resource_type, b) for b in bodies[resource_type]]
                results.produce_fhir[resource_type] = await produce(
                    broker.bootstrap, BENCH_FHIR.name, records, options.concurrency, broker.pid)

        with tempfile.TemporaryDirectory(prefix="carehub-bench-") as workdir:
            console.log("hub: starting, registering partners")
            hub_started = time.perf_counter()
            async with started_hub(broker.bootstrap, Path(workdir), workers=options.workers) as session:
                results.hub_start_s = time.perf_counter() - hub_started
                if not options.workers:
                    session.worker_group = ""
                dlq_before = await end_offset_total(broker.bootstrap, DLQ)
                await run_hub_sections(session, options, results, broker.pid, console, adt=(
                    adt_warm, adt_1, adt_n, adt_direct_null, adt_direct_kafka, adt_profiled, adt_profiled_warm,
                    adt_1w, adt_nw,
                ), bodies=bodies, fhir_warm=fhir_warm)
                results.dlq_records = await end_offset_total(broker.bootstrap, DLQ) - dlq_before
                console.log("hub: stopping")
    finally:
        await broker.stop()
    results.total_s = time.perf_counter() - started
    return results


async def run_hub_sections(session: HubSession, options: Options, results: Results, broker_pid: int | None,
                           console: Console, *, adt: tuple[list[bytes], ...], bodies: dict[str, list[bytes]],
                           fhir_warm: dict[str, list[bytes]]) -> None:
    """The hub measurements, each followed by waiting for the pipeline to catch up."""
    warm, adt_1, adt_n, direct_null, direct_kafka, profiled, profiled_warm, adt_1w, adt_nw = adt
    n, conns = options.messages, options.connections
    if "mllp" in options.sections:
        console.log(f"mllp: warm-up ({len(warm)} messages), waiting for the pipeline workers to join")
        await run_load("bench._mllp_load", mllp_job(session, warm, [], conns), len(warm), broker_pid, expect="AA")
        await wait_pipeline_idle(session)
        console.log(f"mllp: {n} messages on 1 connection")
        results.mllp_1 = await run_load("bench._mllp_load", mllp_job(session, adt_1, [], 1), n, broker_pid,
                                        expect="AA")
        results.mllp_1.pipeline_drain_s = await wait_pipeline_idle(session)
        console.log(f"mllp: {n} messages on {conns} concurrent connections")
        results.mllp_n = await run_load("bench._mllp_load", mllp_job(session, adt_n, [], conns), n, broker_pid,
                                        expect="AA")
        results.mllp_n.pipeline_drain_s = await wait_pipeline_idle(session)
        w = options.window
        console.log(f"mllp: {n} messages on 1 connection, pipelined (window {w})")
        results.mllp_1_window = await run_load("bench._mllp_load", mllp_job(session, adt_1w, [], 1, window=w), n,
                                               broker_pid, expect="AA")
        results.mllp_1_window.pipeline_drain_s = await wait_pipeline_idle(session)
        console.log(f"mllp: {n} messages on {conns} concurrent connections, pipelined (window {w})")
        results.mllp_n_window = await run_load("bench._mllp_load", mllp_job(session, adt_nw, [], conns, window=w), n,
                                               broker_pid, expect="AA")
        results.mllp_n_window.pipeline_drain_s = await wait_pipeline_idle(session)
        console.log(f"mllp: AdtIntake.handle in-process, {len(direct_null)} messages with a no-op ingress, "
                    f"{len(direct_kafka)} writing to {BENCH_ADT.name}")
        results.intake_null, results.sqlite_handoffs = await intake_in_process(session, direct_null, kafka=False,
                                                                               broker_pid=broker_pid)
        results.intake_kafka, _ = await intake_in_process(session, direct_kafka, kafka=True, broker_pid=broker_pid)
        if options.py_spy or options.cprofile:
            console.log(f"mllp: profiled run, {n} messages on {conns} connections, window {options.window}")
            profile = Profile(py_spy=options.py_spy, cprofile=options.cprofile)
            job = mllp_job(session, profiled, profiled_warm, conns, window=options.window)
            result = await run_load("bench._mllp_load", job, n, broker_pid, expect="AA", profile=profile)
            result.pipeline_drain_s = await wait_pipeline_idle(session)
            results.profiled["mllp"] = result
            if options.py_spy:
                results.profile["mllp"] = profile_summary(options.py_spy, profile.seconds, PY_SPY_RATE_HZ,
                                                          edge="MLLP edge", steps=MLLP_STEPS)
    if "http" in options.sections:
        for resource_type in FHIR_TYPES:
            console.log(f"http: {options.requests} POST /fhir/{resource_type} at concurrency {options.concurrency}")
            job = fhir_job(session, resource_type, bodies[resource_type], fhir_warm[resource_type],
                           options.concurrency)
            result = await run_load("bench._fhir_load", job, options.requests, broker_pid, expect="201")
            result.pipeline_drain_s = await wait_pipeline_idle(session)
            results.http[resource_type] = result
            console.log(f"http: the same {options.requests} bodies to the bare parse+validate endpoint")
            async with started_bare(session) as port:
                job = fhir_job(session, resource_type, bodies[resource_type], fhir_warm[resource_type],
                               options.concurrency, port=port)
                results.bare[resource_type] = await run_load("bench._fhir_load", job, options.requests, broker_pid,
                                                             expect="201")
        if options.py_spy or options.cprofile or options.profile:
            console.log(f"http: profiled run, {options.requests} POST /fhir/ServiceRequest")
            py_spy, cprofile = (f"{path}.http" if path else None for path in (options.py_spy, options.cprofile))
            if options.profile and py_spy is None:
                py_spy = str(Path(tempfile.gettempdir()) / f"carehub-bench-{os.getpid()}.pyspy.http")
            profile = Profile(py_spy=py_spy, cprofile=cprofile)
            job = fhir_job(session, "ServiceRequest", bodies["profiled"], fhir_warm["profiled"], options.concurrency)
            result = await run_load("bench._fhir_load", job, options.requests, broker_pid, expect="201",
                                    profile=profile)
            result.pipeline_drain_s = await wait_pipeline_idle(session)
            results.profiled["http"] = result
            if py_spy:
                results.profile["http"] = profile_summary(py_spy, profile.seconds, PY_SPY_RATE_HZ,
                                                          edge="HTTP edge", steps=HTTP_STEPS)


# --- output ----------------------------------------------------------------------------------------


def _per_s(throughput: Throughput | LoadResult | None) -> float | None:
    if isinstance(throughput, LoadResult):
        return throughput.throughput.per_s
    return None if throughput is None else throughput.per_s


def _ms(throughput: Throughput | LoadResult | None) -> float:
    per_s = _per_s(throughput)
    return math.nan if not per_s or math.isnan(per_s) else 1000 / per_s


def summary(results: Results, options: Options) -> dict[str, Any]:
    """Every figure, for the final JSON line."""
    def thr(throughput: Throughput | None) -> dict[str, float] | None:
        return None if throughput is None else throughput.as_json()

    def load(result: LoadResult | None) -> dict[str, Any] | None:
        return None if result is None else result.as_json()

    n = options.connections
    ratios: dict[str, float] = {
        "mllp_1conn_vs_produce_1": ratio(_per_s(results.mllp_1), _per_s(results.produce_1)),
        "mllp_1conn_vs_parse_map": ratio(_per_s(results.mllp_1), _per_s(results.parse_map)),
        f"mllp_{n}conn_vs_produce_{n}": ratio(_per_s(results.mllp_n), _per_s(results.produce_n)),
        f"mllp_{n}conn_vs_parse_map": ratio(_per_s(results.mllp_n), _per_s(results.parse_map)),
        "mllp_1conn_window_vs_produce_1": ratio(_per_s(results.mllp_1_window), _per_s(results.produce_1)),
        f"mllp_{n}conn_window_vs_produce_{n}": ratio(_per_s(results.mllp_n_window), _per_s(results.produce_n)),
        "mllp_1conn_window_vs_1conn": ratio(_per_s(results.mllp_1_window), _per_s(results.mllp_1)),
        f"mllp_{n}conn_window_vs_{n}conn": ratio(_per_s(results.mllp_n_window), _per_s(results.mllp_n)),
        f"mllp_{n}conn_window_vs_parse_map": ratio(_per_s(results.mllp_n_window), _per_s(results.parse_map)),
    }
    for resource_type in FHIR_TYPES:
        name = resource_type.lower()
        http = results.http.get(resource_type)
        ratios[f"http_{name}_vs_bare_validating"] = ratio(_per_s(http), _per_s(results.bare.get(resource_type)))
        ratios[f"http_{name}_vs_validate"] = ratio(_per_s(http), _per_s(results.validate.get(resource_type)))
        ratios[f"http_{name}_vs_produce_{options.concurrency}"] = ratio(
            _per_s(http), _per_s(results.produce_fhir.get(resource_type)))
    figures: dict[str, Any] = json_safe({
        "config": {"messages": options.messages, "requests": options.requests, "connections": options.connections,
                   "window": options.window,
                   "concurrency": options.concurrency, "workers": options.workers,
                   "hl7_message_bytes_avg": round(results.hl7_bytes),
                   "adt_event_value_bytes_avg": None if math.isnan(results.adt_value_bytes)
                   else round(results.adt_value_bytes),
                   "fhir_body_bytes_avg": {k: round(v) for k, v in results.fhir_bytes.items()},
                   "cpus": os.cpu_count(), "python": platform.python_version()},
        "mllp_1conn": load(results.mllp_1),
        f"mllp_{n}conn": load(results.mllp_n),
        "mllp_1conn_window": load(results.mllp_1_window),
        f"mllp_{n}conn_window": load(results.mllp_n_window),
        "produce_1task": thr(results.produce_1),
        f"produce_{n}tasks": thr(results.produce_n),
        "parse_map": thr(results.parse_map),
        "edge_cpu_no_io": thr(results.edge_cpu),
        "adt_intake_in_process_null_ingress": thr(results.intake_null),
        "adt_intake_in_process_kafka": thr(results.intake_kafka),
        "adt_intake_aiosqlite_handoffs_per_msg": results.sqlite_handoffs,
        "profiled_runs": {k: load(v) for k, v in results.profiled.items()},
        "profile": results.profile,
        "http": {k: load(v) for k, v in results.http.items()},
        "bare_validating": {k: load(v) for k, v in results.bare.items()},
        "validate": {k: thr(v) for k, v in results.validate.items()},
        f"produce_fhir_{options.concurrency}tasks": {k: thr(v) for k, v in results.produce_fhir.items()},
        "ratios": ratios,
        "hub_start_s": results.hub_start_s,
        "dlq_records": results.dlq_records,
        "total_s": results.total_s,
    })
    return figures


def table(results: Results, options: Options) -> Table:
    """The human-readable table: each hub figure beside its same-run ceilings."""
    n, c = options.connections, options.concurrency
    size = results.hl7_bytes / 1024
    out = Table(title=f"CareHub intake benchmark: {options.messages} ADT messages of ~{size:.1f} KB per MLLP run, "
                      f"{options.requests} FHIR creates per type, {os.cpu_count()} CPUs, one embedded Tansu broker")
    out.add_column("measure")
    out.add_column("hub", justify="right")
    out.add_column("ceiling", justify="right")
    out.add_column("hub/ceiling", justify="right")
    out.add_column("ceiling (same run)")
    rows: list[tuple[str, Throughput | LoadResult | None, Throughput | LoadResult | None, str]] = [
        ("MLLP ADT, 1 connection, msgs/s", results.mllp_1, results.produce_1,
         "raw aiokafka send_and_wait, 1 at a time, same bytes"),
        ("", results.mllp_1, results.parse_map, "parse_message + map_adt in-process"),
        (f"MLLP ADT, {n} connections, msgs/s", results.mllp_n, results.produce_n,
         f"raw aiokafka send_and_wait, {n} tasks, 1 producer"),
        ("", results.mllp_n, results.parse_map, "parse_message + map_adt in-process"),
        (f"MLLP ADT, 1 connection, window {options.window}, msgs/s", results.mllp_1_window, results.produce_1,
         "raw aiokafka send_and_wait, 1 at a time, same bytes"),
        (f"MLLP ADT, {n} connections, window {options.window}, msgs/s", results.mllp_n_window, results.produce_n,
         f"raw aiokafka send_and_wait, {n} tasks, 1 producer"),
        ("", results.mllp_n_window, results.parse_map, "parse_message + map_adt in-process"),
    ]
    for resource_type in FHIR_TYPES:
        http = results.http.get(resource_type)
        rows.append((f"POST /fhir/{resource_type}, c={c}, creates/s", http, results.bare.get(resource_type),
                     "bare endpoint: same uvicorn+FastAPI, parse+validate, 201 (headline)"))
        rows.append(("", http, results.validate.get(resource_type), "parse_fhir_json + validate_resource in-process"))
        rows.append(("", http, results.produce_fhir.get(resource_type),
                     f"raw aiokafka send_and_wait, {c} tasks, same bytes"))
    for label, hub, ceiling, what in rows:
        if hub is None and ceiling is None:
            continue
        h, ref = _per_s(hub), _per_s(ceiling)
        out.add_row(label, fmt(h) if label else "", fmt(ref), fmt(ratio(h, ref), 3), what)
    return out


def notes(results: Results, options: Options) -> list[str]:
    """Context lines printed under the table."""
    lines: list[str] = []
    n = options.connections
    headline = ratio(_per_s(results.http.get("ServiceRequest")), _per_s(results.bare.get("ServiceRequest")))
    if not math.isnan(headline):
        lines.append(f"HEADLINE (issue 13): POST /fhir/ServiceRequest at c={options.concurrency}: hub "
                     f"{fmt(_per_s(results.http.get('ServiceRequest')))}/s / bare parse+validate endpoint "
                     f"{fmt(_per_s(results.bare.get('ServiceRequest')))}/s = {headline:.2f} (target >= 0.8)")
    w = options.window
    for name, result in (("MLLP 1 connection", results.mllp_1), (f"MLLP {n} connections", results.mllp_n),
                         (f"MLLP 1 connection, window {w}", results.mllp_1_window),
                         (f"MLLP {n} connections, window {w}", results.mllp_n_window),
                         *((f"POST /fhir/{k}", v) for k, v in results.http.items()),
                         *((f"bare POST /fhir/{k}", v) for k, v in results.bare.items())):
        if result is None:
            continue
        t = result.throughput
        lines.append(f"{name}: {result.p50_ms:.2f} ms p50, {result.p99_ms:.2f} ms p99; CPU per message: this "
                     f"process (hub) ~{t.cpu_ms(t.cpu_bench_s):.2f} ms, broker ~{t.cpu_ms(t.cpu_broker_s):.2f} ms, "
                     f"load client {result.client_cpu_ms:.2f} ms; the pipeline caught up "
                     f"{result.pipeline_drain_s:.1f} s after the run.")
    if results.parse_map and results.mllp_1:
        lines.append(
            f"MLLP per message, one at a time: parse+map {_ms(results.parse_map):.3f} ms; + ACK, event id, CloudEvent, "
            f"encode {_ms(results.edge_cpu):.3f} ms; AdtIntake.handle in-process with the SQLite facility lookup "
            f"({results.sqlite_handoffs:.1f} aiosqlite thread hand-offs per message), no broker "
            f"{_ms(results.intake_null):.3f} ms; the same with the hub's producer writing (acks=all) "
            f"{_ms(results.intake_kafka):.3f} ms; raw send_and_wait alone {_ms(results.produce_1):.3f} ms; over MLLP "
            f"from the client process {_ms(results.mllp_1):.3f} ms.")
    for name, profiled in results.profiled.items():
        what = (f"MLLP {n}-connection, window {options.window}," if name == "mllp"
                else f"POST /fhir/ServiceRequest c={options.concurrency}")
        lines.append(f"profiled {what} run (not a measurement): {fmt(_per_s(profiled))}/s")
        profile = results.profile.get(name)
        if not profile:
            continue
        lines.append(f"  py-spy ({PY_SPY_RATE_HZ} Hz, --nonblocking, this process, all threads): "
                     f"{profile['busy_samples']} busy samples ({profile['idle_samples']} idle or empty apart); the "
                     f"event loop was busy {fmt(profile['event_loop_busy'], 2)} of the profiled span. Busy samples "
                     "by component: " + "; ".join(f"{k} {v:.0%}" for k, v in profile["by_component"].items()))
        lines.append("  by step of the edge (share of all busy samples): "
                     + "; ".join(f"{k} {v:.0%}" for k, v in profile["edge_steps"].items()))
        lines.append("  self time: " + "; ".join(f"{k} {v:.0%}" for k, v in profile["top_self"]))
        lines.append("  total time (on the stack): " + "; ".join(f"{k} {v:.0%}" for k, v in profile["top_total"]))
    if results.dlq_records:
        lines.append(f"WARNING: {results.dlq_records} records were dead-lettered during the run")
    lines.append(f"hub started in {results.hub_start_s:.1f} s; total {results.total_s:.1f} s")
    return lines


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.intake",
        description="CareHub intake (MLLP, FHIR REST) benchmark against same-run ceilings.")
    parser.add_argument("--messages", type=int, default=1000, help="ADT messages per MLLP run (default 1000)")
    parser.add_argument("--requests", type=int, default=500, help="FHIR creates per resource type (default 500)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent MLLP connections (default 8)")
    parser.add_argument("--window", type=int, default=16,
                        help="frames each MLLP connection keeps unacknowledged in the pipelined runs (default 16)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent HTTP requests (default 32)")
    parser.add_argument("--sections", default="mllp,http", help="comma-separated subset of mllp,http (default both)")
    parser.add_argument("--no-workers", action="store_true", help="start the hub without its pipeline workers")
    parser.add_argument("--py-spy", metavar="PATH",
                        help="add profiled MLLP and HTTP runs, sampled by py-spy (raw collapsed stacks to PATH, "
                             "PATH.http)")
    parser.add_argument("--profile", action="store_true",
                        help="add a profiled ServiceRequest run under py-spy (all threads) and print the top "
                             "functions")
    parser.add_argument("--cprofile", metavar="PATH",
                        help="add profiled MLLP and HTTP runs, cProfile stats to PATH, PATH.http")
    args = parser.parse_args(argv)
    sections = frozenset(s.strip() for s in str(args.sections).split(",") if s.strip())
    if not sections or not sections <= SECTIONS:
        parser.error("--sections takes mllp and/or http")
    if min(args.messages, args.requests, args.connections, args.concurrency, args.window) < 1:
        parser.error("counts must be positive")
    return Options(messages=args.messages, requests=args.requests, connections=args.connections, window=args.window,
                   concurrency=args.concurrency, sections=sections, workers=not args.no_workers,
                   py_spy=args.py_spy, cprofile=args.cprofile, profile=args.profile)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m bench.intake``."""
    options = parse_args(argv)
    logs.configure(level="WARNING")
    results = asyncio.run(run(options, Console(stderr=True)))
    print_report(table(results, options), notes(results, options), summary(results, options))


if __name__ == "__main__":
    main()
