"""Pipeline benchmark: the hub beside same-run ceilings, on one embedded Tansu broker (memory only).

``python -m bench.pipeline [--events N] [--requests R]`` measures, in one run:

1. **raw** - aiokafka consume→produce pass-through of N preloaded ~2 KB events, bench.in → bench.out:
   ``getone`` → ``send_and_wait`` (acks=all) → ``commit`` per record, the hub's per-message semantics
   (commit only after the output is acknowledged); the same loop as two chained hops running at once
   (bench.in → bench.mid → bench.out.chain, the hub's shape with no work in the hops); and a batched
   reference (``getmany`` → send the batch → one commit). Timed from the first record consumed to the
   last output acknowledged.
2. **hub** - the same N events produced to ``hub.ingress`` (HubEvent envelope + CloudEvent headers, as
   the FHIR edge writes them), timed from the start of the preload until the last one is read on
   ``partner.<cbo>``. The hub makes two hops (normalize: ingress → events, route: events → partner),
   each consume → control-plane work → produce (acks=all) → commit; the hops run concurrently.
   End-to-end latency is measured separately at a fixed low rate (send time = the ingress record's
   CreateTime, until a reader sees it on the output topic), for the hub and for the raw chain (read
   after one hop and after two).
3. **http** - ``POST /fhir/ServiceRequest`` with the hospital's token at concurrency 16, from a separate
   client process (``bench._http_load``), beside ``parse_fhir_json`` + ``validate_resource`` alone
   in-process over the same bodies. The HTTP run also feeds the pipeline (same process, same event
   loop); how many of its events the pipeline delivered while it lasted is reported.

Diagnostics: ``--sections`` runs a subset, ``--sql-stats`` counts the control plane's statements,
commits and aiosqlite thread hand-offs per event, ``--cprofile PATH`` profiles the hub throughput run.
For a sampling profile, attach ``py-spy record --pid`` while the hub section runs.

Prints a table and, last, one line of JSON with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import json
import math
import os
import platform
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console
from rich.table import Table
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncEngine

from hub import events, logs
from hub.adapters.fhir_facts import servicerequest_facts
from hub.adapters.fhir_validation import parse_fhir_json, validate_resource
from hub.app import RunningHub, running_hub
from hub.broker.embedded import EmbeddedBroker
from hub.broker.topics import ensure_topics
from hub.events import CloudEvent, HubEvent, RoutingFacts
from hub.record_proof import RecordProof
from hub.settings import Settings
from hub.topics.registry import DLQ, INGRESS, TopicSpec, partner_topic

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "bench"
#: The record key the bench hubs run with, so the records the bench writes onto ``hub.ingress`` itself verify.
BENCH_RECORD_KEY = "carehub-bench-record-key-of-32-bytes"
BENCH_PROOF = RecordProof(BENCH_RECORD_KEY.encode())
HOSPITAL_ID = "bench-hospital"
CBO_ID = "bench-foodbank"
HOSPITAL_ORG = f"Organization/{HOSPITAL_ID}"
CBO_ORG = f"Organization/{CBO_ID}"
MRN_SYSTEM = "urn:oid:2.16.840.1.113883.19.5.99999.2"
PATIENTS = 200

RAW_IN = TopicSpec(name="bench.in", partitions=INGRESS.partitions, key="as hub.ingress", retention_ms=3_600_000,
                   payload=HubEvent, description="raw pass-through input")
RAW_OUT = TopicSpec(name="bench.out", partitions=1, key="as hub.ingress", retention_ms=3_600_000,
                    payload=HubEvent, description="raw per-message pass-through output")
RAW_OUT_BATCHED = TopicSpec(name="bench.out.batched", partitions=1, key="as hub.ingress", retention_ms=3_600_000,
                            payload=HubEvent, description="raw batched pass-through output")
RAW_MID = TopicSpec(name="bench.mid", partitions=INGRESS.partitions, key="as hub.events", retention_ms=3_600_000,
                    payload=HubEvent, description="raw two-hop chain, between the hops (like hub.events)")
RAW_OUT2 = TopicSpec(name="bench.out.chain", partitions=1, key="as hub.ingress", retention_ms=3_600_000,
                     payload=HubEvent, description="raw two-hop chain output")
LAT_IN = TopicSpec(name="bench.lat.in", partitions=INGRESS.partitions, key="as hub.ingress",
                   retention_ms=3_600_000, payload=HubEvent, description="raw latency input")
LAT_MID = TopicSpec(name="bench.lat.mid", partitions=INGRESS.partitions, key="as hub.ingress",
                    retention_ms=3_600_000, payload=HubEvent, description="raw latency, after one hop")
LAT_OUT = TopicSpec(name="bench.lat.out", partitions=1, key="as hub.ingress", retention_ms=3_600_000,
                    payload=HubEvent, description="raw latency, after two hops")
RAW_TOPICS = (RAW_IN, RAW_OUT, RAW_OUT_BATCHED, RAW_MID, RAW_OUT2, LAT_IN, LAT_MID, LAT_OUT)

# The hub's consumer settings (hub.app / hub.pipeline.workers with HUB_CONSUMER_SESSION_TIMEOUT_MS=2000).
FETCH_MAX_WAIT_MS = 20
SESSION_TIMEOUT_MS = 2000
HEARTBEAT_INTERVAL_MS = 400
# The bench's own output readers (a partner's consumer); the same for raw and hub.
READER_FETCH_MAX_WAIT_MS = 20


# --- events ----------------------------------------------------------------------------------------


def fhir_body(seq: int, mrn: str) -> bytes:
    """A realistic ~2 KB SDOH food-insecurity ServiceRequest (fictional patient), unique per ``seq``."""
    note = (
        "Patient reports running out of food before the end of the month on several occasions in the last "
        "12 months. Household of four, two school-age children. Prefers weekday afternoon pickup; no car, "
        "relies on public transit (bus line 12). Dietary needs: one child with a peanut allergy. "
        "Spanish-speaking caregiver; please arrange an interpreter for the intake call. "
        f"Referral number {seq}."
    )
    return orjson.dumps({
        "resourceType": "ServiceRequest",
        "meta": {"profile": ["http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-ServiceRequest"],
                 "lastUpdated": "2026-11-20T10:15:00Z"},
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5.99999.1", "value": f"REF-{seq:08d}"}],
        "status": "active",
        "intent": "order",
        "priority": "routine",
        "category": [
            {"coding": [{"system": "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes",
                         "code": "food-insecurity", "display": "Food Insecurity"}]},
            {"coding": [{"system": "http://snomed.info/sct", "code": "410606002",
                         "display": "Social service procedure"}]},
        ],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "467771000124109",
                             "display": "Assistance with application for food pantry program"}],
                 "text": "Referral to a food pantry program"},
        "subject": {"identifier": {"system": MRN_SYSTEM, "value": mrn}, "display": f"Patient {mrn}"},
        "authoredOn": "2026-11-20T10:15:00Z",
        "occurrencePeriod": {"start": "2026-11-21", "end": "2026-12-21"},
        "requester": {"reference": HOSPITAL_ORG, "display": "Bench General Hospital"},
        "performer": [{"reference": CBO_ORG, "display": "Bench Community Food Bank"}],
        "reasonCode": [{"coding": [{"system": "http://snomed.info/sct", "code": "733423003",
                                    "display": "Food insecurity"}],
                        "text": "Screened positive for food insecurity (Hunger Vital Sign)"}],
        "note": [{"authorString": "Care coordinator", "time": "2026-11-20T10:15:00Z", "text": note}],
        "patientInstruction": "The food bank will call you within three business days to schedule your first pickup.",
    })


def mrn_of(seq: int) -> str:
    """One of ``PATIENTS`` medical record numbers, so the crosswalk sees repeat patients."""
    return f"MRN-{seq % PATIENTS:06d}"


def routing_facts(*, mrn: str, resource_id: str) -> RoutingFacts:
    """The facts the FHIR edge extracts from ``fhir_body`` (checked against the edge once per run)."""
    return RoutingFacts(
        resource_type="ServiceRequest",
        resource_id=resource_id,
        sender=HOSPITAL_ID,
        patient_source=f"{MRN_SYSTEM}|{mrn}",
        requester=HOSPITAL_ORG,
        performers=(CBO_ORG,),
        categories=(
            "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes|food-insecurity",
            "http://snomed.info/sct|410606002",
        ),
        codes=("http://snomed.info/sct|467771000124109",),
        status="active",
        intent="order",
        event_kind="referral",
    )


@dataclass(frozen=True)
class Prepared:
    """One record as the FHIR edge writes it to ``hub.ingress``."""

    ce_id: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class EventFactory:
    """Builds distinct events (a run-wide sequence number makes every body, hence every id, unique)."""

    def __init__(self) -> None:
        self._seq = 0

    def body(self) -> bytes:
        self._seq += 1
        return fhir_body(self._seq, mrn_of(self._seq))

    def events(self, count: int) -> list[Prepared]:
        out: list[Prepared] = []
        for _ in range(count):
            self._seq += 1
            mrn = mrn_of(self._seq)
            body = fhir_body(self._seq, mrn)
            ce_id = events.event_id(HOSPITAL_ID, "ServiceRequest", body)
            facts = routing_facts(mrn=mrn, resource_id=ce_id)
            ce = CloudEvent(id=ce_id, source=f"/partners/{HOSPITAL_ID}",
                            type=events.event_type("ServiceRequest"), time=events.now())
            key = f"{HOSPITAL_ID}|{facts.patient_source}".encode()
            value = events.encode(HubEvent(facts=facts, body=body.decode()))
            # Proven as the edge proves what it writes to hub.ingress (also on the raw bench topics: same bytes).
            headers = BENCH_PROOF.stamp(INGRESS.name, key=key, value=value, headers=ce.to_headers())
            out.append(Prepared(
                ce_id=ce_id, key=key, value=value, headers=[(k, v.encode()) for k, v in headers.items()],
            ))
        return out


def check_facts_match_edge() -> None:
    """The hand-built facts must equal what the real edge extracts, or the bench measures another input."""
    body = fhir_body(0, mrn_of(0))
    resource = validate_resource(parse_fhir_json(body), expected_type="ServiceRequest")
    edge = servicerequest_facts(resource, sender=HOSPITAL_ID, resource_id="x")
    if edge != routing_facts(mrn=mrn_of(0), resource_id="x"):
        raise SystemExit(f"bench facts differ from the edge's: {edge!r}")


# --- measuring helpers -----------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _proc_cpu_s(pid: int | None) -> float:
    """user+system CPU seconds of process ``pid`` (Linux /proc; NaN elsewhere)."""
    if pid is None:
        return math.nan
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuMeter:
    """CPU seconds used by this process (all threads) and by the broker over one phase."""

    broker_pid: int | None
    bench_s: float = math.nan
    broker_s: float = math.nan

    @contextlib.contextmanager
    def measure(self) -> Iterator[CpuMeter]:
        bench0, broker0 = time.process_time(), _proc_cpu_s(self.broker_pid)
        try:
            yield self
        finally:
            self.bench_s = time.process_time() - bench0
            self.broker_s = _proc_cpu_s(self.broker_pid) - broker0


def ce_id_of(record: Any) -> str:
    """The ``ce_id`` header of a consumed record."""
    for name, value in record.headers or ():
        if name == "ce_id":
            return bytes(value).decode()
    return ""


def make_producer(bootstrap: str, **overrides: Any) -> Any:
    """An aiokafka producer configured like the hub's (acks=all, no idempotence, linger 0)."""
    options: dict[str, Any] = {"acks": "all", "enable_idempotence": False, "linger_ms": 0,
                               "request_timeout_ms": 10_000}
    options.update(overrides)
    return AIOKafkaProducer(bootstrap_servers=bootstrap, **options)


