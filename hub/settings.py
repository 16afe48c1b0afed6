"""Settings: the only module that reads the environment (prefix ``HUB_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the hub, read once from ``HUB_*`` environment variables.

    ``kafka_bootstrap`` unset means: start the embedded Tansu broker on
    ``127.0.0.1:{embedded_kafka_port}``.
    """

    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore")

    kafka_bootstrap: str | None = None
    embedded_kafka_port: int = Field(default=9092, ge=1, le=65535)
    # How the hub's own Kafka clients authenticate to an external broker (hub.broker.client_security, which
    # checks the combination at start; deploy/README.md). The embedded broker has no authentication: leave unset.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] | None = None
    kafka_sasl_username: str | None = Field(default=None, description="The hub's principal, e.g. carehub.")
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(default=None, description="PEM CA bundle (unset: the system's CAs).")
    kafka_ssl_certfile: Path | None = Field(default=None, description="PEM client certificate (mTLS).")
    kafka_ssl_keyfile: Path | None = Field(default=None, description="PEM private key of the client certificate.")
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = Field(default=True, description="Check the broker's name in its certificate.")
    kafka_allow_unencrypted_sasl: bool = Field(
        default=False, description="Permit SASL_PLAINTEXT: credentials checked, every record readable on the wire."
    )
    database_url: str = "sqlite+aiosqlite:///carehub.db"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    mllp_host: str = "127.0.0.1"
    mllp_port: int = Field(default=2575, ge=0, le=65535)
    admin_token: SecretStr | None = None
    # Record proof (hub.record_proof, docs/adr/0010-record-proof.md): the HMAC key with which the hub's
    # edges and workers sign and verify every hub.ingress/hub.events record. Every process must share it.
    record_key: SecretStr | None = Field(
        default=None,
        description="At least 32 bytes (UTF-8). Unset: a random key generated once and kept in the control-plane "
        "database, shared by every process on it.",
    )
    record_key_previous: SecretStr | None = Field(
        default=None, description="The key before the last rotation: records it signed still verify."
    )
    mllp_facilities: dict[str, str] = Field(
        default_factory=dict,
        description='MSH-4 sending facility -> hospital partner id, JSON: {"GHH": "general"}.',
    )
    # MLLP connection limits (hub.adapters.mllp_limits.ConnectionLimits). A connection is identified once it
    # delivered a frame from a registered facility; until then it is unidentified and may be evicted.
    mllp_max_connections: int = Field(default=256, ge=1, description="Concurrent MLLP connections in all.")
    mllp_max_connections_per_source: int = Field(
        default=32, ge=1, description="Concurrent MLLP connections from one peer IP address."
    )
    mllp_reserved_connections: int = Field(
        default=32, ge=0, description="MLLP connections only identified hospitals may hold (< max connections)."
    )
    mllp_identify_timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds a new MLLP connection has to send a frame from a registered facility."
    )
    mllp_frame_timeout_s: float = Field(
        default=30.0, gt=0, description="Seconds one MLLP frame may take to arrive once its first byte came."
    )
    mllp_idle_timeout_s: float | None = Field(
        default=None, gt=0, description="Seconds an identified MLLP connection may stay silent (unset: no limit)."
    )
    mllp_max_in_flight: int = Field(
        default=32, ge=1, le=1024,
        description="Frames one MLLP connection may have sent and not yet been answered (pipelining senders).",
    )

    # Sharing policy (hub.consent.model.Policies): what happens when no patient consent applies, and
    # labels that, like 42 CFR Part 2 data, need a consent naming the recipient.
    consent_default: Literal["opt-out", "opt-in"] = Field(
        default="opt-out", description="The jurisdiction's HIE consent model when no patient consent applies."
    )
    specific_consent_labels: list[str] = Field(
        default_factory=list,
        description='Security labels that need a consent naming the recipient, JSON: ["HIV", "PSY"].',
    )

    # Tuning. Tansu answers a waiting fetch only when fetch_max_wait_ms runs out,
    # so a short wait keeps per-hop latency low on the embedded broker.
    fetch_max_wait_ms: int = Field(default=20, ge=1)
    # Tansu assigns partitions to a joining consumer after half the session timeout; Apache Kafka
    # refuses timeouts under its group.min.session.timeout.ms (6 s by default). Unset: 2 s on the
    # embedded broker, 10 s otherwise.
    consumer_session_timeout_ms: int | None = Field(default=None, ge=1000)
    max_batch: int = Field(default=200, ge=1, le=10_000, description="Records per pipeline batch.")
    broker_wait_s: float = Field(default=30.0, gt=0, description="How long to wait for the broker to answer.")
    # Durability on the embedded broker (hub.broker.journal, docs/adr/0012-durable-accepted-events.md).
    journal_retention_hours: float = Field(
        default=168.0, gt=0, description="Hours the embedded default keeps accepted records to replay at start."
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    worker_group: str = "carehub-pipeline"
    log_json: bool = False
    log_level: str = "INFO"

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        """Kafka's own clients read these names in any case (``sasl_ssl``, ``scram-sha-512``)."""
        return value.strip().upper() if isinstance(value, str) else value

    @property
    def embedded(self) -> bool:
        """True when the hub must start its own broker."""
        return not self.kafka_bootstrap

    @property
    def session_timeout_ms(self) -> int:
        """Consumer-group session timeout for the hub's subscribers."""
        if self.consumer_session_timeout_ms is not None:
            return self.consumer_session_timeout_ms
        return 2000 if self.embedded else 10_000

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers the hub's clients connect to."""
        return self.kafka_bootstrap or f"127.0.0.1:{self.embedded_kafka_port}"
