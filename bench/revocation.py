"""Revocation benchmark: how late can a referral still be delivered under a consent that was just revoked?

``python -m bench.revocation [--trials 5] [--rate 50] [--workers 1|2]`` runs the real hub
(``running_hub`` on an embedded Tansu broker, SQLite, HTTP and pipeline workers, as ``bench.pipeline``
does), registers a hospital and a CBO, and per trial:

1. posts a permitting Consent (opt-in, root ``provision.type: permit``) for a new patient with the
   operator token (``POST /fhir/Consent``) and waits until the pipeline is idle. The hub runs in an
   opt-in jurisdiction (``HUB_CONSENT_DEFAULT=opt-in``): a revoked consent is no consent (ADR 0002,
   as in LEAP), so only there does revoking the opt-in stop the referrals;
2. streams referrals (~2 KB SDOH ServiceRequests addressed to the CBO) for that patient at a steady
   ``--rate`` through ``POST /fhir/ServiceRequest`` with the hospital's token, from a separate client
   process (open loop: request *i* leaves at ``t0 + i / rate``, at most ``--concurrency`` in flight);
3. after ``--before-s`` seconds, from the same client, ``PUT /fhir/Consent/{id}`` with status
   ``inactive`` (the revocation), while the referrals keep coming for ``--after-s`` more seconds;
4. waits until both pipeline stages have committed everything, then reads ``partner.<cbo>`` (which
   referrals were delivered, and the CreateTime the hub's producer gave each), ``hub.events`` (when the
   revocation's consent-change event was normalized) and the decision audit (the deny rules).

All times are wall-clock (``time.time()``; one machine), relative to the revocation's 2xx as the client
saw it. Per trial it reports:

* **accepted after the 2xx, delivered** - referrals whose 201 arrived after the revocation's 2xx and
  that were still delivered (the design says: none, because the consent change is an event on the
  patient's key); and the stricter causal count: referrals *sent* after the revocation's 2xx, delivered;
* **last delivered acceptance** - 201 time of the last delivered referral minus the revocation's 2xx
  (negative: every delivery was accepted before the revocation was acknowledged);
* **last delivery left the hub** - the CreateTime of the last delivered record minus the 2xx (how long
  after the revocation something permitted under the old consent was still being written);
* **denied though accepted before the PUT was sent** (stricter than needed, allowed: ``hub.ingress`` is
  keyed by sender and patient, so the operator's revocation and the hospital's referrals sit on
  different partitions and normalize may take the revocation first);
* the order at the edge (the edge producer's CreateTime, ms): referrals written to ``hub.ingress`` after
  the revocation was written (to ``hub.events`` directly since ADR 0006's fix; to ``hub.ingress`` before
  it, when normalize could take a later referral first) yet delivered: must be none; and how far the
  last delivered one is from the revocation;
* when the revocation reached ``hub.ingress`` (before the fix) and ``hub.events``.

Then min / median / max over the trials. ``--workers 2`` adds a second pipeline worker process
(``python -m hub.cli worker`` on the same broker, database and consumer group), so the two stages' partitions
are split between two processes with separate consent caches.

Prints a table and, last, one line of JSON with every figure. ``python -m bench.revocation --client`` is the
load client (one JSON job per stdin line, one JSON result per stdout line); it is not meant to be run by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.table import Table

from bench import intake as intake_bench
from bench.pipeline import (
    ADMIN_TOKEN,
    CBO_ID,
    MRN_SYSTEM,
    PROJECT_ROOT,
    HubSession,
    ce_id_of,
    fhir_body,
    fmt,
    free_port,
    json_safe,
    print_report,
    started_hub,
)
from hub import events, logs
from hub.broker.embedded import EmbeddedBroker
from hub.topics.registry import EVENTS, INGRESS, partner_topic

FHIR_JSON = "application/fhir+json"
CONSENT_SCOPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                             "code": "patient-privacy"}]}


def permitting_consent(mrn: str, *, status: str = "active", resource_id: str | None = None) -> bytes:
    """An opt-in Consent for ``mrn`` whose root provision permits (``status=inactive``: its revocation)."""
    return orjson.dumps({
        "resourceType": "Consent",
        **({"id": resource_id} if resource_id else {}),
        "status": status,
        "scope": CONSENT_SCOPE,
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": {"system": MRN_SYSTEM, "value": mrn}},
        "dateTime": "2026-01-01T00:00:00Z",
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {"type": "permit"},
    })


def resource_id_of(location: str) -> str:
    """``.../ServiceRequest/<id>/_history/1`` → ``<id>`` (a create's id is its event id)."""
    parts = location.split("/")
    return parts[parts.index("_history") - 1] if "_history" in parts else parts[-1]


# --- the load client (a separate process) ----------------------------------------------------------


async def client_trial(job: dict[str, Any]) -> dict[str, Any]:
    """Stream ``job["bodies"]`` at ``job["rate"]``/s; PUT the revocation ``job["revoke_at_s"]`` after the start."""
    hospital = {"Authorization": f"Bearer {job['hospital_token']}", "Content-Type": FHIR_JSON}
    admin = {"Authorization": f"Bearer {job['admin_token']}", "Content-Type": FHIR_JSON}
    bodies: list[str] = job["bodies"]
    rate = float(job["rate"])
    concurrency = int(job["concurrency"])
    limits = httpx.Limits(max_connections=concurrency + 1, max_keepalive_connections=concurrency + 1)
    slots = asyncio.Semaphore(concurrency)
    referrals: list[dict[str, Any]] = []
    revocation: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=str(job["url"]), timeout=60, limits=limits) as client:
        # open the connections before the clock starts
        await asyncio.gather(*(client.get("/fhir/metadata") for _ in range(min(concurrency, 8))))

        async def post(index: int, body: str) -> None:
            async with slots:
                sent = time.time()
                answer = await client.post("/fhir/ServiceRequest", content=body.encode(), headers=hospital)
                done = time.time()
            location = answer.headers.get("location", "")
            referrals.append({"index": index, "sent": sent, "done": done, "status": answer.status_code,
                              "id": resource_id_of(location) if location else ""})

        async def revoke() -> None:
            revocation["sent"] = time.time()
            answer = await client.put(f"/fhir/Consent/{job['consent_id']}", content=job["revocation"].encode(),
                                      headers=admin)
            revocation["done"] = time.time()
            revocation["status"] = answer.status_code

        tasks: list[asyncio.Task[None]] = []
        start = time.monotonic()
        revoke_at = start + float(job["revoke_at_s"])
        revoked = False
        for index, body in enumerate(bodies):
            due = start + index / rate
            if not revoked and revoke_at <= due:
                await asyncio.sleep(max(0.0, revoke_at - time.monotonic()))
                tasks.append(asyncio.create_task(revoke()))
                revoked = True
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            tasks.append(asyncio.create_task(post(index, body)))
        if not revoked:
            tasks.append(asyncio.create_task(revoke()))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - start
    return {"referrals": referrals, "revocation": revocation, "elapsed_s": elapsed}


