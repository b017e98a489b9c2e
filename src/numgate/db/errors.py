"""The one translation of database driver errors into the core's errors (``errors.py``).

Both drivers (``sqlite3``, ``asyncpg``) and SQLAlchemy's wrappers of them (migrations, the schema
check) come through :func:`translate`:

- a unique or foreign-key violation is :class:`Conflict` (each service says what collided);
- a database that does not exist is :class:`DatabaseMissing`; refused credentials are a
  :class:`ConfigurationError`;
- a database that is down, unreachable, shutting down, out of connections, locked or too slow
  (``NUMGATE_DB_TIMEOUT``) is :class:`StorageUnavailable`, worth retrying.

Anything else is a bug and is left as it is. The texts are for the operator (logs, CLI); the
doors answer clients with fixed texts and never pass a driver's words on.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable
from typing import TypeVar

from numgate.errors import ConfigurationError, Conflict, DatabaseMissing, NumgateError, StorageUnavailable

T = TypeVar("T")


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out:
        out.append(cur)
        cur = getattr(cur, "orig", None) or cur.__cause__ or cur.__context__
    return out


def translate(exc: BaseException) -> NumgateError | None:
    """The core's error for a driver error (found anywhere in its cause chain), or None."""
    import asyncpg  # type: ignore[import-untyped]

    if isinstance(exc, NumgateError):
        return exc
    for e in _chain(exc):
        if isinstance(e, asyncpg.IntegrityConstraintViolationError | sqlite3.IntegrityError):
            return Conflict(str(e))
        if isinstance(e, asyncpg.InvalidCatalogNameError):
            return DatabaseMissing(
                f"the PostgreSQL database does not exist ({e}): create it, or fix NUMGATE_DATABASE_URL"
            )
        if isinstance(e, asyncpg.InvalidAuthorizationSpecificationError):
            return ConfigurationError(f"PostgreSQL refused the connection: {e}")
        if isinstance(
            e,
            asyncpg.PostgresConnectionError
            | asyncpg.InterfaceError
            | asyncpg.OperatorInterventionError  # admin shutdown, crash, starting up, statement timeout
            | asyncpg.TooManyConnectionsError
            | asyncpg.InsufficientResourcesError
            | sqlite3.OperationalError
            | ConnectionError
            | TimeoutError
            | asyncio.TimeoutError,
        ):
            return StorageUnavailable(f"the database is unavailable: {_describe(e)}")
        if isinstance(e, OSError):
            return StorageUnavailable(f"the database is unreachable: {_describe(e)}")
    return None


def _describe(e: BaseException) -> str:
    text = str(e).strip()
    if isinstance(e, TimeoutError | asyncio.TimeoutError) and not text:
        return "no answer within NUMGATE_DB_TIMEOUT"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def translated_error(exc: BaseException) -> BaseException:
    """``translate(exc)`` chained to ``exc``, or ``exc`` itself."""
    err = translate(exc)
    if err is None or err is exc:
        return exc
    err.__cause__ = exc
    return err


async def translated(call: Awaitable[T]) -> T:
    try:
        return await call
    except Exception as exc:
        err = translated_error(exc)
        if err is exc:
            raise
        raise err from exc
