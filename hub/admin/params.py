"""Typed, bounded path and query parameters shared by the admin routes (FastAPI validates them, so a bad
value is a 400 problem naming the parameter, never a 500; see ``hub.adapters.problem_json``)."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Path

from hub.control.models import PARTNER_ID_MAX

#: The largest row id SQLite and PostgreSQL ``BIGINT`` hold; a larger one cannot name anything.
MAX_ROW_ID: Final = 2**63 - 1
#: Longest free-text filter (an id or identifier) a query takes.
MAX_FILTER: Final = 512

PartnerId = Annotated[
    str,
    Path(
        description=f"The partner's id: 1-{PARTNER_ID_MAX} lowercase letters, digits and '-', starting with a "
        "letter or digit.",
        min_length=1, max_length=PARTNER_ID_MAX, pattern=r"^[a-z0-9][a-z0-9-]*$",
    ),
]
