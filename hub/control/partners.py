"""Partner registry: hospitals and CBOs, their organization reference and their bearer token.

Holds the :class:`Partner` value, field validation and the async functions that create, authenticate
and look up partners. It touches only the ``partners`` and ``partner_sequences`` tables through the
session it is given. Tokens are never stored: only their SHA-256 (a 256-bit random token needs no slow
hash; the digest is looked up by index).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, cast

from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.control.models import PARTNER_ID_MAX, PartnerRow, PartnerSequenceRow
from hub.control.sqltypes import utc_now
from hub.control.store_errors import guarded
from hub.control.validation import require_text
from hub.errors import InvalidInput, PermanentError

PartnerKind = Literal["hospital", "cbo"]
PARTNER_KINDS: Final = ("hospital", "cbo")
TOKEN_PREFIX: Final = "chp_"  # noqa: S105 (a public prefix, not a secret)
MAX_TOKEN_LENGTH: Final = 256
NAME_MAX: Final = 200
ORGANIZATION_MAX: Final = 512

# A Kafka topic name is [a-zA-Z0-9._-]{1,249}; ``partner.<id>`` stays well inside it.
_PARTNER_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
#: Resources a referral's performer (or requester) may name a partner by: relative, or absolute on a FHIR server.
PERFORMER_TYPES: Final = ("Organization", "HealthcareService", "PractitionerRole", "Practitioner", "CareTeam")
_ORGANIZATION_REFERENCE = re.compile(
    r"(?:https?://[^\s|/]+(?:/[^\s|/]+)*/)?(?:" + "|".join(PERFORMER_TYPES) + r")/[A-Za-z0-9\-.]{1,64}"
)
_IDENTIFIER = re.compile(r"[^\s|]+\|[^\s|](?:[^|]*[^\s|])?")

_COLUMNS = (
    PartnerRow.id,
    PartnerRow.kind,
    PartnerRow.name,
    PartnerRow.organization,
    PartnerRow.active,
    PartnerRow.created_at,
)


_PartnerColumns = Row[str, str, str, str, bool, datetime]


@dataclass(frozen=True)
class Partner:
    """A registered partner as the rest of the hub sees it (no credential)."""

    id: str
    kind: PartnerKind
    name: str
    organization: str
    active: bool
    created_at: datetime

    def to_public(self) -> dict[str, object]:
        """JSON-ready representation for the admin API."""
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "organization": self.organization,
            "active": self.active,
            "created_at": self.created_at.isoformat(),
        }


class PartnerExists(PermanentError):
    """A partner with the same ``id`` or ``organization`` is already registered."""

    def __init__(self, field: Literal["id", "organization"]) -> None:
        super().__init__(f"a partner with this {field} is already registered")
        self.field = field


class PartnerNotFound(PermanentError):
    """No partner is registered under the given id."""

    def __init__(self) -> None:
        super().__init__("no partner is registered under this id")


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a bearer token: what the database stores and looks up."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh bearer token (``chp_`` + 43 URL-safe characters, 256 bits of randomness)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: Ids no partner may take: ``operator`` is the sender of everything the HIE operator writes
#: (``hub.adapters.fhir_access.sender_of``), so a partner called that would read it all.
RESERVED_PARTNER_IDS: Final = frozenset({"operator"})


def validate_partner_fields(id: str, kind: str, name: str, organization: str) -> None:  # noqa: A002
    """Raise :class:`hub.errors.InvalidInput` (``expression`` = field name) for the first invalid field."""
    if not isinstance(id, str) or _PARTNER_ID.fullmatch(id) is None:
        raise InvalidInput(
            f"id must be 1-{PARTNER_ID_MAX} characters of lowercase letters, digits and '-', starting with "
            f"a letter or digit (it names the Kafka topic partner.<id>); got {_shown(id)}",
            expression="id",
        )
    if id in RESERVED_PARTNER_IDS:
        raise InvalidInput(f"id {id!r} is reserved (the hub's own records use it); choose another", expression="id")
    if kind not in PARTNER_KINDS:
        raise InvalidInput(f"kind must be 'hospital' or 'cbo'; got {_shown(kind)}", expression="kind")
    require_text("name", name, NAME_MAX)
    if not isinstance(organization, str) or len(organization) > ORGANIZATION_MAX:
        raise InvalidInput(
            f"organization must be a string of at most {ORGANIZATION_MAX} characters",
            expression="organization",
        )
    if _ORGANIZATION_REFERENCE.fullmatch(organization) is None and _IDENTIFIER.fullmatch(organization) is None:
        raise InvalidInput(
            "organization must be a FHIR reference 'Organization/<id>' (or HealthcareService, PractitionerRole, "
            "Practitioner, CareTeam; relative or absolute; id: 1-64 letters, digits, '-' or '.') "
            "or an identifier 'system|value' "
            "(system without spaces, neither part empty nor containing '|')",
            expression="organization",
        )


def _partner(row: _PartnerColumns) -> Partner:
    return Partner(
        id=row.id,
        kind=cast("PartnerKind", row.kind),
        name=row.name,
        organization=row.organization,
        active=bool(row.active),
        created_at=row.created_at,
    )


async def _conflicting_field(
    session: AsyncSession, partner_id: str, organization: str
) -> Literal["id", "organization"] | None:
    if await session.scalar(select(PartnerRow.id).where(PartnerRow.id == partner_id)) is not None:
        return "id"
    by_organization = select(PartnerRow.id).where(PartnerRow.organization == organization)
    if await session.scalar(by_organization) is not None:
        return "organization"
    return None


async def create_partner(
    session: AsyncSession,
    *,
    id: str,  # noqa: A002
    kind: str,
    name: str,
    organization: str,
) -> tuple[Partner, str]:
    """Register a partner and return it with its bearer token (shown once, never stored). Commits.

    Raises InvalidInput for a bad field and :class:`PartnerExists` when the id or organization is taken.
    """
    validate_partner_fields(id, kind, name, organization)
    token = new_token()
    partner = Partner(
        id=id,
        kind=cast("PartnerKind", kind),
        name=name,
        organization=organization,
        active=True,
        created_at=utc_now(),
    )
    async with guarded(session, "create_partner"):
        conflict = await _conflicting_field(session, id, organization)
        if conflict is not None:
            raise PartnerExists(conflict)
        try:
            await session.execute(
                insert(PartnerRow).values(
                    id=partner.id,
                    kind=partner.kind,
                    name=partner.name,
                    organization=partner.organization,
                    token_hash=hash_token(token),
                    active=True,
                    created_at=partner.created_at,
                )
            )
            await session.execute(insert(PartnerSequenceRow).values(partner_id=partner.id, last_number=0))
            await session.commit()
        except IntegrityError as exc:  # lost a race with a concurrent registration
            await session.rollback()
            raise PartnerExists(await _conflicting_field(session, id, organization) or "id") from exc
    return partner, token


async def authenticate(session: AsyncSession, token: str) -> Partner | None:
    """The active partner holding ``token``, or None (unknown token, or partner deactivated)."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    statement = select(*_COLUMNS).where(PartnerRow.token_hash == hash_token(token), PartnerRow.active.is_(True))
    async with guarded(session, "authenticate"):
        row = (await session.execute(statement)).one_or_none()
    return None if row is None else _partner(row)