async def preload(bootstrap: str, topic: str, records: Sequence[Prepared]) -> float:
    """Write ``records`` to ``topic`` (acks=all, pipelined); return the seconds it took."""
    producer = make_producer(bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send(topic, r.value, key=r.key, headers=r.headers) for r in records]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


class Arrivals:
    """Reads a topic from its current end, noting the wall-clock time each record (by ce_id) arrives."""

    def __init__(self, bootstrap: str, spec: TopicSpec) -> None:
        self._bootstrap = bootstrap
        self._spec = spec
        self.seen: dict[str, float] = {}
        self.count = 0
        self._task: asyncio.Task[None] | None = None
        self._consumer: Any = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Arrivals:
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None, enable_auto_commit=False,
                                    fetch_max_wait_ms=READER_FETCH_MAX_WAIT_MS, auto_offset_reset="latest")
        await consumer.start()
        partitions = [TopicPartition(self._spec.name, p) for p in range(self._spec.partitions)]
        consumer.assign(partitions)
        for tp in partitions:
            await consumer.seek_to_end(tp)
            await consumer.position(tp)  # resolve now, so nothing written later is skipped
        self._consumer = consumer
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            arrived = time.time()
            for records in batch.values():
                for record in records:
                    self.seen.setdefault(ce_id_of(record), arrived)
                    self.count += 1
            if batch:
                self._changed.set()

    async def wait_for(self, wanted: set[str] | int, timeout_s: float) -> bool:
        """Wait until every id in ``wanted`` (or that many records) arrived; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while not (wanted <= self.seen.keys() if isinstance(wanted, set) else self.count >= wanted):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 1.0))
        return True

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


async def end_offset_total(bootstrap: str, spec: TopicSpec) -> int:
    """The sum of the end offsets of ``spec``'s partitions (to see whether anything was dead-lettered)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(spec.name, p) for p in range(spec.partitions)]
        offsets = await consumer.end_offsets(partitions)
        return int(sum(offsets.values()))
    finally:
        await consumer.stop()


