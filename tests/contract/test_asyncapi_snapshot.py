"""The AsyncAPI snapshot in schemas/ is what the code generates: a contract change must be deliberate."""

from __future__ import annotations

from pathlib import Path

import orjson

from hub.topics.asyncapi import asyncapi_json
from hub.topics.registry import CORE_TOPICS, PARTNER_PREFIX

SNAPSHOT = Path(__file__).resolve().parents[2] / "schemas" / "asyncapi.json"


def test_the_asyncapi_snapshot_matches_the_generated_document() -> None:
    assert SNAPSHOT.read_text(encoding="utf-8") == asyncapi_json(), (
        "the event contract changed: review it, then run `carehub asyncapi --write schemas/asyncapi.json`"
    )


def test_the_document_names_every_registry_topic_with_its_payload() -> None:
    document = orjson.loads(asyncapi_json())
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert {*(t.name for t in CORE_TOPICS), f"{PARTNER_PREFIX}{{partner_id}}"} == addresses
    assert {"HubEvent", "RoutingFacts", "DeadLetter", "PartnerResource"} <= set(document["components"]["schemas"])
