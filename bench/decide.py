"""Consent-engine benchmark: the pure ``decide()`` alone, and the pipeline with the engine versus the interim rule.

``python -m bench.decide [--patients P] [--events N] [--pipeline-events M]`` measures, in one run:

1. **decide** (pure, one thread, in this process; no broker). A synthetic region: P patients (default
   10 000), each with 0-3 consents (40/35/15/10 %) of the kinds the corpus and LEAP show, read from FHIR
   JSON with ``consent_from_fhir``: opt-in and opt-out bases (``policyRule`` or root ``provision.type``,
   with or without a root provision), nested exceptions by actor (a CBO, recipient role), by purpose,
   by period, by class and by security label (R, PSY, HIV), time-bounded consents, 42 CFR Part 2 consents
   naming the patient's CBO for SUD data, and ~10 % revoked (``inactive``). N events (default 20 000):
   referrals to the patient's usual CBO (80 %) or another one, admit/discharge encounters for a CBO
   that has the patient on its roster; unlabelled (~75 %), ``R``, SUD (``meta.security``), an opioid ICD-10
   code (SUD implied) or PSY. Each event is decided for its addressed / rostered CBO and for two CBOs
   that are not (as the route stage decides for every CBO), so 3N decisions. Every event is unique (its
   id and time); the consent tuple of a patient is one object, as ``SqlConsentSource`` hands it out.

   * **warm** - the engine's per-consent-set memo primed by a first pass over other events of the same
     patients (the steady state of a route worker);
   * **first pass** - the memo emptied once, then the stream (each patient's first decisions are cold);
   * **cold** - the memo emptied before *every* call, so every decision evaluates the patient's consents
     from scratch (``engine._MEMO``; the interned-Decision caches stay, they are not per consent set);
   * **evaluate_consents** alone, over the queries ``decide`` would ask it (addressed or rostered
     recipient, patient with consents), no memo;
   * the **interim rule** (``bench/interim_rule.py``, the skeleton's ``decide``) over the same 3N
     decisions: the cost of a function that does nothing but compare two strings, for scale;
   * ``delivered_body(body, "cbo")``: the minimum-necessary redaction a CBO permit obliges (parse, redact,
     serialise a ~2 KB referral), which the interim rule never asked for.

   The decisions that consult the consents (addressed / rostered recipient, patient with consents; the
   other two thirds are settled by the sharing policy) are also timed on their own, warm and cold.

   Best of ``--repeats`` (3); rates are decisions per CPU second of this single-threaded process (on a
   shared machine wall time also counts waiting for a core; the wall rates are in the JSON). The warm and
   cold answers are compared (they must be equal: the memo never changes an answer).
2. **pipeline** - on one embedded Tansu broker: the raw aiokafka ceilings of ``bench.pipeline`` (per-
   message pass-through, one hop and two chained hops), then the hub pipeline ``hub.ingress`` →
   ``partner.<cbo>`` with ``bench.pipeline``'s events (2 KB SDOH referrals, 200 patients, half of them
   with a permitting consent posted through ``POST /fhir/Consent`` first) in four variants, switched
   between runs on one running pipeline (one consumer group, no rebalance):

   * **engine** - ``engine_decider(Policies())`` (the default policies, as ``hub.app`` builds them when no
     ``HUB_CONSENT_DEFAULT`` / ``HUB_SPECIFIC_CONSENT_LABELS`` is set) and ``SqlConsentSource``;
   * **interim** - the interim rule with no consent gather (the skeleton's route stage);
   * **interim + gather** - the interim rule, consents still loaded (isolates the decision and the CBO
     redaction the engine's permit obliges from the consent loading);
   * **engine, cache misses** - the engine with a ``SqlConsentSource`` emptied before every batch, so
     every event's patient is a miss, loaded with the batch's other misses in one read (the route stage's
     ``prefetch``): real traffic, where a patient's events are rarely less than the cache's 5 s apart
     (the bench's 200 patients repeat every 200 events, so the cache looks better than it will be).

   Before each run, one event per bench patient goes through in that variant, so every run starts with
   the consent cache (5 s TTL) filled; the SQL consent loads of each run are counted. The HTTP edge and
   control plane come from ``running_hub(settings, workers=False)``; the pipeline is built here from the
   same parts as ``hub.app`` (``PipelineDeps`` with the SQL ports and ``SqlRosterSource``, and
   ``build_pipeline_router``), because the composition root does not take a decider. ``--rounds`` (3)
   rounds, the order reversed every other round; the median per variant is reported, and the engine /
   interim ratio of each round (adjacent runs, so slow drift in the shared machine cancels). The cache-miss
   variant runs a third of the events (it is four times slower). The time spent inside the decider is
   measured in the running pipeline too.

Prints a table and, last, one line of JSON with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.table import Table

from bench import intake as intake_bench
from bench import pipeline as pipeline_bench
from bench.interim_rule import decide as interim_decide
from bench.interim_rule import interim_decider
from bench.pipeline import (
    ADMIN_TOKEN,
    CBO_ID,
    CBO_ORG,
    HOSPITAL_ID,
    MRN_SYSTEM,
    PATIENTS,
    RAW_IN,
    RAW_TOPICS,
    EventFactory,
    Throughput,
    end_offset_total,
    fmt,
    free_port,
    json_safe,
    mrn_of,
    preload,
    ratio,
    raw_throughput,
    register_bench_partners,
)
from hub import logs
from hub.app import build_kafka_broker, running_hub
from hub.broker.embedded import EmbeddedBroker
from hub.broker.topics import ensure_topics
from hub.consent import engine
from hub.consent import labels as lbl
from hub.consent.decision import Decision, Recipient, Verdict
from hub.consent.model import CARE_COORDINATION, CONSENT_SCOPE_SYSTEM, Consent, Policies, consent_from_fhir
from hub.delivery.partner_view import delivered_body
from hub.events import RoutingFacts
from hub.pipeline.publisher import AioKafkaRecordPublisher
from hub.pipeline.route import DecideFn, engine_decider
from hub.pipeline.stores import (
    SqlAuditLog,
    SqlConsentSource,
    SqlPartnerDirectory,
    SqlPatientIndex,
    SqlRosterSource,
    SqlSequencer,
)
from hub.pipeline.workers import PipelineDeps, build_pipeline_router
from hub.settings import Settings
from hub.topics.registry import DLQ, partner_topic

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
POU = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ROLE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
SDOH = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
FOOD_PANTRY = f"{SNOMED}|467771000124109"
OPIOID_DEPENDENCE = f"{ICD10CM}|F11.20"
N_CBOS = 20
N_HOSPITALS = 5
YEAR_START = datetime(2026, 1, 1, tzinfo=UTC)

CBOS = tuple(Recipient(partner_id=f"cbo-{k}", kind="cbo", organization=f"Organization/cbo-{k}") for k in range(N_CBOS))
ROSTERED = tuple(Recipient(r.partner_id, r.kind, r.organization, (), True) for r in CBOS)


# --- the synthetic region --------------------------------------------------------------------------


def _coding(system: str, code: str) -> dict[str, str]:
    return {"system": system, "code": code}


def _concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [_coding(system, code)]}


def _actor(organization: str) -> dict[str, Any]:
    return {"role": _concept(ROLE, "IRCP"), "reference": {"reference": organization}}


def _period(start: str, end: str) -> dict[str, str]:
    return {"start": start, "end": end}


#: Consent kinds and their weights (per consent).
CONSENT_KINDS: tuple[tuple[str, int], ...] = (
    ("opt-in", 18),
    ("opt-out", 8),
    ("opt-in, deny a CBO", 10),
    ("opt-in, deny a label", 12),
    ("opt-out, permit a CBO for CAREMGT referrals", 14),
    ("time-bounded opt-in, deny a period", 10),
    ("42 CFR Part 2, names the CBO for SUD", 12),
    ("opt-in, deny a purpose", 6),
    ("opt-in, deny encounters", 10),
)


def consent_json(cid: str, mrn: str, kind: str, rng: random.Random, home_cbo: str) -> dict[str, Any]:
    """One FHIR R4 Consent of ``kind`` for patient ``mrn`` (~10 % revoked)."""
    other_cbo = f"Organization/cbo-{rng.randrange(N_CBOS)}"
    provision: dict[str, Any] | None
    policy: str | None = None
    if kind == "opt-in":
        policy, provision = "OPTIN", rng.choice([None, {"type": "permit"}])
    elif kind == "opt-out":
        policy, provision = "OPTOUT", rng.choice([None, {"type": "deny"}])
    elif kind == "opt-in, deny a CBO":
        typed = rng.random() < 0.5  # LEAP-style untyped exception, or a typed R4 deny
        policy, provision = "OPTIN", {"provision": [{**({"type": "deny"} if typed else {}),
                                                     "actor": [_actor(other_cbo)]}]}
    elif kind == "opt-in, deny a label":
        label = rng.choice([_coding(CONF, "R"), _coding(ACT, "PSY"), _coding(ACT, "HIV")])
        policy, provision = "OPTIN", {"type": "permit", "provision": [{"type": "deny", "securityLabel": [label]}]}
    elif kind == "opt-out, permit a CBO for CAREMGT referrals":
        policy, provision = "OPTOUT", {"type": "deny", "provision": [{
            "type": "permit", "actor": [_actor(home_cbo)], "purpose": [_coding(POU, "CAREMGT")],
            "class": [_coding(RESOURCE_TYPES, "ServiceRequest")]}]}
    elif kind == "time-bounded opt-in, deny a period":
        provision = {"type": "permit", "period": _period("2025-06-01", "2026-09-30"),
                     "provision": [{"type": "deny", "period": _period("2026-03-01", "2026-04-15")}]}
    elif kind == "42 CFR Part 2, names the CBO for SUD":
        provision = {"type": "permit", "actor": [_actor(home_cbo)], "securityLabel": [_coding(ACT, "SUD")],
                     "purpose": [_coding(POU, "CAREMGT")]}
    elif kind == "opt-in, deny a purpose":
        purpose = rng.choice(["HOPERAT", "HRESCH", "TREAT"])
        policy, provision = "OPTIN", {"provision": [{"type": "deny", "purpose": [_coding(POU, purpose)]}]}
    elif kind == "opt-in, deny encounters":
        policy, provision = "OPTIN", {"type": "permit", "provision": [{
            "type": "deny", "class": [_coding(RESOURCE_TYPES, "Encounter")]}]}
    else:
        raise ValueError(kind)
    day = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(730))
    return {
        "resourceType": "Consent",
        "id": cid,
        "status": "inactive" if rng.random() < 0.10 else "active",
        "scope": _concept(CONSENT_SCOPE_SYSTEM, "patient-privacy"),
        "category": [_concept("http://loinc.org", "59284-0")],
        "patient": {"identifier": {"system": MRN_SYSTEM, "value": mrn}},
        "dateTime": day.strftime("%Y-%m-%dT%H:%M:%SZ"),
        **({"policyRule": _concept(ACT, policy)} if policy else {}),
        **({"provision": provision} if provision is not None else {}),
    }


@dataclass(frozen=True)
class Patient:
    """A patient of the region: hub id, usual CBO, and the consent tuple the store would hand out."""

    hub_id: str
    home_cbo: int
    consents: tuple[Consent, ...]
    kinds: tuple[str, ...]


def make_patients(count: int, rng: random.Random) -> list[Patient]:
    """``count`` patients with 0-3 consents each (40/35/15/10 %)."""
    names, weights = zip(*CONSENT_KINDS, strict=True)
    patients: list[Patient] = []
    for index in range(count):
        hub_id = f"urn:carehub:patient:{uuid.UUID(int=rng.getrandbits(128))}"
        home = rng.randrange(N_CBOS)
        how_many = rng.choices((0, 1, 2, 3), weights=(40, 35, 15, 10))[0]
        kinds = tuple(rng.choices(names, weights=weights, k=how_many))
        consents = tuple(
            consent_from_fhir(consent_json(f"c{index}-{n}", f"MRN-{index}", kind, rng, f"Organization/cbo-{home}"),
                              patient=hub_id)
            for n, kind in enumerate(kinds)
        )
        patients.append(Patient(hub_id=hub_id, home_cbo=home, consents=consents, kinds=kinds))
    return patients


@dataclass(frozen=True)
class Query:
    """One decision: the event's facts, a candidate recipient, the patient's consents, the event time."""

    facts: RoutingFacts
    recipient: Recipient
    consents: tuple[Consent, ...]
    at: datetime
    relevant: bool  # addressed to / rostered at this recipient (the consents are consulted)


def _labels(rng: random.Random) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """(security labels, extra codes, mix name) of a referral."""
    roll = rng.random()
    if roll < 0.75:
        return (), (), "unlabelled"
    if roll < 0.85:
        return (lbl.R,), (), "R"
    if roll < 0.90:
        return (lbl.SUD,), (), "SUD label"
    if roll < 0.95:
        return (), (OPIOID_DEPENDENCE,), "SUD by ICD-10 code"
    return (lbl.PSY,), (), "PSY"


def make_queries(
    patients: Sequence[Patient], events: int, rng: random.Random, tag: str
) -> tuple[list[Query], Counter[str]]:
    """``events`` unique events of random patients, each decided for 1 relevant and 2 other CBOs."""
    queries: list[Query] = []
    mix: Counter[str] = Counter()
    for seq in range(events):
        patient = rng.choice(patients)
        at = YEAR_START + timedelta(seconds=rng.randrange(365 * 86400), microseconds=rng.randrange(10**6))
        hospital = f"hosp-{rng.randrange(N_HOSPITALS)}"
        roll = rng.random()
        if roll < 0.70:
            target = patient.home_cbo if rng.random() < 0.8 else rng.randrange(N_CBOS)
            labels, extra, name = _labels(rng)
            facts = RoutingFacts(
                resource_type="ServiceRequest", resource_id=f"sr-{tag}-{seq}", sender=hospital,
                hub_patient_id=patient.hub_id, requester=f"Organization/{hospital}",
                performers=(CBOS[target].organization,), categories=(f"{SDOH}|food-insecurity",),
                codes=(FOOD_PANTRY, *extra), security_labels=labels, status="active", intent="order",
                event_kind="referral",
            )
            relevant = CBOS[target]
            mix[f"referral, {name}"] += 1
        else:
            kind = "admit" if roll < 0.85 else "discharge"
            labelled = rng.random() < 0.10
            target = patient.home_cbo
            facts = RoutingFacts(
                resource_type="Encounter", resource_id=f"enc-{tag}-{seq}", sender=hospital,
                hub_patient_id=patient.hub_id, security_labels=(lbl.R,) if labelled else (),
                status="in-progress" if kind == "admit" else "finished", event_kind=kind,
            )
            relevant = ROSTERED[target]
            mix[f"{kind}, {'R' if labelled else 'unlabelled'}"] += 1
        queries.append(Query(facts, relevant, patient.consents, at, relevant=True))
        others = rng.sample([k for k in range(N_CBOS) if k != target], 2)
        queries.extend(Query(facts, CBOS[k], patient.consents, at, relevant=False) for k in others)
    return queries, mix


# --- timing ----------------------------------------------------------------------------------------


@dataclass
class Rate:
    """Best of several timed passes over ``count`` calls."""

    count: int
    wall_s: float
    cpu_s: float
    walls: list[float] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.count / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def per_cpu_s(self) -> float:
        return self.count / self.cpu_s if self.cpu_s > 0 else float("nan")

    @property
    def us_per_call(self) -> float:
        """CPU microseconds per call."""
        return self.cpu_s * 1e6 / self.count if self.count else float("nan")

    def as_json(self) -> dict[str, Any]:
        return {"count": self.count, "cpu_s": round(self.cpu_s, 4), "per_cpu_s": round(self.per_cpu_s, 1),
                "wall_s": round(self.wall_s, 4), "per_wall_s": round(self.per_s, 1),
                "cpu_us_per_call": round(self.us_per_call, 3), "walls_s": [round(w, 4) for w in self.walls]}


def timed(work: Callable[[], object], count: int, repeats: int, before: Callable[[], None] | None = None) -> Rate:
    """Run ``work`` ``repeats`` times (``before`` untimed before each); keep the pass that used the least CPU
    (this process is single-threaded, so CPU time is the work done; wall time also counts waiting for a
    core on a shared machine)."""
    best: Rate | None = None
    walls: list[float] = []
    for _ in range(repeats):
        if before is not None:
            before()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        work()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        walls.append(wall)
        if best is None or cpu < best.cpu_s:
            best = Rate(count=count, wall_s=wall, cpu_s=cpu)
    assert best is not None
    best.walls = walls
    return best


def decide_all(queries: Sequence[Query], policies: Policies) -> list[Decision]:
    """``engine.decide`` over ``queries``, in order."""
    decide = engine.decide
    return [decide(q.facts, q.recipient, policies, q.consents, at=q.at) for q in queries]


def decide_all_cold(queries: Sequence[Query], policies: Policies) -> list[Decision]:
    """``engine.decide`` with the per-consent-set memo emptied before every call."""
    decide, memo = engine.decide, engine._MEMO
    out: list[Decision] = []
    for q in queries:
        memo.clear()
        out.append(decide(q.facts, q.recipient, policies, q.consents, at=q.at))
    return out


def consent_questions(queries: Sequence[Query], policies: Policies) -> list[tuple[tuple[Consent, ...],
                                                                                 engine.ConsentQuery,
                                                                                 frozenset[str]]]:
    """The ``evaluate_consents`` calls ``decide`` makes (no memo): relevant recipient, some consents."""
    out = []
    for q in queries:
        if not q.relevant or not q.consents:
            continue
        ids = engine._recipient_ids(q.recipient)
        labels = lbl.effective_labels(q.facts)
        query = engine._query(q.facts, ids, CARE_COORDINATION, labels, engine._at_ts(q.at))
        out.append((q.consents, query, labels & policies.specific_labels))
    return out


@dataclass
class DecideResults:
    """The pure part."""

    patients: int = 0
    consents: int = 0
    consents_per_patient: dict[str, int] = field(default_factory=dict)
    consent_kinds: dict[str, int] = field(default_factory=dict)
    revoked: int = 0
    events: int = 0
    event_mix: dict[str, int] = field(default_factory=dict)
    warm: Rate | None = None
    first_pass: Rate | None = None
    cold: Rate | None = None
    redact_cbo: Rate | None = None
    consulting_warm: Rate | None = None
    consulting_cold: Rate | None = None
    evaluate: Rate | None = None
    interim: Rate | None = None
    permits: int = 0
    denies: int = 0
    rules: dict[str, int] = field(default_factory=dict)
    mismatches: int = 0
    build_s: float = float("nan")


def run_decide(options: Options, console: Console) -> DecideResults:
    """Section 1."""
    results = DecideResults()
    rng = random.Random(options.seed)
    started = time.perf_counter()
    console.log(f"decide: building {options.patients} patients and {options.events} events")
    patients = make_patients(options.patients, rng)
    prime, _ = make_queries(patients, options.events, rng, "prime")
    queries, mix = make_queries(patients, options.events, rng, "run")
    results.build_s = time.perf_counter() - started
    policies = Policies()
    results.patients = len(patients)
    results.consents = sum(len(p.consents) for p in patients)
    results.consents_per_patient = dict(sorted(Counter(str(len(p.consents)) for p in patients).items()))
    results.consent_kinds = dict(Counter(k for p in patients for k in p.kinds).most_common())
    results.revoked = sum(1 for p in patients for c in p.consents if c.status.value == "inactive")
    results.events = options.events
    results.event_mix = dict(mix.most_common())
    count = len(queries)

    def empty_memo() -> None:
        engine._MEMO.clear()

    console.log(f"decide: first pass ({count} decisions, memo emptied before the pass)")
    results.first_pass = timed(lambda: decide_all(queries, policies), count, options.repeats, before=empty_memo)
    console.log("decide: warm")
    decide_all(prime, policies)
    decide_all(queries, policies)
    answers: dict[str, list[Decision]] = {}

    def warm_pass() -> None:
        answers["warm"] = decide_all(queries, policies)

    def cold_pass() -> None:
        answers["cold"] = decide_all_cold(queries, policies)

    results.warm = timed(warm_pass, count, options.repeats)
    console.log("decide: cold (memo emptied before every call)")
    results.cold = timed(cold_pass, count, options.repeats)
    warm_answers, cold_answers = answers["warm"], answers["cold"]
    results.mismatches = sum(1 for a, b in zip(warm_answers, cold_answers, strict=True) if a != b)
    verdicts = Counter(d.verdict for d in cold_answers)
    results.permits, results.denies = verdicts[Verdict.PERMIT], verdicts[Verdict.DENY]
    results.rules = dict(Counter(_rule_family(d.rule) for d in cold_answers).most_common())

    consulting = [q for q in queries if q.relevant and q.consents]
    console.log(f"decide: the {len(consulting)} decisions that consult consents, warm and cold")
    decide_all(consulting, policies)  # the cold pass above left the memo empty
    results.consulting_warm = timed(lambda: decide_all(consulting, policies), len(consulting), options.repeats)
    results.consulting_cold = timed(lambda: decide_all_cold(consulting, policies), len(consulting), options.repeats)
    asks = consent_questions(queries, policies)
    evaluate = engine.evaluate_consents
    console.log(f"decide: evaluate_consents alone ({len(asks)} calls)")
    results.evaluate = timed(lambda: [evaluate(c, q, specific_labels=s) for c, q, s in asks], len(asks),
                             options.repeats)
    bodies = [pipeline_bench.fhir_body(i, mrn_of(i)).decode() for i in range(2000)]
    console.log(f"decide: delivered_body(..., 'cbo') over {len(bodies)} ~2 KB referrals (the engine's CBO redaction)")
    results.redact_cbo = timed(lambda: [delivered_body(b, "cbo") for b in bodies], len(bodies), options.repeats)
    console.log("decide: interim rule")
    results.interim = timed(lambda: [interim_decide(q.facts, q.recipient) for q in queries], count, options.repeats)
    return results


def _rule_family(rule: str) -> str:
    """``consent:c1-0:provision`` → ``consent:*:provision`` (a rule without the consent id)."""
    parts = rule.split(":")
    if parts[0] == "consent" and len(parts) >= 3:
        tail = parts[2].split(".")[0]
        return f"consent:*:{tail}" if tail in ("provision", "policyRule", "revoked", "rejected") else "consent:*:nested"
    return rule


# --- pipeline: engine vs interim on one running pipeline -------------------------------------------


class NoConsents:
    """A consent source that gathers nothing (the skeleton's route stage loaded no consents)."""

    async def consents_for(self, hub_patient_id: str) -> tuple[Consent, ...]:
        del hub_patient_id
        return ()

    async def changed(self, hub_patient_id: str, consent: Consent | None) -> None:
        del hub_patient_id, consent

    def forget_all(self) -> None:
        """Nothing cached."""

    async def prefetch(self, hub_patient_ids: Collection[str]) -> None:
        """Nothing to load."""
        del hub_patient_ids


class Switch:
    """The pipeline's decider and consent source, switchable between runs.

    Consent changes always reach the SQL source, whichever variant runs, so its cache stays right.
    """

    def __init__(self, sql: SqlConsentSource, uncached: SqlConsentSource) -> None:
        self._sql = self.sql = sql
        self.uncached = uncached
        none = NoConsents()
        self.variants: dict[str, tuple[DecideFn, SqlConsentSource | NoConsents]] = {
            "engine": (engine_decider(Policies()), sql),
            "interim": (interim_decider(), none),
            "interim + gather": (interim_decider(), sql),
            "engine, cache misses": (engine_decider(Policies()), uncached),
        }
        self.name = "engine"
        self._decide, self._consents = self.variants[self.name]
        self.decide_s = 0.0
        self.decisions = 0

    def use(self, name: str) -> None:
        self.name = name
        self._decide, self._consents = self.variants[name]

    def decide(self, facts: RoutingFacts, recipient: Recipient, consents: Sequence[Consent], at: datetime) -> Decision:
        started = time.perf_counter()
        try:
            return self._decide(facts, recipient, consents, at)
        finally:
            self.decide_s += time.perf_counter() - started
            self.decisions += 1

    async def consents_for(self, hub_patient_id: str) -> tuple[Consent, ...]:
        return await self._consents.consents_for(hub_patient_id)

    async def changed(self, hub_patient_id: str, consent: Consent | None) -> None:
        await self._sql.changed(hub_patient_id, consent)

    def forget_all(self) -> None:
        self._sql.forget_all()
        self.uncached.forget_all()

    async def prefetch(self, hub_patient_ids: Collection[str]) -> None:
        if self._consents is self.uncached:
            self.uncached.forget_all()  # every batch starts cold: all its patients are misses
        await self._consents.prefetch(hub_patient_ids)


@dataclass
class SwitchableHub:
    """A hub whose pipeline runs with the bench's switchable decider."""

    session: pipeline_bench.HubSession
    idle: intake_bench.HubSession
    switch: Switch


@contextlib.asynccontextmanager
async def switchable_hub(bootstrap: str, workdir: Path) -> AsyncIterator[SwitchableHub]:
    """HTTP edge and control plane from ``running_hub(workers=False)``; the pipeline built here from the
    parts ``hub.app`` uses, with :class:`Switch` as decider and consent source."""
    group = f"bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka_bootstrap=bootstrap, database_url=f"sqlite+aiosqlite:///{workdir / 'hub.db'}", http_port=0,
        mllp_port=0, admin_token=ADMIN_TOKEN, consumer_session_timeout_ms=pipeline_bench.SESSION_TIMEOUT_MS,
        worker_group=group, record_key=pipeline_bench.BENCH_RECORD_KEY,
    )
    async with running_hub(settings, workers=False) as hub, contextlib.AsyncExitStack() as stack:
        publisher = AioKafkaRecordPublisher(bootstrap, proof=pipeline_bench.BENCH_PROOF)
        await publisher.start()
        stack.push_async_callback(publisher.stop)

        async def new_partner_topic(partner_id: str) -> None:
            await ensure_topics(bootstrap, [partner_topic(partner_id)])

        switch = Switch(SqlConsentSource(hub.sessions), SqlConsentSource(hub.sessions))
        deps = PipelineDeps(
            patients=SqlPatientIndex(hub.sessions),
            directory=SqlPartnerDirectory(hub.sessions, on_new_partner=new_partner_topic),
            audit=SqlAuditLog(hub.sessions), sequencer=SqlSequencer(hub.sessions), publisher=publisher,
            consents=switch, decide=switch.decide, proof=pipeline_bench.BENCH_PROOF,
            rosters=SqlRosterSource(hub.sessions),
        )
        broker = build_kafka_broker(bootstrap)
        broker.include_router(build_pipeline_router(
            deps, group_id=group, fetch_max_wait_ms=settings.fetch_max_wait_ms,
            session_timeout_ms=settings.session_timeout_ms, max_batch=settings.max_batch,
        ))
        await broker.start()
        stack.push_async_callback(broker.stop)
        url = hub.http_url or ""
        tokens = await register_bench_partners(url)
        port = httpx.URL(url).port or 0
        yield SwitchableHub(
            session=pipeline_bench.HubSession(hub=hub, url=url, hospital_token=tokens[HOSPITAL_ID]),
            idle=intake_bench.HubSession(hub=hub, host="127.0.0.1", http_port=port, mllp_port=0,
                                         hospital_token=tokens[HOSPITAL_ID], worker_group=group),
            switch=switch,
        )


