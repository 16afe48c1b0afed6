"""Every Kafka client the hub opens authenticates with the hub's ``ClientSecurity``.

Two proofs: a guard that reads every module under ``hub/`` and fails on a Kafka client constructor (aiokafka,
FastStream's ``KafkaBroker``) or a hub helper that opens one, called without the security (so a new client
added without it fails here), and checks that the clients built by each call site really carry the
protocol, the SASL credentials and the TLS context.
"""

from __future__ import annotations

import ast
import ssl
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import SecretStr

import hub
from hub import demo
from hub.app import build_kafka_broker
from hub.broker import embedded, topics
from hub.broker.client_security import ClientSecurity
from hub.pipeline.publisher import AioKafkaRecordPublisher
from hub.topics.registry import CORE_TOPICS
from tests.records import TEST_PROOF

HUB = Path(hub.__file__).parent
BOOTSTRAP = "kafka.example:9093"

#: aiokafka's client classes: each call must pass ``**<security>.aiokafka_kwargs()``.
AIOKAFKA_CLIENTS = frozenset({"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient"})
#: FastStream's broker and the hub's helpers that open clients: each call must pass ``security``.
SECURITY_TAKERS = frozenset(
    {"KafkaBroker", "AioKafkaRecordPublisher", "ensure_topics", "wait_for_metadata", "build_kafka_broker"}
)
#: Call sites that rightly pass no security, and why.
EXEMPT = {
    ("topics/asyncapi.py", "KafkaBroker"): "builds the AsyncAPI document of the topics; never connects",
    ("broker/embedded.py", "wait_for_metadata"): "waits for the embedded Tansu broker, which has no authentication",
}

SASL_SSL = ClientSecurity(
    protocol="SASL_SSL", mechanism="SCRAM-SHA-512", username="carehub", password=SecretStr("s3cret-test"),
    ssl_context=ssl.create_default_context(),
)


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _passes_security(name: str, call: ast.Call) -> bool:
    if name in AIOKAFKA_CLIENTS:
        return any(
            kw.arg is None and isinstance(kw.value, ast.Call) and _called_name(kw.value) == "aiokafka_kwargs"
            for kw in call.keywords
        )
    if name == "build_kafka_broker" and len(call.args) >= 2:  # (bootstrap, security)
        return True
    return any(kw.arg == "security" for kw in call.keywords)


def unsecured_calls(source: str) -> list[tuple[str, int]]:
    """``(name, line)`` of every Kafka client constructor or client-opening helper called without the security,
    and of every import that renames one (which would hide it from this check)."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            found += [
                (alias.name, node.lineno) for alias in node.names
                if alias.name in AIOKAFKA_CLIENTS | SECURITY_TAKERS and alias.asname not in (None, alias.name)
            ]
        if isinstance(node, ast.Call):
            name = _called_name(node)
            if name in AIOKAFKA_CLIENTS | SECURITY_TAKERS and not _passes_security(name, node):
                found.append((name, node.lineno))
    return found


def client_call_sites() -> dict[tuple[str, str], int]:
    """How many times each (module under hub/, client name) pair is called."""
    sites: dict[tuple[str, str], int] = {}
    for path in sorted(HUB.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and (name := _called_name(node)) in AIOKAFKA_CLIENTS | SECURITY_TAKERS:
                key = (path.relative_to(HUB).as_posix(), name)
                sites[key] = sites.get(key, 0) + 1
    return sites


def test_no_module_of_the_hub_opens_a_kafka_client_without_the_client_security() -> None:
    offenders = []
    for path in sorted(HUB.rglob("*.py")):
        relative = path.relative_to(HUB).as_posix()
        for name, line in unsecured_calls(path.read_text(encoding="utf-8")):
            if (relative, name) not in EXEMPT:
                offenders.append(f"hub/{relative}:{line} {name}")
    assert [] == offenders, "pass the hub's ClientSecurity (hub.broker.client_security) to these Kafka clients"


def test_the_guard_sees_the_clients_the_hub_has_today() -> None:
    """If a call site moves or is renamed, the guard must still be looking at it (else it proves nothing)."""
    sites = client_call_sites()
    for expected in [
        ("pipeline/publisher.py", "AIOKafkaProducer"), ("broker/topics.py", "AIOKafkaAdminClient"),
        ("broker/embedded.py", "AIOKafkaAdminClient"), ("demo.py", "AIOKafkaConsumer"), ("app.py", "KafkaBroker"),
        ("app.py", "AioKafkaRecordPublisher"), ("app.py", "ensure_topics"), ("app.py", "wait_for_metadata"),
        ("app.py", "build_kafka_broker"), *EXEMPT,
    ]:
        assert expected in sites


@pytest.mark.parametrize(
    "source",
    [
        "AIOKafkaProducer(bootstrap_servers=b, acks='all')",
        "aiokafka.AIOKafkaConsumer('t', bootstrap_servers=b, **extra)",
        "AIOKafkaAdminClient(bootstrap_servers=b, **kwargs())",
        "KafkaBroker(b, acks='all')",
        "AioKafkaRecordPublisher(b, proof=p)",
        "ensure_topics(b, specs)",
        "build_kafka_broker(b)",
        "from aiokafka import AIOKafkaProducer as Producer",
    ],
)
def test_the_guard_flags_a_client_built_without_the_security(source: str) -> None:
    assert 1 == len(unsecured_calls(source))


@pytest.mark.parametrize(
    "source",
    [
        "AIOKafkaProducer(bootstrap_servers=b, **security.aiokafka_kwargs())",
        "KafkaBroker(b, security=security.faststream())",
        "AioKafkaRecordPublisher(b, proof=p, security=security)",
        "build_kafka_broker(b, security)",
        "from aiokafka import AIOKafkaProducer",
    ],
)
def test_the_guard_accepts_a_client_built_with_the_security(source: str) -> None:
    assert [] == unsecured_calls(source)


# --- what the clients built at each call site carry --------------------------------------------------------


def _carries(client: Any, security: ClientSecurity) -> None:
    """aiokafka's AIOKafkaClient under a producer, consumer or admin client."""
    assert security.protocol == client._security_protocol
    assert security.mechanism == client._sasl_mechanism
    assert security.username == client._sasl_plain_username
    assert security.password is not None
    assert security.password.get_secret_value() == client._sasl_plain_password
    assert security.ssl_context is client._ssl_context


