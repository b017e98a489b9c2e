"""The SQLite side of the storage layer (see ``direct.py``): ``sqlite3`` on the event loop's own
thread, writes sharing commits, WAL checkpoints from a thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, NoReturn

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from numgate.db.direct import BulkInsert, BulkUpdate, Query, Row, Tx, compiled
from numgate.db.engine import sqlite_pragmas, write_lock
from numgate.db.errors import translated_error
from numgate.errors import StorageUnavailable
from numgate.outages import OUTAGES

log = logging.getLogger("numgate.db")


def _sqlite_error(exc: sqlite3.Error) -> BaseException:
    """The core's error for a driver error; anything else (a bug) is itself."""
    err = translated_error(exc)
    if isinstance(err, StorageUnavailable):
        OUTAGES.down("database", str(err))
    return err


def _reraise(exc: sqlite3.Error) -> NoReturn:
    err = _sqlite_error(exc)
    if err is exc:
        raise exc
    raise err from exc


class SqliteTx:
    __slots__ = ("_conn", "dialect")
    is_postgres = False

    def __init__(self, conn: sqlite3.Connection, dialect: Dialect) -> None:
        self._conn = conn
        self.dialect = dialect

    def _cursor(self, q: Query, params: Mapping[str, Any]) -> sqlite3.Cursor:
        c = compiled(q, self.dialect)
        try:
            return self._conn.execute(c.sql, c.args(params))
        except sqlite3.Error as exc:
            _reraise(exc)

    async def one(self, q: Query, /, **params: Any) -> Row | None:
        return self._cursor(q, params).fetchone()

    async def all(self, q: Query, /, **params: Any) -> list[Row]:
        return self._cursor(q, params).fetchall()

    async def scalar(self, q: Query, /, **params: Any) -> Any:
        row = self._cursor(q, params).fetchone()
        return None if row is None else row[0]

    async def run(self, q: Query, /, **params: Any) -> int:
        return self._cursor(q, params).rowcount

    async def many(self, q: Query, rows: Iterable[Mapping[str, Any]], /) -> None:
        c = compiled(q, self.dialect)
        try:
            self._conn.executemany(c.sql, [c.args(r) for r in rows])
        except sqlite3.Error as exc:
            _reraise(exc)

    async def bulk_insert(self, b: BulkInsert, rows: Sequence[Mapping[str, Any]], /) -> None:
        await self.many(b.insert, rows)

    async def bulk_update(self, b: BulkUpdate, rows: Sequence[Mapping[str, Any]], /) -> int:
        c = compiled(b.single, self.dialect)
        try:
            cur = self._conn.executemany(c.sql, [c.args(r) for r in rows])
        except sqlite3.Error as exc:
            _reraise(exc)
        return cur.rowcount