async def paced_send(bootstrap: str, topic: str, records: Sequence[Prepared], rate_per_s: float) -> dict[str, float]:
    """Send one record every ``1/rate_per_s`` seconds (send_and_wait, acks=all); return ce_id -> send time.

    The send time is the record's CreateTime (``timestamp_ms``), kept here at full resolution.
    """
    producer = make_producer(bootstrap)
    await producer.start()
    sent: dict[str, float] = {}
    try:
        start = time.monotonic()
        for index, record in enumerate(records):
            delay = start + index / rate_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            at = time.time()
            sent[record.ce_id] = at
            await producer.send_and_wait(topic, record.value, key=record.key, headers=record.headers,
                                         timestamp_ms=int(at * 1000))
    finally:
        await producer.stop()
    return sent


@dataclass
class Latency:
    """End-to-end latencies of one paced run, in milliseconds."""

    samples_ms: list[float] = field(default_factory=list)
    lost: int = 0

    @property
    def p50(self) -> float:
        return percentile(self.samples_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.samples_ms, 99)

    def as_json(self) -> dict[str, float]:
        mean = sum(self.samples_ms) / len(self.samples_ms) if self.samples_ms else math.nan
        return {"p50_ms": round(self.p50, 2), "p99_ms": round(self.p99, 2), "mean_ms": round(mean, 2),
                "max_ms": round(max(self.samples_ms, default=math.nan), 2), "samples": len(self.samples_ms),
                "lost": self.lost}


async def measure_latency(bootstrap: str, in_topic: str, outputs: Sequence[TopicSpec],
                          records: Sequence[Prepared], rate_per_s: float) -> list[Latency]:
    """Pace ``records`` into ``in_topic``; time each one until a reader sees it on each of ``outputs``."""
    async with contextlib.AsyncExitStack() as stack:
        readers = [await stack.enter_async_context(Arrivals(bootstrap, spec)) for spec in outputs]
        sent = await paced_send(bootstrap, in_topic, records, rate_per_s)
        for reader in readers:
            await reader.wait_for(set(sent), timeout_s=30)
    return [
        Latency(samples_ms=[(reader.seen[i] - t) * 1000 for i, t in sent.items() if i in reader.seen],
                lost=len(set(sent) - reader.seen.keys()))
        for reader in readers
    ]