def client_main() -> None:
    """``--client``: one JSON job per stdin line → one JSON result per stdout line; 'ready' first."""
    async def serve() -> None:
        loop = asyncio.get_running_loop()
        print(json.dumps({"ready": True}), flush=True)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            result = await client_trial(json.loads(line))
            print(json.dumps(result), flush=True)

    asyncio.run(serve())


class LoadClient:
    """The client process, kept for all trials (its start-up is not part of any trial)."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> LoadClient:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.revocation", "--client",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=str(PROJECT_ROOT),
            limit=64 * 1024 * 1024,
        )
        await self._read()
        return self

    async def _read(self) -> dict[str, Any]:
        assert self._process is not None
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), timeout=300)
        if not line:
            raise SystemExit(f"the load client exited ({await self._process.wait()})")
        result: dict[str, Any] = json.loads(line)
        return result

    async def trial(self, job: dict[str, Any]) -> dict[str, Any]:
        assert self._process is not None
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(job).encode() + b"\n")
        await self._process.stdin.drain()
        return await self._read()

    async def __aexit__(self, *exc: object) -> None:
        if self._process is not None and self._process.returncode is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                await asyncio.wait_for(self._process.wait(), timeout=10)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()


# --- a second worker process -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def second_worker(session: HubSession) -> AsyncIterator[int]:
    """``python -m hub.cli worker`` on the same broker, database and consumer group; yields its pid."""
    settings = session.hub.settings
    env = {
        **os.environ,
        "HUB_KAFKA_BOOTSTRAP": session.hub.bootstrap,
        "HUB_DATABASE_URL": settings.database_url,
        "HUB_WORKER_GROUP": settings.worker_group,
        "HUB_CONSUMER_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
        "HUB_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.cli", "worker", env=env, cwd=str(PROJECT_ROOT),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
        if b"running" not in line:
            raise SystemExit(f"the second worker did not start: {line!r}")
        yield process.pid
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=15)
            except TimeoutError:
                process.kill()
                await process.wait()


async def group_members(bootstrap: str, group: str) -> int:
    """How many members of ``group`` hold partitions (NaN-free: 0 when the broker cannot say)."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - only for --workers 2

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group])
    except Exception:
        return 0
    finally:
        await admin.close()
    try:
        return len(described[0].groups[0][5])
    except (AttributeError, IndexError, TypeError):
        return 0


