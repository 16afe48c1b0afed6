"""Reads of the audit for the accounting of disclosures and the AuditEvent export, on SQLite and PostgreSQL.

Keyset-paged ``page_decisions`` (order, window bounds, filters, pages that neither skip nor repeat),
the read-only patient lookup through the crosswalk, the resource an event carried, and
``hub.admin.accounting.read_accounting`` on top of them (six-year window, several sources of one
patient, denies excluded).
"""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from hub.admin.accounting import accounting_window, read_accounting
from hub.control import crosswalk, partners, resources
from hub.control.audit import (
    AuditKey,
    DecisionRecord,
    find_patient,
    page_decisions,
    record_decisions,
)
from hub.control.models import PatientIdentityRow
from hub.errors import InvalidInput

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
PATIENT = "hp-" + "a" * 32
OTHER = "hp-" + "b" * 32
BASE = DecisionRecord(
    event_id="evt-0",
    hub_patient_id=PATIENT,
    recipient_id="foodbank",
    verdict="permit",
    rule="cbo-referral-addressed",
    reason="The referral names Food Bank as performer.",
    purpose="CAREMGT",
    resource_type="ServiceRequest",
    decided_at=T0,
)


def decision(n: int, *, at: datetime = T0, **changes: Any) -> DecisionRecord:
    """The n-th test decision (own event id), decided at ``at``."""
    return replace(BASE, event_id=f"evt-{n}", decided_at=at, **changes)


async def test_a_page_is_ordered_by_decision_time_then_insertion_not_by_insertion_alone(
    session: AsyncSession,
) -> None:
    late, early, tie = decision(1, at=T0 + timedelta(hours=1)), decision(2, at=T0), decision(3, at=T0)
    await record_decisions(session, [late, early, tie])
    assert [early, tie, late] == [entry.record for entry in await page_decisions(session)]


async def test_since_is_inclusive_and_until_exclusive_to_the_microsecond(session: AsyncSession) -> None:
    tick = timedelta(microseconds=1)
    before, at_since, inside, at_until = (
        decision(1, at=T0 - tick), decision(2, at=T0), decision(3, at=T0 + timedelta(days=1)),
        decision(4, at=T0 + timedelta(days=2)),
    )
    await record_decisions(session, [before, at_since, inside, at_until])
    page = await page_decisions(session, since=T0, until=T0 + timedelta(days=2))
    assert [at_since, inside] == [entry.record for entry in page]


async def test_the_patient_and_verdict_filters_keep_only_that_patients_permits(session: AsyncSession) -> None:
    permit = decision(1)
    deny = decision(2, verdict="deny", rule="policy:no-sharing-rule", recipient_id="housing")
    other_patient = decision(3, hub_patient_id=OTHER)
    await record_decisions(session, [permit, deny, other_patient])
    page = await page_decisions(session, hub_patient_id=PATIENT, verdict="permit")
    assert [permit] == [entry.record for entry in page]
    assert [permit, deny] == [e.record for e in await page_decisions(session, hub_patient_id=PATIENT)]
    assert [deny] == [e.record for e in await page_decisions(session, verdict="deny")]


