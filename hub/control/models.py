"""SQLAlchemy declarative models of the control-plane tables.

Holds the table definitions only, kept identical to the Alembic migrations in
``hub/control/migrations/versions`` (the migrations create the schema; these models read and write it).
Pure: no I/O, no engine.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from hub.control.sqltypes import UTCDateTime, utc_now

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on PostgreSQL; INTEGER on SQLite, where only an INTEGER PRIMARY KEY autoincrements (rowid alias).
BigIntId = BigInteger().with_variant(Integer(), "sqlite")

PARTNER_ID_MAX = 63
#: MSH-4 is an HD of three components (IS 20, ST 199, ID 6 in v2.5) joined by '^'.
FACILITY_MAX = 227
SECRET_NAME_MAX = 64
#: Kafka topic names are at most 249 characters; a CloudEvents id is kept to 255 as in the audit.
TOPIC_MAX = 249
EVENT_ID_MAX = 255
CURRENT_TIMESTAMP = text("CURRENT_TIMESTAMP")


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so constraint names match the migrations."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class PartnerRow(Base):
    """A registered hospital or CBO; ``id`` names its Kafka topic ``partner.<id>``."""

    __tablename__ = "partners"
    __table_args__ = (
        CheckConstraint("kind IN ('hospital', 'cbo')", name="kind"),
        CheckConstraint(f"length(id) BETWEEN 1 AND {PARTNER_ID_MAX}", name="id_length"),
        UniqueConstraint("organization"),
        UniqueConstraint("token_hash"),
    )

    id: Mapped[str] = mapped_column(String(PARTNER_ID_MAX), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    organization: Mapped[str] = mapped_column(String(512))
    token_hash: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean(), server_default=true(), default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now, server_default=CURRENT_TIMESTAMP)


class PartnerFacilityRow(Base):
    """An HL7 v2 sending facility (MSH-4, as ``facility_key`` writes it) and the hospital that sends under it."""

    __tablename__ = "partner_facilities"
    __table_args__ = (Index(None, "partner_id"),)

    facility: Mapped[str] = mapped_column(String(FACILITY_MAX), primary_key=True)
    partner_id: Mapped[str] = mapped_column(String(PARTNER_ID_MAX), ForeignKey("partners.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now, server_default=CURRENT_TIMESTAMP)


class PatientIdentityRow(Base):
    """The identity crosswalk: one source identifier maps to exactly one hub patient id."""

    __tablename__ = "patient_identities"
    __table_args__ = (
        PrimaryKeyConstraint("source"),
        Index(None, "hub_patient_id"),
    )

    source: Mapped[str] = mapped_column(String(512))
    hub_patient_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now, server_default=CURRENT_TIMESTAMP)


class ConsentDecisionRow(Base):
    """One sharing decision (permit or deny); append-only, enforced by database triggers."""

    __tablename__ = "consent_decisions"
    __table_args__ = (
        CheckConstraint("verdict IN ('permit', 'deny')", name="verdict"),
        UniqueConstraint("event_id", "recipient_id", "verdict", "rule"),
        Index(None, "hub_patient_id", "verdict", "decided_at", "id"),  # accounting of disclosures (0004)
        Index(None, "decided_at", "id"),  # AuditEvent export by time (0004)
        Index(None, "recipient_id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(255))
    hub_patient_id: Mapped[str] = mapped_column(String(64))
    recipient_id: Mapped[str] = mapped_column(String(PARTNER_ID_MAX))
    verdict: Mapped[str] = mapped_column(String(8))
    rule: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text())
    purpose: Mapped[str] = mapped_column(String(64))
    resource_type: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PartnerSequenceRow(Base):
    """Per-partner counter: the last event number handed out (0 before the first event)."""

    __tablename__ = "partner_sequences"

    partner_id: Mapped[str] = mapped_column(String(PARTNER_ID_MAX), ForeignKey("partners.id"), primary_key=True)
    last_number: Mapped[int] = mapped_column(BigInteger(), server_default=text("0"), default=0)


class PartnerEventNumberRow(Base):
    """The number a partner's copy of one event carries; one number per (partner, event), never reused."""

    __tablename__ = "partner_event_numbers"
    __table_args__ = (
        PrimaryKeyConstraint("partner_id", "event_id"),
        UniqueConstraint("partner_id", "number"),
    )

    partner_id: Mapped[str] = mapped_column(String(PARTNER_ID_MAX), ForeignKey("partners.id"))
    event_id: Mapped[str] = mapped_column(String(255))
    number: Mapped[int] = mapped_column(BigInteger())
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now, server_default=CURRENT_TIMESTAMP)


