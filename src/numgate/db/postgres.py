"""The PostgreSQL side of the storage layer (see ``direct.py``): an ``asyncpg`` pool, ``COPY`` for
bulk inserts."""

from __future__ import annotations

import asyncio
import operator
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from numgate.db.direct import BulkInsert, Query, Row, Tx, compiled
from numgate.errors import Conflict, StorageUnavailable


def _pg_error(exc: Exception) -> Exception:
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
    return exc


class PgTx:
    __slots__ = ("_conn", "dialect")
    is_postgres = True

    def __init__(self, conn: Any, dialect: Dialect) -> None:
        self._conn = conn
        self.dialect = dialect

    async def one(self, q: Query, /, **params: Any) -> Row | None:
        c = compiled(q, self.dialect)
        try:
            return await self._conn.fetchrow(c.sql, *c.args(params))
        except Exception as exc:
            raise _pg_error(exc) from exc

    async def all(self, q: Query, /, **params: Any) -> list[Row]:
        c = compiled(q, self.dialect)
        try:
            return list(await self._conn.fetch(c.sql, *c.args(params)))
        except Exception as exc:
            raise _pg_error(exc) from exc

    async def scalar(self, q: Query, /, **params: Any) -> Any:
        c = compiled(q, self.dialect)
        try:
            return await self._conn.fetchval(c.sql, *c.args(params))
        except Exception as exc:
            raise _pg_error(exc) from exc

    async def run(self, q: Query, /, **params: Any) -> int:
        c = compiled(q, self.dialect)
        try:
            status: str = await self._conn.execute(c.sql, *c.args(params))
        except Exception as exc:
            raise _pg_error(exc) from exc
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def many(self, q: Query, rows: Iterable[Mapping[str, Any]], /) -> None:
        c = compiled(q, self.dialect)
        args = [c.args(r) for r in rows]
        if not args:
            return
        try:
            await self._conn.executemany(c.sql, args)
        except Exception as exc:
            raise _pg_error(exc) from exc

    async def bulk_insert(self, b: BulkInsert, rows: Sequence[Mapping[str, Any]], /) -> None:
        if not rows:
            return
        get = operator.itemgetter(*b.columns)
        records = [get(r) for r in rows] if len(b.columns) > 1 else [(r[b.columns[0]],) for r in rows]
        try:
            await self._conn.copy_records_to_table(b.table.name, records=records, columns=b.columns)
        except Exception as exc:
            raise _pg_error(exc) from exc


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

                try:
                    self._pool = await asyncpg.create_pool(
                        self._dsn, min_size=1, max_size=self._size, reset=_keep_session
                    )
                except Exception as exc:
                    raise _pg_error(exc) from exc
        return self._pool

    @asynccontextmanager
    async def _acquire(self, transaction: bool) -> AsyncIterator[Tx]:
        pool = await self._get_pool()
        try:
            conn = await pool.acquire()
        except Exception as exc:
            raise _pg_error(exc) from exc
        try:
            if not transaction:
                yield PgTx(conn, self.dialect)
                return
            tr = conn.transaction()
            try:
                await tr.start()
            except Exception as exc:
                raise _pg_error(exc) from exc
            try:
                yield PgTx(conn, self.dialect)
            except BaseException:
                await tr.rollback()
                raise
            try:
                await tr.commit()
            except Exception as exc:
                raise _pg_error(exc) from exc
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