class SqliteDatabase:
    """Connections kept in a free list and used from the loop thread only.

    Their commits do not checkpoint the WAL into the database file (that is an fsync, tens of
    milliseconds that would stop the event loop); a task does it from a thread every second
    instead, in PASSIVE mode (it never waits for, nor blocks, readers and writers), or TRUNCATE
    once the WAL has grown past ``NUMGATE_SQLITE_WAL_MAX`` (see :meth:`_truncate`)."""

    KEEP = 8
    CHECKPOINT_EVERY_S = 1.0

    def __init__(self, engine: AsyncEngine, timeout_s: float = 5.0, wal_max: int = 64 * 1024 * 1024) -> None:
        self._engine = engine
        self._path = engine.url.database or ":memory:"
        self._timeout = timeout_s
        #: a WAL past this size is truncated by the next checkpoint (a big write would otherwise
        #: leave a file of its size behind for good)
        self._wal_max = wal_max
        self.dialect = engine.dialect
        self._free: list[sqlite3.Connection] = []
        self._checkpointer: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._written = False
        # the open group commit (see ``write``)
        self._body = asyncio.Lock()
        self._writer: sqlite3.Connection | None = None
        self._group: list[asyncio.Future[None]] | None = None
        self._broken: BaseException | None = None
        self._group_started = 0.0  # time.monotonic() when the open group began
        self._flusher: asyncio.Task[None] | None = None

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            for pragma in sqlite_pragmas(self._timeout):
                conn.execute(pragma)
        except sqlite3.Error as exc:
            _reraise(exc)
        return conn

    def _take(self) -> sqlite3.Connection:
        if self._free:
            return self._free.pop()
        conn = self._connect()
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.row_factory = sqlite3.Row
        return conn

    async def _checkpoint_forever(self) -> None:
        conn = await asyncio.to_thread(self._connect)
        try:
            while not self._closing.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), self.CHECKPOINT_EVERY_S)
                if self._written:
                    self._written = False
                    try:
                        if self._wal_size() > self._wal_max:
                            await self._truncate(conn)
                        else:
                            await asyncio.to_thread(conn.execute, "PRAGMA wal_checkpoint(PASSIVE)")
                    except sqlite3.Error as exc:  # busy or locked: the next round will do it
                        log.debug("WAL checkpoint skipped: %s", exc)
        finally:
            conn.close()

    async def _truncate(self, conn: sqlite3.Connection) -> None:
        """A TRUNCATE checkpoint keeps writers out while it copies, syncs and truncates (30-40 ms
        for a 64 MB WAL). This process's writers wait for it in their queue on the event loop:
        left to SQLite, the next one would wait in ``BEGIN IMMEDIATE``'s busy handler, on the
        loop's thread, and every request would stop with it."""
        async with write_lock(self._engine):
            await asyncio.to_thread(conn.execute, "PRAGMA wal_checkpoint(TRUNCATE)")

    def _wal_size(self) -> int:
        try:
            return os.path.getsize(self._path + "-wal")
        except OSError:
            return 0

    def _give(self, conn: sqlite3.Connection) -> None:
        if len(self._free) < self.KEEP:
            self._free.append(conn)
        else:
            conn.close()

    def _end(self, conn: sqlite3.Connection, how: str) -> None:
        """COMMIT or ROLLBACK, then keep the connection; one in an unknown state is closed."""
        try:
            conn.execute(how)
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()
            conn.close()
            if how == "COMMIT":
                _reraise(exc)
            return
        self._give(conn)

    def _begin(self, how: str) -> sqlite3.Connection:
        """A connection with a transaction begun (``BEGIN`` or ``BEGIN IMMEDIATE``)."""
        conn = self._take()
        try:
            conn.execute(how)
        except sqlite3.Error as exc:
            conn.close()
            _reraise(exc)
        return conn

    @asynccontextmanager
    async def read(self, batched: bool = False) -> AsyncIterator[Tx]:
        conn = self._begin("BEGIN")
        try:
            yield SqliteTx(conn, self.dialect)
        except BaseException:
            self._end(conn, "ROLLBACK")
            raise
        self._end(conn, "COMMIT")  # (a read does not end an outage: writes may still be locked out)

    # writes: group commit ----------------------------------------------------------------------
    #
    # A commit is the expensive part of a small SQLite write (the file lock, the WAL frames, the
    # shared-memory index: tens of microseconds, more than the statements). Writes that arrive in
    # the same turn of the event loop share one: the first opens a transaction (BEGIN IMMEDIATE,
    # holding the engine's write queue), each write runs inside its own SAVEPOINT — its body alone,
    # so a failing one rolls back only itself — and a task commits the lot on the next turn. Every
    # write waits for that COMMIT before its ``async with`` ends: what a caller does next (answer
    # a request, call an upstream) happens only once its write is durable; if the COMMIT fails,
    # every write of the group gets the error and none of them happened.

    def _open_group(self) -> None:
        self._group_started = time.monotonic()
        self._writer = self._begin("BEGIN IMMEDIATE")
        self._group = []
        self._broken = None
        self._flusher = asyncio.get_running_loop().create_task(self._commit_group())

    async def _commit_group(self) -> None:
        async with self._body:  # after the write whose body is running, if any
            conn, group, broken, started = self._writer, self._group, self._broken, self._group_started
            self._writer, self._group, self._broken = None, None, None
            assert conn is not None and group is not None
            error: BaseException | None = broken
            try:
                if broken is None:
                    self._end(conn, "COMMIT")
                else:
                    self._end(conn, "ROLLBACK")
            except Exception as exc:
                error = exc
            finally:
                write_lock(self._engine).release()
            for done in group:
                if error is None:
                    done.set_result(None)
                else:
                    done.set_exception(error)
                    done.exception()  # the waiter may have been cancelled: no "never retrieved"
            if error is None:
                self._written = True
                OUTAGES.up("database", started)

    def autocommit(self, durable: bool = True, batched: bool = False) -> Any:
        return self.write()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        loop = asyncio.get_running_loop()
        if self._checkpointer is None and self._path != ":memory:":
            self._checkpointer = loop.create_task(self._checkpoint_forever())
        done: asyncio.Future[None] = loop.create_future()
        async with self._body:
            if self._group is None:
                lock = write_lock(self._engine)
                await lock.acquire()  # behind any SQLAlchemy writer of this process
                try:
                    self._open_group()
                except BaseException:
                    lock.release()
                    raise
            conn, group = self._writer, self._group
            assert conn is not None and group is not None
            try:
                conn.execute("SAVEPOINT numgate_write")
            except sqlite3.Error as exc:
                self._broken = _sqlite_error(exc)
                _reraise(exc)
            try:
                yield SqliteTx(conn, self.dialect)
            except BaseException:
                try:
                    conn.execute("ROLLBACK TO numgate_write")
                    conn.execute("RELEASE numgate_write")
                except sqlite3.Error as exc:  # the group's transaction is lost: it will roll back
                    self._broken = _sqlite_error(exc)
                raise
            try:
                conn.execute("RELEASE numgate_write")
            except sqlite3.Error as exc:
                self._broken = _sqlite_error(exc)
            group.append(done)
        await done

    async def close(self) -> None:
        flusher, self._flusher = self._flusher, None
        if flusher is not None and not flusher.done() and flusher.get_loop() is asyncio.get_running_loop():
            await flusher
        task, self._checkpointer = self._checkpointer, None
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            self._closing.set()  # it finishes a checkpoint under way, then stops
            await task
        while self._free:
            conn = self._free.pop()
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            conn.close()
