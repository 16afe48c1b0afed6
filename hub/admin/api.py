"""The admin HTTP API (``/admin/v1``): partners, their HL7 v2 sending facilities
(``/partners/{id}/facilities``) and CBO rosters (``/partners/{id}/roster``), the sharing policies in
force (``/policies``), the audit of sharing decisions, the accounting of disclosures (``/disclosures``)
and the BALP AuditEvent export (``/audit/AuditEvent``).

Every route needs the operator's bearer token (``HUB_ADMIN_TOKEN``): no token or an unknown one is 401,
a partner's own token is 403 (it is valid, just not for this API). Errors are RFC 9457 problem+json
(``hub.adapters.problem_json``) whose ``detail`` is a precise message: a bad path or query parameter is a
400 naming it, a bad body a 422 naming the field; nothing here echoes PHI or the input. Every parameter
is typed and bounded here (``hub.admin.params``), not parsed by hand.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.adapters.problem_json import CLIENT_ERROR_RESPONSES
from hub.admin.accounting_api import build_accounting_router
from hub.admin.facilities_api import build_facilities_router
from hub.admin.params import MAX_FILTER, PartnerId
from hub.admin.policies_api import build_policies_router
from hub.admin.rosters_api import build_rosters_router
from hub.auth import SqlAuthenticator
from hub.consent.model import Policies
from hub.control import audit, partners
from hub.control.models import PARTNER_ID_MAX
from hub.errors import InvalidInput

PartnerCreated = Callable[[partners.Partner], Awaitable[None]]
_bearer = HTTPBearer(auto_error=False)


class PartnerIn(BaseModel):
    """A partner to register."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        description="Lowercase letters, digits and '-'; names the Kafka topic partner.<id>.",
        min_length=1, max_length=PARTNER_ID_MAX, pattern=r"^[a-z0-9][a-z0-9-]*$",
    )
    kind: Literal["hospital", "cbo"]
    name: str = Field(max_length=partners.NAME_MAX)
    organization: str = Field(
        description="How referrals name this partner: 'Organization/123' or an identifier 'system|value'.",
        max_length=partners.ORGANIZATION_MAX,
    )


def build_admin_router(
    *,
    sessions: async_sessionmaker[AsyncSession],
    authenticator: SqlAuthenticator,
    on_partner_created: PartnerCreated,
    policies: Policies | None = None,
) -> APIRouter:
    """The ``/admin/v1`` router; mount it at the application root."""
    async def require_operator(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if credentials is not None and authenticator.is_admin(credentials.credentials):
            return
        if credentials is not None and await authenticator.authenticate(credentials.credentials) is not None:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail="this is a partner's token: the admin API needs the operator's bearer token (HUB_ADMIN_TOKEN)",
            )
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="the admin API needs the operator's bearer token (HUB_ADMIN_TOKEN)",
            headers={"WWW-Authenticate": 'Bearer realm="carehub-admin"'},
        )

    router = APIRouter(
        prefix="/admin/v1", tags=["admin"], dependencies=[Depends(require_operator)], responses=CLIENT_ERROR_RESPONSES
    )

    @router.post("/partners", status_code=status.HTTP_201_CREATED)
    async def create_partner(partner_in: PartnerIn) -> dict[str, Any]:
        """Register a partner; the answer carries its bearer token, shown this once."""
        try:
            async with sessions() as session:
                partner, token = await partners.create_partner(
                    session, id=partner_in.id, kind=partner_in.kind, name=partner_in.name,
                    organization=partner_in.organization,
                )
        except partners.PartnerExists as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
        except InvalidInput as exc:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"{exc.expression}: {exc}"
            ) from exc
        await on_partner_created(partner)
        return {**partner.to_public(), "token": token}

    @router.get("/partners")
    async def list_partners(kind: Literal["hospital", "cbo"] | None = None) -> list[dict[str, Any]]:
        """Every registered partner (never their tokens)."""
        async with sessions() as session:
            return [p.to_public() for p in await partners.list_partners(session, kind=kind)]

    @router.get("/partners/{partner_id}")
    async def get_partner(partner_id: PartnerId) -> dict[str, Any]:
        """One partner (never its token)."""
        async with sessions() as session:
            partner = await partners.get_partner(session, partner_id)
        if partner is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no partner with id {partner_id!r}")
        return partner.to_public()

    @router.get("/audit")
    async def list_audit(
        patient: Annotated[str | None, Query(description="hub patient id", max_length=MAX_FILTER)] = None,
        event: Annotated[str | None, Query(description="event id (ce_id)", max_length=MAX_FILTER)] = None,
        recipient: Annotated[str | None, Query(description="partner id", max_length=PARTNER_ID_MAX)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> list[dict[str, Any]]:
        """Sharing decisions, permit and deny, oldest first."""
        async with sessions() as session:
            records = await audit.list_decisions(
                session, hub_patient_id=patient, event_id=event, recipient_id=recipient, limit=limit
            )
        return [
            {
                "event_id": r.event_id, "hub_patient_id": r.hub_patient_id, "recipient": r.recipient_id,
                "verdict": r.verdict, "rule": r.rule, "reason": r.reason, "purpose": r.purpose,
                "resource_type": r.resource_type, "decided_at": r.decided_at.isoformat(),
            }
            for r in records
        ]

    router.include_router(build_accounting_router(sessions=sessions))
    router.include_router(build_rosters_router(sessions=sessions))
    router.include_router(build_facilities_router(sessions=sessions))
    router.include_router(build_policies_router(policies=policies or Policies()))
    return router
