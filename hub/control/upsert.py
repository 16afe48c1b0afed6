"""Dialect-specific ``INSERT ... ON CONFLICT DO NOTHING`` for the two supported backends.

Holds one statement builder; pure (no I/O). Used where a retried or concurrent write must not fail
on a unique key: the crosswalk, the audit and the delivery numbering.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.dml import Insert

from hub.errors import ConfigurationError


def insert_ignoring_conflicts(
    dialect_name: str,
    table: type[DeclarativeBase] | Table,
    rows: Sequence[Mapping[str, Any]],
    conflict_columns: Sequence[str],
) -> Insert:
    """``INSERT rows INTO table ON CONFLICT (conflict_columns) DO NOTHING`` for ``dialect_name``.

    ``table`` may be a mapped class (the statement then runs ORM-enabled through a session) or a Table.
    """
    if dialect_name == "postgresql":
        return postgresql.insert(table).values(list(rows)).on_conflict_do_nothing(index_elements=conflict_columns)
    if dialect_name == "sqlite":
        return sqlite.insert(table).values(list(rows)).on_conflict_do_nothing(index_elements=conflict_columns)
    raise ConfigurationError(f"unsupported control-plane database {dialect_name!r}")


def insert_ignoring_conflicts_template(dialect_name: str, table: Table, conflict_columns: Sequence[str]) -> Insert:
    """The same statement without values: execute it with a list of rows (executemany).

    Unlike a statement with inline values it has a stable cache key, so SQLAlchemy compiles it once.
    """
    if dialect_name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=conflict_columns)
    if dialect_name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=conflict_columns)
    raise ConfigurationError(f"unsupported control-plane database {dialect_name!r}")