@dataclass
class Throughput:
    """One throughput measurement (plus the CPU this process and the broker spent on it)."""

    count: int
    seconds: float
    cpu_bench_s: float = math.nan
    cpu_broker_s: float = math.nan
    preload_s: float = math.nan
    first_out_s: float = math.nan

    @property
    def per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else math.nan

    def cpu_ms(self, seconds: float) -> float:
        return seconds * 1000 / self.count

    def as_json(self) -> dict[str, float]:
        return {
            "count": self.count, "seconds": round(self.seconds, 4), "per_s": round(self.per_s, 1),
            "cpu_bench_ms_per_msg": round(self.cpu_ms(self.cpu_bench_s), 3),
            "cpu_broker_ms_per_msg": round(self.cpu_ms(self.cpu_broker_s), 3),
            "preload_s": round(self.preload_s, 4), "first_out_s": round(self.first_out_s, 4),
        }


# --- raw aiokafka pass-through ---------------------------------------------------------------------


class RawPassthrough:
    """A consumer-group member copying ``src`` to ``dst`` with the hub's per-message (or a batched) loop."""

    def __init__(self, bootstrap: str, src: str, dst: str, *, batched: bool = False) -> None:
        self._bootstrap = bootstrap
        self._src = src
        self._dst = dst
        self._batched = batched
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.processed = 0
        self._consumer: Any = None
        self._producer: Any = None

    async def __aenter__(self) -> RawPassthrough:
        self._producer = make_producer(self._bootstrap)
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            self._src, bootstrap_servers=self._bootstrap, group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS, session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS, auto_offset_reset="earliest",
        )
        await self._consumer.start()
        deadline = time.monotonic() + 30
        while not self._consumer.assignment():  # the group join is not part of any measurement
            if time.monotonic() > deadline:
                raise TimeoutError(f"the raw consumer of {self._src} got no partitions")
            await asyncio.sleep(0.02)
        return self

    async def run(self, count: int | None = None) -> None:
        """Copy ``count`` records (forever when None)."""
        consumer, producer, dst = self._consumer, self._producer, self._dst
        while count is None or self.processed < count:
            if self._batched:
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                records = [r for part in batch.values() for r in part]
                if not records:
                    continue
                if self.first_at is None:
                    self.first_at = time.time()
                futures = [await producer.send(dst, r.value, key=r.key, headers=list(r.headers)) for r in records]
                await asyncio.gather(*futures)
                await consumer.commit()
                self.processed += len(records)
            else:
                record = await consumer.getone()
                if self.first_at is None:
                    self.first_at = time.time()
                await producer.send_and_wait(dst, record.value, key=record.key, headers=list(record.headers))
                await consumer.commit()
                self.processed += 1
            self.last_at = time.time()

    async def __aexit__(self, *exc: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()


async def raw_throughput(bootstrap: str, count: int, mode: str, broker_pid: int | None) -> Throughput:
    """Copy the preloaded ``bench.in``; time first record consumed → last output acknowledged.

    ``mode``: ``per-message`` (one hop), ``batched`` (one hop) or ``chain`` (two per-message hops running
    concurrently, bench.in → bench.mid → bench.out.chain, the hub's shape with no work in the hops).
    """
    meter = CpuMeter(broker_pid)
    async with contextlib.AsyncExitStack() as stack:
        if mode == "chain":
            hops = [await stack.enter_async_context(RawPassthrough(bootstrap, RAW_IN.name, RAW_MID.name)),
                    await stack.enter_async_context(RawPassthrough(bootstrap, RAW_MID.name, RAW_OUT2.name))]
        else:
            dst = RAW_OUT_BATCHED if mode == "batched" else RAW_OUT
            hops = [await stack.enter_async_context(
                RawPassthrough(bootstrap, RAW_IN.name, dst.name, batched=mode == "batched"))]
        with meter.measure():
            await asyncio.wait_for(asyncio.gather(*(hop.run(count) for hop in hops)), timeout=300)
    first, last = hops[0].first_at, hops[-1].last_at
    assert first is not None
    assert last is not None
    return Throughput(count=count, seconds=last - first, cpu_bench_s=meter.bench_s, cpu_broker_s=meter.broker_s)


async def raw_latency(bootstrap: str, records: Sequence[Prepared], rate_per_s: float) -> tuple[Latency, Latency]:
    """Paced through two chained per-message hops; read after one hop and after both."""
    async with (RawPassthrough(bootstrap, LAT_IN.name, LAT_MID.name) as first,
                RawPassthrough(bootstrap, LAT_MID.name, LAT_OUT.name) as second):
        tasks = [asyncio.create_task(first.run()), asyncio.create_task(second.run())]
        try:
            one_hop, two_hops = await measure_latency(bootstrap, LAT_IN.name, [LAT_MID, LAT_OUT], records,
                                                      rate_per_s)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return one_hop, two_hops


# --- the hub ---------------------------------------------------------------------------------------


@dataclass
class HubSession:
    """A running hub with its partners registered."""

    hub: RunningHub
    url: str
    hospital_token: str


async def register_bench_partners(base_url: str | httpx.URL) -> dict[str, str]:
    """Register the bench hospital and CBO through the admin API; their tokens by partner id."""
    tokens: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for partner_id, kind, name in ((HOSPITAL_ID, "hospital", "Bench General Hospital"),
                                       (CBO_ID, "cbo", "Bench Community Food Bank")):
            answer = await client.post(
                "/admin/v1/partners", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                json={"id": partner_id, "kind": kind, "name": name, "organization": f"Organization/{partner_id}"},
            )
            if answer.status_code != 201:
                raise SystemExit(f"registering {partner_id} failed: {answer.status_code} {answer.text}")
            tokens[partner_id] = str(answer.json()["token"])
    return tokens


@contextlib.asynccontextmanager
async def started_hub(bootstrap: str, workdir: Path) -> AsyncIterator[HubSession]:
    """Start the hub against ``bootstrap`` and register a hospital and a CBO through the admin API."""
    settings = Settings(
        kafka_bootstrap=bootstrap,
        database_url=f"sqlite+aiosqlite:///{workdir / 'hub.db'}",
        http_port=0,
        mllp_port=0,
        admin_token=ADMIN_TOKEN,
        record_key=BENCH_RECORD_KEY,
        consumer_session_timeout_ms=SESSION_TIMEOUT_MS,
        worker_group=f"bench-{uuid.uuid4().hex[:8]}",
    )
    async with running_hub(settings) as hub:
        url = hub.http_url or ""
        tokens = await register_bench_partners(url)
        yield HubSession(hub=hub, url=url, hospital_token=tokens[HOSPITAL_ID])


async def hub_warm_up(bootstrap: str, factory: EventFactory, count: int = 20) -> float:
    """Push a few events through (the first waits for the workers' group join); return the seconds."""
    started = time.perf_counter()
    warm = factory.events(count)
    async with Arrivals(bootstrap, partner_topic(CBO_ID)) as arrivals:
        await preload(bootstrap, INGRESS.name, warm)
        if not await arrivals.wait_for({r.ce_id for r in warm}, timeout_s=60):
            raise SystemExit("the hub did not deliver the warm-up events within 60 s")
    return time.perf_counter() - started


@dataclass
class SqlStats:
    """Statements and transactions the control plane ran (SQLAlchemy engine events), for ``--sql-stats``."""

    statements: collections.Counter[str] = field(default_factory=collections.Counter)
    cache: collections.Counter[str] = field(default_factory=collections.Counter)
    commits: int = 0
    rollbacks: int = 0
    thread_calls: int = 0

    def on_execute(self, _conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, _many: bool) -> None:
        words = statement.split()
        verb = words[0].upper() if words else "?"
        table = next((words[i + 1] for i, w in enumerate(words[:-1]) if w.upper() in {"INTO", "FROM", "UPDATE"}), "")
        kind = f"{verb} {table}".strip()
        self.statements[kind] += 1
        status = str(getattr(getattr(context, "cache_hit", None), "name", "?"))
        self.cache[status if status == "CACHE_HIT" else f"{status} ({kind})"] += 1

    def on_commit(self, _conn: Any) -> None:
        self.commits += 1

    def on_rollback(self, _conn: Any) -> None:
        self.rollbacks += 1

    @contextlib.contextmanager
    def attached(self, engine: AsyncEngine) -> Iterator[SqlStats]:
        """Listen to ``engine``'s events, and count aiosqlite's worker-thread calls (each one is a hand-off to
        the connection's thread and back through the event loop), for as long as the block runs."""
        target = engine.sync_engine
        hooks = (("after_cursor_execute", self.on_execute), ("commit", self.on_commit),
                 ("rollback", self.on_rollback))
        for name, hook in hooks:
            sa_event.listen(target, name, hook)
        original: Any = aiosqlite.Connection._execute

        async def counted(conn: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
            self.thread_calls += 1
            return await original(conn, fn, *args, **kwargs)

        aiosqlite.Connection._execute = counted  # type: ignore[method-assign, assignment]
        try:
            yield self
        finally:
            aiosqlite.Connection._execute = original  # type: ignore[method-assign]
            for name, hook in hooks:
                sa_event.remove(target, name, hook)

    def per_event(self, count: int) -> dict[str, Any]:
        return {
            "statements": round(sum(self.statements.values()) / count, 2),
            "commits": round(self.commits / count, 2),
            "rollbacks": round(self.rollbacks / count, 2),
            "aiosqlite_thread_calls": round(self.thread_calls / count, 2),
            "by_statement": {k: round(v / count, 2) for k, v in self.statements.most_common()},
            "compiled_cache": {k: round(v / count, 2) for k, v in self.cache.most_common()},
        }


async def hub_throughput(session: HubSession, records: Sequence[Prepared], broker_pid: int | None,
                         options: Options) -> tuple[Throughput, SqlStats | None]:
    """Preload ``hub.ingress`` with the workers running; time preload start → last arrival on the CBO topic."""
    bootstrap = session.hub.bootstrap
    meter = CpuMeter(broker_pid)
    profiler = cProfile.Profile() if options.cprofile else None
    sql = SqlStats() if options.sql_stats else None
    async with contextlib.AsyncExitStack() as stack:
        arrivals = await stack.enter_async_context(Arrivals(bootstrap, partner_topic(CBO_ID)))
        if sql is not None:
            stack.enter_context(sql.attached(session.hub.engine))
        with meter.measure():
            if profiler is not None:
                profiler.enable()
            started = time.time()
            preload_s = await preload(bootstrap, INGRESS.name, records)
            complete = await arrivals.wait_for({r.ce_id for r in records}, timeout_s=max(120.0, len(records) / 10))
            if profiler is not None:
                profiler.disable()
    if profiler is not None and options.cprofile:
        profiler.dump_stats(options.cprofile)
    if not complete:
        missing = len({r.ce_id for r in records} - arrivals.seen.keys())
        raise SystemExit(f"the hub delivered {len(records) - missing}/{len(records)} events before the timeout")
    arrived = [arrivals.seen[r.ce_id] for r in records]
    return Throughput(count=len(records), seconds=max(arrived) - started, cpu_bench_s=meter.bench_s,
                      cpu_broker_s=meter.broker_s, preload_s=preload_s, first_out_s=min(arrived) - started), sql


# --- HTTP intake -----------------------------------------------------------------------------------


def validate_ceiling(bodies: Sequence[bytes]) -> Throughput:
    """parse_fhir_json + validate_resource over ``bodies`` in-process: the HTTP edge's CPU floor."""
    started = time.perf_counter()
    cpu0 = time.process_time()
    for body in bodies:
        validate_resource(parse_fhir_json(body), expected_type="ServiceRequest")
    return Throughput(count=len(bodies), seconds=time.perf_counter() - started,
                      cpu_bench_s=time.process_time() - cpu0)


@dataclass
class HttpResult:
    """One HTTP intake run."""

    throughput: Throughput
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]
    delivered_during: int


async def http_intake(session: HubSession, bodies: Sequence[bytes], warmup: Sequence[bytes], concurrency: int,
                      broker_pid: int | None) -> HttpResult:
    """POST ``bodies`` from a client process at ``concurrency``; count what the pipeline delivered meanwhile."""
    job = orjson.dumps({
        "url": session.url, "token": session.hospital_token, "concurrency": concurrency,
        "bodies": [b.decode() for b in bodies], "warmup": [b.decode() for b in warmup],
    })
    meter = CpuMeter(broker_pid)
    async with Arrivals(session.hub.bootstrap, partner_topic(CBO_ID)) as arrivals:
        with meter.measure():
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench._http_load",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                cwd=str(PROJECT_ROOT),
            )
            out, _ = await process.communicate(job)
        delivered = arrivals.count
    if process.returncode != 0:
        raise SystemExit(f"the HTTP load client failed with exit code {process.returncode}")
    result = json.loads(out)
    latencies_ms = [s * 1000 for s in result["latencies_s"]]
    return HttpResult(
        throughput=Throughput(count=len(bodies), seconds=float(result["elapsed_s"]),
                              cpu_bench_s=meter.bench_s, cpu_broker_s=meter.broker_s),
        p50_ms=percentile(latencies_ms, 50), p99_ms=percentile(latencies_ms, 99),
        statuses={str(k): int(v) for k, v in result["statuses"].items()},
        delivered_during=delivered,
    )


