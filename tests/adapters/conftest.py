"""Shared fixtures for the FHIR edge tests: a FastAPI app on the in-memory fakes, and a valid referral."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from hub.adapters.fhir_intake import keyed_resource_id
from hub.adapters.fhir_rest import build_fhir_router, install_fhir_error_handlers
from hub.ports import Principal
from tests.adapters.resource_fakes import FakeReadGate, FakeResourceStore
from tests.fakes import FakeAuthenticator, FakeIngressWriter

HOSPITAL_TOKEN = "hospital-a-token"
HOSPITAL_B_TOKEN = "hospital-b-token"
CBO_TOKEN = "cbo-token"
OPERATOR_TOKEN = "operator-token"
MAX_BODY_BYTES = 64 * 1024
#: The key of server-assigned ids in the edge the tests build (the hub keeps its own in the control plane).
ID_KEY = b"k" * 32


def created_id(sender: str, resource_type: str, body: bytes) -> str:
    """The id the test edge assigns to a create of ``body`` by ``sender``."""
    return keyed_resource_id(ID_KEY, sender, resource_type, body)

FHIR_JSON = "application/fhir+json"

#: A Gravity-style SDOH referral: food-pantry application assistance, addressed to a food bank.
VALID_SERVICE_REQUEST: dict[str, Any] = {
    "resourceType": "ServiceRequest",
    "meta": {
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
    },
    "status": "active",
    "intent": "order",
    "category": [
        {
            "coding": [
                {
                    "system": "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes",
                    "code": "food-insecurity",
                }
            ]
        }
    ],
    "code": {
        "coding": [
            {
                "system": "http://snomed.info/sct",
                "code": "467771000124109",
                "display": "Assistance with application for food pantry program (procédure)",
            }
        ]
    },
    "subject": {"reference": "Patient/123"},
    "requester": {"reference": "Practitioner/9"},
    "performer": [{"reference": "Organization/food-bank"}],
    "authoredOn": "2025-01-15T10:00:00Z",
}


def valid_service_request() -> dict[str, Any]:
    """A fresh deep copy of the valid referral, safe to mutate."""
    return copy.deepcopy(VALID_SERVICE_REQUEST)


def valid_body() -> bytes:
    """The valid referral as indented UTF-8 JSON with a trailing newline (not orjson's compact form)."""
    return orjson.dumps(VALID_SERVICE_REQUEST, option=orjson.OPT_INDENT_2) + b"\n"


def auth(token: str = HOSPITAL_TOKEN, content_type: str = FHIR_JSON) -> dict[str, str]:
    """Request headers for a partner calling with ``token``."""
    return {"Authorization": f"Bearer {token}", "Content-Type": content_type}


def make_authenticator() -> FakeAuthenticator:
    """Two hospitals, one CBO and the operator."""
    return FakeAuthenticator(
        tokens={
            HOSPITAL_TOKEN: Principal(
                kind="hospital", partner_id="hosp-a", organization="Organization/hosp-a"
            ),
            HOSPITAL_B_TOKEN: Principal(
                kind="hospital", partner_id="hosp-b", organization="Organization/hosp-b"
            ),
            CBO_TOKEN: Principal(kind="cbo", partner_id="food-bank", organization="Organization/food-bank"),
            OPERATOR_TOKEN: Principal(kind="operator"),
        }
    )


def make_app(
    ingress: FakeIngressWriter,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    store: FakeResourceStore | None = None,
    reads: FakeReadGate | None = None,
    id_key: bytes = ID_KEY,
) -> FastAPI:
    """The FHIR router mounted at /fhir on a bare app, with the FHIR error handlers installed; ``reads``
    (default: a gate that permits what was delivered, redacted for the caller's kind) decides partners'
    reads of what other partners sent."""
    app = FastAPI()
    app.include_router(
        build_fhir_router(
            authenticator=make_authenticator(),
            ingress=ingress,
            store=store if store is not None else FakeResourceStore(),
            max_body_bytes=max_body_bytes,
            reads=reads if reads is not None else FakeReadGate(),
            id_key=id_key,
        ),
        prefix="/fhir",
    )
    install_fhir_error_handlers(app)
    return app


@dataclass
class Edge:
    """The HTTP client and the fakes behind it."""

    client: httpx.AsyncClient
    ingress: FakeIngressWriter
    store: FakeResourceStore


@pytest.fixture
async def edge() -> AsyncIterator[Edge]:
    """A client on a fresh app whose ingress acknowledges every write and whose store is empty."""
    ingress = FakeIngressWriter()
    store = FakeResourceStore()
    transport = httpx.ASGITransport(app=make_app(ingress, store=store))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        yield Edge(client=client, ingress=ingress, store=store)
