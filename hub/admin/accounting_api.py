"""Admin routes of the accounting of disclosures and the BALP AuditEvent export (FastAPI edge).

Holds :func:`build_accounting_router`: ``GET /disclosures`` (JSON accounting) and
``GET /audit/AuditEvent`` (FHIR ``searchset`` Bundle, ``application/fhir+json``). The admin router
includes it, so its prefix ``/admin/v1`` and its operator-token check apply. It reads the control plane
through :mod:`hub.admin.accounting` only. Page sizes, the verdict and the cursor's alphabet are typed and
bounded here (FastAPI validates them); dates, times and cursors are parsed there. Either way a bad value is
a 400 problem+json ``{"detail": "<parameter>: <message>", ...}`` (the admin API's error shape) that names
the parameter without repeating the value.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.admin import accounting
from hub.admin.params import MAX_FILTER
from hub.control.sqltypes import utc_now
from hub.errors import InvalidInput

FHIR_JSON = "application/fhir+json"

_TIME_MAX = 64
PatientParam = Annotated[
    str | None,
    Query(description="The patient: a hub patient id or any of its identifiers 'system|value'.", max_length=MAX_FILTER),
]
SinceParam = Annotated[
    str | None,
    Query(description="Start, inclusive: YYYY-MM-DD (a UTC day) or a time with offset (…Z).", max_length=_TIME_MAX),
]
UntilParam = Annotated[
    str | None, Query(description="End, exclusive; a date covers that whole day.", max_length=_TIME_MAX)
]
CursorParam = Annotated[
    str | None,
    Query(description="Continuation token: follow the previous page's next link.", max_length=200,
          pattern=r"^[A-Za-z0-9_-]+$"),
]
_PAGE = f"Page size, 1-{accounting.MAX_LIMIT} (default {accounting.DEFAULT_LIMIT})."
PageSize = Annotated[int, Query(description=_PAGE, ge=1, le=accounting.MAX_LIMIT)]


def bad_query(parameter: str, message: str) -> HTTPException:
    """400 naming the query parameter (the message never repeats its value: it may identify a patient)."""
    detail = message if message.startswith(parameter) else f"{parameter}: {message}"
    return HTTPException(status.HTTP_400_BAD_REQUEST, detail=detail)


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def build_accounting_router(*, sessions: async_sessionmaker[AsyncSession]) -> APIRouter:
    """The two read-only routes; include it into the authenticated ``/admin/v1`` router."""
    router = APIRouter()

    @router.get("/disclosures")
    async def list_disclosures(
        request: Request,
        *,
        patient: PatientParam = None,
        since: SinceParam = None,
        until: Annotated[
            str | None, Query(description="End, exclusive; a date covers that day. Default: now.", max_length=_TIME_MAX)
        ] = None,
        limit: PageSize = accounting.DEFAULT_LIMIT,
        cursor: CursorParam = None,
    ) -> dict[str, Any]:
        """Accounting of disclosures (HIPAA 45 CFR 164.528): every permitted sharing of the patient's data.

        Default period: the six years before now. Oldest first, paged: ``next`` is the URL of the
        following page (null on the last). An unknown patient has an empty accounting. See
        docs/adr/0008-accounting-and-audit-export.md.
        """
        if not patient:
            raise bad_query("patient", "patient is required: a hub patient id or an identifier 'system|value'")
        try:
            window = accounting.accounting_window(since, until, now=utc_now())
            after = accounting.decode_cursor(cursor)
            async with sessions() as session:
                found = await accounting.read_accounting(session, patient, window, after=after, limit=limit)
        except InvalidInput as exc:
            raise bad_query(exc.expression or "query", str(exc)) from exc
        next_url = None
        if found.next_after is not None:
            next_url = str(
                request.url.include_query_params(
                    since=_instant(window.since), until=_instant(window.until),
                    cursor=accounting.encode_cursor(found.next_after),
                )
            )
        return accounting.accounting_json(found, next_url=next_url)

    @router.get("/audit/AuditEvent", response_class=JSONResponse)
    async def export_audit_events(
        request: Request,
        *,
        patient: PatientParam = None,
        since: SinceParam = None,
        until: UntilParam = None,
        verdict: Annotated[
            Literal["permit", "deny"] | None, Query(description="permit (disclosures) or deny; default both.")
        ] = None,
        count: Annotated[
            int, Query(alias="_count", description=_PAGE, ge=1, le=accounting.MAX_LIMIT)
        ] = accounting.DEFAULT_LIMIT,
        cursor: CursorParam = None,
    ) -> JSONResponse:
        """Audited decisions, permit and deny, as FHIR R4 AuditEvents (IHE BALP style) in a ``searchset``
        Bundle, oldest first, paged by the Bundle's ``next`` link."""
        try:
            start, end = accounting.export_window(since, until)
            after = accounting.decode_cursor(cursor)
            async with sessions() as session:
                events, next_after = await accounting.read_audit_events(
                    session, patient=patient or None, since=start, until=end, verdict=verdict, after=after,
                    limit=count,
                )
        except InvalidInput as exc:
            raise bad_query(exc.expression or "query", str(exc)) from exc
        next_url = None
        if next_after is not None:
            next_url = str(request.url.include_query_params(cursor=accounting.encode_cursor(next_after)))
        bundle = accounting.searchset_bundle(events, self_url=str(request.url), next_url=next_url, now=utc_now())
        return JSONResponse(bundle, media_type=FHIR_JSON)

    return router
