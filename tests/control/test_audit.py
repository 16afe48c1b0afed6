"""Consent-decision audit: idempotent appends, filters, and a database that refuses UPDATE and DELETE."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.control.audit import DecisionRecord, list_decisions, record_decisions
from hub.errors import InvalidInput
from tests.control.helpers import fetch_all

DECIDED_AT = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
PERMIT = DecisionRecord(
    event_id="evt-1",
    hub_patient_id="hp-aaaa",
    recipient_id="food-bank",
    verdict="permit",
    rule="referral-addressed-to-recipient",
    reason="The referral names Food Bank as performer.",
    purpose="TREAT",
    resource_type="ServiceRequest",
    decided_at=DECIDED_AT,
)
DENY = replace(
    PERMIT,
    recipient_id="housing",
    verdict="deny",
    rule="no-relationship",
    reason="Housing does not serve this patient.",
)


async def test_recorded_decisions_read_back_equal_and_in_order(session: AsyncSession) -> None:
    await record_decisions(session, [PERMIT, DENY])
    assert [PERMIT, DENY] == await list_decisions(session)


async def test_recording_the_same_decisions_again_adds_nothing(session: AsyncSession) -> None:
    await record_decisions(session, [PERMIT, DENY])
    await record_decisions(session, [PERMIT, DENY])
    await record_decisions(session, [DENY, DENY])
    assert [PERMIT, DENY] == await list_decisions(session)


async def test_a_changed_verdict_for_the_same_event_is_recorded_too(session: AsyncSession) -> None:
    revoked = replace(PERMIT, verdict="deny", rule="consent-revoked", reason="The patient revoked consent.")
    await record_decisions(session, [PERMIT])
    await record_decisions(session, [revoked])
    assert [PERMIT, revoked] == await list_decisions(session, event_id="evt-1", recipient_id="food-bank")


async def test_filters_combine_and_limit_caps_the_result(session: AsyncSession) -> None:
    other_patient = replace(PERMIT, event_id="evt-2", hub_patient_id="hp-bbbb")
    await record_decisions(session, [PERMIT, DENY, other_patient])
    assert [other_patient] == await list_decisions(session, hub_patient_id="hp-bbbb")
    assert [PERMIT, DENY] == await list_decisions(session, event_id="evt-1")
    assert [DENY] == await list_decisions(session, hub_patient_id="hp-aaaa", recipient_id="housing")
    assert [PERMIT, DENY] == await list_decisions(session, limit=2)
    assert [] == await list_decisions(session, recipient_id="nobody")


async def test_decided_at_is_stored_in_utc_whatever_the_input_offset(session: AsyncSession) -> None:
    eastern = DECIDED_AT.astimezone(timezone(timedelta(hours=-5)))
    await record_decisions(session, [replace(PERMIT, decided_at=eastern)])
    [stored] = await list_decisions(session)
    assert DECIDED_AT == stored.decided_at
    assert UTC == stored.decided_at.tzinfo


async def test_the_database_rejects_updating_a_decision(session: AsyncSession) -> None:
    await record_decisions(session, [PERMIT])
    with pytest.raises(IntegrityError, match="append-only"):
        await session.execute(text("UPDATE consent_decisions SET verdict = 'deny'"))
    await session.rollback()
    assert [PERMIT] == await list_decisions(session)


async def test_the_database_rejects_deleting_a_decision(session: AsyncSession) -> None:
    await record_decisions(session, [PERMIT, DENY])
    with pytest.raises(IntegrityError, match="append-only"):
        await session.execute(text("DELETE FROM consent_decisions"))
    await session.rollback()
    assert [PERMIT, DENY] == await list_decisions(session)


async def test_recording_nothing_is_allowed(session: AsyncSession) -> None:
    await record_decisions(session, [])
    assert [] == await fetch_all(session, "SELECT id FROM consent_decisions")


@pytest.mark.parametrize(
    ("field", "record"),
    [
        ("verdict", replace(PERMIT, verdict="maybe")),  # type: ignore[arg-type]
        ("decided_at", replace(PERMIT, decided_at=DECIDED_AT.replace(tzinfo=None))),
        ("event_id", replace(PERMIT, event_id="")),
        ("rule", replace(PERMIT, rule="r" * 129)),
        ("reason", replace(PERMIT, reason=" ")),
    ],
)
async def test_an_unstorable_record_is_refused_and_nothing_is_written(
    session: AsyncSession, field: str, record: DecisionRecord
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await record_decisions(session, [PERMIT, record])
    assert field == caught.value.expression
    assert [] == await list_decisions(session)


async def test_a_limit_out_of_range_is_invalid_input(session: AsyncSession) -> None:
    with pytest.raises(InvalidInput) as caught:
        await list_decisions(session, limit=0)
    assert "limit" == caught.value.expression
