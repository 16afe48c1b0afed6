"""The hub's Kafka client security (``hub.broker.client_security``): which settings combinations start, which
stop the hub with a ``ConfigurationError`` naming the variables, what every aiokafka client and the FastStream
broker receive, and that the SASL password shows up nowhere but in the client constructor's arguments.

A real SASL handshake cannot be tested here: the only broker the tests have (Tansu) has no authentication.
The TLS contexts are tested for real, by a handshake with a local TLS server that demands a client certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from pydantic import SecretStr
from structlog.testing import capture_logs

from hub.broker.client_security import NO_SECURITY, ClientSecurity, client_security
from hub.errors import ConfigurationError
from hub.settings import Settings
from tests.tls import KEY_PASSWORD, Pki, make_pki

PASSWORD = "pw-7c1e-never-shown"
BOOTSTRAP = "kafka.example:9093"


def external(**values: Any) -> Settings:
    """Settings for an external broker with ``values`` on top."""
    return Settings(kafka_bootstrap=BOOTSTRAP, **values)


def scram(protocol: str = "SASL_SSL", mechanism: str = "SCRAM-SHA-512", **values: Any) -> Settings:
    return external(**{
        "kafka_security_protocol": protocol, "kafka_sasl_mechanism": mechanism, "kafka_sasl_username": "carehub",
        "kafka_sasl_password": SecretStr(PASSWORD), **values,
    })


def refused(settings: Settings) -> str:
    """The message of the ConfigurationError ``client_security`` raises for ``settings``."""
    with pytest.raises(ConfigurationError) as caught:
        client_security(settings)
    return str(caught.value)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@contextlib.asynccontextmanager
async def tls_server(pki: Pki) -> AsyncIterator[tuple[int, asyncio.Queue[str]]]:
    """A TLS server on 127.0.0.1 that demands a client certificate from the test CA; yields its port and a queue
    of the client certificates' common names it accepted."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    context.verify_mode = ssl.CERT_REQUIRED
    accepted: asyncio.Queue[str] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        subject = dict(item[0] for item in writer.get_extra_info("peercert")["subject"])
        await accepted.put(subject["commonName"])
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        server.close()
        await server.wait_closed()


async def handshake(context: ssl.SSLContext, port: int, server_hostname: str = "localhost") -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=server_hostname)
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()


# --- the embedded broker and PLAINTEXT ---------------------------------------------------------------------


def test_the_embedded_default_gives_every_client_nothing_to_add() -> None:
    security = client_security(Settings(kafka_bootstrap=None))
    assert NO_SECURITY == security
    assert {} == security.aiokafka_kwargs()
    assert security.faststream() is None


@pytest.mark.parametrize(
    ("variable", "values"),
    [
        ("HUB_KAFKA_SECURITY_PROTOCOL", {"kafka_security_protocol": "SSL"}),
        ("HUB_KAFKA_SECURITY_PROTOCOL", {"kafka_security_protocol": "SASL_SSL"}),
        ("HUB_KAFKA_SASL_MECHANISM", {"kafka_sasl_mechanism": "SCRAM-SHA-512"}),
        ("HUB_KAFKA_SASL_USERNAME", {"kafka_sasl_username": "carehub"}),
        ("HUB_KAFKA_SASL_PASSWORD", {"kafka_sasl_password": SecretStr(PASSWORD)}),
        ("HUB_KAFKA_SSL_CAFILE", {"kafka_ssl_cafile": Path("/etc/ssl/ca.pem")}),
        ("HUB_KAFKA_SSL_CERTFILE", {"kafka_ssl_certfile": Path("/etc/ssl/hub.pem")}),
        ("HUB_KAFKA_SSL_KEYFILE", {"kafka_ssl_keyfile": Path("/etc/ssl/hub.key")}),
        ("HUB_KAFKA_SSL_KEY_PASSWORD", {"kafka_ssl_key_password": SecretStr(KEY_PASSWORD)}),
        ("HUB_KAFKA_SSL_CHECK_HOSTNAME", {"kafka_ssl_check_hostname": False}),
    ],
)
def test_security_settings_with_the_embedded_broker_are_refused_naming_the_variable(
    variable: str, values: dict[str, Any]
) -> None:
    """Tansu has no authentication or TLS: a credential given for it would be silently ignored."""
    message = refused(Settings(kafka_bootstrap=None, **values))
    assert variable in message
    assert "HUB_KAFKA_BOOTSTRAP" in message
    assert PASSWORD not in message
    assert KEY_PASSWORD not in message


