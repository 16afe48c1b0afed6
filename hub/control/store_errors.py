"""Translation of database driver failures into the hub's error tree.

Holds :func:`classify` and the :func:`guarded` context manager that every control-plane operation runs
in. It touches nothing but the session it is given (to roll it back after a failure). Messages name the
operation only; they never repeat SQL parameters, so no PHI reaches an error message (engines are also
built with ``hide_parameters=True`` so the chained driver exception does not carry values either).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from hub.errors import ConfigurationError, HubError, StoreUnavailable

# PostgreSQL SQLSTATE classes that mean "try again later": connection exception, insufficient resources,
# operator intervention (shutdown, cannot connect now), system error, transaction rollback (deadlock,
# serialization failure).
_RETRYABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58", "40"})
_RETRYABLE_SQLSTATES = frozenset({"55P03"})  # lock_not_available
_MISSING_DATABASE_SQLSTATES = frozenset({"3D000"})  # invalid_catalog_name
_AUTH_SQLSTATE_CLASS = "28"  # invalid authorization specification
_MISSING_SCHEMA_SQLSTATES = frozenset({"42P01"})  # undefined_table


def _sqlstate(exc: sa_exc.DBAPIError) -> str | None:
    code = getattr(exc.orig, "sqlstate", None)
    return code if isinstance(code, str) else None


def classify(exc: BaseException, operation: str) -> HubError | None:
    """Return the hub error that stands for ``exc``, or None when it must propagate unchanged.

    Connection and operational failures become :class:`StoreUnavailable` (retryable); a missing
    database, refused credentials or a missing schema become :class:`ConfigurationError`.
    """
    unavailable = StoreUnavailable(f"control-plane database unavailable during {operation}")
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError | OSError):
        return unavailable
    if not isinstance(exc, sa_exc.DBAPIError):
        return None
    if exc.connection_invalidated:
        return unavailable
    code = _sqlstate(exc)
    if code is not None:
        if code in _MISSING_SCHEMA_SQLSTATES:
            return _schema_missing(operation)
        if code in _MISSING_DATABASE_SQLSTATES or code.startswith(_AUTH_SQLSTATE_CLASS):
            return ConfigurationError(
                f"control-plane database refused the connection during {operation}: "
                "check the database name and credentials in HUB_DATABASE_URL"
            )
        if code[:2] in _RETRYABLE_SQLSTATE_CLASSES or code in _RETRYABLE_SQLSTATES:
            return unavailable
    if isinstance(exc, sa_exc.OperationalError):
        if "no such table" in str(exc.orig):
            return _schema_missing(operation)
        return unavailable
    if isinstance(exc, sa_exc.InterfaceError):
        return unavailable
    return None


def _schema_missing(operation: str) -> ConfigurationError:
    return ConfigurationError(
        f"control-plane schema is missing during {operation}: run the database migrations (carehub db upgrade)"
    )


async def _quiet_rollback(session: AsyncSession) -> None:
    with contextlib.suppress(sa_exc.SQLAlchemyError, OSError):
        await session.rollback()


@contextlib.asynccontextmanager
async def guarded(session: AsyncSession, operation: str) -> AsyncIterator[None]:
    """Run one control-plane operation: roll ``session`` back on failure and translate driver errors."""
    try:
        yield
    except Exception as exc:
        await _quiet_rollback(session)
        translated = classify(exc, operation)
        if translated is None:
            raise
        raise translated from exc