class ResourceRow(Base):
    """One version of a FHIR resource the hub accepted; the current version is the highest ``version_id``.

    ``content`` is the resource JSON as stored (server ``id``, no ``meta.versionId``/``lastUpdated``:
    those come from the columns), ``content_hash`` the SHA-256 of that text, ``event_id`` the
    ``ce_id`` of the ``hub.ingress`` event that carried this version (NULL for resources that are
    stored only, such as Patient), ``patient_source`` the patient as the event named it.
    """

    __tablename__ = "resources"
    __table_args__ = (
        PrimaryKeyConstraint("resource_type", "resource_id", "version_id"),
        CheckConstraint("version_id >= 1", name="version_positive"),
        Index(None, "event_id"),
        Index(None, "resource_type", "patient_source"),
    )

    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(Integer())
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime())
    sender: Mapped[str] = mapped_column(String(PARTNER_ID_MAX))
    content: Mapped[str] = mapped_column(Text())
    content_hash: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    patient_source: Mapped[str | None] = mapped_column(String(512), nullable=True)


class ResourceIdentifierRow(Base):
    """The identifiers of the *current* version of each stored resource (for conditional create)."""

    __tablename__ = "resource_identifiers"
    __table_args__ = (
        PrimaryKeyConstraint("resource_type", "id_system", "id_value", "resource_id"),
        Index(None, "resource_type", "resource_id"),
        Index(None, "resource_type", "id_value"),
    )

    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    id_system: Mapped[str] = mapped_column(String(512))
    id_value: Mapped[str] = mapped_column(String(512))


class PartnerRosterRow(Base):
    """One patient on a partner's roster (migration 0006), named by exactly one of:

    * ``source``: a crosswalk source (``system|value``) as the partner knows the patient, resolved through
      ``patient_identities`` at read time, so an entry matches as soon as the crosswalk learns it;
    * ``hub_patient_id``: the hub's own id of the patient.
    """

    __tablename__ = "partner_rosters"
    __table_args__ = (
        CheckConstraint("(source IS NULL) <> (hub_patient_id IS NULL)", name="one_patient_name"),
        UniqueConstraint("source", "partner_id"),  # also the index of the read by patient
        UniqueConstraint("hub_patient_id", "partner_id"),
        Index(None, "partner_id", "id"),  # a partner's roster, in order
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    partner_id: Mapped[str] = mapped_column(String(PARTNER_ID_MAX), ForeignKey("partners.id"))
    source: Mapped[str | None] = mapped_column(String(512), nullable=True)
    hub_patient_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now, server_default=CURRENT_TIMESTAMP)


class HubSecretRow(Base):
    """A random secret the hub generated once (migration 0007), shared by every process on the database;
    written once by whichever process asks first, never updated (``hub.control.secrets``)."""

    __tablename__ = "hub_secrets"

    name: Mapped[str] = mapped_column(String(SECRET_NAME_MAX), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now, server_default=CURRENT_TIMESTAMP)


class AcceptedRecordRow(Base):
    """A record an edge wrote to a ``hub.*`` topic and answered 2xx/AA for (migration 0008): the journal that
    makes accepted events durable on the embedded broker, which keeps its log in memory. Written after the
    broker's acknowledgement and before the answer, replayed in ``seq`` order when the hub starts a fresh
    embedded broker, pruned by age (``hub.control.journal``, docs/adr/0012-durable-accepted-events.md)."""

    __tablename__ = "accepted_records"
    __table_args__ = (Index(None, "accepted_at"),)

    seq: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(TOPIC_MAX))
    key: Mapped[bytes] = mapped_column(LargeBinary())
    value: Mapped[bytes] = mapped_column(LargeBinary())
    headers: Mapped[str] = mapped_column(Text())  # JSON object of the record's headers, without hub_proof
    ce_id: Mapped[str | None] = mapped_column(String(EVENT_ID_MAX), nullable=True)
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now, server_default=CURRENT_TIMESTAMP)