def test_plaintext_to_an_external_broker_starts_but_warns_that_it_is_unauthenticated() -> None:
    with capture_logs() as logs:
        security = client_security(external())
    assert NO_SECURITY == security
    assert ["kafka_unauthenticated"] == [entry["event"] for entry in logs]
    assert "warning" == logs[0]["log_level"]


# --- SASL ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mechanism", "faststream_type"),
    [("SCRAM-SHA-256", SASLScram256), ("SCRAM-SHA-512", SASLScram512), ("PLAIN", SASLPlaintext)],
)
def test_sasl_ssl_gives_every_client_the_mechanism_credentials_and_a_verifying_tls_context(
    mechanism: str, faststream_type: type[BaseSecurity]
) -> None:
    security = client_security(scram("SASL_SSL", mechanism))
    kwargs = security.aiokafka_kwargs()
    context = kwargs.pop("ssl_context")
    assert {
        "security_protocol": "SASL_SSL", "sasl_mechanism": mechanism, "sasl_plain_username": "carehub",
        "sasl_plain_password": PASSWORD,
    } == kwargs
    assert isinstance(context, ssl.SSLContext)
    assert ssl.CERT_REQUIRED == context.verify_mode
    assert context.check_hostname
    secured = security.faststream()
    assert type(secured) is faststream_type
    assert security.aiokafka_kwargs() == parse_security(secured), "FastStream must connect exactly as aiokafka"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_with_scram_needs_the_explicit_opt_in_and_then_warns(mechanism: str) -> None:
    message = refused(scram("SASL_PLAINTEXT", mechanism))
    assert "HUB_KAFKA_ALLOW_UNENCRYPTED_SASL" in message
    with capture_logs() as logs:
        security = client_security(scram("SASL_PLAINTEXT", mechanism, kafka_allow_unencrypted_sasl=True))
    assert ["kafka_unencrypted"] == [entry["event"] for entry in logs]
    assert {
        "security_protocol": "SASL_PLAINTEXT", "ssl_context": None, "sasl_mechanism": mechanism,
        "sasl_plain_username": "carehub", "sasl_plain_password": PASSWORD,
    } == security.aiokafka_kwargs()
    assert security.aiokafka_kwargs() == parse_security(security.faststream())


def test_plain_over_sasl_plaintext_is_refused_even_with_the_opt_in() -> None:
    """SASL/PLAIN without TLS would put the hub's password on the wire in clear."""
    message = refused(scram("SASL_PLAINTEXT", "PLAIN", kafka_allow_unencrypted_sasl=True))
    assert "PLAIN" in message
    assert "SASL_SSL" in message


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
@pytest.mark.parametrize(
    ("variable", "missing"),
    [
        ("HUB_KAFKA_SASL_MECHANISM", {"kafka_sasl_mechanism": None}),
        ("HUB_KAFKA_SASL_USERNAME", {"kafka_sasl_username": None}),
        ("HUB_KAFKA_SASL_USERNAME", {"kafka_sasl_username": ""}),
        ("HUB_KAFKA_SASL_PASSWORD", {"kafka_sasl_password": None}),
        ("HUB_KAFKA_SASL_PASSWORD", {"kafka_sasl_password": SecretStr("")}),
    ],
)
def test_sasl_without_mechanism_username_or_password_is_refused_naming_what_is_missing(
    protocol: str, variable: str, missing: dict[str, Any]
) -> None:
    values: dict[str, Any] = {
        "kafka_security_protocol": protocol, "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "carehub", "kafka_sasl_password": SecretStr(PASSWORD),
        "kafka_allow_unencrypted_sasl": True, **missing,
    }
    message = refused(external(**values))
    assert f"needs {variable}" in message
    assert PASSWORD not in message


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_sasl_credentials_under_a_protocol_without_sasl_are_refused_not_ignored(protocol: str) -> None:
    """Forgetting HUB_KAFKA_SECURITY_PROTOCOL must not connect unauthenticated with the credentials unused."""
    message = refused(scram(protocol))
    for variable in ("HUB_KAFKA_SASL_MECHANISM", "HUB_KAFKA_SASL_USERNAME", "HUB_KAFKA_SASL_PASSWORD"):
        assert variable in message
    assert PASSWORD not in message


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
@pytest.mark.parametrize(
    ("variable", "values"),
    [
        ("HUB_KAFKA_SSL_CAFILE", {"kafka_ssl_cafile": Path("/etc/ssl/ca.pem")}),
        ("HUB_KAFKA_SSL_CERTFILE", {"kafka_ssl_certfile": Path("/etc/ssl/hub.pem")}),
        ("HUB_KAFKA_SSL_CHECK_HOSTNAME", {"kafka_ssl_check_hostname": False}),
    ],
)
def test_tls_settings_under_a_protocol_without_tls_are_refused_not_ignored(
    protocol: str, variable: str, values: dict[str, Any]
) -> None:
    settings = scram(protocol, kafka_allow_unencrypted_sasl=True, **values) if protocol != "PLAINTEXT" else (
        external(**values)
    )
    message = refused(settings)
    assert variable in message
    assert "SSL or SASL_SSL" in message