# --- reading what happened -------------------------------------------------------------------------


async def read_topic(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    """Every record of ``topic`` up to its end offsets now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + 60
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise SystemExit(f"could not read {topic} to its end")
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()


def revocation_on(records: Sequence[Any], consent_id: str) -> float:
    """CreateTime (s) of the revocation's consent-change event among ``records`` (``hub.ingress`` or
    ``hub.events``); NaN if not found."""
    found = math.nan
    for record in records:
        try:
            event = events.decode(record.value)
        except Exception:
            continue
        facts = event.facts
        if facts.resource_type == "Consent" and facts.resource_id == consent_id and '"inactive"' in event.body:
            found = record.timestamp / 1000
    return found


async def audit_rules(url: str, ids: set[str]) -> Counter[str]:
    """Decision rules of the CBO's audited decisions on ``ids`` (consent ids reduced to ``*``)."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        answer = await client.get("/admin/v1/audit", params={"recipient": CBO_ID, "limit": 10_000},
                                  headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    rules: Counter[str] = Counter()
    for row in answer.json():
        if row["event_id"] in ids:
            parts = str(row["rule"]).split(":")
            generic = ":".join([parts[0], "*", *parts[2:]]) if parts[0] == "consent" and len(parts) > 2 else row["rule"]
            rules[generic] += 1
    return rules


# --- one trial -------------------------------------------------------------------------------------


@dataclass
class Trial:
    """What one trial saw; times in ms relative to the revocation's 2xx."""

    sent: int = 0
    accepted: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    rate_achieved: float = math.nan
    revocation_status: int = 0
    revocation_latency_ms: float = math.nan
    delivered: int = 0
    accepted_after_revocation: int = 0
    accepted_after_revocation_delivered: int = 0
    sent_after_revocation_delivered: int = 0
    in_flight_during_put: int = 0
    in_flight_during_put_delivered: int = 0
    accepted_before_put_denied: int = 0
    last_delivered_accepted_ms: float = math.nan
    last_delivered_sent_ms: float = math.nan
    first_denied_accepted_ms: float = math.nan
    last_delivery_left_ms: float = math.nan
    last_delivery_arrived_ms: float = math.nan
    revocation_on_events_ms: float = math.nan
    revocation_on_ingress_ms: float = math.nan
    ingress_after_revocation_delivered: int = 0
    last_delivered_ingress_vs_revocation_ms: float = math.nan
    audit_rules: dict[str, int] = field(default_factory=dict)
    idle_wait_s: float = math.nan


