"""Initial control-plane schema: partners, identity crosswalk, consent-decision audit, delivery numbering.

Revision ID: 0001
Revises:
Create Date: 2026-01-01

Hand-written; every constraint and index is named explicitly (``op.f`` keeps the names verbatim under
the models' naming convention). ``consent_decisions`` is made append-only by triggers that reject
UPDATE and DELETE (and TRUNCATE on PostgreSQL), written per dialect below.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOW = sa.text("CURRENT_TIMESTAMP")
_BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_PG_APPEND_ONLY = [
    """
    CREATE FUNCTION consent_decisions_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'consent_decisions is append-only: % is not allowed', TG_OP
            USING ERRCODE = 'integrity_constraint_violation';
    END
    $$
    """,
    """
    CREATE TRIGGER consent_decisions_no_update_delete
    BEFORE UPDATE OR DELETE ON consent_decisions
    FOR EACH ROW EXECUTE FUNCTION consent_decisions_append_only()
    """,
    """
    CREATE TRIGGER consent_decisions_no_truncate
    BEFORE TRUNCATE ON consent_decisions
    FOR EACH STATEMENT EXECUTE FUNCTION consent_decisions_append_only()
    """,
]
_PG_DROP_APPEND_ONLY = [
    "DROP TRIGGER IF EXISTS consent_decisions_no_truncate ON consent_decisions",
    "DROP TRIGGER IF EXISTS consent_decisions_no_update_delete ON consent_decisions",
    "DROP FUNCTION IF EXISTS consent_decisions_append_only()",
]
_SQLITE_APPEND_ONLY = [
    """
    CREATE TRIGGER consent_decisions_no_update BEFORE UPDATE ON consent_decisions
    BEGIN
        SELECT RAISE(ABORT, 'consent_decisions is append-only: UPDATE is not allowed');
    END
    """,
    """
    CREATE TRIGGER consent_decisions_no_delete BEFORE DELETE ON consent_decisions
    BEGIN
        SELECT RAISE(ABORT, 'consent_decisions is append-only: DELETE is not allowed');
    END
    """,
]
_SQLITE_DROP_APPEND_ONLY = [
    "DROP TRIGGER IF EXISTS consent_decisions_no_delete",
    "DROP TRIGGER IF EXISTS consent_decisions_no_update",
]


def _dialect() -> str:
    return str(op.get_context().dialect.name)


def upgrade() -> None:
    """Create the four control-plane tables and the append-only triggers."""
    op.create_table(
        "partners",
        sa.Column("id", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("organization", sa.String(512), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partners")),
        sa.CheckConstraint("kind IN ('hospital', 'cbo')", name=op.f("ck_partners_kind")),
        sa.CheckConstraint("length(id) BETWEEN 1 AND 63", name=op.f("ck_partners_id_length")),
        sa.UniqueConstraint("organization", name=op.f("uq_partners_organization")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_partners_token_hash")),
    )
    op.create_table(
        "patient_identities",
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("hub_patient_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_patient_identities")),
    )
    op.create_index(op.f("ix_patient_identities_hub_patient_id"), "patient_identities", ["hub_patient_id"])
    op.create_table(
        "consent_decisions",
        sa.Column("id", _BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("hub_patient_id", sa.String(64), nullable=False),
        sa.Column("recipient_id", sa.String(63), nullable=False),
        sa.Column("verdict", sa.String(8), nullable=False),
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_decisions")),
        sa.CheckConstraint("verdict IN ('permit', 'deny')", name=op.f("ck_consent_decisions_verdict")),
        sa.UniqueConstraint(
            "event_id",
            "recipient_id",
            "verdict",
            "rule",
            name=op.f("uq_consent_decisions_event_id_recipient_id_verdict_rule"),
        ),
    )
    op.create_index(op.f("ix_consent_decisions_hub_patient_id"), "consent_decisions", ["hub_patient_id"])
    op.create_index(op.f("ix_consent_decisions_recipient_id"), "consent_decisions", ["recipient_id"])
    op.create_table(
        "partner_sequences",
        sa.Column("partner_id", sa.String(63), nullable=False),
        sa.Column("last_number", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("partner_id", name=op.f("pk_partner_sequences")),
        sa.ForeignKeyConstraint(["partner_id"], ["partners.id"], name=op.f("fk_partner_sequences_partner_id_partners")),
    )
    op.create_table(
        "partner_event_numbers",
        sa.Column("partner_id", sa.String(63), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.PrimaryKeyConstraint("partner_id", "event_id", name=op.f("pk_partner_event_numbers")),
        sa.UniqueConstraint("partner_id", "number", name=op.f("uq_partner_event_numbers_partner_id_number")),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_partner_event_numbers_partner_id_partners")
        ),
    )
    statements = _PG_APPEND_ONLY if _dialect() == "postgresql" else _SQLITE_APPEND_ONLY
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    """Drop everything :func:`upgrade` created."""
    statements = _PG_DROP_APPEND_ONLY if _dialect() == "postgresql" else _SQLITE_DROP_APPEND_ONLY
    for statement in statements:
        op.execute(statement)
    op.drop_table("partner_event_numbers")
    op.drop_table("partner_sequences")
    op.drop_index(op.f("ix_consent_decisions_recipient_id"), table_name="consent_decisions")
    op.drop_index(op.f("ix_consent_decisions_hub_patient_id"), table_name="consent_decisions")
    op.drop_table("consent_decisions")
    op.drop_index(op.f("ix_patient_identities_hub_patient_id"), table_name="patient_identities")
    op.drop_table("patient_identities")
    op.drop_table("partners")