# --- TLS: real handshakes ------------------------------------------------------------------------------------


async def test_mtls_presents_the_hub_certificate_whose_subject_is_the_acl_principal(pki: Pki) -> None:
    security = client_security(external(
        kafka_security_protocol="SSL", kafka_ssl_cafile=pki.ca, kafka_ssl_certfile=pki.client_cert,
        kafka_ssl_keyfile=pki.client_key,
    ))
    assert {"security_protocol": "SSL", "ssl_context": security.ssl_context} == security.aiokafka_kwargs()
    assert security.aiokafka_kwargs() == parse_security(security.faststream())
    assert security.ssl_context is not None
    async with tls_server(pki) as (port, accepted):
        await handshake(security.ssl_context, port)
        assert "carehub" == await accepted.get()


async def test_an_encrypted_client_key_loads_with_its_password_and_is_refused_without_or_with_a_wrong_one(
    pki: Pki,
) -> None:
    values: dict[str, Any] = {
        "kafka_security_protocol": "SSL", "kafka_ssl_cafile": pki.ca, "kafka_ssl_certfile": pki.client_cert,
        "kafka_ssl_keyfile": pki.client_key_encrypted,
    }
    assert "HUB_KAFKA_SSL_KEY_PASSWORD" in refused(external(**values))  # never an interactive prompt
    wrong = refused(external(**values, kafka_ssl_key_password=SecretStr("wrong-" + KEY_PASSWORD)))
    assert "HUB_KAFKA_SSL_KEY_PASSWORD" in wrong
    assert KEY_PASSWORD not in wrong
    security = client_security(external(**values, kafka_ssl_key_password=SecretStr(KEY_PASSWORD)))
    assert security.ssl_context is not None
    async with tls_server(pki) as (port, accepted):
        await handshake(security.ssl_context, port)
        assert "carehub" == await accepted.get()


async def test_the_broker_name_is_checked_unless_the_operator_turns_it_off(pki: Pki) -> None:
    values: dict[str, Any] = {
        "kafka_security_protocol": "SSL", "kafka_ssl_cafile": pki.ca, "kafka_ssl_certfile": pki.client_cert,
        "kafka_ssl_keyfile": pki.client_key,
    }
    checked = client_security(external(**values)).ssl_context
    with capture_logs() as logs:
        unchecked = client_security(external(**values, kafka_ssl_check_hostname=False)).ssl_context
    assert checked is not None
    assert unchecked is not None
    assert "kafka_tls_hostname_unchecked" in [entry["event"] for entry in logs]
    async with tls_server(pki) as (port, accepted):
        with pytest.raises(ssl.SSLCertVerificationError):
            await handshake(checked, port, server_hostname="kafka.example")
        await handshake(unchecked, port, server_hostname="kafka.example")
        assert "carehub" == await accepted.get()


