"""Admin routes of a hospital's HL7 v2 sending facilities (``/admin/v1/partners/{id}/facilities``).

Holds :func:`build_facilities_router`; the admin router includes it, so its prefix ``/admin/v1`` and its
operator-token check apply. It touches the control plane through :mod:`hub.control.facilities` only.
Errors are the admin API's problem+json with a ``detail``: 400 a partner id or facility in the path
that cannot be one, 404 unknown partner, 409 a facility another partner has, 422 a partner that is not a
hospital or a facility that cannot be an MSH-4.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.admin.params import PartnerId
from hub.control import facilities, partners
from hub.control.models import FACILITY_MAX
from hub.errors import InvalidInput

FacilityPath = Annotated[
    str, Path(description="The facility as registered (MSH-4).", min_length=1, max_length=FACILITY_MAX)
]


class FacilityIn(BaseModel):
    """A sending facility to register for a hospital."""

    model_config = ConfigDict(extra="forbid")

    facility: str = Field(
        description="MSH-4 as the hospital sends it: 'GHH', or all components 'GHH^1.2.3^ISO'. A message whose "
        "full MSH-4 is not registered is matched on its first component.",
        max_length=FACILITY_MAX,
    )


def _public(found: facilities.Facility) -> dict[str, Any]:
    return {"facility": found.facility, "partner_id": found.partner_id, "created_at": found.created_at.isoformat()}


def build_facilities_router(*, sessions: async_sessionmaker[AsyncSession]) -> APIRouter:
    """Register, list and remove a hospital's sending facilities; include it into the ``/admin/v1`` router."""
    router = APIRouter()

    async def _require_partner(session: AsyncSession, partner_id: str) -> None:
        if await partners.get_partner(session, partner_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no partner with id {partner_id!r}")

    @router.post("/partners/{partner_id}/facilities", status_code=status.HTTP_201_CREATED)
    async def add_facility(partner_id: PartnerId, facility_in: FacilityIn) -> dict[str, Any]:
        """Register an MSH-4 sending facility for a hospital (idempotent); effective within 10 s on MLLP."""
        try:
            async with sessions() as session:
                added = await facilities.add_facility(session, partner_id, facility_in.facility)
        except partners.PartnerNotFound as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no partner with id {partner_id!r}") from exc
        except facilities.FacilityTaken as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
        except facilities.NotAHospital as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
        except InvalidInput as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"{exc.expression}: {exc}") from exc
        return _public(added)

    @router.get("/partners/{partner_id}/facilities")
    async def list_facilities(partner_id: PartnerId) -> list[dict[str, Any]]:
        """The facilities registered for a partner."""
        async with sessions() as session:
            await _require_partner(session, partner_id)
            return [_public(found) for found in await facilities.list_facilities(session, partner_id)]

    @router.delete("/partners/{partner_id}/facilities/{facility}", status_code=status.HTTP_204_NO_CONTENT)
    async def remove_facility(partner_id: PartnerId, facility: FacilityPath) -> Response:
        """Unregister a facility; its messages are refused (AR) within 10 s."""
        try:
            async with sessions() as session:
                await _require_partner(session, partner_id)
                removed = await facilities.remove_facility(session, partner_id, facility)
        except InvalidInput as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"{exc.expression}: {exc}") from exc
        if not removed:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="this facility is not registered for this partner")
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return router
