"""The route stage with the consent engine: consents gathered per patient, consent changes applied in order,
denials audited with the consent's rule, redaction and 42 CFR Part 2 obligations applied at delivery."""

from __future__ import annotations

import orjson
import pytest

from hub import events
from hub.consent import labels as lbl
from hub.consent.decision import Decision, Obligation, Recipient, Verdict
from hub.consent.engine import PART2_NOTICE, RULE_PART2
from hub.consent.model import OPTOUT, Policies
from hub.consent.redaction import PROFILE_CBO, PROFILE_FULL, REDACTED_LABEL
from hub.delivery import partner_view
from hub.events import HubEvent, RoutingFacts
from hub.pipeline import route
from hub.topics.registry import EVENTS
from tests.consent.helpers import PERMIT, consent, prov
from tests.fakes import FakeAuditLog, FakeConsentSource, FakeDirectory, FakePublisher, FakeSequencer
from tests.records import TEST_PROOF, cloud_event, hub_event, record_of

CBO_A = Recipient(partner_id="cbo-a", kind="cbo", organization="Organization/cbo-a")
PATIENT = "hp-9"
SUD = "http://terminology.hl7.org/CodeSystem/v3-ActCode|SUD"
decide = route.engine_decider(Policies())


def consent_event(status: str = "active", *, resource_id: str = "optout-1") -> HubEvent:
    body = {
        "resourceType": "Consent", "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": {"system": "urn:mrn", "value": "MRN-1"}},
        "dateTime": "2026-01-01T00:00:00Z",
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
        "provision": {"type": "deny"},
    }
    facts = RoutingFacts(
        resource_type="Consent", resource_id=resource_id, sender="operator", patient_source="urn:mrn|MRN-1",
        hub_patient_id=PATIENT, status=status, event_kind="consent-change",
    )
    return HubEvent(facts=facts, body=orjson.dumps(body).decode())


def labelled_referral(*labels: str) -> HubEvent:
    event = hub_event(hub_patient_id=PATIENT)
    body = orjson.loads(event.body)
    body["meta"] = {"security": [{"system": s, "code": c} for s, _, c in (x.partition("|") for x in labels)]}
    body["note"] = [{"text": "clinical detail a CBO does not need"}]
    return HubEvent(facts=event.facts.model_copy(update={"security_labels": labels}), body=orjson.dumps(body).decode())


async def run(batch: list[HubEvent], consents: FakeConsentSource) -> tuple[FakeAuditLog, FakePublisher]:
    audit, publisher = FakeAuditLog(), FakePublisher()
    records = [record_of(EVENTS.name, e, cloud_event(f"e{i}")) for i, e in enumerate(batch)]
    await route.route(records, decide=decide, directory=FakeDirectory([CBO_A]), consents=consents, audit=audit,
                      sequencer=FakeSequencer(), publisher=publisher, proof=TEST_PROOF)
    return audit, publisher


async def test_under_the_opt_out_default_an_addressed_referral_is_delivered() -> None:
    audit, publisher = await run([hub_event(hub_patient_id=PATIENT)], FakeConsentSource())
    assert ["partner.cbo-a"] == [t for t, *_ in publisher.published]
    assert [("permit", "policy:cbo-referral-addressed")] == [(r.verdict, r.rule) for r in audit.records]


async def test_a_consent_change_is_applied_before_the_patients_next_event_in_the_same_batch() -> None:
    consents = FakeConsentSource()
    audit, publisher = await run([consent_event(), hub_event(hub_patient_id=PATIENT)], consents)

    assert [PATIENT] == consents.changes
    [carried] = consents.consents[PATIENT]
    assert ("optout-1", PATIENT) == (carried.id, carried.patient)
    assert [] == publisher.published
    [denied] = audit.records  # the consent-change event itself is audited for no one
    assert ("e1", "deny") == (denied.event_id, denied.verdict)
    assert denied.rule.startswith("consent:optout-1")


async def test_a_revocation_lets_the_next_referral_through_again() -> None:
    consents = FakeConsentSource()
    batch = [consent_event(), hub_event(hub_patient_id=PATIENT), consent_event("inactive"),
             hub_event(hub_patient_id=PATIENT)]
    audit, publisher = await run(batch, consents)
    assert [("e1", "deny"), ("e3", "permit")] == [(r.event_id, r.verdict) for r in audit.records]
    assert ["e3"] == [h["ce_id"] for *_, h in publisher.published]