async def run_trial(session: HubSession, client: LoadClient, idle: intake_bench.HubSession, number: int,
                    options: Options) -> Trial:
    """One trial on a new patient."""
    bootstrap = session.hub.bootstrap
    mrn = f"REVOKE-{number}-{uuid.uuid4().hex[:8]}"
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": FHIR_JSON}
    async with httpx.AsyncClient(base_url=session.url, timeout=30) as http:
        posted = await http.post("/fhir/Consent", content=permitting_consent(mrn), headers=admin)
    if posted.status_code != 201:
        raise SystemExit(f"POST /fhir/Consent failed: {posted.status_code} {posted.text}")
    consent_id = str(posted.json()["id"])
    await intake_bench.wait_pipeline_idle(idle)

    count = round(options.rate * (options.before_s + options.after_s))
    bodies = [fhir_body(number * 1_000_000 + i, mrn).decode() for i in range(count)]
    job = {
        "url": session.url, "hospital_token": session.hospital_token, "admin_token": ADMIN_TOKEN,
        "bodies": bodies, "rate": options.rate, "concurrency": options.concurrency,
        "revoke_at_s": options.before_s, "consent_id": consent_id,
        "revocation": permitting_consent(mrn, status="inactive", resource_id=consent_id).decode(),
    }
    arrivals: dict[str, float] = {}
    topic = partner_topic(CBO_ID)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                              fetch_max_wait_ms=20)
    await reader.start()
    try:
        tps = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        reader.assign(tps)
        for tp in tps:
            await reader.seek_to_end(tp)
            await reader.position(tp)

        async def read_arrivals() -> None:
            while True:
                batch = await reader.getmany(timeout_ms=200)
                now = time.time()
                for part in batch.values():
                    for record in part:
                        arrivals.setdefault(ce_id_of(record), now)

        reading = asyncio.create_task(read_arrivals())
        try:
            result = await client.trial(job)
            started = time.perf_counter()
            await intake_bench.wait_pipeline_idle(idle)
            idle_wait_s = time.perf_counter() - started
            await asyncio.sleep(0.5)  # let the reader catch the last deliveries
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
    finally:
        await reader.stop()

    delivered_at = {ce_id_of(r): r.timestamp / 1000 for r in await read_topic(bootstrap, topic.name, topic.partitions)}
    on_events = revocation_on(await read_topic(bootstrap, EVENTS.name, EVENTS.partitions), consent_id)
    ingress = await read_topic(bootstrap, INGRESS.name, INGRESS.partitions)
    # Since the FHIR edge writes consent changes straight to hub.events (ADR 0006), the revocation's
    # place in the order is its write there; an older hub wrote it to hub.ingress first.
    on_ingress = revocation_on(ingress, consent_id)
    if math.isnan(on_ingress):
        on_ingress = on_events
    referrals = [r for r in result["referrals"] if r["status"] == 201]
    ids = {r["id"] for r in referrals}
    ingress_at = {ce_id_of(r): r.timestamp / 1000 for r in ingress if ce_id_of(r) in ids}
    rules = await audit_rules(session.url, ids)
    trial = summarise(result, delivered_at, arrivals, on_events, dict(rules), idle_wait_s)
    add_ingress_order(trial, result, delivered_at, ingress_at, on_ingress)
    return trial


def add_ingress_order(trial: Trial, result: dict[str, Any], delivered_at: dict[str, float],
                      ingress_at: dict[str, float], on_ingress: float) -> None:
    """The order on ``hub.ingress`` (the edge's producer CreateTime, ms resolution): referrals written after
    the revocation yet delivered are exactly the window ADR 0006 describes."""
    rev_done = float(result["revocation"]["done"])
    trial.revocation_on_ingress_ms = (on_ingress - rev_done) * 1000
    delivered = [ingress_at[i] for i in delivered_at if i in ingress_at]
    if delivered and not math.isnan(on_ingress):
        trial.ingress_after_revocation_delivered = sum(1 for at in delivered if at > on_ingress)
        trial.last_delivered_ingress_vs_revocation_ms = (max(delivered) - on_ingress) * 1000


