"""Public FHIR R4 examples (``$HUB_CORPUS_DIR``) through the ServiceRequest edge.

Every ServiceRequest in ``fhir-r4-core-examples`` (the official 4.0.1 examples package) and the JSON
ServiceRequests of the Gravity SDOH IG are valid R4, so :func:`validate_resource` must accept them
all. Over HTTP they must be created (201) - except those whose subject is display text only
(``{"display": "Jane Doe"}``): valid FHIR, but the hub cannot key or consent-check a referral
without a patient identity, so they get the documented 422 ``required`` at ``ServiceRequest.subject``.
"""



from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from hub.adapters.fhir_validation import parse_fhir_json, validate_resource
from tests.adapters.conftest import auth, make_app
from tests.fakes import FakeIngressWriter

pytestmark = pytest.mark.corpus

FOLDERS = ("fhir-r4-core-examples", "sdoh-clinicalcare/json-draft-2020-11")


def _service_requests() -> list[Any]:
    root = os.environ.get("HUB_CORPUS_DIR")
    if not root:
        return [
            pytest.param(None, marks=pytest.mark.skip(reason="HUB_CORPUS_DIR is not set"), id="no-corpus")
        ]
    found = []
    for folder in FOLDERS:
        for path in sorted((Path(root) / folder).rglob("*.json")):
            try:
                data = orjson.loads(path.read_bytes())
            except orjson.JSONDecodeError:
                continue
            if isinstance(data, dict) and data.get("resourceType") == "ServiceRequest":
                found.append(pytest.param(path, id=path.name))
    if not found:
        return [
            pytest.param(None, marks=pytest.mark.skip(reason="no ServiceRequest examples found"), id="none")
        ]
    return found


EXAMPLES = _service_requests()


def _names_a_patient(data: dict[str, Any]) -> bool:
    subject = data.get("subject") or {}
    return bool(subject.get("reference") or (subject.get("identifier") or {}).get("value"))


def test_corpus_holds_the_expected_examples() -> None:
    """The R4 package has 20 ServiceRequest examples and the SDOH JSON drafts one; none went missing."""
    if not os.environ.get("HUB_CORPUS_DIR"):
        pytest.skip("HUB_CORPUS_DIR is not set")
    assert 21 == len(EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES)
def test_every_corpus_service_request_is_valid_r4(path: Path) -> None:
    """Our validation accepts each official example: no false rejections of valid R4."""
    resource = validate_resource(parse_fhir_json(path.read_bytes()), expected_type="ServiceRequest")
    assert "ServiceRequest" == resource.get_resource_type()


@pytest.mark.parametrize("path", EXAMPLES)
async def test_every_corpus_service_request_is_created(path: Path) -> None:
    """201 and one write, also for a display-only subject (keyed as an unidentified patient of its own)."""
    posted = await asyncio.to_thread(path.read_bytes)
    ingress = FakeIngressWriter()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=make_app(ingress, max_body_bytes=1_048_576)),
        base_url="http://hub.test",
    ) as client:
        response = await client.post("/fhir/ServiceRequest", content=posted, headers=auth())

    assert 201 == response.status_code, response.text
    [(key, _value, _headers)] = ingress.written
    if not _names_a_patient(orjson.loads(posted)):
        assert b":unidentified|" in key
