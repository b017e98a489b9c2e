"""The PostgreSQL side of the storage layer (see ``direct.py``): ``asyncpg`` connections in a
lean pool of its own, ``COPY`` for bulk inserts, and a timeout on everything that waits for the
server (``NUMGATE_DB_TIMEOUT``): connecting, waiting for a pooled connection, each statement.
A silent network partition therefore costs a request at most that long, and the connection it
hung on is dropped, not reused."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
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

#: connections per process for writes that need not wait for the disk (of each kind, batched
#: or not): the coalesced writers that use them (the replay memory, the sandbox's code checks)
#: hold one each
RELAXED_POOL_SIZE = 4
#: connections per process for the other coalesced statements (the WhatsApp numbers by phone,
#: the code checks' attempts), one each at a time
BATCHED_POOL_SIZE = 4
#: the sessions of ``batched`` statements: each prepared statement planned once (why:
#: ``Database.autocommit`` in direct.py)
GENERIC_PLANS = {"plan_cache_mode": "force_generic_plan"}


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


class _Pool:
    """Up to ``size`` asyncpg connections, handed out and taken back without a task or a timer
    when one is free (asyncpg's own pool spent ~65 µs of CPU per use on tasks for its timeouts,
    its cancellation shield and its reset: more than the statement). A connection given back
    goes straight to the longest waiter, first come first served. Connections are opened when
    needed (no background refill, which during an outage would log a traceback every few
    seconds); one given back broken, or found closed, is dropped. Only waiting for one and
    opening one are timed, together: at most ``NUMGATE_DB_TIMEOUT``."""

    def __init__(self, dsn: str, size: int, timeout_s: float, settings: dict[str, str] | None = None) -> None:
        self._dsn = dsn
        self._settings = settings
        self._size = size
        self._timeout = timeout_s
        self._idle: list[Any] = []
        self._open = 0  # idle and in use
        #: each gets a connection, or None: room was made to open one
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._closed = False

    async def take(self) -> Any:
        conn = self._free()
        if conn is not None:
            return conn
        try:
            async with asyncio.timeout(self._timeout):  # one deadline for waiting and opening
                return await self._take_slowly()
        except TimeoutError:
            raise StorageUnavailable(
                f"no database connection became available within {self._timeout:g} s"
            ) from None

    def _free(self) -> Any:
        if self._closed:
            raise StorageUnavailable("the database pool is closed")
        while self._idle:
            conn = self._idle.pop()
            if not conn.is_closed():
                return conn
            self._drop(conn)  # lost while idle (the server restarted, a partition)
        return None

    async def _take_slowly(self) -> Any:
        while True:
            conn = self._free()
            if conn is not None:
                return conn
            if self._open < self._size:
                return await self._connect()
            conn = await self._wait()
            if conn is not None:
                if not conn.is_closed():
                    return conn
                self._drop(conn)

    async def _wait(self) -> Any:
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                handed = waiter.result()  # handed over as this one left: pass it on
                if handed is not None:
                    self.give(handed, False)
                else:
                    self._hand(None)
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    async def _connect(self) -> Any:
        import asyncpg  # type: ignore[import-untyped]

        self._open += 1
        try:
            return await translated(
                asyncpg.connect(
                    self._dsn,
                    timeout=self._timeout,
                    command_timeout=self._timeout,
                    server_settings=self._settings,
                )
            )
        except BaseException:
            self._open -= 1
            self._hand(None)
            raise

    def give(self, conn: Any, broken: bool) -> None:
        if broken or self._closed or conn.is_closed() or conn.is_in_transaction():
            self._drop(conn)
        elif not self._hand(conn):
            self._idle.append(conn)

    def _drop(self, conn: Any) -> None:
        self._open -= 1
        with contextlib.suppress(Exception):  # already closed by the driver
            conn.terminate()
        self._hand(None)

    def _hand(self, conn: Any) -> bool:
        """Give ``conn`` (or, None, the room to open one) to the longest waiter, if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._open -= 1
            try:
                await asyncio.wait_for(conn.close(), self._timeout)
            except Exception:
                conn.terminate()
        while self._hand(None):
            pass


class PgDatabase:
    def __init__(self, engine: AsyncEngine, pool_size: int, timeout_s: float = 5.0) -> None:
        self.dialect = engine.dialect
        dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._timeout = timeout_s
        relaxed = {"synchronous_commit": "off"}
        #: by (durable, batched); connections are opened when first needed
        self._pools = {
            (True, False): _Pool(dsn, pool_size, timeout_s),
            # commits that do not wait for the disk (``autocommit(durable=False)``)
            (False, False): _Pool(dsn, RELAXED_POOL_SIZE, timeout_s, relaxed),
            (True, True): _Pool(dsn, BATCHED_POOL_SIZE, timeout_s, GENERIC_PLANS),
            (False, True): _Pool(dsn, RELAXED_POOL_SIZE, timeout_s, relaxed | GENERIC_PLANS),
        }

    @asynccontextmanager
    async def _acquire(self, transaction: bool, pool: _Pool) -> AsyncIterator[Tx]:
        started = time.monotonic()
        try:
            conn = await pool.take()
        except StorageUnavailable as exc:
            OUTAGES.down("database", str(exc))
            raise
        broken = False
        try:
            if not transaction:
                yield PgTx(conn, self.dialect)
            else:
                await translated(conn.execute("BEGIN"))
                try:
                    yield PgTx(conn, self.dialect)
                except BaseException:
                    await _quietly(conn.execute("ROLLBACK"), self._timeout)
                    raise
                await translated(conn.execute("COMMIT"))
        except StorageUnavailable as exc:
            broken = True  # a timed-out or dropped connection is not given back for reuse
            OUTAGES.down("database", str(exc))
            raise
        except BaseException as exc:
            err = translated_error(exc)
            if isinstance(err, StorageUnavailable):
                broken = True
                OUTAGES.down("database", str(err))
                raise err from exc
            # cancelled mid-statement, the connection's state is unknown: it is not reused
            broken = not isinstance(exc, Exception)
            raise
        finally:
            pool.give(conn, broken)
        OUTAGES.up("database", started)

    def read(self, batched: bool = False) -> Any:
        return self._acquire(False, self._pools[True, batched])

    def write(self) -> Any:
        return self._acquire(True, self._pools[True, False])

    def autocommit(self, durable: bool = True, batched: bool = False) -> Any:
        return self._acquire(False, self._pools[durable, batched])

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()


async def _quietly(call: Awaitable[Any], timeout_s: float) -> None:
    """Roll back or release without letting an outage's error replace the one being handled."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(call, timeout_s)
