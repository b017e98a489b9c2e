"""The PostgreSQL side of the storage layer (see ``direct.py``): an ``asyncpg`` pool, ``COPY`` for
bulk inserts, and a timeout on everything that waits for the server (``NUMGATE_DB_TIMEOUT``):
connecting, taking a pooled connection, each statement. A silent network partition therefore
costs a request at most that long, and the connection it hung on is dropped, not reused."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from numgate.db.direct import BulkInsert, BulkUpdate, Query, Row, Tx, compiled
from numgate.db.errors import translated, translated_error
from numgate.errors import StorageUnavailable
from numgate.outages import OUTAGES

T = TypeVar("T")


class PgTx:
    __slots__ = ("_conn", "dialect")
    is_postgres = True

    def __init__(self, conn: Any, dialect: Dialect) -> None:
        self._conn = conn
        self.dialect = dialect

    def _call(self, method: Callable[..., Awaitable[T]], q: Query, params: Mapping[str, Any]) -> Awaitable[T]:
        c = compiled(q, self.dialect)
        return translated(method(c.sql, *c.args(params)))

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
            await translated(self._conn.executemany(c.sql, args))

    async def bulk_insert(self, b: BulkInsert, rows: Sequence[Mapping[str, Any]], /) -> None:
        if not rows:
            return
        c = b.insert.compiled(self.dialect)  # its parameters are the columns, by name
        records = [c.args(r) for r in rows]
        await translated(self._conn.copy_records_to_table(b.table.name, records=records, columns=c.names))

    async def bulk_update(self, b: BulkUpdate, rows: Sequence[Mapping[str, Any]], /) -> int:
        if not rows:
            return 0
        return await self.run(b.postgres, **b.columns(rows))


async def _keep_session(conn: Any) -> None:
    """What a connection needs on its way back to the pool beyond asyncpg's own rollback of an
    open transaction: nothing. numgate sets no session state (no SET, LISTEN, advisory lock,
    cursor), so asyncpg's default reset — a round trip running RESET ALL and friends on every
    release — would only cost time."""


class PgDatabase:
    def __init__(self, engine: AsyncEngine, pool_size: int, timeout_s: float = 5.0) -> None:
        self.dialect = engine.dialect
        url = engine.url.set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._size = pool_size
        self._timeout = timeout_s
        self._pool: Any = None
        self._opening = asyncio.Lock()

    async def _get_pool(self) -> Any:
        if self._pool is not None:
            return self._pool
        async with self._opening:  # the first callers arrive together: one pool for all
            if self._pool is None:
                import asyncpg  # type: ignore[import-untyped]

                self._pool = await translated(
                    asyncio.wait_for(
                        asyncpg.create_pool(
                            self._dsn,
                            # no background refill: during an outage it would log a traceback
                            # every few seconds; a connection is opened when one is needed
                            min_size=0,
                            max_size=self._size,
                            reset=_keep_session,
                            timeout=self._timeout,
                            command_timeout=self._timeout,
                        ),
                        self._timeout,
                    )
                )
        return self._pool

    @asynccontextmanager
    async def _acquire(self, transaction: bool) -> AsyncIterator[Tx]:
        try:
            pool = await self._get_pool()
            conn = await translated(pool.acquire(timeout=self._timeout))
        except StorageUnavailable as exc:
            OUTAGES.down("database", str(exc))
            raise
        broken = False
        try:
            if not transaction:
                yield PgTx(conn, self.dialect)
            else:
                tr = conn.transaction()
                await translated(tr.start())
                try:
                    yield PgTx(conn, self.dialect)
                except BaseException:
                    await _quietly(tr.rollback(), self._timeout)
                    raise
                await translated(tr.commit())
        except StorageUnavailable as exc:
            broken = True  # a timed-out or dropped connection is not given back for reuse
            OUTAGES.down("database", str(exc))
            raise
        except BaseException as exc:
            err = translated_error(exc)
            broken = isinstance(err, StorageUnavailable)
            if broken:
                OUTAGES.down("database", str(err))
                raise err from exc
            raise
        finally:
            if broken:
                with contextlib.suppress(Exception):  # already closed by the driver
                    conn.terminate()
            await _quietly(pool.release(conn), self._timeout)
        OUTAGES.up("database")

    def read(self) -> Any:
        return self._acquire(False)

    def write(self) -> Any:
        return self._acquire(True)

    def autocommit(self) -> Any:
        return self._acquire(False)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self._timeout)
            except Exception:
                pool.terminate()


async def _quietly(call: Awaitable[Any], timeout_s: float) -> None:
    """Roll back or release without letting an outage's error replace the one being handled."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(call, timeout_s)