async def get_partner(session: AsyncSession, partner_id: str) -> Partner | None:
    """The partner registered as ``partner_id`` (active or not), or None."""
    async with guarded(session, "get_partner"):
        row = (await session.execute(select(*_COLUMNS).where(PartnerRow.id == partner_id))).one_or_none()
    return None if row is None else _partner(row)


async def list_partners(session: AsyncSession, *, kind: str | None = None) -> list[Partner]:
    """All partners ordered by id, optionally only those of one ``kind``."""
    statement = select(*_COLUMNS).order_by(PartnerRow.id)
    if kind is not None:
        if kind not in PARTNER_KINDS:
            raise InvalidInput(f"kind must be 'hospital' or 'cbo'; got {_shown(kind)}", expression="kind")
        statement = statement.where(PartnerRow.kind == kind)
    async with guarded(session, "list_partners"):
        rows = (await session.execute(statement)).all()
    return [_partner(row) for row in rows]


async def find_by_organization(session: AsyncSession, reference: str) -> Partner | None:
    """The partner whose stored organization string equals ``reference`` exactly, or None."""
    statement = select(*_COLUMNS).where(PartnerRow.organization == reference)
    async with guarded(session, "find_by_organization"):
        row = (await session.execute(statement)).one_or_none()
    return None if row is None else _partner(row)


async def set_partner_active(session: AsyncSession, partner_id: str, active: bool) -> Partner | None:
    """Activate or deactivate a partner (a deactivated partner no longer authenticates). Commits.

    Returns the updated partner, or None when no partner has this id.
    """
    statement = update(PartnerRow).where(PartnerRow.id == partner_id).values(active=active).returning(*_COLUMNS)
    async with guarded(session, "set_partner_active"):
        row = (await session.execute(statement)).one_or_none()
        await session.commit()
    return None if row is None else _partner(row)