def summarise(result: dict[str, Any], delivered_at: dict[str, float], arrivals: dict[str, float], on_events: float,
              rules: dict[str, int], idle_wait_s: float) -> Trial:
    """The trial's figures from the client's timings and what reached the partner topic."""
    revocation = result["revocation"]
    rev_sent, rev_done = float(revocation["sent"]), float(revocation["done"])
    all_referrals: list[dict[str, Any]] = result["referrals"]
    referrals = [r for r in all_referrals if r["status"] == 201]
    delivered = [r for r in referrals if r["id"] in delivered_at]
    denied = [r for r in referrals if r["id"] not in delivered_at]

    def ms(moment: float) -> float:
        return (moment - rev_done) * 1000

    trial = Trial(
        sent=len(all_referrals),
        accepted=len(referrals),
        statuses=dict(Counter(str(r["status"]) for r in all_referrals)),
        rate_achieved=len(referrals) / max(1e-9, max(r["done"] for r in referrals) - min(r["sent"] for r in referrals))
        if referrals else math.nan,
        revocation_status=int(revocation["status"]),
        revocation_latency_ms=(rev_done - rev_sent) * 1000,
        delivered=len(delivered),
        accepted_after_revocation=sum(1 for r in referrals if r["done"] > rev_done),
        accepted_after_revocation_delivered=sum(1 for r in delivered if r["done"] > rev_done),
        sent_after_revocation_delivered=sum(1 for r in delivered if r["sent"] > rev_done),
        in_flight_during_put=sum(1 for r in referrals if rev_sent <= r["done"] <= rev_done),
        in_flight_during_put_delivered=sum(1 for r in delivered if rev_sent <= r["done"] <= rev_done),
        accepted_before_put_denied=sum(1 for r in denied if r["done"] < rev_sent),
        revocation_on_events_ms=ms(on_events),
        audit_rules=rules,
        idle_wait_s=idle_wait_s,
    )
    if delivered:
        last = max(delivered, key=lambda r: r["done"])
        trial.last_delivered_accepted_ms = ms(last["done"])
        trial.last_delivered_sent_ms = ms(last["sent"])
        trial.last_delivery_left_ms = ms(max(delivered_at[r["id"]] for r in delivered))
        seen = [arrivals[r["id"]] for r in delivered if r["id"] in arrivals]
        trial.last_delivery_arrived_ms = ms(max(seen)) if seen else math.nan
    if denied:
        trial.first_denied_accepted_ms = ms(min(r["done"] for r in denied))
    return trial


# --- orchestration and output ----------------------------------------------------------------------


@dataclass
class Options:
    """Command-line options."""

    trials: int
    rate: float
    before_s: float
    after_s: float
    concurrency: int
    workers: int


@dataclass
class Results:
    """Everything measured in one run."""

    trials: list[Trial] = field(default_factory=list)
    workers: int = 1
    second_worker_members: int = 0
    total_s: float = math.nan


async def run(options: Options, console: Console) -> Results:
    """Start a broker and a hub; run the trials."""
    started = time.perf_counter()
    results = Results(workers=options.workers)
    # Revoked is no consent: in the default opt-out jurisdiction the referrals would go on under the policy.
    # Settings (and a second worker process) read it from the environment.
    os.environ["HUB_CONSENT_DEFAULT"] = "opt-in"
    broker = EmbeddedBroker(port=free_port())
    await broker.start()
    try:
        with tempfile.TemporaryDirectory(prefix="carehub-bench-") as workdir:
            console.log("hub: starting (embedded Tansu, SQLite, HTTP, workers), registering partners")
            async with started_hub(broker.bootstrap, Path(workdir)) as session, contextlib.AsyncExitStack() as stack:
                settings = session.hub.settings
                idle = intake_bench.HubSession(hub=session.hub, host="127.0.0.1", http_port=0, mllp_port=0,
                                               hospital_token=session.hospital_token,
                                               worker_group=settings.worker_group)
                if options.workers == 2:
                    console.log("hub: starting a second worker process (python -m hub.cli worker)")
                    await stack.enter_async_context(second_worker(session))
                    results.second_worker_members = await wait_for_members(
                        session.hub.bootstrap, f"{settings.worker_group}.route", 2)
                client = await stack.enter_async_context(LoadClient())
                for number in range(1, options.trials + 1):
                    console.log(f"trial {number}/{options.trials}: {options.rate:g} referrals/s, revocation after "
                                f"{options.before_s:g} s, {options.after_s:g} s more")
                    trial = await run_trial(session, client, idle, number, options)
                    console.log(f"  delivered {trial.delivered}/{trial.accepted}; accepted after the 2xx and "
                                f"delivered: {trial.accepted_after_revocation_delivered}; last delivered accepted "
                                f"{fmt(trial.last_delivered_accepted_ms)} ms, left the hub "
                                f"{fmt(trial.last_delivery_left_ms)} ms after the 2xx")
                    results.trials.append(trial)
    finally:
        await broker.stop()
    results.total_s = time.perf_counter() - started
    return results