# --- orchestration ---------------------------------------------------------------------------------


@dataclass
class Options:
    """Command-line options."""

    events: int
    requests: int
    latency_events: int
    latency_rate: float
    concurrency: int
    sections: frozenset[str]
    cprofile: str | None
    sql_stats: bool


@dataclass
class Results:
    """Everything measured in one run."""

    raw: Throughput | None = None
    raw_batched: Throughput | None = None
    raw_chain: Throughput | None = None
    raw_latency_1hop: Latency | None = None
    raw_latency_2hops: Latency | None = None
    hub: Throughput | None = None
    hub_latency: Latency | None = None
    hub_sql: SqlStats | None = None
    hub_warm_up_s: float = math.nan
    hub_dlq_records: int = 0
    validate: Throughput | None = None
    http: HttpResult | None = None
    value_bytes: float = math.nan
    body_bytes: float = math.nan
    total_s: float = math.nan


async def run_raw(bootstrap: str, options: Options, factory: EventFactory, batch: Sequence[Prepared],
                  results: Results, broker_pid: int | None, console: Console) -> None:
    """Section 1: the raw aiokafka references."""
    console.log(f"raw: preloading {len(batch)} events to {RAW_IN.name}")
    preload_s = await preload(bootstrap, RAW_IN.name, batch)
    console.log("raw: per-message pass-through (one hop)")
    results.raw = await raw_throughput(bootstrap, len(batch), "per-message", broker_pid)
    results.raw.preload_s = preload_s
    console.log("raw: batched pass-through (one hop)")
    results.raw_batched = await raw_throughput(bootstrap, len(batch), "batched", broker_pid)
    console.log("raw: per-message chain (two hops)")
    results.raw_chain = await raw_throughput(bootstrap, len(batch), "chain", broker_pid)
    console.log(f"raw: paced latency, {options.latency_events} events at {options.latency_rate:g}/s")
    results.raw_latency_1hop, results.raw_latency_2hops = await raw_latency(
        bootstrap, factory.events(options.latency_events), options.latency_rate)