async def test_without_a_ca_file_the_system_cas_do_not_trust_a_private_ca(pki: Pki) -> None:
    security = client_security(scram("SASL_SSL"))
    assert security.ssl_context is not None
    async with tls_server(pki) as (port, _accepted):
        with pytest.raises(ssl.SSLCertVerificationError):
            await handshake(security.ssl_context, port)


def test_tls_files_that_are_missing_or_not_pem_stop_the_hub_naming_the_variable(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    assert "HUB_KAFKA_SSL_CAFILE" in refused(external(kafka_security_protocol="SSL", kafka_ssl_cafile=missing))
    assert "HUB_KAFKA_SSL_CAFILE" in refused(external(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path))
    assert "HUB_KAFKA_SSL_CAFILE" in refused(
        external(kafka_security_protocol="SSL", kafka_ssl_cafile=pki.not_a_certificate)
    )
    assert "HUB_KAFKA_SSL_CERTFILE" in refused(
        external(kafka_security_protocol="SSL", kafka_ssl_cafile=pki.ca, kafka_ssl_certfile=missing)
    )
    assert "HUB_KAFKA_SSL_KEYFILE" in refused(external(
        kafka_security_protocol="SSL", kafka_ssl_cafile=pki.ca, kafka_ssl_certfile=pki.client_cert,
        kafka_ssl_keyfile=missing,
    ))
    mismatched = refused(external(
        kafka_security_protocol="SSL", kafka_ssl_cafile=pki.ca, kafka_ssl_certfile=pki.client_cert,
        kafka_ssl_keyfile=pki.server_key,
    ))
    assert "HUB_KAFKA_SSL_CERTFILE/HUB_KAFKA_SSL_KEYFILE" in mismatched


def test_a_key_or_key_password_without_a_client_certificate_is_refused(pki: Pki) -> None:
    assert "needs HUB_KAFKA_SSL_CERTFILE" in refused(
        external(kafka_security_protocol="SSL", kafka_ssl_keyfile=pki.client_key)
    )
    assert "needs HUB_KAFKA_SSL_CERTFILE" in refused(
        external(kafka_security_protocol="SSL", kafka_ssl_key_password=SecretStr(KEY_PASSWORD))
    )


# --- the password stays secret -------------------------------------------------------------------------------


def test_the_sasl_password_appears_in_no_repr_log_or_error_only_in_the_constructor_kwargs() -> None:
    shown: list[str] = []
    with capture_logs() as logs:
        for settings in (
            scram("SASL_SSL"), scram("SASL_PLAINTEXT", kafka_allow_unencrypted_sasl=True),
        ):
            security = client_security(settings)
            shown += [repr(settings), repr(security), str(security), repr(security.faststream())]
            assert PASSWORD == security.aiokafka_kwargs()["sasl_plain_password"]
        for settings in (
            scram("SASL_PLAINTEXT"), scram("PLAINTEXT"), scram("SASL_SSL", kafka_sasl_username=""),
            Settings(kafka_bootstrap=None, kafka_sasl_password=SecretStr(PASSWORD)),
            scram("SASL_PLAINTEXT", "PLAIN", kafka_allow_unencrypted_sasl=True),
        ):
            shown.append(refused(settings))
    shown += [repr(entry) for entry in logs]
    assert len(shown) > 10
    assert [] == [text for text in shown if PASSWORD in text]


def test_a_client_security_cannot_be_built_half_configured() -> None:
    """The value object itself refuses SASL without credentials and TLS without a context."""
    with pytest.raises(ValueError, match="SASL mechanism"):
        ClientSecurity(protocol="SASL_SSL", ssl_context=ssl.create_default_context())
    with pytest.raises(ValueError, match="SSL context"):
        ClientSecurity(protocol="SSL")


def test_protocol_and_mechanism_are_read_in_any_case_like_kafkas_own_clients() -> None:
    settings = external(
        kafka_security_protocol=" sasl_ssl", kafka_sasl_mechanism="scram-sha-256", kafka_sasl_username="carehub",
        kafka_sasl_password=SecretStr(PASSWORD),
    )
    assert ("SASL_SSL", "SCRAM-SHA-256") == (settings.kafka_security_protocol, settings.kafka_sasl_mechanism)