async def test_pages_cover_every_row_once_even_when_many_share_one_instant(session: AsyncSession) -> None:
    rows = [decision(n, at=T0 + timedelta(seconds=n // 3)) for n in range(10)]
    await record_decisions(session, rows)
    seen: list[DecisionRecord] = []
    after: AuditKey | None = None
    while True:
        page = await page_decisions(session, after=after, limit=3)
        if not page:
            break
        seen.extend(entry.record for entry in page)
        after = page[-1].key
    assert rows == seen


async def test_a_decision_appended_while_paging_does_not_shift_the_pages(session: AsyncSession) -> None:
    await record_decisions(session, [decision(n, at=T0 + timedelta(minutes=n)) for n in range(4)])
    first = await page_decisions(session, limit=2)
    await record_decisions(session, [decision(99, at=T0 + timedelta(hours=5))])
    second = await page_decisions(session, after=first[-1].key, limit=10)
    assert ["evt-2", "evt-3", "evt-99"] == [entry.record.event_id for entry in second]


async def test_page_arguments_are_checked(session: AsyncSession) -> None:
    with pytest.raises(InvalidInput, match="limit"):
        await page_decisions(session, limit=0)
    with pytest.raises(InvalidInput, match="timezone-aware"):
        await page_decisions(session, since=datetime(2025, 1, 1))  # noqa: DTZ001 - the point of the test


async def _identity_rows(session: AsyncSession) -> int:
    count = await session.scalar(select(func.count()).select_from(PatientIdentityRow))
    await session.commit()
    return int(count or 0)


async def test_find_patient_resolves_any_source_or_the_hub_id_without_creating_anything(
    session: AsyncSession,
) -> None:
    await resources.link_patient_sources(session, [["urn:oid:1.2.3|MRN-1", "urn:oid:9.9|X-7"]])
    by_first = await find_patient(session, "urn:oid:1.2.3|MRN-1")
    assert by_first is not None
    assert ("urn:oid:1.2.3|MRN-1", "urn:oid:9.9|X-7") == by_first.sources
    assert by_first == await find_patient(session, "urn:oid:9.9|X-7")
    assert by_first == await find_patient(session, by_first.hub_patient_id)
    assert await find_patient(session, "urn:oid:1.2.3|NOBODY") is None
    assert 2 == await _identity_rows(session)


async def test_a_hub_patient_id_the_crosswalk_does_not_hold_still_matches_with_no_sources(
    session: AsyncSession,
) -> None:
    found = await find_patient(session, PATIENT)
    assert found is not None
    assert (PATIENT, ()) == (found.hub_patient_id, found.sources)


# --- read_accounting: the accounting of disclosures on top of the reads --------------------------------

NOW = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
SIX_YEARS_AGO = datetime(2020, 11, 24, 9, 30, tzinfo=UTC)


async def _patient_with_two_sources(session: AsyncSession) -> str:
    await resources.link_patient_sources(session, [["urn:oid:1.2.3|MRN-1", "urn:oid:9.9|X-7"]])
    return await crosswalk.resolve_patient(session, "urn:oid:1.2.3|MRN-1")


async def test_the_default_accounting_covers_exactly_the_six_years_before_the_request(session: AsyncSession) -> None:
    hub_patient_id = await _patient_with_two_sources(session)
    tick = timedelta(microseconds=1)
    too_old = decision(1, at=SIX_YEARS_AGO - tick, hub_patient_id=hub_patient_id)
    oldest = decision(2, at=SIX_YEARS_AGO, hub_patient_id=hub_patient_id)
    newest = decision(3, at=NOW - tick, hub_patient_id=hub_patient_id)
    await record_decisions(session, [too_old, oldest, newest])
    found = await read_accounting(session, "urn:oid:9.9|X-7", accounting_window(None, None, now=NOW))
    assert ["evt-2", "evt-3"] == [line["event_id"] for line in found.disclosures]
    asked = await read_accounting(session, "urn:oid:9.9|X-7", accounting_window("2020-01-01", None, now=NOW))
    assert ["evt-1", "evt-2", "evt-3"] == [line["event_id"] for line in asked.disclosures]
    assert asked.window.beyond_six_years


async def test_every_source_of_the_patient_gives_the_same_accounting_without_denies(session: AsyncSession) -> None:
    hub_patient_id = await _patient_with_two_sources(session)
    await partners.create_partner(session, id="foodbank", kind="cbo", name="Food Bank",
                                  organization="Organization/foodbank")
    permit = decision(1, at=NOW - timedelta(days=3), hub_patient_id=hub_patient_id)
    deny = decision(2, at=NOW - timedelta(days=2), hub_patient_id=hub_patient_id, verdict="deny",
                    recipient_id="housing", rule="policy:no-sharing-rule")
    gone = decision(3, at=NOW - timedelta(days=1), hub_patient_id=hub_patient_id, recipient_id="retired-cbo",
                    purpose="PUBHLTH", resource_type="Encounter")
    elsewhere = decision(4, at=NOW - timedelta(days=1), hub_patient_id=OTHER)
    await record_decisions(session, [permit, deny, gone, elsewhere])
    await resources.save_versions(session, [resources.NewVersion(
        resource_type="ServiceRequest", resource_id="sr-1", sender="general",
        content='{"resourceType":"ServiceRequest"}', event_id="evt-1", patient_source="urn:oid:1.2.3|MRN-1")])
    window = accounting_window(None, None, now=NOW)
    answers = [await read_accounting(session, patient, window)
               for patient in ("urn:oid:1.2.3|MRN-1", "urn:oid:9.9|X-7", hub_patient_id)]
    assert answers[0] == answers[1] == answers[2]
    first, second = answers[0].disclosures
    assert {
        "date": "2026-11-21T09:30:00Z", "event_id": "evt-1",
        "recipient": {"id": "foodbank", "name": "Food Bank", "organization": "Organization/foodbank", "kind": "cbo"},
        "description": "referral for a service (ServiceRequest)", "resource_type": "ServiceRequest",
        "resource": "ServiceRequest/sr-1/_history/1",
        "purpose": {"code": "CAREMGT", "display": "care management",
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason"},
        "tpo": True, "rule": "cbo-referral-addressed", "reason": "The referral names Food Bank as performer.",
    } == first
    assert {"id": "retired-cbo", "name": None, "organization": None, "kind": None} == second["recipient"]
    assert (False, None) == (second["tpo"], second["resource"])


async def test_an_unknown_patient_has_an_empty_accounting(session: AsyncSession) -> None:
    await record_decisions(session, [decision(1, at=NOW - timedelta(days=1))])
    found = await read_accounting(session, "urn:oid:1.2.3|NOBODY", accounting_window(None, None, now=NOW))
    assert (None, (), None) == (found.patient, found.disclosures, found.next_after)


async def test_consent_service_answers_are_audited_but_are_not_disclosures(session: AsyncSession) -> None:
    shared = decision(1, at=NOW - timedelta(days=2))
    consulted = decision(2, at=NOW - timedelta(days=1), rule="cds:policy:x")
    await record_decisions(session, [shared, consulted])
    found = await read_accounting(session, PATIENT, accounting_window(None, None, now=NOW))
    assert [shared.event_id] == [line["event_id"] for line in found.disclosures]
    assert 2 == len(await page_decisions(session, hub_patient_id=PATIENT, verdict="permit"))


async def test_the_accounting_pages_with_a_key_and_stops_on_the_last_page(session: AsyncSession) -> None:
    rows = [decision(n, at=NOW - timedelta(days=10 - n)) for n in range(5)]
    await record_decisions(session, rows)
    window = accounting_window(None, None, now=NOW)
    first = await read_accounting(session, PATIENT, window, limit=2)
    second = await read_accounting(session, PATIENT, window, limit=2, after=first.next_after)
    third = await read_accounting(session, PATIENT, window, limit=2, after=second.next_after)
    events = [line["event_id"] for page in (first, second, third) for line in page.disclosures]
    assert [row.event_id for row in rows] == events
    assert third.next_after is None


async def test_the_accounting_read_is_one_range_scan_of_the_patient_verdict_time_index(
    session: AsyncSession,
) -> None:
    """Migration 0004's index answers the accounting page in order: no table scan, no sort.

    3000 decisions of 60 patients, three in four denies, analyzed. On a table this small PostgreSQL
    prefers a bitmap scan plus a sort of the dozen rows, so sequential and bitmap scans are switched off
    for its EXPLAIN: what is checked is that the ordered index scan exists.
    """
    patients = [PATIENT, *(f"hp-{n:032x}" for n in range(1, 60))]
    await record_decisions(session, [
        decision(n, at=T0 + timedelta(minutes=n), hub_patient_id=patients[n % len(patients)],
                 verdict="permit" if n % 4 == 0 else "deny")
        for n in range(3000)
    ])
    await session.execute(text("ANALYZE"))
    await session.commit()
    where = (
        "hub_patient_id = :p AND verdict = 'permit' AND decided_at >= :s AND decided_at < :u "
        "AND (decided_at, id) > (:d, :i) ORDER BY decided_at, id LIMIT 10"
    )
    if session.get_bind().dialect.name == "sqlite":
        params: dict[str, Any] = {"p": PATIENT, "s": "2020", "u": "2030", "d": "2021", "i": 0}
        rows = await session.execute(text(f"EXPLAIN QUERY PLAN SELECT id FROM consent_decisions WHERE {where}"), params)
        plan = " ".join(str(row[-1]) for row in rows)
        assert "TEMP B-TREE" not in plan
    else:
        params = {"p": PATIENT, "s": T0, "u": NOW, "d": T0, "i": 0}
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        await session.execute(text("SET LOCAL enable_bitmapscan = off"))
        rows = await session.execute(text(f"EXPLAIN SELECT id FROM consent_decisions WHERE {where}"), params)
        plan = " ".join(str(row[0]) for row in rows)
        assert "Sort" not in plan
        assert "Filter" not in plan  # every condition, the keyset row comparison included, is an index condition
    await session.rollback()
    assert "ix_consent_decisions_hub_patient_id_verdict_decided_at_id" in plan
