"""The route stage with rosters: Encounter events go only to the partners that have the patient on their
roster (decided, audited, redacted like every event), referrals keep going to their addressed performer."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import orjson

from hub.consent.decision import Recipient
from hub.consent.model import OPTIN, OPTOUT, Policies
from hub.events import HubEvent, RoutingFacts
from hub.pipeline import route
from hub.topics.registry import EVENTS
from tests.consent.helpers import DENY, consent, prov
from tests.fakes import FakeAuditLog, FakeConsentSource, FakeDirectory, FakePublisher, FakeRosterSource, FakeSequencer
from tests.records import TEST_PROOF, cloud_event, hub_event, record_of

PATIENT = "hp-7"
OTHER_PATIENT = "hp-8"
NPI = "http://hl7.org/fhir/sid/us-npi|1234567893"
CBO_A = Recipient(partner_id="cbo-a", kind="cbo", organization="Organization/cbo-a", identifiers=(NPI,))
CBO_B = Recipient(partner_id="cbo-b", kind="cbo", organization="Organization/cbo-b")
HOSP_A = Recipient(partner_id="hosp-a", kind="hospital", organization="Organization/hosp-a")
HOSP_B = Recipient(partner_id="hosp-b", kind="hospital", organization="Organization/hosp-b")
EVERYONE = [CBO_A, CBO_B, HOSP_A, HOSP_B]
decide = route.engine_decider(Policies())


def adt(kind: str = "admit", *, patient: str = PATIENT, sender: str = "hosp-a") -> HubEvent:
    """An Encounter event of ``kind`` from ``sender``, with details a CBO must not see."""
    body = {
        "resourceType": "Encounter", "id": "enc-1", "status": "in-progress" if kind == "admit" else "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"identifier": {"system": "urn:mrn", "value": "MRN-7"}},
        "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "183452005"}]}],
        "hospitalization": {"admitSource": {"text": "emergency department"}},
        "location": [{"location": {"display": "Psychiatric ward"}}],
        "serviceProvider": {"reference": "Organization/hosp-a"},
    }
    facts = RoutingFacts(
        resource_type="Encounter", resource_id="enc-1", sender=sender, patient_source="urn:mrn|MRN-7",
        hub_patient_id=patient, status=body["status"], event_kind=kind,
    )
    return HubEvent(facts=facts, body=orjson.dumps(body).decode())


async def run(
    batch: list[HubEvent],
    rosters: FakeRosterSource,
    consents: FakeConsentSource | None = None,
    partners: list[Recipient] | None = None,
) -> tuple[FakeAuditLog, FakePublisher]:
    audit, publisher = FakeAuditLog(), FakePublisher()
    records = [record_of(EVENTS.name, e, cloud_event(f"e{i}")) for i, e in enumerate(batch)]
    await route.route(
        records, decide=decide, directory=FakeDirectory(partners or EVERYONE), consents=consents or FakeConsentSource(),
        audit=audit, sequencer=FakeSequencer(), publisher=publisher, proof=TEST_PROOF, rosters=rosters,
    )
    return audit, publisher


async def test_an_admit_of_a_rostered_patient_reaches_that_cbo_redacted_and_no_other_partner() -> None:
    rosters = FakeRosterSource()
    rosters.add("cbo-a", PATIENT)
    rosters.add("cbo-b", OTHER_PATIENT)

    audit, publisher = await run([adt("admit")], rosters)

    assert ["partner.cbo-a"] == [topic for topic, *_ in publisher.published]
    [(_, key, value, headers)] = publisher.published
    assert (PATIENT.encode(), "e0", "1") == (key, headers["ce_id"], headers["ce_sequence"])
    delivered = orjson.loads(value)
    assert ("Encounter", "in-progress") == (delivered["resourceType"], delivered["status"])
    assert {"hospitalization", "location", "type"}.isdisjoint(delivered), delivered
    # Only the rostered CBO was a candidate: the others get no decision at all.
    decided = [(r.recipient_id, r.verdict, r.rule) for r in audit.records]
    assert [("cbo-a", "permit", "policy:cbo-adt-roster")] == decided
    assert "is on the roster of partner cbo-a" in audit.records[0].reason


async def test_a_discharge_reaches_every_cbo_that_has_the_patient_on_its_roster() -> None:
    rosters = FakeRosterSource()
    rosters.add("cbo-a", PATIENT)
    rosters.add("cbo-b", PATIENT)
    audit, publisher = await run([adt("discharge")], rosters)
    assert {"partner.cbo-a", "partner.cbo-b"} == {topic for topic, *_ in publisher.published}
    assert {("cbo-a", "permit"), ("cbo-b", "permit")} == {(r.recipient_id, r.verdict) for r in audit.records}


async def test_an_admit_of_a_patient_on_no_roster_reaches_no_one_and_needs_no_decision() -> None:
    rosters = FakeRosterSource()
    rosters.add("cbo-b", OTHER_PATIENT)
    audit, publisher = await run([adt("admit")], rosters)
    assert [] == publisher.published
    assert [] == audit.records
    assert [frozenset({PATIENT})] == rosters.asked  # one roster read for the batch


async def test_without_a_roster_source_encounter_events_reach_no_one() -> None:
    audit, publisher = FakeAuditLog(), FakePublisher()
    await route.route(
        [record_of(EVENTS.name, adt(), cloud_event("e0"))], decide=decide, directory=FakeDirectory(EVERYONE),
        consents=FakeConsentSource(), audit=audit, sequencer=FakeSequencer(), publisher=publisher, proof=TEST_PROOF,
    )
    assert ([], []) == (publisher.published, audit.records)


async def test_a_transfer_is_outside_the_cbo_policy_so_it_is_denied_and_audited() -> None:
    """The default sharing rule gives a CBO admit and discharge events only (ADR 0002)."""
    rosters = FakeRosterSource()
    rosters.add("cbo-a", PATIENT)
    audit, publisher = await run([adt("transfer")], rosters)
    assert [] == publisher.published
    assert [("cbo-a", "deny", "policy:no-sharing-rule")] == [(r.recipient_id, r.verdict, r.rule) for r in audit.records]


async def test_an_opt_out_stops_the_admit_and_the_denial_is_audited_with_the_consent() -> None:
    rosters = FakeRosterSource()
    rosters.add("cbo-a", PATIENT)
    consents = FakeConsentSource({PATIENT: (consent("optout-7", base=OPTOUT, patient=PATIENT),)})
    audit, publisher = await run([adt("admit")], rosters, consents)
    assert [] == publisher.published
    [denied] = audit.records
    assert ("cbo-a", "deny") == (denied.recipient_id, denied.verdict)
    assert denied.rule.startswith("consent:optout-7")


async def test_a_consent_that_names_the_cbo_only_by_its_identifier_still_applies() -> None:
    """The directory lists the CBO's Organization identifiers in ``Recipient.identifiers``."""
    rosters = FakeRosterSource()
    rosters.add("cbo-a", PATIENT)
    no_cbo_a = consent("no-npi", base=OPTIN, patient=PATIENT, root=prov(children=(prov(DENY, actor=NPI),)))
    audit, publisher = await run([adt("admit")], rosters, FakeConsentSource({PATIENT: (no_cbo_a,)}))
    assert [] == publisher.published
    assert [("cbo-a", "deny")] == [(r.recipient_id, r.verdict) for r in audit.records]
    assert audit.records[0].rule.startswith("consent:no-npi")