async def run_hub(bootstrap: str, options: Options, factory: EventFactory, batch: Sequence[Prepared],
                  results: Results, broker_pid: int | None, console: Console) -> None:
    """Sections 2 and 3: the hub pipeline and its HTTP intake."""
    with tempfile.TemporaryDirectory(prefix="carehub-bench-") as workdir:
        console.log("hub: starting, registering partners, warming up")
        async with started_hub(bootstrap, Path(workdir)) as session:
            results.hub_warm_up_s = await hub_warm_up(bootstrap, factory)
            dlq_before = await end_offset_total(bootstrap, DLQ)
            if "hub" in options.sections:
                console.log(f"hub: {len(batch)} events hub.ingress → {partner_topic(CBO_ID).name}")
                results.hub, results.hub_sql = await hub_throughput(session, batch, broker_pid, options)
                console.log(f"hub: paced latency, {options.latency_events} events at {options.latency_rate:g}/s")
                (results.hub_latency,) = await measure_latency(
                    bootstrap, INGRESS.name, [partner_topic(CBO_ID)], factory.events(options.latency_events),
                    options.latency_rate,
                )
            if "http" in options.sections:
                bodies = [factory.body() for _ in range(options.requests)]
                warmup = [factory.body() for _ in range(options.concurrency * 2)]
                console.log(f"http: parse+validate ceiling over {len(bodies)} bodies")
                results.validate = validate_ceiling(bodies)
                console.log(f"http: {len(bodies)} POST /fhir/ServiceRequest at concurrency {options.concurrency}")
                results.http = await http_intake(session, bodies, warmup, options.concurrency, broker_pid)
            results.hub_dlq_records = await end_offset_total(bootstrap, DLQ) - dlq_before
            console.log("hub: stopping")


