"""The PostgreSQL side of the storage layer (see ``direct.py``): an ``asyncpg`` pool, ``COPY`` for
bulk inserts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from numgate.db.direct import BulkInsert, Query, Row, Tx, compiled
from numgate.errors import Conflict, StorageUnavailable

T = TypeVar("T")


def _pg_error(exc: Exception) -> Exception | None:
    """The core's error for a driver error, or None (a bug: let it through as it is)."""
    import asyncpg  # type: ignore[import-untyped]

    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return Conflict(str(exc))
    if isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError
        | OSError,
    ):
        return StorageUnavailable(f"the database is unavailable: {exc}")
    return None


async def _translated(call: Awaitable[T]) -> T:
    try:
        return await call
    except Exception as exc:
        err = _pg_error(exc)
        if err is None:
            raise
        raise err from exc


class PgTx:
    __slots__ = ("_conn", "dialect")
    is_postgres = True

    def __init__(self, conn: Any, dialect: Dialect) -> None:
        self._conn = conn
        self.dialect = dialect

    def _call(self, method: Callable[..., Awaitable[T]], q: Query, params: Mapping[str, Any]) -> Awaitable[T]:
        c = compiled(q, self.dialect)
        return _translated(method(c.sql, *c.args(params)))

    async def one(self, q: Query, /, **params: Any) -> Row | None:
        return await self._call(self._conn.fetchrow, q, params)

    async def all(self, q: Query, /, **params: Any) -> list[Row]:
        return list(await self._call(self._conn.fetch, q, params))

    async def scalar(self, q: Query, /, **params: Any) -> Any:
        return await self._call(self._conn.fetchval, q, params)

    async def run(self, q: Query, /, **params: Any) -> int:
        status: str = await self._call(self._conn.execute, q, params)
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def many(self, q: Query, rows: Iterable[Mapping[str, Any]], /) -> None:
        c = compiled(q, self.dialect)
        args = [c.args(r) for r in rows]
        if args:
            await _translated(self._conn.executemany(c.sql, args))

    async def bulk_insert(self, b: BulkInsert, rows: Sequence[Mapping[str, Any]], /) -> None:
        if not rows:
            return
        c = b.insert.compiled(self.dialect)  # its parameters are the columns, by name
        records = [c.args(r) for r in rows]
        await _translated(self._conn.copy_records_to_table(b.table.name, records=records, columns=c.names))


async def _keep_session(conn: Any) -> None:
    """What a connection needs on its way back to the pool beyond asyncpg's own rollback of an
    open transaction: nothing. numgate sets no session state (no SET, LISTEN, advisory lock,
    cursor), so asyncpg's default reset — a round trip running RESET ALL and friends on every
    release — would only cost time."""


class PgDatabase:
    def __init__(self, engine: AsyncEngine, pool_size: int) -> None:
        self.dialect = engine.dialect
        url = engine.url.set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._size = pool_size
        self._pool: Any = None
        self._opening = asyncio.Lock()

    async def _get_pool(self) -> Any:
        if self._pool is not None:
            return self._pool
        async with self._opening:  # the first callers arrive together: one pool for all
            if self._pool is None:
                import asyncpg  # type: ignore[import-untyped]

                self._pool = await _translated(
                    asyncpg.create_pool(self._dsn, min_size=1, max_size=self._size, reset=_keep_session)
                )
        return self._pool

    @asynccontextmanager
    async def _acquire(self, transaction: bool) -> AsyncIterator[Tx]:
        pool = await self._get_pool()
        conn = await _translated(pool.acquire())
        try:
            if not transaction:
                yield PgTx(conn, self.dialect)
                return
            tr = conn.transaction()
            await _translated(tr.start())
            try:
                yield PgTx(conn, self.dialect)
            except BaseException:
                await tr.rollback()
                raise
            await _translated(tr.commit())
        finally:
            await pool.release(conn)

    def read(self) -> Any:
        return self._acquire(False)

    def write(self) -> Any:
        return self._acquire(True)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
