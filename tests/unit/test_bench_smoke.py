"""The consent benchmarks import, and their pure helpers work (no timing is asserted)."""

from __future__ import annotations

import math
import random

import orjson

from bench import decide as decide_bench
from bench import revocation
from bench.interim_rule import RULE_ADDRESSED_PERFORMER, RULE_DEFAULT_DENY, interim_decider
from bench.interim_rule import decide as interim_decide
from hub.consent.decision import Recipient
from hub.consent.model import ConsentStatus, Policies, consent_from_fhir
from hub.events import RoutingFacts

CBO = Recipient(partner_id="cbo-a", kind="cbo", organization="Organization/cbo-a")


def test_the_interim_rule_permits_only_the_addressed_performer_of_a_referral() -> None:
    referral = RoutingFacts(resource_type="ServiceRequest", sender="h", performers=("Organization/cbo-a",))
    encounter = RoutingFacts(resource_type="Encounter", sender="h", performers=("Organization/cbo-a",))
    other = RoutingFacts(resource_type="ServiceRequest", sender="h", performers=("Organization/cbo-b",))

    assert RULE_ADDRESSED_PERFORMER == interim_decide(referral, CBO).rule
    assert interim_decide(referral, CBO).permitted
    assert RULE_DEFAULT_DENY == interim_decide(encounter, CBO).rule
    assert not interim_decide(other, CBO).permitted
    assert interim_decider()(referral, CBO, (), decide_bench.YEAR_START).permitted


def test_every_synthetic_consent_kind_is_readable_by_the_engine() -> None:
    rng = random.Random(1)
    for kind, _ in decide_bench.CONSENT_KINDS:
        data = decide_bench.consent_json("c1", "MRN-1", kind, rng, "Organization/cbo-1")
        consent = consent_from_fhir(data, patient="p-1")
        assert consent.base is not None, kind
    for index in range(4):
        assert consent_from_fhir(orjson.loads(decide_bench.pipeline_consent(index))).base is not None


def test_the_region_gives_decisions_that_agree_warm_and_cold() -> None:
    rng = random.Random(2)
    patients = decide_bench.make_patients(50, rng)
    queries, mix = decide_bench.make_queries(patients, 30, rng, "t")

    assert 90 == len(queries)
    assert 30 == sum(mix.values())
    policies = Policies()
    assert decide_bench.decide_all(queries, policies) == decide_bench.decide_all_cold(queries, policies)
    assert any(not q.relevant for q in queries)
    for consents, query, _ in decide_bench.consent_questions(queries, policies):
        assert consents
        assert query.patient is not None


def test_timed_keeps_a_positive_rate() -> None:
    rate = decide_bench.timed(lambda: sum(range(1000)), 1000, 2)

    assert 2 == len(rate.walls)
    assert rate.as_json()["count"] == 1000


def test_the_revocation_consent_is_a_permit_and_its_revocation_inactive() -> None:
    permit = consent_from_fhir(orjson.loads(revocation.permitting_consent("MRN-1")))
    revoked = consent_from_fhir(orjson.loads(revocation.permitting_consent("MRN-1", status="inactive",
                                                                             resource_id="c1")))

    assert ConsentStatus.ACTIVE == permit.status
    assert (ConsentStatus.INACTIVE, "c1") == (revoked.status, revoked.id)
    assert "abc" == revocation.resource_id_of("/fhir/ServiceRequest/abc/_history/1")


def test_a_trial_is_summarised_relative_to_the_revocations_2xx() -> None:
    result = {
        "revocation": {"sent": 10.0, "done": 10.5, "status": 200},
        "referrals": [
            {"index": 0, "sent": 9.0, "done": 9.2, "status": 201, "id": "a"},
            {"index": 1, "sent": 10.1, "done": 10.3, "status": 201, "id": "b"},
            {"index": 2, "sent": 10.6, "done": 10.8, "status": 201, "id": "c"},
        ],
    }
    trial = revocation.summarise(result, {"a": 9.5, "b": 10.9}, {"a": 9.6}, 10.2, {}, 0.0)

    assert (3, 2, 0, 0, 1) == (trial.accepted, trial.delivered, trial.accepted_after_revocation_delivered,
                               trial.sent_after_revocation_delivered, trial.in_flight_during_put_delivered)
    assert math.isclose(trial.last_delivered_accepted_ms, -200.0, abs_tol=1e-6)
    assert math.isclose(trial.last_delivery_left_ms, 400.0, abs_tol=1e-6)
    assert math.isclose(trial.first_denied_accepted_ms, 300.0, abs_tol=1e-6)
    revocation.add_ingress_order(trial, result, {"a": 9.5, "b": 10.9}, {"a": 9.3, "b": 10.4}, 10.35)
    assert 1 == trial.ingress_after_revocation_delivered
    assert (0.0, 1.0, 2.0) == revocation.spread([2.0, math.nan, 0.0, 1.0])
