"""Rosters end to end over the embedded broker: the operator puts a patient on a CBO's roster, a hospital
posts the patient's admission (FHIR Encounter), and the CBO reads it, redacted for a CBO, on its own topic;
a CBO without the patient on its roster receives nothing and is not even asked."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import orjson
import pytest

from tests.e2e.conftest import HubClient, read_topic
from tests.e2e.test_consent_over_tansu import audit_of, event_id_of

pytestmark = pytest.mark.broker

MRN = {"system": "urn:oid:1.2.3", "value": "MRN-ROSTER"}


def admission() -> bytes:
    return orjson.dumps({
        "resourceType": "Encounter", "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "183452005"}]}],
        "subject": {"identifier": MRN},
        "period": {"start": "2026-01-05T10:00:00Z"},
        "hospitalization": {"admitSource": {"text": "emergency department"}},
        "location": [{"location": {"display": "Ward 3"}}],
    })


async def test_an_admission_reaches_the_cbo_that_has_the_patient_on_its_roster_only(hub_client: HubClient) -> None:
    _, hospital_token = await hub_client.add_partner("hosp", "hospital")
    food, _ = await hub_client.add_partner("food", "cbo")
    housing, _ = await hub_client.add_partner("housing", "cbo")
    rostered = await hub_client.http.post(
        f"/admin/v1/partners/{food}/roster", headers=hub_client.admin,
        json={"patient": f"{MRN['system']}|{MRN['value']}"},
    )
    assert 201 == rostered.status_code, rostered.text

    answer = await hub_client.post_fhir("Encounter", admission(), hospital_token)
    assert 201 == answer.status_code, answer.text

    [record] = await read_topic(hub_client.hub.bootstrap, f"partner.{food}", expect=1)
    headers = {key: value.decode() for key, value in record.headers}
    delivered = orjson.loads(record.value)
    assert ("Encounter", "in-progress") == (delivered["resourceType"], delivered["status"])
    assert {"hospitalization", "location", "type"}.isdisjoint(delivered), delivered
    assert "1" == headers["ce_sequence"]
    assert headers["ce_subject"].startswith("Patient/hp-")

    decisions = await audit_of(hub_client, event_id_of(answer))
    assert [(food, "permit", "policy:cbo-adt-roster")] == [(d["recipient"], d["verdict"], d["rule"]) for d in decisions]
    assert [] == await read_topic(hub_client.hub.bootstrap, f"partner.{housing}", expect=1, timeout_s=1.0)