async def test_taking_the_patient_off_the_roster_stops_later_events() -> None:
    rosters = FakeRosterSource()
    rosters.add("cbo-a", PATIENT)
    _, first = await run([adt("admit")], rosters)
    rosters.remove("cbo-a", PATIENT)
    audit, later = await run([adt("discharge")], rosters)
    assert (1, [], []) == (len(first.published), later.published, audit.records)


async def test_a_rostered_hospital_that_sent_the_event_does_not_get_it_back() -> None:
    rosters = FakeRosterSource()
    rosters.add("hosp-a", PATIENT)
    rosters.add("cbo-a", PATIENT)
    audit, publisher = await run([adt("admit", sender="hosp-a")], rosters)
    assert ["partner.cbo-a"] == [topic for topic, *_ in publisher.published]
    assert ["cbo-a"] == [r.recipient_id for r in audit.records]


async def test_referrals_keep_going_to_their_addressed_cbo_whatever_the_rosters() -> None:
    rosters = FakeRosterSource()
    rosters.add("cbo-b", PATIENT)
    audit, publisher = await run([hub_event(hub_patient_id=PATIENT)], rosters)
    assert ["partner.cbo-a"] == [topic for topic, *_ in publisher.published]
    assert {("cbo-a", "permit"), ("cbo-b", "deny")} == {(r.recipient_id, r.verdict) for r in audit.records}


async def test_a_batch_mixes_patients_in_order_with_one_roster_read() -> None:
    rosters = FakeRosterSource()
    rosters.add("cbo-a", PATIENT)
    rosters.add("cbo-b", OTHER_PATIENT)
    batch = [adt("admit"), adt("admit", patient=OTHER_PATIENT), adt("discharge")]
    _, publisher = await run(batch, rosters)
    assert [("partner.cbo-a", "e0"), ("partner.cbo-b", "e1"), ("partner.cbo-a", "e2")] == [
        (topic, headers["ce_id"]) for topic, _, _, headers in publisher.published
    ]
    assert [frozenset({PATIENT, OTHER_PATIENT})] == rosters.asked


def test_candidates_mark_rostered_partners_and_offer_encounters_to_no_one_else() -> None:
    facts = adt().facts
    [chosen] = route.candidates(facts, EVERYONE, frozenset({"cbo-b"}))
    assert ("cbo-b", True) == (chosen.partner_id, chosen.on_roster)
    assert [] == route.candidates(facts, EVERYONE)


def test_candidates_of_a_referral_are_every_cbo_and_a_partner_named_by_one_of_its_identifiers() -> None:
    facts = hub_event(performer=NPI).facts
    chosen = route.candidates(facts, EVERYONE, frozenset({"cbo-a"}))
    assert [("cbo-a", True), ("cbo-b", False)] == [(r.partner_id, r.on_roster) for r in chosen]
    named = route.candidates(
        hub_event(performer="urn:hosp|B").facts, [*EVERYONE, Recipient("hosp-c", "hospital", "Organization/c",
                                                                       identifiers=("urn:hosp|B",))],
    )
    assert ["cbo-a", "cbo-b", "hosp-c"] == [r.partner_id for r in named]
