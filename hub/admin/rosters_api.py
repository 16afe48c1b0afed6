"""Admin routes of partner rosters (FastAPI edge): the patients a CBO serves.

Holds :func:`build_rosters_router`: ``GET``/``POST /partners/{id}/roster`` and ``DELETE
/partners/{id}/roster/{entry}`` (or ``DELETE /partners/{id}/roster?patient=...``). The admin router
includes it, so its prefix ``/admin/v1`` and its operator-token check apply. It changes the control plane
through :mod:`hub.control.rosters` only. Errors are problem+json with a ``detail``: 400 for an unusable
patient, entry id or paging parameter (naming it, never repeating the value: it identifies a patient;
ids and page sizes are typed and bounded by FastAPI), 404 for an unknown partner or entry, 409 for a
partner that holds no roster (a hospital).

After a change it calls ``app.state.roster_changed()`` when the composition root set it (the route
stage's roster cache in the same process; other processes see the change within their cache TTL).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.admin.params import MAX_ROW_ID, PartnerId
from hub.control import rosters
from hub.control.crosswalk import SOURCE_MAX
from hub.control.partners import PartnerNotFound
from hub.errors import InvalidInput

#: What the composition root may set as ``app.state.roster_changed``.
RosterChanged = Callable[[], None]

_PATIENT = (
    "The patient: an identifier 'system|value' as the CBO or a hospital knows the patient ('|value' for the "
    "CBO's own local identifier), or a hub patient id 'hp-<32 hex digits>'."
)


class RosterEntryIn(BaseModel):
    """A patient to put on a CBO's roster."""

    model_config = ConfigDict(extra="forbid")

    patient: str = Field(description=_PATIENT, max_length=SOURCE_MAX)


class RosterIn(BaseModel):
    """A CBO's whole roster, replacing the one the hub holds."""

    model_config = ConfigDict(extra="forbid")

    patients: list[Annotated[str, Field(max_length=SOURCE_MAX)]] = Field(
        description=f"Every patient on the roster, each as in POST ({_PATIENT})", max_length=rosters.MAX_SYNC
    )


def _bad(parameter: str, message: str) -> HTTPException:
    detail = message if message.startswith(parameter) else f"{parameter}: {message}"
    return HTTPException(status.HTTP_400_BAD_REQUEST, detail=detail)


def _no_partner(partner_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no partner with id {partner_id!r}")


EntryId = Annotated[int, Path(description="A roster entry's id (from the listing).", ge=1, le=MAX_ROW_ID)]
PatientQuery = Annotated[str | None, Query(description=_PATIENT, max_length=SOURCE_MAX)]


def _changed(request: Request) -> None:
    callback = getattr(request.app.state, "roster_changed", None)
    if callable(callback):
        callback()


def _add_sync_route(router: APIRouter, sessions: async_sessionmaker[AsyncSession]) -> None:
    @router.put("/partners/{partner_id}/roster")
    async def replace_roster(request: Request, partner_id: PartnerId, roster_in: RosterIn) -> dict[str, Any]:
        """Replace a CBO's whole roster with the list given (a nightly client-list sync), in one transaction:
        entries already there are kept, missing ones removed, new ones added. Answers the counts."""
        try:
            async with sessions() as session:
                synced = await rosters.replace_roster(session, partner_id, roster_in.patients)
        except PartnerNotFound as exc:
            raise _no_partner(partner_id) from exc
        except rosters.RosterNotAllowed as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
        except InvalidInput as exc:
            raise _bad(exc.expression or "patients", str(exc)) from exc
        if synced.added or synced.removed:
            _changed(request)
        return {"partner_id": partner_id, "added": synced.added, "removed": synced.removed, "kept": synced.kept,
                "total": synced.total}


def build_rosters_router(*, sessions: async_sessionmaker[AsyncSession]) -> APIRouter:
    """The roster routes; include it into the authenticated ``/admin/v1`` router."""
    router = APIRouter()

    @router.get("/partners/{partner_id}/roster")
    async def list_roster(
        request: Request,
        partner_id: PartnerId,
        after: Annotated[
            int | None, Query(description="Continuation: the last entry id of the previous page.", ge=1, le=MAX_ROW_ID)
        ] = None,
        limit: Annotated[
            int, Query(description=f"Page size, 1-{rosters.MAX_LIMIT}.", ge=1, le=rosters.MAX_LIMIT)
        ] = rosters.DEFAULT_LIMIT,
    ) -> dict[str, Any]:
        """A partner's roster, oldest entry first, paged by ``next``. Each entry says how it names the
        patient and, once the hub knows the patient, the hub patient id (null: it matches nothing yet)."""
        start = after or 0
        size = limit
        try:
            async with sessions() as session:
                entries = await rosters.list_roster(session, partner_id, after=start, limit=size)
        except PartnerNotFound as exc:
            raise _no_partner(partner_id) from exc
        next_url = None
        if len(entries) == size:
            next_url = str(request.url.include_query_params(after=entries[-1].id, limit=size))
        return {"partner_id": partner_id, "entries": [e.to_public() for e in entries], "next": next_url}

    @router.post("/partners/{partner_id}/roster", status_code=status.HTTP_201_CREATED)
    async def add_to_roster(
        request: Request, response: Response, partner_id: PartnerId, entry_in: RosterEntryIn
    ) -> dict[str, Any]:
        """Put a patient on a CBO's roster: 201 with the new entry, or 200 with the entry already there."""
        try:
            async with sessions() as session:
                entry, created = await rosters.add_to_roster(session, partner_id, entry_in.patient)
        except PartnerNotFound as exc:
            raise _no_partner(partner_id) from exc
        except rosters.RosterNotAllowed as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
        except InvalidInput as exc:
            raise _bad(exc.expression or "patient", str(exc)) from exc
        if created:
            _changed(request)
        else:
            response.status_code = status.HTTP_200_OK
        return entry.to_public()

    _add_sync_route(router, sessions)

    @router.delete("/partners/{partner_id}/roster/{entry_id}", status_code=status.HTTP_204_NO_CONTENT)
    async def remove_entry(request: Request, partner_id: PartnerId, entry_id: EntryId) -> Response:
        """Take one entry (by its id) off the partner's roster; 404 when the roster has no such entry."""
        return await _remove(request, partner_id, entry_id=entry_id)

    @router.delete("/partners/{partner_id}/roster", status_code=status.HTTP_204_NO_CONTENT)
    async def remove_patient(
        request: Request, partner_id: PartnerId, patient: PatientQuery = None
    ) -> Response:
        """Take the patient, named as the entry names it, off the partner's roster."""
        if not patient:
            raise _bad("patient", "patient is required: name the entry by the patient or use DELETE .../roster/{id}")
        return await _remove(request, partner_id, patient=patient)

    async def _remove(request: Request, partner_id: str, *, entry_id: int | None = None,
                      patient: str | None = None) -> Response:
        try:
            async with sessions() as session:
                removed = await rosters.remove_from_roster(session, partner_id, entry_id=entry_id, patient=patient)
        except PartnerNotFound as exc:
            raise _no_partner(partner_id) from exc
        except InvalidInput as exc:
            raise _bad(exc.expression or "patient", str(exc)) from exc
        if removed is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"partner {partner_id} has no such roster entry")
        _changed(request)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return router
