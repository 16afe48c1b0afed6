"""Every valid R4 ServiceRequest in the public corpus is accepted and reaches the addressed partner only;
broken input gets its OperationOutcome and writes nothing to hub.ingress."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from hub.adapters.fhir_validation import parse_fhir_json, validate_resource
from hub.errors import InvalidInput
from tests.e2e.conftest import HubClient, read_topic

pytestmark = [pytest.mark.broker, pytest.mark.corpus]


def _performers(data: dict[str, object]) -> list[str]:
    performers = data.get("performer") or []
    assert isinstance(performers, list)
    return [p["reference"] for p in performers if isinstance(p, dict) and "reference" in p]


def _valid_examples(corpus_dir: Path) -> list[Path]:
    valid = []
    for path in sorted((corpus_dir / "fhir-r4-core-examples").glob("ServiceRequest-*.json")):
        try:
            validate_resource(parse_fhir_json(path.read_bytes()), expected_type="ServiceRequest")
        except InvalidInput:
            continue
        valid.append(path)
    return valid


async def test_every_valid_corpus_referral_reaches_its_addressed_partner_and_no_other(
    hub_client: HubClient, corpus_dir: Path
) -> None:
    examples = _valid_examples(corpus_dir)
    assert 20 == len(examples)
    _, hospital_token = await hub_client.add_partner("hosp", "hospital")
    bystander, _ = await hub_client.add_partner("bystander", "cbo")
    partner_of: dict[str, str] = {}
    for n, reference in enumerate(sorted({r for p in examples for r in _performers(orjson.loads(p.read_bytes()))})):
        partner_of[reference], _ = await hub_client.add_partner(f"performer{n}", "cbo", organization=reference)
    assert 3 <= len(partner_of)

    expected: dict[str, set[str]] = defaultdict(set)
    for path in examples:
        body = path.read_bytes()
        answer = await hub_client.post_fhir("ServiceRequest", body, hospital_token)
        assert 201 == answer.status_code, f"{path.name}: {answer.text}"
        event_id = answer.headers["location"].split("/")[3]
        for reference in _performers(orjson.loads(body)):
            expected[partner_of[reference]].add(event_id)

    for partner_id in partner_of.values():
        records = await read_topic(hub_client.hub.bootstrap, f"partner.{partner_id}", expect=len(expected[partner_id]))
        assert expected[partner_id] == {dict(r.headers)["ce_id"].decode() for r in records}, partner_id
    assert [] == await read_topic(hub_client.hub.bootstrap, f"partner.{bystander}", expect=0, settle_s=1.0)


async def _ingress_end(bootstrap: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition("hub.ingress", p) for p in consumer.partitions_for_topic("hub.ingress") or ()]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def test_broken_referrals_get_their_outcome_and_nothing_reaches_ingress(
    hub_client: HubClient, corpus_dir: Path
) -> None:
    _, token = await hub_client.add_partner("hosp", "hospital")
    cbo_id, cbo_token = await hub_client.add_partner("cbo", "cbo")
    good = (corpus_dir / "fhir-r4-core-examples" / "ServiceRequest-example.json").read_bytes()
    data = orjson.loads(good)
    before = await _ingress_end(hub_client.hub.bootstrap)
    assert 3 == len(before)
    cases = [
        (b"{not json", token, "application/fhir+json", 400, "structure"),
        (orjson.dumps({**data, "status": 7}), token, "application/fhir+json", 422, "ServiceRequest.status"),
        (orjson.dumps({**data, "resourceType": "Patient"}), token, "application/fhir+json", 422, "resourceType"),
        (good, token, "text/plain", 415, "not-supported"),
        (good, "wrong-token", "application/fhir+json", 401, "unknown"),
        (good, cbo_token, "application/fhir+json", 403, "forbidden"),
        (b"{" + b" " * 2_000_000 + b"}", token, "application/fhir+json", 413, "too-long"),
    ]
    for body, bearer, content_type, status, marker in cases:
        answer = await hub_client.http.post("/fhir/ServiceRequest", content=body, headers={
            "Authorization": f"Bearer {bearer}", "Content-Type": content_type})
        assert status == answer.status_code, answer.text
        outcome = answer.json()
        assert "OperationOutcome" == outcome["resourceType"]
        assert marker in answer.text
    assert before == await _ingress_end(hub_client.hub.bootstrap)
    assert [] == await read_topic(hub_client.hub.bootstrap, f"partner.{cbo_id}", expect=0, settle_s=0.5)
