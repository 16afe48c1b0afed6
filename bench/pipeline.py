"""Pipeline benchmark: the hub beside same-run ceilings, on one embedded Tansu broker (memory only).

``python -m bench.pipeline [--events N] [--requests R]`` measures, in one run:

1. **raw** - aiokafka consume→produce pass-through of N preloaded ~2 KB events, bench.in → bench.out:
   ``getone`` → ``send_and_wait`` (acks=all) → ``commit`` per record, the hub's per-message semantics
   (commit only after the output is acknowledged); plus a batched reference (``getmany`` → send the
   batch → one commit). Timed from the first record consumed to the last output acknowledged.
2. **hub** - the same N events produced to ``hub.ingress`` (HubEvent envelope + CloudEvent headers, as
   the FHIR edge writes them), timed from the start of the preload until the last one is read on
   ``partner.<cbo>``. The hub makes two hops (normalize: ingress → events, route: events → partner),
   each consume → control-plane work → produce (acks=all) → commit; the hops run concurrently.
   End-to-end latency is measured separately at a fixed low rate (send time = the ingress record's
   CreateTime, until a reader sees it on the output topic), for the hub and for one raw hop.
3. **http** - ``POST /fhir/ServiceRequest`` with the hospital's token at concurrency 16, from a separate
   client process (``bench._http_load``), beside ``parse_fhir_json`` + ``validate_resource`` alone
   in-process over the same bodies. The HTTP run also feeds the pipeline; the drain time is reported.

Prints a table and, last, one line of JSON with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
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
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console
from rich.table import Table

from hub import events, logs
from hub.adapters.fhir_facts import servicerequest_facts
from hub.adapters.fhir_validation import parse_fhir_json, validate_resource
from hub.app import RunningHub, running_hub
from hub.broker.embedded import EmbeddedBroker
from hub.broker.topics import ensure_topics
from hub.events import CloudEvent, HubEvent, RoutingFacts
from hub.settings import Settings
from hub.topics.registry import DLQ, INGRESS, TopicSpec, partner_topic

ADMIN_TOKEN = "bench"
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
LAT_IN = TopicSpec(name="bench.lat.in", partitions=INGRESS.partitions, key="as hub.ingress",
                   retention_ms=3_600_000, payload=HubEvent, description="raw latency input")
LAT_OUT = TopicSpec(name="bench.lat.out", partitions=1, key="as hub.ingress", retention_ms=3_600_000,
                    payload=HubEvent, description="raw latency output")

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


def routing_facts(body: bytes, *, mrn: str, resource_id: str) -> RoutingFacts:
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
            facts = routing_facts(body, mrn=mrn, resource_id=ce_id)
            ce = CloudEvent(id=ce_id, source=f"/partners/{HOSPITAL_ID}",
                            type=events.event_type("ServiceRequest"), time=events.now())
            out.append(Prepared(
                ce_id=ce_id,
                key=f"{HOSPITAL_ID}|{facts.patient_source}".encode(),
                value=events.encode(HubEvent(facts=facts, body=body.decode())),
                headers=[(k, v.encode()) for k, v in ce.to_headers().items()],
            ))
        return out


def check_facts_match_edge() -> None:
    """The hand-built facts must equal what the real edge extracts, or the bench measures another input."""
    body = fhir_body(0, mrn_of(0))
    resource = validate_resource(parse_fhir_json(body), expected_type="ServiceRequest")
    edge = servicerequest_facts(resource, sender=HOSPITAL_ID, resource_id="x")
    if edge != routing_facts(body, mrn=mrn_of(0), resource_id="x"):
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
    bench_s: float = 0.0
    broker_s: float = 0.0

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

    The send time is the record's CreateTime (``timestamp_ms``), kept at full resolution here.
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

    @property
    def mean(self) -> float:
        return sum(self.samples_ms) / len(self.samples_ms) if self.samples_ms else math.nan


async def measure_latency(bootstrap: str, in_topic: str, out: TopicSpec, records: Sequence[Prepared],
                          rate_per_s: float) -> Latency:
    """Pace ``records`` into ``in_topic`` and time each one until it is read on ``out``."""
    async with Arrivals(bootstrap, out) as arrivals:
        sent = await paced_send(bootstrap, in_topic, records, rate_per_s)
        await arrivals.wait_for(set(sent), timeout_s=30)
    return Latency(
        samples_ms=[(arrivals.seen[i] - t) * 1000 for i, t in sent.items() if i in arrivals.seen],
        lost=len(set(sent) - arrivals.seen.keys()),
    )


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


@dataclass
class Throughput:
    """One throughput measurement."""

    count: int
    seconds: float
    cpu_bench_s: float = math.nan
    cpu_broker_s: float = math.nan
    preload_s: float = math.nan
    first_out_s: float = math.nan

    @property
    def per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else math.nan

    def as_json(self) -> dict[str, float]:
        return {
            "count": self.count, "seconds": round(self.seconds, 4), "per_s": round(self.per_s, 1),
            "cpu_bench_ms_per_msg": round(self.cpu_bench_s * 1000 / self.count, 3),
            "cpu_broker_ms_per_msg": round(self.cpu_broker_s * 1000 / self.count, 3),
            "preload_s": round(self.preload_s, 4), "first_out_s": round(self.first_out_s, 4),
        }


async def raw_throughput(bootstrap: str, records: Sequence[Prepared], *, batched: bool,
                         broker_pid: int | None) -> Throughput:
    """Copy the preloaded ``bench.in`` to an output topic; time first record consumed → last output acked."""
    dst = RAW_OUT_BATCHED if batched else RAW_OUT
    meter = CpuMeter(broker_pid)
    async with RawPassthrough(bootstrap, RAW_IN.name, dst.name, batched=batched) as copier:
        with meter.measure():
            await asyncio.wait_for(copier.run(len(records)), timeout=300)
    assert copier.first_at is not None
    assert copier.last_at is not None
    return Throughput(count=copier.processed, seconds=copier.last_at - copier.first_at,
                      cpu_bench_s=meter.bench_s, cpu_broker_s=meter.broker_s)


async def raw_latency(bootstrap: str, records: Sequence[Prepared], rate_per_s: float) -> Latency:
    """One raw per-message hop (bench.lat.in → bench.lat.out), paced."""
    async with RawPassthrough(bootstrap, LAT_IN.name, LAT_OUT.name) as copier:
        task = asyncio.create_task(copier.run())
        try:
            return await measure_latency(bootstrap, LAT_IN.name, LAT_OUT, records, rate_per_s)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --- the hub ---------------------------------------------------------------------------------------


@dataclass
class HubSession:
    """A running hub with its partners registered."""

    hub: RunningHub
    url: str
    hospital_token: str


@contextlib.asynccontextmanager
async def started_hub(bootstrap: str, workdir: Path) -> AsyncIterator[HubSession]:
    """Start the hub against ``bootstrap`` and register a hospital and a CBO through the admin API."""
    settings = Settings(
        kafka_bootstrap=bootstrap,
        database_url=f"sqlite+aiosqlite:///{workdir / 'hub.db'}",
        http_port=0,
        admin_token=ADMIN_TOKEN,
        consumer_session_timeout_ms=SESSION_TIMEOUT_MS,
        worker_group=f"bench-{uuid.uuid4().hex[:8]}",
    )
    async with running_hub(settings) as hub:
        url = hub.http_url or ""
        tokens: dict[str, str] = {}
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            for partner_id, kind, name in ((HOSPITAL_ID, "hospital", "Bench General Hospital"),
                                           (CBO_ID, "cbo", "Bench Community Food Bank")):
                answer = await client.post(
                    "/admin/v1/partners", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                    json={"id": partner_id, "kind": kind, "name": name, "organization": f"Organization/{partner_id}"},
                )
                if answer.status_code != 201:
                    raise SystemExit(f"registering {partner_id} failed: {answer.status_code} {answer.text}")
                tokens[partner_id] = str(answer.json()["token"])
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


async def hub_throughput(bootstrap: str, records: Sequence[Prepared], broker_pid: int | None,
                         profile_path: str | None) -> Throughput:
    """Preload ``hub.ingress`` with the workers running; time preload start → last arrival on the CBO topic."""
    meter = CpuMeter(broker_pid)
    profiler = cProfile.Profile() if profile_path else None
    async with Arrivals(bootstrap, partner_topic(CBO_ID)) as arrivals:
        with meter.measure():
            if profiler is not None:
                profiler.enable()
            started = time.time()
            preload_s = await preload(bootstrap, INGRESS.name, records)
            complete = await arrivals.wait_for({r.ce_id for r in records}, timeout_s=max(120.0, len(records) / 10))
            if profiler is not None:
                profiler.disable()
    if profiler is not None and profile_path:
        profiler.dump_stats(profile_path)
    if not complete:
        missing = len({r.ce_id for r in records} - arrivals.seen.keys())
        raise SystemExit(f"the hub delivered {len(records) - missing}/{len(records)} events before the timeout")
    arrived = [arrivals.seen[r.ce_id] for r in records]
    return Throughput(count=len(records), seconds=max(arrived) - started, cpu_bench_s=meter.bench_s,
                      cpu_broker_s=meter.broker_s, preload_s=preload_s, first_out_s=min(arrived) - started)


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
    drain_s: float


async def http_intake(session: HubSession, bodies: Sequence[bytes], warmup: Sequence[bytes], concurrency: int,
                      broker_pid: int | None) -> HttpResult:
    """POST ``bodies`` from a client process; also time until the pipeline delivered them all."""
    job = orjson.dumps({
        "url": session.url, "token": session.hospital_token, "concurrency": concurrency,
        "bodies": [b.decode() for b in bodies], "warmup": [b.decode() for b in warmup],
    })
    meter = CpuMeter(broker_pid)
    async with Arrivals(session.hub.bootstrap, partner_topic(CBO_ID)) as arrivals:
        with meter.measure():
            started = time.time()
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench._http_load",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                cwd=str(Path(__file__).resolve().parents[1]),
            )
            out, _ = await process.communicate(job)
        if process.returncode != 0:
            raise SystemExit(f"the HTTP load client failed with exit code {process.returncode}")
        result = json.loads(out)
        expected = len(bodies) + len(warmup)
        drained = await arrivals.wait_for(expected, timeout_s=120)
        drain_s = (max(arrivals.seen.values()) - started) if drained and arrivals.seen else math.nan
    latencies_ms = [s * 1000 for s in result["latencies_s"]]
    return HttpResult(
        throughput=Throughput(count=len(bodies), seconds=float(result["elapsed_s"]),
                              cpu_bench_s=meter.bench_s, cpu_broker_s=meter.broker_s),
        p50_ms=percentile(latencies_ms, 50), p99_ms=percentile(latencies_ms, 99),
        statuses={str(k): int(v) for k, v in result["statuses"].items()}, drain_s=drain_s,
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


@dataclass
class Results:
    """Everything measured in one run."""

    raw: Throughput | None = None
    raw_batched: Throughput | None = None
    raw_latency: Latency | None = None
    hub: Throughput | None = None
    hub_latency: Latency | None = None
    hub_warm_up_s: float = math.nan
    hub_dlq_records: int = 0
    validate: Throughput | None = None
    http: HttpResult | None = None
    value_bytes: float = math.nan
    body_bytes: float = math.nan
    total_s: float = math.nan


async def run(options: Options, console: Console) -> Results:
    """Run every selected section on one embedded broker."""
    started = time.perf_counter()
    check_facts_match_edge()
    results = Results()
    factory = EventFactory()
    broker = EmbeddedBroker(port=free_port())
    await broker.start()
    try:
        bootstrap = broker.bootstrap
        await ensure_topics(bootstrap, [RAW_IN, RAW_OUT, RAW_OUT_BATCHED, LAT_IN, LAT_OUT])
        batch = factory.events(options.events)
        results.value_bytes = sum(len(r.value) for r in batch) / len(batch)
        results.body_bytes = sum(len(HubEvent.model_validate_json(r.value).body) for r in batch[:50]) / 50

        if "raw" in options.sections:
            console.log(f"raw: preloading {options.events} events to {RAW_IN.name}")
            preload_s = await preload(bootstrap, RAW_IN.name, batch)
            console.log("raw: per-message pass-through")
            results.raw = await raw_throughput(bootstrap, batch, batched=False, broker_pid=broker.pid)
            results.raw.preload_s = preload_s
            console.log("raw: batched pass-through")
            results.raw_batched = await raw_throughput(bootstrap, batch, batched=True, broker_pid=broker.pid)
            console.log(f"raw: paced latency, {options.latency_events} events at {options.latency_rate:g}/s")
            results.raw_latency = await raw_latency(bootstrap, factory.events(options.latency_events),
                                                    options.latency_rate)

        if {"hub", "http"} & options.sections:
            with tempfile.TemporaryDirectory(prefix="carehub-bench-") as workdir:
                console.log("hub: starting, registering partners, warming up")
                async with started_hub(bootstrap, Path(workdir)) as session:
                    results.hub_warm_up_s = await hub_warm_up(bootstrap, factory)
                    dlq_before = await end_offset_total(bootstrap, DLQ)
                    if "hub" in options.sections:
                        console.log(f"hub: {options.events} events hub.ingress → {partner_topic(CBO_ID).name}")
                        results.hub = await hub_throughput(bootstrap, batch, broker.pid, options.cprofile)
                        console.log(f"hub: paced latency, {options.latency_events} events "
                                    f"at {options.latency_rate:g}/s")
                        results.hub_latency = await measure_latency(
                            bootstrap, INGRESS.name, partner_topic(CBO_ID),
                            factory.events(options.latency_events), options.latency_rate,
                        )
                    if "http" in options.sections:
                        bodies = [factory.body() for _ in range(options.requests)]
                        warmup = [factory.body() for _ in range(options.concurrency * 2)]
                        console.log(f"http: parse+validate ceiling over {len(bodies)} bodies")
                        results.validate = validate_ceiling(bodies)
                        console.log(f"http: {len(bodies)} POST /fhir/ServiceRequest at concurrency "
                                    f"{options.concurrency}")
                        results.http = await http_intake(session, bodies, warmup, options.concurrency, broker.pid)
                    results.hub_dlq_records = await end_offset_total(bootstrap, DLQ) - dlq_before
    finally:
        await broker.stop()
    results.total_s = time.perf_counter() - started
    return results


def _ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return math.nan
    return a / b


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _lat(latency: Latency | None, attr: str) -> float | None:
    return None if latency is None else float(getattr(latency, attr))


def _per_s(throughput: Throughput | None) -> float | None:
    return None if throughput is None else throughput.per_s


def summary(results: Results, options: Options) -> dict[str, Any]:
    """Every figure, for the final JSON line."""
    def lat(latency: Latency | None) -> dict[str, float] | None:
        if latency is None:
            return None
        return {"p50_ms": round(latency.p50, 2), "p99_ms": round(latency.p99, 2), "mean_ms": round(latency.mean, 2),
                "samples": len(latency.samples_ms), "lost": latency.lost}

    def rnd(value: float) -> float | None:
        return None if math.isnan(value) else round(value, 4)

    http = results.http
    return {
        "config": {"events": options.events, "requests": options.requests, "latency_events": options.latency_events,
                   "latency_rate_per_s": options.latency_rate, "concurrency": options.concurrency,
                   "value_bytes_avg": round(results.value_bytes), "fhir_body_bytes_avg": round(results.body_bytes),
                   "cpus": os.cpu_count(), "python": platform.python_version()},
        "raw_per_message": results.raw.as_json() if results.raw else None,
        "raw_batched": results.raw_batched.as_json() if results.raw_batched else None,
        "raw_latency_single_hop": lat(results.raw_latency),
        "hub_pipeline": results.hub.as_json() if results.hub else None,
        "hub_latency": lat(results.hub_latency),
        "hub_warm_up_s": rnd(results.hub_warm_up_s),
        "hub_dlq_records": results.hub_dlq_records,
        "validate_ceiling": results.validate.as_json() if results.validate else None,
        "http_intake": None if http is None else {
            **http.throughput.as_json(), "p50_ms": round(http.p50_ms, 2), "p99_ms": round(http.p99_ms, 2),
            "statuses": http.statuses, "pipeline_drained_s": rnd(http.drain_s),
        },
        "ratios": {
            "hub_vs_raw_throughput": rnd(_ratio(_per_s(results.hub), _per_s(results.raw))),
            "hub_vs_raw_batched_throughput": rnd(_ratio(_per_s(results.hub), _per_s(results.raw_batched))),
            "hub_vs_raw_latency_p50": rnd(_ratio(_lat(results.hub_latency, "p50"), _lat(results.raw_latency, "p50"))),
            "hub_vs_raw_latency_p99": rnd(_ratio(_lat(results.hub_latency, "p99"), _lat(results.raw_latency, "p99"))),
            "http_vs_validate": rnd(_ratio(_per_s(http.throughput if http else None), _per_s(results.validate))),
        },
        "total_s": rnd(results.total_s),
    }


def table(results: Results, options: Options) -> Table:
    """The human-readable table: each hub figure beside its same-run ceiling."""
    out = Table(title=f"CareHub pipeline benchmark (N={options.events}, R={options.requests}, "
                      f"~{results.value_bytes / 1024:.1f} KB values, {os.cpu_count()} CPUs)")
    out.add_column("measure")
    out.add_column("hub", justify="right")
    out.add_column("ceiling", justify="right")
    out.add_column("ratio hub/ceiling", justify="right")
    out.add_column("ceiling is", style="dim")
    raw, batched, hub = _per_s(results.raw), _per_s(results.raw_batched), _per_s(results.hub)
    out.add_row("pipeline throughput (events/s)", _fmt(hub), _fmt(raw), _fmt(_ratio(hub, raw), 3),
                "raw aiokafka getone→send_and_wait→commit")
    out.add_row("  vs batched raw (events/s)", _fmt(hub), _fmt(batched), _fmt(_ratio(hub, batched), 3),
                "raw aiokafka getmany→send batch→commit")
    for label, attr in (("latency p50 (ms)", "p50"), ("latency p99 (ms)", "p99")):
        h, r = _lat(results.hub_latency, attr), _lat(results.raw_latency, attr)
        out.add_row(f"end-to-end {label}", _fmt(h), _fmt(r), _fmt(_ratio(h, r), 2),
                    f"one raw hop, {options.latency_rate:g}/s paced (hub: 2 hops)")
    http = _per_s(results.http.throughput if results.http else None)
    ceiling = _per_s(results.validate)
    out.add_row("HTTP intake (requests/s)", _fmt(http), _fmt(ceiling), _fmt(_ratio(http, ceiling), 3),
                "parse_fhir_json + validate_resource in-process")
    return out


def notes(results: Results) -> list[str]:
    """Context lines printed under the table."""
    lines: list[str] = []
    if results.hub:
        lines.append(f"hub: preload {results.hub.preload_s:.2f}s (overlaps processing), first delivery after "
                     f"{results.hub.first_out_s * 1000:.0f} ms; CPU per event: bench process "
                     f"{results.hub.cpu_bench_s * 1000 / results.hub.count:.2f} ms, broker "
                     f"{results.hub.cpu_broker_s * 1000 / results.hub.count:.2f} ms")
    if results.raw:
        lines.append(f"raw per-message: CPU per message: bench process "
                     f"{results.raw.cpu_bench_s * 1000 / results.raw.count:.2f} ms, broker "
                     f"{results.raw.cpu_broker_s * 1000 / results.raw.count:.2f} ms")
    if results.http:
        http = results.http
        lines.append(f"http: p50 {http.p50_ms:.1f} ms, p99 {http.p99_ms:.1f} ms per request; statuses "
                     f"{http.statuses}; pipeline delivered all HTTP events {_fmt(http.drain_s, 2)} s after the "
                     f"first request")
    if results.hub_dlq_records:
        lines.append(f"WARNING: {results.hub_dlq_records} records were dead-lettered during the run")
    return lines


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="events per throughput run (default 2000)")
    parser.add_argument("--requests", type=int, default=1000, help="HTTP requests (default 1000)")
    parser.add_argument("--latency-events", type=int, default=200, help="events per paced latency run")
    parser.add_argument("--latency-rate", type=float, default=40.0, help="events/s of the paced latency runs")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent HTTP requests (default 16)")
    parser.add_argument("--sections", default="raw,hub,http",
                        help="comma-separated subset of raw,hub,http to run (default all)")
    parser.add_argument("--cprofile", metavar="PATH", help="write cProfile stats of the hub throughput run to PATH")
    args = parser.parse_args(argv)
    sections = frozenset(s.strip() for s in str(args.sections).split(",") if s.strip())
    if not sections <= {"raw", "hub", "http"}:
        parser.error("--sections takes raw, hub and/or http")
    if min(args.events, args.requests, args.latency_events, args.concurrency) < 1 or args.latency_rate <= 0:
        parser.error("counts and rates must be positive")
    return Options(events=args.events, requests=args.requests, latency_events=args.latency_events,
                   latency_rate=args.latency_rate, concurrency=args.concurrency, sections=sections,
                   cprofile=args.cprofile)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m bench.pipeline``."""
    options = parse_args(argv)
    logs.configure(level="WARNING")
    console = Console(stderr=True)
    results = asyncio.run(run(options, console))
    out = Console()
    out.print(table(results, options))
    for line in notes(results):
        out.print(line, highlight=False)
    print(json.dumps(summary(results, options)))


if __name__ == "__main__":
    main()