def pipeline_consent(index: int) -> bytes:
    """A consent that permits referrals to the bench CBO, of one of four kinds, for bench patient ``index``."""
    kind = index % 4
    policy: str | None = "OPTIN"
    provision: dict[str, Any]
    if kind == 0:
        provision = {"type": "permit"}
    elif kind == 1:
        provision = {"type": "permit", "provision": [{"type": "deny", "securityLabel": [_coding(CONF, "R")]}]}
    elif kind == 2:
        policy = "OPTOUT"
        provision = {"type": "deny", "provision": [{"type": "permit", "actor": [_actor(CBO_ORG)],
                                                    "purpose": [_coding(POU, "CAREMGT")]}]}
    else:  # a Part 2 consent: applies to SUD data only, so these referrals fall to the opt-out default
        policy = None
        provision = {"type": "permit", "actor": [_actor(CBO_ORG)], "securityLabel": [_coding(ACT, "SUD")],
                     "purpose": [_coding(POU, "CAREMGT")]}
    return orjson.dumps({
        "resourceType": "Consent", "status": "active",
        "scope": _concept(CONSENT_SCOPE_SYSTEM, "patient-privacy"),
        "category": [_concept("http://loinc.org", "59284-0")],
        "patient": {"identifier": {"system": MRN_SYSTEM, "value": mrn_of(index)}},
        "dateTime": "2026-01-01T00:00:00Z",
        **({"policyRule": _concept(ACT, policy)} if policy else {}),
        "provision": provision,
    })


