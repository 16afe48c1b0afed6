"""The whole hub over mTLS: with ``HUB_KAFKA_SECURITY_PROTOCOL=SSL`` and a client certificate, every Kafka
connection of the hub (the broker check, topic creation, the producer, the pipeline workers' consumers) is
TLS and presents ``CN=carehub``, and a referral still reaches the CBO's topic.

Tansu has no TLS, so it runs behind a TLS front (this file) that demands a client certificate from the test
CA, records each connection's certificate subject, and forwards the bytes; Tansu advertises the front's
address, so no client can reach it otherwise. A SASL handshake cannot be tested here (Tansu has no
authentication); tests/unit/test_client_security.py checks what SASL clients receive.
"""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from hub.app import running_hub
from hub.broker.client_security import ClientSecurity, client_security
from hub.broker.embedded import resolve_binary, wait_for_metadata
from hub.errors import ConfigurationError
from tests.conftest import free_port
from tests.e2e.conftest import HubClient, settings_for
from tests.tls import Pki, make_pki

pytestmark = pytest.mark.broker


@contextlib.asynccontextmanager
async def tls_front(pki: Pki, port: int, upstream: int) -> AsyncIterator[list[str]]:
    """A TLS server on 127.0.0.1:``port`` that requires a client certificate and forwards to ``upstream``;
    yields the list of certificate common names of the connections it accepted."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    context.verify_mode = ssl.CERT_REQUIRED
    principals: list[str] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        subject = dict(item[0] for item in writer.get_extra_info("peercert")["subject"])
        principals.append(subject["commonName"])
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=context)
    try:
        yield principals
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def tansu_behind_tls(pki: Pki) -> AsyncIterator[tuple[str, list[str]]]:
    """Tansu on a loopback port that advertises the TLS front's address; yields (bootstrap, principals)."""
    front, upstream = free_port(), free_port()
    async with tls_front(pki, front, upstream) as principals:
        process = subprocess.Popen(
            [resolve_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{upstream}",
             "--advertised-listener-url", f"tcp://localhost:{front}", "--storage-engine", "memory://tansu/",
             "--silent"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "warn"}, start_new_session=True,
        )
        try:
            yield f"localhost:{front}", principals
        finally:
            process.terminate()
            await asyncio.to_thread(process.wait, 10)


async def read_partner_topic(
    bootstrap: str, topic: str, security: ClientSecurity, *, timeout_s: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """The first record of ``topic``, read over mTLS (the timeout only bounds a failure)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, fetch_max_wait_ms=20,
                                **security.aiokafka_kwargs())
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not records:
            for part in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


async def test_a_referral_reaches_the_cbo_through_a_broker_that_only_speaks_mtls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    async with tansu_behind_tls(pki) as (bootstrap, principals):
        settings = settings_for(
            bootstrap, tmp_path, kafka_security_protocol="SSL", kafka_ssl_cafile=pki.ca,
            kafka_ssl_certfile=pki.client_cert, kafka_ssl_keyfile=pki.client_key, broker_wait_s=20.0,
        )
        security = client_security(settings)
        await wait_for_metadata(bootstrap, timeout_s=20, security=security)  # Tansu is up behind the front
        with pytest.raises(ConfigurationError):
            await wait_for_metadata(bootstrap, timeout_s=1)  # a plaintext client gets nowhere
        before = len(principals)
        async with (
            running_hub(settings) as hub,
            httpx.AsyncClient(base_url=hub.http_url or "", timeout=30) as http,
        ):
            assert "SSL" == hub.security.protocol
            client = HubClient(hub=hub, http=http, prefix=f"t{uuid.uuid4().hex[:8]}")
            _hospital, token = await client.add_partner("hosp", "hospital")
            cbo, _ = await client.add_partner("food", "cbo")
            referral = orjson.dumps({
                "resourceType": "ServiceRequest", "status": "active", "intent": "order",
                "subject": {"identifier": {"system": "urn:oid:1.2.3", "value": f"MRN-{client.prefix}"}},
                "performer": [{"reference": f"Organization/{cbo}"}],
            })
            answer = await client.post_fhir("ServiceRequest", referral, token)
            assert 201 == answer.status_code, answer.text
            sent = answer.headers["location"].split("/")[3]
            hub_connections = len(principals) - before
            delivered = await read_partner_topic(bootstrap, f"partner.{cbo}", hub.security)
            assert [sent] == [dict(r.headers)["ce_id"].decode() for r in delivered]
        assert {"carehub"} == set(principals), "every connection that got through presented the hub's certificate"
        assert hub_connections >= 4, "the hub's check, topic creation, producer and workers each connected"
