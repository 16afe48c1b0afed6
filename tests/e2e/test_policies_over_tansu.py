"""The operator's sharing policies from the settings, over the real broker: in an opt-in jurisdiction a
referral without a consent is denied (and audited), one with an opt-in consent is delivered; the admin
API shows the policies in force."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from hub.app import running_hub
from hub.broker.embedded import EmbeddedBroker
from hub.consent.engine import RULE_OPT_IN
from hub.errors import ConfigurationError
from tests.e2e.conftest import HubClient, read_topic, settings_for
from tests.e2e.test_consent_over_tansu import audit_of, event_id_of, on_events, opt_out, referral

pytestmark = pytest.mark.broker

MRN = {"system": "urn:oid:1.2.3", "value": "MRN-OPTIN"}


def opt_in() -> dict[str, Any]:
    consent = opt_out()
    consent["patient"] = {"identifier": MRN}
    consent["policyRule"] = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]
    }
    consent["provision"] = {"type": "permit"}
    return consent


@pytest.fixture
async def opt_in_hub(tansu: EmbeddedBroker, tmp_path: Path) -> AsyncIterator[HubClient]:
    settings = settings_for(tansu.bootstrap, tmp_path, consent_default="opt-in", specific_consent_labels=["HIV"])
    async with (
        running_hub(settings) as hub,
        httpx.AsyncClient(base_url=hub.http_url or "", timeout=30) as http,
    ):
        yield HubClient(hub=hub, http=http, prefix="optin")


async def test_opt_in_denies_without_a_consent_and_delivers_with_one(opt_in_hub: HubClient) -> None:
    hub_client = opt_in_hub
    _, hospital_token = await hub_client.add_partner("hosp", "hospital")
    food, _ = await hub_client.add_partner("food", "cbo")
    performer = f"Organization/{food}"
    admin_token = hub_client.admin["Authorization"].removeprefix("Bearer ")

    without = await hub_client.post_fhir("ServiceRequest", referral(performer, "n", identifier=MRN), hospital_token)
    assert 201 == without.status_code, without.text
    [denied] = await audit_of(hub_client, event_id_of(without))
    assert ("deny", RULE_OPT_IN) == (denied["verdict"], denied["rule"])

    consent = await hub_client.post_fhir("Consent", orjson.dumps(opt_in()), admin_token)
    assert 201 == consent.status_code, consent.text
    await on_events(hub_client, event_id_of(consent))
    with_consent = await hub_client.post_fhir("ServiceRequest", referral(performer, "m", identifier=MRN),
                                              hospital_token)
    [permitted] = await audit_of(hub_client, event_id_of(with_consent))
    assert "permit" == permitted["verdict"]
    records = await read_topic(hub_client.hub.bootstrap, f"partner.{food}", expect=1, settle_s=0.5)
    assert [event_id_of(with_consent)] == [dict(r.headers)["ce_id"].decode() for r in records]

    shown = (await hub_client.http.get("/admin/v1/policies", headers=hub_client.admin)).json()
    assert "opt-in" == shown["jurisdiction_default"]
    assert any(label.endswith("|HIV") for label in shown["labels_needing_a_consent_naming_the_recipient"])
    assert "cbo-adt-roster" in {rule["id"] for rule in shown["sharing_rules"]}


async def test_a_label_the_hub_cannot_place_stops_the_hub_before_it_starts(tmp_path: Path) -> None:
    settings = settings_for("127.0.0.1:1", tmp_path, specific_consent_labels=["NOT-A-LABEL"])
    with pytest.raises(ConfigurationError, match="HUB_SPECIFIC_CONSENT_LABELS"):
        async with running_hub(settings):
            pass


async def test_the_policies_need_the_operator_token(opt_in_hub: HubClient) -> None:
    _, token = await opt_in_hub.add_partner("hosp2", "hospital")
    as_partner = await opt_in_hub.http.get("/admin/v1/policies", headers={"Authorization": f"Bearer {token}"})
    anonymous = await opt_in_hub.http.get("/admin/v1/policies")
    assert (403, 401) == (as_partner.status_code, anonymous.status_code)