async def run(options: Options, console: Console) -> Results:
    """Run every selected section on one embedded broker."""
    started = time.perf_counter()
    check_facts_match_edge()
    results = Results()
    factory = EventFactory()
    broker = EmbeddedBroker(port=free_port())
    await broker.start()
    try:
        await ensure_topics(broker.bootstrap, RAW_TOPICS)
        batch = factory.events(options.events)
        results.value_bytes = sum(len(r.value) for r in batch) / len(batch)
        sample = batch[:50]
        results.body_bytes = sum(len(HubEvent.model_validate_json(r.value).body) for r in sample) / len(sample)
        if "raw" in options.sections:
            await run_raw(broker.bootstrap, options, factory, batch, results, broker.pid, console)
        if {"hub", "http"} & options.sections:
            await run_hub(broker.bootstrap, options, factory, batch, results, broker.pid, console)
    finally:
        await broker.stop()
    results.total_s = time.perf_counter() - started
    return results


# --- output ----------------------------------------------------------------------------------------


def print_report(table: Table, lines: Sequence[str], summary: Mapping[str, Any]) -> None:
    """What every bench prints last: its table and notes on stdout, then one line of JSON with every figure."""
    out = Console(width=None if sys.stdout.isatty() else 160)
    out.print(table)
    for line in lines:
        out.print(line, highlight=False, soft_wrap=True)
    print(json.dumps(summary), flush=True)


def ratio(a: float | None, b: float | None) -> float:
    """a / b, or NaN when either is missing."""
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return math.nan
    return a / b


def fmt(value: float | None, digits: int = 1) -> str:
    """A figure for the table ("-" when missing)."""
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _lat(latency: Latency | None, attr: str) -> float | None:
    return None if latency is None else float(getattr(latency, attr))


def _per_s(throughput: Throughput | None) -> float | None:
    return None if throughput is None else throughput.per_s