async def wait_for_members(bootstrap: str, group: str, wanted: int, timeout_s: float = 30.0) -> int:
    """Wait until ``group`` has ``wanted`` members (or the broker cannot tell); then let the rebalance settle."""
    deadline = time.monotonic() + timeout_s
    members = 0
    while time.monotonic() < deadline:
        members = await group_members(bootstrap, group)
        if members >= wanted:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(3.0)  # Tansu assigns partitions after half the session timeout
    return members


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(min, median, max) of the finite values; NaNs when there are none."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan, math.nan
    return min(finite), statistics.median(finite), max(finite)


MEASURES: tuple[tuple[str, str], ...] = (
    ("accepted_after_revocation_delivered", "referrals accepted (201) after the revocation's 2xx, delivered"),
    ("sent_after_revocation_delivered", "referrals sent after the revocation's 2xx, delivered"),
    ("last_delivered_accepted_ms", "last delivered referral's 201, ms after the revocation's 2xx"),
    ("last_delivered_sent_ms", "last delivered referral's request sent, ms after the 2xx"),
    ("first_denied_accepted_ms", "first denied referral's 201, ms after the 2xx"),
    ("last_delivery_left_ms", "last delivery left the hub (CreateTime), ms after the 2xx"),
    ("last_delivery_arrived_ms", "last delivery read by the partner, ms after the 2xx"),
    ("ingress_after_revocation_delivered", "referrals on hub.ingress after the revocation was written, delivered"),
    ("last_delivered_ingress_vs_revocation_ms", "last delivered referral on hub.ingress, ms after the revocation"),
    ("revocation_on_ingress_ms", "revocation written by the edge (acked), ms after the 2xx"),
    ("revocation_on_events_ms", "revocation on hub.events, ms after the 2xx"),
    ("revocation_latency_ms", "PUT revocation request → 2xx, ms"),
    ("in_flight_during_put", "referrals accepted while the PUT was in flight"),
    ("in_flight_during_put_delivered", "  of which delivered"),
    ("accepted_before_put_denied", "referrals accepted before the PUT was sent, denied"),
    ("rate_achieved", "referrals accepted per second (achieved)"),
    ("delivered", "referrals delivered"),
    ("accepted", "referrals accepted"),
)


def summary(results: Results, options: Options) -> dict[str, Any]:
    """Every figure, for the final JSON line."""
    figures = {
        "config": {"trials": options.trials, "rate_per_s": options.rate, "before_s": options.before_s,
                   "after_s": options.after_s, "concurrency": options.concurrency, "workers": options.workers,
                   "cpus": os.cpu_count(), "python": platform.python_version()},
        "second_worker_route_members": results.second_worker_members,
        "trials": [t.__dict__ for t in results.trials],
        "spread": {name: dict(zip(("min", "median", "max"), spread([getattr(t, name) for t in results.trials]),
                                  strict=True)) for name, _ in MEASURES},
        "total_accepted_after_revocation_delivered": sum(t.accepted_after_revocation_delivered
                                                         for t in results.trials),
        "total_sent_after_revocation_delivered": sum(t.sent_after_revocation_delivered for t in results.trials),
        "total_ingress_after_revocation_delivered": sum(t.ingress_after_revocation_delivered
                                                        for t in results.trials),
        "total_s": results.total_s,
    }
    safe: dict[str, Any] = json_safe(figures)
    return safe