async def post_consents(url: str, count: int) -> int:
    """POST ``count`` consents (operator token), 8 at a time; return how many were accepted."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/fhir+json"}
    accepted = 0
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for start in range(0, count, 8):
            answers = await asyncio.gather(*(
                client.post("/fhir/Consent", content=pipeline_consent(i), headers=headers)
                for i in range(start, min(count, start + 8))
            ))
            for answer in answers:
                if answer.status_code != 201:
                    raise SystemExit(f"POST /fhir/Consent failed: {answer.status_code} {answer.text}")
                accepted += 1
    return accepted


VARIANTS = ("engine", "interim", "interim + gather", "engine, cache misses")


@dataclass
class PipelineResults:
    """The pipeline part."""

    raw: Throughput | None = None
    raw_chain: Throughput | None = None
    runs: dict[str, list[Throughput]] = field(default_factory=dict)
    loads: dict[str, list[int]] = field(default_factory=dict)
    decide_us: dict[str, list[float]] = field(default_factory=dict)
    round_ratios: list[float] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    consents_posted: int = 0
    dlq_records: int = 0

    def median(self, variant: str) -> float:
        values = [t.per_s for t in self.runs.get(variant, [])]
        return statistics.median(values) if values else float("nan")

    def cpu_ms(self, variant: str) -> float:
        values = [t.cpu_ms(t.cpu_bench_s) for t in self.runs.get(variant, [])]
        return statistics.median(values) if values else float("nan")


async def run_pipeline(options: Options, console: Console) -> PipelineResults:
    """Section 2, on one embedded broker."""
    results = PipelineResults()
    factory = EventFactory()
    broker = EmbeddedBroker(port=free_port())
    await broker.start()
    try:
        bootstrap = broker.bootstrap
        await ensure_topics(bootstrap, RAW_TOPICS)
        batch = factory.events(options.pipeline_events)
        console.log(f"raw: preloading {len(batch)} events; per-message pass-through, 1 hop and 2 chained hops")
        await preload(bootstrap, RAW_IN.name, batch)
        results.raw = await raw_throughput(bootstrap, len(batch), "per-message", broker.pid)
        results.raw_chain = await raw_throughput(bootstrap, len(batch), "chain", broker.pid)
        with tempfile.TemporaryDirectory(prefix="carehub-bench-") as workdir:
            console.log("hub: starting (HTTP + control plane; pipeline with the switchable decider)")
            async with switchable_hub(bootstrap, Path(workdir)) as hub:
                consent_patients = min(options.consent_patients, PATIENTS)
                console.log(f"hub: posting {consent_patients} consents (of {PATIENTS} patients)")
                results.consents_posted = await post_consents(hub.session.url, consent_patients)
                await intake_bench.wait_pipeline_idle(hub.idle)
                await pipeline_bench.hub_warm_up(bootstrap, factory)
                dlq_before = await end_offset_total(bootstrap, DLQ)
                popts = pipeline_bench.Options(
                    events=options.pipeline_events, requests=1, latency_events=1, latency_rate=1.0, concurrency=1,
                    sections=frozenset({"hub"}), cprofile=None, sql_stats=False,
                )
                for round_no in range(options.rounds):
                    order = VARIANTS if round_no % 2 == 0 else tuple(reversed(VARIANTS))
                    for variant in order:
                        hub.switch.use(variant)
                        # One event per bench patient first, in this variant: every run starts with the
                        # consent cache (5 s TTL) filled, whatever ran before it.
                        await pipeline_bench.hub_warm_up(bootstrap, factory, count=PATIENTS)
                        await intake_bench.wait_pipeline_idle(hub.idle)
                        console.log(f"hub: round {round_no + 1}, {variant}: {options.pipeline_events} events "
                                    f"hub.ingress → {partner_topic(CBO_ID).name}")
                        loads = hub.switch.sql.loads + hub.switch.uncached.loads
                        hub.switch.decide_s, hub.switch.decisions = 0.0, 0
                        # every event pays a SQL load in the cache-miss variant: fewer events keep the run short
                        count = options.pipeline_events
                        if variant == VARIANTS[3]:
                            count = max(100, options.pipeline_events // 3)
                        throughput, _ = await pipeline_bench.hub_throughput(
                            hub.session, factory.events(count), broker.pid, popts)
                        results.runs.setdefault(variant, []).append(throughput)
                        results.loads.setdefault(variant, []).append(
                            hub.switch.sql.loads + hub.switch.uncached.loads - loads)
                        results.decide_us.setdefault(variant, []).append(
                            hub.switch.decide_s * 1e6 / max(1, hub.switch.decisions))
                        results.order.append(variant)
                    results.round_ratios.append(ratio(results.runs["engine"][-1].per_s,
                                                      results.runs["interim"][-1].per_s))
                results.dlq_records = await end_offset_total(bootstrap, DLQ) - dlq_before
                console.log("hub: stopping")
    finally:
        await broker.stop()
    return results


# --- orchestration and output ----------------------------------------------------------------------


@dataclass
class Options:
    """Command-line options."""

    patients: int
    events: int
    repeats: int
    seed: int
    pipeline_events: int
    rounds: int
    consent_patients: int
    sections: frozenset[str]


@dataclass
class Results:
    """Everything measured in one run."""

    decide: DecideResults | None = None
    pipeline: PipelineResults | None = None
    total_s: float = float("nan")


async def run(options: Options, console: Console) -> Results:
    """Run the selected sections."""
    started = time.perf_counter()
    results = Results()
    if "decide" in options.sections:
        results.decide = run_decide(options, console)
    if "pipeline" in options.sections:
        results.pipeline = await run_pipeline(options, console)
    results.total_s = time.perf_counter() - started
    return results


def _rate(rate: Rate | None) -> float | None:
    return None if rate is None else rate.per_cpu_s


def _thr(throughput: Throughput | None) -> float | None:
    return None if throughput is None else throughput.per_s


def summary(results: Results, options: Options) -> dict[str, Any]:
    """Every figure, for the final JSON line."""
    out: dict[str, Any] = {
        "config": {"patients": options.patients, "events": options.events, "repeats": options.repeats,
                   "seed": options.seed, "pipeline_events": options.pipeline_events, "rounds": options.rounds,
                   "consent_patients": options.consent_patients, "cpus": os.cpu_count(),
                   "python": platform.python_version()},
    }
    d = results.decide
    if d is not None:
        out["decide"] = {
            "patients": d.patients, "consents": d.consents, "revoked": d.revoked,
            "consents_per_patient": d.consents_per_patient, "consent_kinds": d.consent_kinds,
            "events": d.events, "decisions": d.warm.count if d.warm else 0, "event_mix": d.event_mix,
            "warm": d.warm.as_json() if d.warm else None,
            "first_pass": d.first_pass.as_json() if d.first_pass else None,
            "cold": d.cold.as_json() if d.cold else None,
            "consulting_warm": d.consulting_warm.as_json() if d.consulting_warm else None,
            "consulting_cold": d.consulting_cold.as_json() if d.consulting_cold else None,
            "evaluate_consents": d.evaluate.as_json() if d.evaluate else None,
            "interim_rule": d.interim.as_json() if d.interim else None,
            "redact_cbo_2kb_referral": d.redact_cbo.as_json() if d.redact_cbo else None,
            "permits": d.permits, "denies": d.denies, "rules": d.rules, "warm_cold_mismatches": d.mismatches,
            "ratios": {
                "warm_vs_cold": ratio(_rate(d.warm), _rate(d.cold)),
                "warm_vs_interim": ratio(_rate(d.warm), _rate(d.interim)),
                "cold_vs_interim": ratio(_rate(d.cold), _rate(d.interim)),
                "first_pass_vs_warm": ratio(_rate(d.first_pass), _rate(d.warm)),
                "consulting_warm_vs_cold": ratio(_rate(d.consulting_warm), _rate(d.consulting_cold)),
                "evaluate_vs_consulting_cold": ratio(_rate(d.evaluate), _rate(d.consulting_cold)),
            },
        }
    p = results.pipeline
    if p is not None:
        engine_s, interim_s, gather_s, miss_s = (p.median(v) for v in VARIANTS)
        out["pipeline"] = {
            "raw_per_message": p.raw.as_json() if p.raw else None,
            "raw_chain_2hops": p.raw_chain.as_json() if p.raw_chain else None,
            "runs": {v: [t.as_json() for t in runs] for v, runs in p.runs.items()},
            "consent_loads_per_run": p.loads,
            "decide_us_per_call_in_pipeline": p.decide_us,
            "engine_vs_interim_per_round": p.round_ratios,
            "order": p.order,
            "median_per_s": {v: p.median(v) for v in VARIANTS},
            "median_cpu_bench_ms_per_event": {v: p.cpu_ms(v) for v in VARIANTS},
            "consents_posted": p.consents_posted,
            "dlq_records": p.dlq_records,
            "ratios": {
                "engine_vs_interim": ratio(engine_s, interim_s),
                "engine_vs_interim_median_of_rounds": statistics.median(p.round_ratios) if p.round_ratios else None,
                "engine_vs_interim_with_gather": ratio(engine_s, gather_s),
                "interim_with_gather_vs_interim": ratio(gather_s, interim_s),
                "engine_cache_misses_vs_engine": ratio(miss_s, engine_s),
                "engine_cache_misses_vs_interim": ratio(miss_s, interim_s),
                "engine_vs_raw": ratio(engine_s, _thr(p.raw)),
                "interim_vs_raw": ratio(interim_s, _thr(p.raw)),
                "engine_vs_raw_chain": ratio(engine_s, _thr(p.raw_chain)),
                "interim_vs_raw_chain": ratio(interim_s, _thr(p.raw_chain)),
            },
        }
    out["total_s"] = results.total_s
    safe: dict[str, Any] = json_safe(out)
    return safe


def _us(rate: Rate | None) -> str:
    return f"{fmt(rate.us_per_call, 2)} µs/call" if rate else "-"


def table(results: Results) -> Table:
    """The human-readable table."""
    out = Table(title=f"CareHub consent-engine benchmark: {os.cpu_count()} CPUs, Python {platform.python_version()}")
    out.add_column("measure")
    out.add_column("figure", justify="right")
    out.add_column("ratio", justify="right")
    out.add_column("ratio to")
    d = results.decide
    if d is not None:
        warm, interim = _rate(d.warm), _rate(d.interim)
        out.add_row(f"decide(), all, warm, decisions/s ({_us(d.warm)})", fmt(warm, 0), fmt(ratio(warm, interim), 3),
                    "interim rule, same decisions")
        out.add_row(f"decide(), all, first pass, decisions/s ({_us(d.first_pass)})", fmt(_rate(d.first_pass), 0),
                    fmt(ratio(_rate(d.first_pass), warm), 3), "warm")
        out.add_row(f"decide(), all, cold, decisions/s ({_us(d.cold)})", fmt(_rate(d.cold), 0),
                    fmt(ratio(_rate(d.cold), warm), 3), "warm")
        n = d.consulting_warm.count if d.consulting_warm else 0
        cw, cc = _rate(d.consulting_warm), _rate(d.consulting_cold)
        out.add_row(f"  of which the {n} that consult consents, warm ({_us(d.consulting_warm)})", fmt(cw, 0),
                    fmt(ratio(cw, cc), 3), "same decisions, cold")
        out.add_row(f"  the same {n}, cold ({_us(d.consulting_cold)})", fmt(cc, 0), "", "")
        out.add_row(f"  evaluate_consents() alone, calls/s ({_us(d.evaluate)})", fmt(_rate(d.evaluate), 0),
                    fmt(ratio(_rate(d.evaluate), cc), 3), "the same decisions, cold decide()")
        out.add_row(f"interim rule, decisions/s ({_us(d.interim)})", fmt(interim, 0), "", "")
        out.add_row(f"CBO redaction of a 2 KB referral, calls/s ({_us(d.redact_cbo)})", fmt(_rate(d.redact_cbo), 0),
                    "", "delivery applies it to every CBO permit")
    p = results.pipeline
    if p is not None:
        raw, chain = _thr(p.raw), _thr(p.raw_chain)
        engine_s, interim_s, gather_s, miss_s = (p.median(v) for v in VARIANTS)
        n = len(p.runs.get("engine", []))
        out.add_row(f"pipeline, engine, events/s (median of {n})", fmt(engine_s), fmt(ratio(engine_s, interim_s), 3),
                    "interim rule, same run (medians)")
        paired = statistics.median(p.round_ratios) if p.round_ratios else None
        spread = f"{min(p.round_ratios):.2f}-{max(p.round_ratios):.2f}" if p.round_ratios else "-"
        out.add_row("", "", fmt(paired, 3), f"interim rule, same round (median of rounds; {spread})")
        out.add_row("", "", fmt(ratio(engine_s, raw), 3), "raw getone→send_and_wait→commit, 1 hop")
        out.add_row("", "", fmt(ratio(engine_s, chain), 3), "raw, 2 chained hops (the hub's shape)")
        out.add_row("pipeline, interim rule, events/s", fmt(interim_s), fmt(ratio(interim_s, raw), 3),
                    "raw, 1 hop")
        out.add_row("", "", fmt(ratio(interim_s, chain), 3), "raw, 2 chained hops")
        out.add_row("pipeline, interim rule + consent gather, events/s", fmt(gather_s),
                    fmt(ratio(gather_s, interim_s), 3), "interim rule (no gather)")
        out.add_row("pipeline, engine, consent cache miss on every event", fmt(miss_s), fmt(ratio(miss_s, engine_s), 3),
                    "engine (cached)")
        out.add_row("", "", fmt(ratio(miss_s, interim_s), 3), "interim rule (no gather)")
        out.add_row("raw ceiling, 1 hop / 2 hops, events/s", f"{fmt(raw)} / {fmt(chain)}", "", "")
    return out


def notes(results: Results) -> list[str]:
    """Context lines printed under the table."""
    lines: list[str] = []
    d = results.decide
    if d is not None:
        lines.append(f"decide: {d.patients} patients, {d.consents} consents ({d.revoked} revoked), per patient "
                     f"{d.consents_per_patient}; {d.events} events x 3 candidate CBOs = "
                     f"{d.warm.count if d.warm else 0} decisions: {d.permits} permits, {d.denies} denies.")
        lines.append(f"event mix: {d.event_mix}")
        lines.append(f"deciding rules: {d.rules}")
        lines.append(f"warm vs cold answers differing: {d.mismatches} (must be 0). CPU-second rates: warm "
                     f"{fmt(d.warm.per_cpu_s if d.warm else None, 0)}/s, cold "
                     f"{fmt(d.cold.per_cpu_s if d.cold else None, 0)}/s. Building the region took {d.build_s:.1f} s.")
    p = results.pipeline
    if p is not None:
        for variant in VARIANTS:
            runs = ", ".join(f"{t.per_s:,.0f}" for t in p.runs.get(variant, []))
            inside = ", ".join(f"{us:.1f}" for us in p.decide_us.get(variant, []))
            lines.append(f"pipeline {variant}: runs {runs} events/s; this process's CPU {fmt(p.cpu_ms(variant), 2)} "
                         f"ms/event (median); inside the decider {inside} µs/decision; consent loads from SQL per "
                         f"run {p.loads.get(variant, [])}")
        lines.append(f"order: {' → '.join(p.order)}; {p.consents_posted} consents posted before the runs")
        if p.dlq_records:
            lines.append(f"WARNING: {p.dlq_records} records were dead-lettered during the runs")
    lines.append(f"total {results.total_s:.1f} s")
    return lines


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.decide",
                                     description="CareHub consent engine: decide() alone; pipeline engine vs interim.")
    parser.add_argument("--patients", type=int, default=10_000, help="patients in the region (default 10000)")
    parser.add_argument("--events", type=int, default=20_000, help="events to decide, 3 decisions each (default 20000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per figure, best kept (default 3)")
    parser.add_argument("--seed", type=int, default=5, help="random seed of the region (default 5)")
    parser.add_argument("--pipeline-events", type=int, default=1500, help="events per pipeline run (default 1500)")
    parser.add_argument("--rounds", type=int, default=3, help="pipeline runs per variant (default 3)")
    parser.add_argument("--consent-patients", type=int, default=100,
                        help=f"bench patients (of {PATIENTS}) given a consent before the pipeline runs (default 100)")
    parser.add_argument("--sections", default="decide,pipeline", help="comma-separated subset of decide,pipeline")
    args = parser.parse_args(argv)
    sections = frozenset(s.strip() for s in str(args.sections).split(",") if s.strip())
    if not sections or not sections <= {"decide", "pipeline"}:
        parser.error("--sections takes decide and/or pipeline")
    counts = (args.patients, args.events, args.repeats, args.pipeline_events, args.rounds)
    if min(counts) < 1 or args.consent_patients < 0:
        parser.error("counts must be positive")
    return Options(patients=args.patients, events=args.events, repeats=args.repeats, seed=args.seed,
                   pipeline_events=args.pipeline_events, rounds=args.rounds, consent_patients=args.consent_patients,
                   sections=sections)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m bench.decide``."""
    options = parse_args(argv)
    logs.configure(level="WARNING")
    results = asyncio.run(run(options, Console(stderr=True)))
    pipeline_bench.print_report(table(results), notes(results), summary(results, options))


if __name__ == "__main__":
    main()
