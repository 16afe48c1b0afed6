"""How the hub's own Kafka clients authenticate to the broker: the ``HUB_KAFKA_SECURITY_*``, ``HUB_KAFKA_SASL_*``
and ``HUB_KAFKA_SSL_*`` settings in, one ``ClientSecurity`` out, handed to every Kafka client the hub opens.

``client_security(settings)`` checks the combination once, at start, and loads the TLS material; every mistake
an operator can make is a ``ConfigurationError`` naming the variables (never a value). The result gives:

- ``aiokafka_kwargs()``: ``security_protocol``, ``ssl_context``, ``sasl_mechanism``, ``sasl_plain_username``,
  ``sasl_plain_password`` for ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and ``AIOKafkaAdminClient``;
- ``faststream()``: the ``faststream.security`` object for ``KafkaBroker(security=...)``, which FastStream
  turns into the same aiokafka arguments.

``NO_SECURITY`` (PLAINTEXT, the embedded default) adds nothing, so those clients are built exactly as before.
The password stays a ``SecretStr`` here; it is revealed only inside the kwargs handed to a client constructor.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog
from aiokafka.helpers import create_ssl_context
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from pydantic import SecretStr

from hub.errors import ConfigurationError
from hub.settings import Settings

log = structlog.get_logger(__name__)

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]

_FASTSTREAM_SASL: dict[str, type[SASLPlaintext | SASLScram256 | SASLScram512]] = {
    "PLAIN": SASLPlaintext,
    "SCRAM-SHA-256": SASLScram256,
    "SCRAM-SHA-512": SASLScram512,
}


@dataclass(frozen=True)
class ClientSecurity:
    """How one hub process's Kafka clients connect: protocol, SASL credentials, TLS context.

    Build it with ``client_security(settings)``; ``repr`` shows the password masked.
    """

    protocol: SecurityProtocol = "PLAINTEXT"
    mechanism: SaslMechanism | None = None
    username: str | None = None
    password: SecretStr | None = None
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.sasl and (self.mechanism is None or not self.username or self.password is None):
            raise ValueError(f"{self.protocol} needs a SASL mechanism, a username and a password")
        if self.tls and self.ssl_context is None:
            raise ValueError(f"{self.protocol} needs an SSL context")

    @property
    def sasl(self) -> bool:
        """True when the clients authenticate with SASL (username and password)."""
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def tls(self) -> bool:
        """True when the connection is encrypted (and, with a client certificate, authenticated) by TLS."""
        return self.protocol in ("SSL", "SASL_SSL")

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for every aiokafka client constructor; empty for PLAINTEXT.

        The dict holds the password in clear: pass it straight to the constructor, never log or keep it.
        """
        if self.protocol == "PLAINTEXT":
            return {}
        kwargs: dict[str, Any] = {"security_protocol": self.protocol, "ssl_context": self.ssl_context}
        if self.sasl:
            mechanism, username, password = self._credentials()
            kwargs |= {"sasl_mechanism": mechanism, "sasl_plain_username": username, "sasl_plain_password": password}
        return kwargs

    def faststream(self) -> BaseSecurity | None:
        """The ``security=`` argument of FastStream's ``KafkaBroker``; None for PLAINTEXT."""
        if self.protocol == "PLAINTEXT":
            return None
        if not self.sasl:
            return BaseSecurity(ssl_context=self.ssl_context, use_ssl=True)
        mechanism, username, password = self._credentials()
        return _FASTSTREAM_SASL[mechanism](username, password, ssl_context=self.ssl_context, use_ssl=self.tls)

    def _credentials(self) -> tuple[SaslMechanism, str, str]:
        if self.mechanism is None or self.username is None or self.password is None:  # __post_init__ rules it out
            raise ValueError(f"{self.protocol} needs a SASL mechanism, a username and a password")
        return self.mechanism, self.username, self.password.get_secret_value()


NO_SECURITY = ClientSecurity()


def client_security(settings: Settings) -> ClientSecurity:
    """The hub's Kafka client security from the settings; a ``ConfigurationError`` for a combination that
    cannot work or would silently be ignored. Reads the TLS files (so a wrong path stops the hub at start)."""
    _check(settings)
    protocol = settings.kafka_security_protocol
    if settings.embedded:
        return NO_SECURITY
    if protocol == "PLAINTEXT":
        log.warning("kafka_unauthenticated", hint="set HUB_KAFKA_SECURITY_PROTOCOL=SASL_SSL or SSL outside development")
        return NO_SECURITY
    if protocol == "SASL_PLAINTEXT":
        log.warning("kafka_unencrypted", hint="every record crosses the network readable: use SASL_SSL")
    context = _ssl_context(settings) if protocol in ("SSL", "SASL_SSL") else None
    sasl = protocol in ("SASL_PLAINTEXT", "SASL_SSL")
    return ClientSecurity(
        protocol=protocol,
        mechanism=settings.kafka_sasl_mechanism if sasl else None,
        username=settings.kafka_sasl_username if sasl else None,
        password=settings.kafka_sasl_password if sasl else None,
        ssl_context=context,
    )