def json_safe(value: Any) -> Any:
    """``value`` with every NaN replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def summary(results: Results, options: Options) -> dict[str, Any]:
    """Every figure, for the final JSON line."""
    def thr(throughput: Throughput | None) -> dict[str, float] | None:
        return None if throughput is None else throughput.as_json()

    def lat(latency: Latency | None) -> dict[str, float] | None:
        return None if latency is None else latency.as_json()

    http = results.http
    hub_per_s = _per_s(results.hub)
    figures: dict[str, Any] = json_safe({
        "config": {"events": options.events, "requests": options.requests, "latency_events": options.latency_events,
                   "latency_rate_per_s": options.latency_rate, "concurrency": options.concurrency,
                   "value_bytes_avg": round(results.value_bytes), "fhir_body_bytes_avg": round(results.body_bytes),
                   "cpus": os.cpu_count(), "python": platform.python_version()},
        "raw_per_message": thr(results.raw),
        "raw_batched": thr(results.raw_batched),
        "raw_chain_2hops": thr(results.raw_chain),
        "raw_latency_1hop": lat(results.raw_latency_1hop),
        "raw_latency_2hops": lat(results.raw_latency_2hops),
        "hub_pipeline": thr(results.hub),
        "hub_latency": lat(results.hub_latency),
        "hub_sql_per_event": results.hub_sql.per_event(results.hub.count) if results.hub_sql and results.hub else None,
        "hub_warm_up_s": results.hub_warm_up_s,
        "hub_dlq_records": results.hub_dlq_records,
        "validate_ceiling": thr(results.validate),
        "http_intake": None if http is None else {
            **http.throughput.as_json(), "p50_ms": http.p50_ms, "p99_ms": http.p99_ms,
            "statuses": http.statuses, "pipeline_delivered_during_http": http.delivered_during,
        },
        "ratios": {
            "hub_vs_raw_throughput": ratio(hub_per_s, _per_s(results.raw)),
            "hub_vs_raw_batched_throughput": ratio(hub_per_s, _per_s(results.raw_batched)),
            "hub_vs_raw_chain_throughput": ratio(hub_per_s, _per_s(results.raw_chain)),
            "hub_vs_raw_latency_p50": ratio(_lat(results.hub_latency, "p50"), _lat(results.raw_latency_1hop, "p50")),
            "hub_vs_raw_latency_p99": ratio(_lat(results.hub_latency, "p99"), _lat(results.raw_latency_1hop, "p99")),
            "hub_vs_raw_2hops_latency_p50": ratio(_lat(results.hub_latency, "p50"),
                                                   _lat(results.raw_latency_2hops, "p50")),
            "hub_vs_raw_2hops_latency_p99": ratio(_lat(results.hub_latency, "p99"),
                                                   _lat(results.raw_latency_2hops, "p99")),
            "http_vs_validate": ratio(_per_s(http.throughput if http else None), _per_s(results.validate)),
        },
        "total_s": results.total_s,
    })
    return figures


def table(results: Results, options: Options) -> Table:
    """The human-readable table: each hub figure beside its same-run ceiling."""
    out = Table(title=f"CareHub pipeline benchmark: N={options.events} events of ~{results.value_bytes / 1024:.1f} KB, "
                      f"R={options.requests} requests, {os.cpu_count()} CPUs, one embedded Tansu broker")
    out.add_column("measure")
    out.add_column("hub", justify="right")
    out.add_column("ceiling", justify="right")
    out.add_column("hub/ceiling", justify="right")
    out.add_column("ceiling (same run)")
    hub = _per_s(results.hub)
    for label, ref, what in (
        ("pipeline throughput, events/s", results.raw, "raw getone→send_and_wait→commit, 1 hop"),
        ("", results.raw_chain, "same, 2 chained hops (the hub's shape)"),
        ("", results.raw_batched, "raw getmany→send batch→commit, 1 hop"),
    ):
        ceiling = _per_s(ref)
        out.add_row(label, fmt(hub) if label else "", fmt(ceiling), fmt(ratio(hub, ceiling), 3), what)
    rate = f"{options.latency_events} events paced at {options.latency_rate:g}/s"
    for label, attr in (("end-to-end latency p50, ms", "p50"), ("end-to-end latency p99, ms", "p99")):
        h = _lat(results.hub_latency, attr)
        one, two = _lat(results.raw_latency_1hop, attr), _lat(results.raw_latency_2hops, attr)
        out.add_row(label, fmt(h), fmt(one), fmt(ratio(h, one), 2), f"raw, 1 hop, {rate}")
        out.add_row("", "", fmt(two), fmt(ratio(h, two), 2), "raw, 2 chained hops, same run")
    http = _per_s(results.http.throughput if results.http else None)
    ceiling = _per_s(results.validate)
    out.add_row("HTTP intake, requests/s", fmt(http), fmt(ceiling), fmt(ratio(http, ceiling), 3),
                "parse_fhir_json + validate_resource in-process")
    return out


def notes(results: Results) -> list[str]:
    """Context lines printed under the table."""
    lines: list[str] = []
    hub, raw = results.hub, results.raw
    if hub:
        lines.append(f"hub: timed from preload start (preload took {hub.preload_s:.2f} s, overlapping the work) to the "
                     f"last delivery; first delivery after {hub.first_out_s * 1000:.0f} ms. CPU per event: this "
                     f"process {hub.cpu_ms(hub.cpu_bench_s):.2f} ms, broker {hub.cpu_ms(hub.cpu_broker_s):.2f} ms.")
    for name, ref in (("raw 1 hop", raw), ("raw 2 hops", results.raw_chain)):
        if ref:
            lines.append(f"{name}: CPU per message: this process {ref.cpu_ms(ref.cpu_bench_s):.2f} ms, broker "
                         f"{ref.cpu_ms(ref.cpu_broker_s):.2f} ms.")
    if results.hub_sql and hub:
        per = results.hub_sql.per_event(hub.count)
        lines.append(f"hub SQL per event: {per['statements']} statements, {per['commits']} commits, "
                     f"{per['rollbacks']} rollbacks, {per['aiosqlite_thread_calls']} aiosqlite thread calls; "
                     f"{per['by_statement']}; compiled cache {per['compiled_cache']}")
    if results.http:
        http = results.http
        lines.append(f"http: {http.p50_ms:.1f} ms p50, {http.p99_ms:.1f} ms p99 per request; statuses {http.statuses} "
                     f"(incl. warm-up); the client runs in its own process; the pipeline delivered "
                     f"{http.delivered_during} of these events while the HTTP run lasted (same event loop).")
    if results.hub_dlq_records:
        lines.append(f"WARNING: {results.hub_dlq_records} records were dead-lettered during the run")
    lines.append(f"total {results.total_s:.1f} s")
    return lines


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline",
                                     description="CareHub pipeline benchmark against same-run ceilings.")
    parser.add_argument("--events", type=int, default=2000, help="events per throughput run (default 2000)")
    parser.add_argument("--requests", type=int, default=1000, help="HTTP requests (default 1000)")
    parser.add_argument("--latency-events", type=int, default=200, help="events per paced latency run (default 200)")
    parser.add_argument("--latency-rate", type=float, default=25.0,
                        help="events/s of the paced latency runs (default 25)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent HTTP requests (default 16)")
    parser.add_argument("--sections", default="raw,hub,http",
                        help="comma-separated subset of raw,hub,http to run (default all)")
    parser.add_argument("--cprofile", metavar="PATH", help="write cProfile stats of the hub throughput run to PATH")
    parser.add_argument("--sql-stats", action="store_true",
                        help="count the control plane's SQL statements and commits per event in the hub run")
    args = parser.parse_args(argv)
    sections = frozenset(s.strip() for s in str(args.sections).split(",") if s.strip())
    if not sections or not sections <= {"raw", "hub", "http"}:
        parser.error("--sections takes raw, hub and/or http")
    if min(args.events, args.requests, args.latency_events, args.concurrency) < 1 or args.latency_rate <= 0:
        parser.error("counts and rates must be positive")
    return Options(events=args.events, requests=args.requests, latency_events=args.latency_events,
                   latency_rate=args.latency_rate, concurrency=args.concurrency, sections=sections,
                   cprofile=args.cprofile, sql_stats=args.sql_stats)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m bench.pipeline``."""
    options = parse_args(argv)
    logs.configure(level="WARNING")
    results = asyncio.run(run(options, Console(stderr=True)))
    print_report(table(results, options), notes(results), summary(results, options))


if __name__ == "__main__":
    main()
