"""Small helpers shared by the control-plane tests (no fixtures here)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def fetch_all(session: AsyncSession, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Run raw SQL and return the rows as dicts (to inspect what the database really holds)."""
    result = await session.execute(text(sql), params)
    rows = [dict(row._mapping) for row in result]
    await session.commit()
    return rows
