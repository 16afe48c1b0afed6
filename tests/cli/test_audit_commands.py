"""``carehub audit disclosures`` and ``carehub audit export`` as an operator runs them (a real subprocess)."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from hub.control import crosswalk, db, partners, resources
from hub.control.audit import DecisionRecord, record_decisions
from tests.cli.test_carehub_command import assert_one_line_error, run_cli

MRN = "urn:oid:1.2.3|MRN-1"


async def _seed(url: str) -> str:
    """A patient with two identifiers, a CBO, and three decisions about the patient (two permits, one deny)."""
    await db.upgrade(url)
    engine = db.make_engine(url)
    try:
        async with db.make_sessionmaker(engine)() as session:
            await resources.link_patient_sources(session, [[MRN, "urn:oid:9.9|X-7"]])
            hub_patient_id = await crosswalk.resolve_patient(session, MRN)
            await partners.create_partner(session, id="foodbank", kind="cbo", name="Food Bank",
                                          organization="Organization/foodbank")
            now = datetime.now(UTC)
            permit = DecisionRecord(
                event_id="00000000-0000-4000-8000-000000000001", hub_patient_id=hub_patient_id,
                recipient_id="foodbank", verdict="permit", rule="cbo-referral-addressed",
                reason="The referral names Food Bank as performer.", purpose="CAREMGT",
                resource_type="ServiceRequest", decided_at=now - timedelta(days=3),
            )
            await record_decisions(session, [
                permit,
                replace(permit, event_id="00000000-0000-4000-8000-000000000002", decided_at=now - timedelta(days=2)),
                replace(permit, recipient_id="housing", verdict="deny", rule="policy:no-sharing-rule"),
            ])
    finally:
        await engine.dispose()
    return hub_patient_id


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[dict[str, str], str]:
    """Environment naming a seeded SQLite control plane, and the patient's hub id."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    hub_patient_id = asyncio.run(_seed(url))
    return {"HUB_DATABASE_URL": url, "COLUMNS": "250"}, hub_patient_id


def test_disclosures_prints_the_patients_accounting_as_a_table(seeded: tuple[dict[str, str], str],
                                                               tmp_path: Path) -> None:
    env, hub_patient_id = seeded
    result = run_cli(["audit", "disclosures", "--patient", "urn:oid:9.9|X-7"], env, tmp_path)
    assert 0 == result.returncode, result.stderr
    assert f"Accounting of disclosures for {hub_patient_id}" in result.stdout
    assert "2 disclosure(s)" in result.stdout
    assert "Food Bank (foodbank)" in result.stdout
    assert "housing" not in result.stdout


def test_disclosures_json_is_the_admin_apis_accounting(seeded: tuple[dict[str, str], str], tmp_path: Path) -> None:
    env, hub_patient_id = seeded
    result = run_cli(["audit", "disclosures", "--patient", MRN, "--json"], env, tmp_path)
    assert 0 == result.returncode, result.stderr
    body = json.loads(result.stdout)
    assert {"hub_patient_id": hub_patient_id, "linked_identifiers": 2} == body["patient"]
    assert (2, None) == (body["count"], body["next"])
    assert ["foodbank", "foodbank"] == [line["recipient"]["id"] for line in body["disclosures"]]


def test_disclosures_of_an_unknown_patient_is_empty(seeded: tuple[dict[str, str], str], tmp_path: Path) -> None:
    env, _ = seeded
    result = run_cli(["audit", "disclosures", "--patient", "urn:x|nobody", "--json"], env, tmp_path)
    assert 0 == result.returncode, result.stderr
    assert [] == json.loads(result.stdout)["disclosures"]


def test_a_bad_date_is_a_one_line_error(seeded: tuple[dict[str, str], str], tmp_path: Path) -> None:
    env, _ = seeded
    result = run_cli(["audit", "disclosures", "--patient", MRN, "--since", "2024-05-01T08:00"], env, tmp_path)
    assert_one_line_error(result, "since", "offset")


def test_export_writes_ndjson_of_valid_audit_events(seeded: tuple[dict[str, str], str], tmp_path: Path) -> None:
    env, _ = seeded
    result = run_cli(["audit", "export"], env, tmp_path)
    assert 0 == result.returncode, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    for event in events:
        AuditEvent.model_validate(event)
    assert ["110106", "110106", "110113"] == sorted(event["type"]["code"] for event in events)

    target = tmp_path / "out" / "audit.ndjson"
    target.parent.mkdir()
    only = run_cli(["audit", "export", "--patient", MRN, "--verdict", "deny", "--output", str(target)], env, tmp_path)
    assert 0 == only.returncode, only.stderr
    assert "wrote 1 AuditEvent(s)" in only.stderr
    [line] = target.read_text(encoding="utf-8").splitlines()
    assert "4" == json.loads(line)["outcome"]