async def test_an_opt_out_of_another_patient_does_not_apply() -> None:
    consents = FakeConsentSource({"hp-other": (consent("c9", base=OPTOUT, patient="hp-other"),)})
    _, publisher = await run([hub_event(hub_patient_id=PATIENT)], consents)
    assert 1 == len(publisher.published)


async def test_sud_data_without_a_part2_consent_is_denied() -> None:
    audit, publisher = await run([labelled_referral(SUD)], FakeConsentSource())
    assert [] == publisher.published
    assert [("deny", RULE_PART2)] == [(r.verdict, r.rule) for r in audit.records]


async def test_a_part2_disclosure_carries_the_notice_and_the_consent_as_headers_and_is_redacted() -> None:
    part2 = consent(
        "p2", base=OPTOUT, patient=PATIENT,
        root=prov(children=(prov(PERMIT, actor="Organization/cbo-a", label=lbl.SUD, purpose="CAREMGT"),)),
    )
    audit, publisher = await run([labelled_referral(SUD)], FakeConsentSource({PATIENT: (part2,)}))
    assert ["permit"] == [r.verdict for r in audit.records], audit.records
    [(_, _, value, headers)] = publisher.published
    assert PART2_NOTICE == headers[partner_view.PART2_NOTICE_HEADER]
    assert "Consent/p2" == headers[partner_view.PART2_CONSENT_HEADER]
    delivered = orjson.loads(value)
    assert "note" not in delivered
    assert REDACTED_LABEL in delivered["meta"]["security"]


def test_the_full_profile_delivers_the_original_bytes_without_parsing() -> None:
    body = '{"resourceType": "ServiceRequest",  "note": [{"text": "x"}]}'
    assert body.encode() == partner_view.delivered_body(body, PROFILE_FULL)


def test_a_profile_that_removes_nothing_keeps_the_original_bytes() -> None:
    body = '{"resourceType": "ServiceRequest", "status": "active"}'
    assert body.encode() == partner_view.delivered_body(body, PROFILE_CBO)
    redacted = orjson.loads(partner_view.delivered_body('{"resourceType": "ServiceRequest", "note": []}', PROFILE_CBO))
    assert "note" not in redacted


@pytest.mark.parametrize(
    ("obligations", "profile", "headers"),
    [
        ((), PROFILE_FULL, {}),
        ((Obligation("redaction-profile", "cbo"),), "cbo", {}),
        (
            (Obligation("part2-redisclosure-notice", "N"), Obligation("part2-consent", "Consent/x")),
            PROFILE_FULL,
            {"hub_part2_notice": "N", "hub_part2_consent": "Consent/x"},
        ),
    ],
)
def test_obligations_become_a_profile_and_headers(
    obligations: tuple[Obligation, ...], profile: str, headers: dict[str, str]
) -> None:
    decision = Decision(verdict=Verdict.PERMIT, rule="r", reason="r", obligations=obligations)
    assert profile == partner_view.redaction_profile(decision)
    assert headers == partner_view.obligation_headers(decision)


def test_an_unreadable_consent_event_only_invalidates() -> None:
    event = consent_event()
    broken = event.model_copy(update={"body": "[]"})
    assert route.carried_consent(broken) is None
    assert route.carried_consent(event.model_copy(update={"body": "{nope"})) is None
    assert "optout-1" == (route.carried_consent(event) or consent("x")).id
    assert events.decode(events.encode(event)) == event


async def test_the_consents_of_a_batch_are_prefetched_once_for_the_patients_it_may_disclose_about() -> None:
    consents = FakeConsentSource()
    batch = [consent_event(), hub_event(hub_patient_id=PATIENT), hub_event(hub_patient_id="hp-2"),
             hub_event(hub_patient_id="hp-3", performer="Organization/nobody", sender="cbo-a")]
    await run(batch, consents)
    # hp-3's referral comes from the only CBO, so it has no candidate and needs no consents
    assert [frozenset({PATIENT, "hp-2"})] == consents.prefetched
