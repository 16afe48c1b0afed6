"""Schemathesis over the hub's own ``/openapi.json``: every operation, with data that fits the schema and
data that does not, must never answer a 5xx, and must refuse (4xx) every request the schema says is
invalid (issue 9: a fuzzer's ``²`` in a numeric query parameter used to be a 500).

The app is the real one (``hub.app.build_http_app``) on a migrated SQLite control plane with a
registered hospital and CBO, called in process (ASGI) with the operator's token, so most operations get
past authentication. Generation is reproducible (fixed seed, deterministic) and bounded (examples per
operation), so a failure shows again on the next run and the whole test stays within about a minute.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection, status_code_conformance

from tests.contract.hub_http import ADMIN_TOKEN, HubHttp, build_hub_http, database_url, prepare_control_plane

SEED = 20_260_509
MAX_EXAMPLES = 100

#: Strings that look like numbers or dates to a hand-written parser but are not what it expects (issue 9's
#: '²' passes str.isdigit() and fails int()), and values at the ends of the ranges the hub stores.
TRICKY = [
    "²", "١٢", "Ⅻ", "1e3", " 7", "-1", "0", "", "9" * 30, str(2**63), "0x10", "1_000",
    "0001-01-01T00:00:00+05:00", "9999-12-31", "9999-12-31T23:59:59-05:00", "2024-02-30", "urn:x|²",
]

CONFIG = {
    "seed": SEED,
    "dictionaries": {"tricky": {"values": TRICKY}},
    "generation": {
        "dictionaries": {"string": {"dictionary": "tricky", "probability": 0.25}},
        "mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "unique-inputs": True,
        # the operator token is sent with every case; unknown query parameters are ignored, as HTTP APIs do
        "with-security-parameters": False, "allow-extra-parameters": False,
    },
    "phases": {
        "examples": {"enabled": True},
        "coverage": {"enabled": True},
        "fuzzing": {"enabled": True},
        "stateful": {"enabled": False},
    },
    "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
}


# The operations come from an app built only for its OpenAPI document (an in-memory database it never
# opens): pytest needs them when it collects. Each case is sent to the app of the ``hub_app`` fixture.
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", build_hub_http("sqlite+aiosqlite://", {}).app, config=schemathesis.Config.from_dict(CONFIG)
)


@pytest.fixture(scope="module")
def hub_app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """The app on a prepared control plane (a hospital, a CBO); its requests run on schemathesis's loop."""
    url = database_url(tmp_path_factory.mktemp("openapi-fuzz"))
    return build_hub_http(url, asyncio.run(prepare_control_plane(url))).app


@schema.parametrize()
def test_no_operation_answers_5xx_or_accepts_what_its_schema_forbids(
    case: schemathesis.Case[Any], hub_app: FastAPI
) -> None:
    # every operation (admin API, FHIR API, CDS Hooks service) documents every status it answers
    checks: list[schemathesis.CheckFunction] = [not_a_server_error, negative_data_rejection, status_code_conformance]
    case.call_and_validate(app=hub_app, headers=HubHttp.bearer(ADMIN_TOKEN), checks=checks)