async def test_the_hub_producer_carries_the_security() -> None:
    publisher = AioKafkaRecordPublisher(BOOTSTRAP, proof=TEST_PROOF, security=SASL_SSL)
    _carries(publisher._producer.client, SASL_SSL)


def test_the_faststream_broker_of_the_workers_connects_its_producer_consumers_and_admin_with_the_security() -> None:
    """FastStream builds its producer, every subscriber's consumer and its admin client from these kwargs."""
    connection = build_kafka_broker(BOOTSTRAP, SASL_SSL)._connection_kwargs
    assert SASL_SSL.aiokafka_kwargs() == {key: connection[key] for key in SASL_SSL.aiokafka_kwargs()}


class RecordingAdmin:
    """A stand-in for aiokafka's admin client that answers at once and keeps the kwargs it was built with."""

    built: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **kwargs: Any) -> None:
        RecordingAdmin.built.append(kwargs)

    async def start(self) -> None:
        return None

    async def list_topics(self) -> list[str]:
        return [spec.name for spec in CORE_TOPICS]

    async def close(self) -> None:
        return None


async def test_topic_creation_and_the_broker_check_open_their_admin_clients_with_the_security(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    RecordingAdmin.built = []
    monkeypatch.setattr(topics, "AIOKafkaAdminClient", RecordingAdmin)
    monkeypatch.setattr(embedded, "AIOKafkaAdminClient", RecordingAdmin)
    assert [] == await topics.ensure_topics(BOOTSTRAP, CORE_TOPICS, security=SASL_SSL)
    await embedded.wait_for_metadata(BOOTSTRAP, timeout_s=5, security=SASL_SSL)
    assert 2 == len(RecordingAdmin.built)
    for kwargs in RecordingAdmin.built:
        assert SASL_SSL.aiokafka_kwargs() == {key: kwargs[key] for key in SASL_SSL.aiokafka_kwargs()}


class RecordingConsumer:
    """A stand-in for aiokafka's consumer that returns one record and keeps the kwargs it was built with."""

    built: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, *topics: str, **kwargs: Any) -> None:
        RecordingConsumer.built.append(kwargs)

    async def start(self) -> None:
        return None

    async def getone(self) -> str:
        return "record"

    async def stop(self) -> None:
        return None


async def test_the_demo_reads_the_partner_topic_with_the_security(monkeypatch: pytest.MonkeyPatch) -> None:
    RecordingConsumer.built = []
    monkeypatch.setattr(demo, "AIOKafkaConsumer", RecordingConsumer)
    assert "record" == await demo._receive_one(BOOTSTRAP, "partner.x", timeout_s=5, security=SASL_SSL)
    [kwargs] = RecordingConsumer.built
    assert SASL_SSL.aiokafka_kwargs() == {key: kwargs[key] for key in SASL_SSL.aiokafka_kwargs()}