def _check(settings: Settings) -> None:
    """Raise ``ConfigurationError`` for a combination of settings the hub refuses (names, never values)."""
    protocol = settings.kafka_security_protocol
    sasl_set = _named(
        HUB_KAFKA_SASL_MECHANISM=settings.kafka_sasl_mechanism is not None,
        HUB_KAFKA_SASL_USERNAME=settings.kafka_sasl_username is not None,
        HUB_KAFKA_SASL_PASSWORD=settings.kafka_sasl_password is not None,
    )
    ssl_set = _named(
        HUB_KAFKA_SSL_CAFILE=settings.kafka_ssl_cafile is not None,
        HUB_KAFKA_SSL_CERTFILE=settings.kafka_ssl_certfile is not None,
        HUB_KAFKA_SSL_KEYFILE=settings.kafka_ssl_keyfile is not None,
        HUB_KAFKA_SSL_KEY_PASSWORD=settings.kafka_ssl_key_password is not None,
        HUB_KAFKA_SSL_CHECK_HOSTNAME=not settings.kafka_ssl_check_hostname,
    )
    if settings.embedded:
        chosen = _named(HUB_KAFKA_SECURITY_PROTOCOL=protocol != "PLAINTEXT") + sasl_set + ssl_set
        if chosen:
            raise ConfigurationError(
                f"{', '.join(chosen)} need(s) HUB_KAFKA_BOOTSTRAP: the embedded broker (Tansu, development only) "
                "has no authentication or TLS; set HUB_KAFKA_BOOTSTRAP to your Kafka cluster or unset them"
            )
        return
    sasl = protocol in ("SASL_PLAINTEXT", "SASL_SSL")
    tls = protocol in ("SSL", "SASL_SSL")
    if not sasl and sasl_set:
        raise ConfigurationError(
            f"{', '.join(sasl_set)} set but HUB_KAFKA_SECURITY_PROTOCOL is {protocol}, which does not use SASL: "
            "set it to SASL_SSL, or unset them"
        )
    if not tls and ssl_set:
        raise ConfigurationError(
            f"{', '.join(ssl_set)} set but HUB_KAFKA_SECURITY_PROTOCOL is {protocol}, which does not use TLS: "
            "set it to SSL or SASL_SSL, or unset them"
        )
    if sasl:
        password = settings.kafka_sasl_password
        missing = _named(
            HUB_KAFKA_SASL_MECHANISM=settings.kafka_sasl_mechanism is None,
            HUB_KAFKA_SASL_USERNAME=not settings.kafka_sasl_username,
            HUB_KAFKA_SASL_PASSWORD=not (password and password.get_secret_value()),
        )
        if missing:
            raise ConfigurationError(f"HUB_KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}")
    if protocol == "SASL_PLAINTEXT":
        if settings.kafka_sasl_mechanism == "PLAIN":
            raise ConfigurationError(
                "HUB_KAFKA_SASL_MECHANISM=PLAIN over SASL_PLAINTEXT sends the password in clear: "
                "use HUB_KAFKA_SECURITY_PROTOCOL=SASL_SSL or a SCRAM mechanism"
            )
        if not settings.kafka_allow_unencrypted_sasl:
            raise ConfigurationError(
                "HUB_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT sends every record (patients' FHIR resources) "
                "unencrypted: use SASL_SSL, or set HUB_KAFKA_ALLOW_UNENCRYPTED_SASL=true on a network you trust"
            )
    if settings.kafka_ssl_keyfile is not None and settings.kafka_ssl_certfile is None:
        raise ConfigurationError("HUB_KAFKA_SSL_KEYFILE needs HUB_KAFKA_SSL_CERTFILE (the client certificate)")
    if settings.kafka_ssl_key_password is not None and settings.kafka_ssl_certfile is None:
        raise ConfigurationError("HUB_KAFKA_SSL_KEY_PASSWORD needs HUB_KAFKA_SSL_CERTFILE and its key")


def _named(**flags: bool) -> list[str]:
    """The names whose flag is true, in the order given."""
    return [name for name, on in flags.items() if on]


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    """A client TLS context (server certificate verified) with the CA bundle and the client certificate, if any."""
    for variable, path in (
        ("HUB_KAFKA_SSL_CAFILE", settings.kafka_ssl_cafile),
        ("HUB_KAFKA_SSL_CERTFILE", settings.kafka_ssl_certfile),
        ("HUB_KAFKA_SSL_KEYFILE", settings.kafka_ssl_keyfile),
    ):
        if path is not None and not _readable(path):
            raise ConfigurationError(f"{variable}: {path} is not a readable file")
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=cafile)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(f"HUB_KAFKA_SSL_CAFILE: {cafile} holds no usable CA certificate") from exc
    if settings.kafka_ssl_certfile is not None:
        key_password = settings.kafka_ssl_key_password
        try:
            context.load_cert_chain(
                str(settings.kafka_ssl_certfile),
                str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
                # A callable, never None: with None OpenSSL would prompt on the terminal for an encrypted key.
                key_password.get_secret_value() if key_password else _no_key_password,
            )
        except (ssl.SSLError, OSError) as exc:
            raise ConfigurationError(
                "HUB_KAFKA_SSL_CERTFILE/HUB_KAFKA_SSL_KEYFILE: cannot load the client certificate and its key "
                "(not PEM, not a matching pair, or a wrong HUB_KAFKA_SSL_KEY_PASSWORD)"
            ) from exc
    if not settings.kafka_ssl_check_hostname:
        context.check_hostname = False
        log.warning("kafka_tls_hostname_unchecked", hint="the broker's certificate is verified but not its name")
    return context


def _readable(path: Path) -> bool:
    try:
        with path.open("rb"):
            return path.is_file()
    except OSError:
        return False


def _no_key_password() -> str:
    raise ConfigurationError("HUB_KAFKA_SSL_KEYFILE is encrypted: set HUB_KAFKA_SSL_KEY_PASSWORD")