def table(results: Results, options: Options) -> Table:
    """The human-readable table: min / median / max over the trials."""
    workers = "1 hub process" if options.workers == 1 else "hub + a second worker process"
    out = Table(title=f"CareHub revocation bound: {len(results.trials)} trials, {options.rate:g} referrals/s over "
                      f"HTTP, revocation after {options.before_s:g} s, {workers}, {os.cpu_count()} CPUs")
    out.add_column("measure")
    out.add_column("min", justify="right")
    out.add_column("median", justify="right")
    out.add_column("max", justify="right")
    out.add_column("sum", justify="right")
    for name, label in MEASURES:
        values = [float(getattr(t, name)) for t in results.trials]
        low, mid, high = spread(values)
        counts = not name.endswith("_ms") and name != "rate_achieved"
        total = fmt(sum(values), 0) if counts else ""
        digits = 0 if counts else 1
        out.add_row(label, fmt(low, digits), fmt(mid, digits), fmt(high, digits), total)
    return out


def notes(results: Results) -> list[str]:
    """Context lines printed under the table."""
    lines: list[str] = []
    rules: Counter[str] = Counter()
    for trial in results.trials:
        rules.update(trial.audit_rules)
    lines.append(f"audited decisions for the CBO on the trials' referrals: {dict(rules.most_common())}")
    statuses: Counter[str] = Counter()
    for trial in results.trials:
        statuses.update(trial.statuses)
    lines.append(f"referral HTTP statuses: {dict(statuses)}; revocation statuses: "
                 f"{[t.revocation_status for t in results.trials]}")
    if results.workers == 2:
        lines.append(f"second worker: the route group reported {results.second_worker_members} members "
                     f"(0: the broker did not say)")
    bad = sum(t.accepted_after_revocation_delivered for t in results.trials)
    causal = sum(t.sent_after_revocation_delivered for t in results.trials)
    ingress = sum(t.ingress_after_revocation_delivered for t in results.trials)
    if bad or causal or ingress:
        lines.append(f"NOTE: {bad} referrals accepted after the revocation's 2xx were delivered ({causal} of them "
                     f"sent after it); {ingress} written to hub.ingress after the revocation were delivered: see "
                     f"ADR 0006 'The revocation bound'")
    lines.append(f"total {results.total_s:.1f} s")
    return lines


def parse_args(argv: Sequence[str] | None = None) -> Options | None:
    """Parse the command line (None: run as the load client)."""
    parser = argparse.ArgumentParser(prog="python -m bench.revocation",
                                     description="CareHub: the bound between a consent revocation and the last "
                                                 "delivery under the old consent.")
    parser.add_argument("--trials", type=int, default=5, help="trials (default 5)")
    parser.add_argument("--rate", type=float, default=50.0, help="referrals per second (default 50)")
    parser.add_argument("--before-s", type=float, default=2.0, help="seconds of referrals before the revocation (2)")
    parser.add_argument("--after-s", type=float, default=2.0, help="seconds of referrals after it (default 2)")
    parser.add_argument("--concurrency", type=int, default=32, help="most referrals in flight (default 32)")
    parser.add_argument("--workers", type=int, choices=(1, 2), default=1,
                        help="2: add a second pipeline worker process (default 1)")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        return None
    if args.trials < 1 or args.rate <= 0 or args.before_s <= 0 or args.after_s <= 0 or args.concurrency < 1:
        parser.error("counts, rates and durations must be positive")
    return Options(trials=args.trials, rate=args.rate, before_s=args.before_s, after_s=args.after_s,
                   concurrency=args.concurrency, workers=args.workers)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m bench.revocation``."""
    options = parse_args(argv)
    if options is None:
        client_main()
        return
    logs.configure(level="WARNING")
    results = asyncio.run(run(options, Console(stderr=True)))
    print_report(table(results, options), notes(results), summary(results, options))


if __name__ == "__main__":
    main()
