"""How the services talk to the database: statements built with SQLAlchemy Core from the tables
in ``tables.py``, compiled once per dialect, and run on the raw driver — ``sqlite3`` on the event
loop's own thread, or an ``asyncpg`` pool.

Why not SQLAlchemy's async engine: measured here, it costs about 220 µs to run a one-row read in
its own transaction and 400 µs for a two-statement write (greenlet hops, pool checkout, events,
result processing), where the same work on the driver takes 6 µs and 18 µs. On the hot paths —
the check and delivery workers, a batch submit, the WhatsApp code check and status read — that
overhead was most of the time a request or a number took. SQLAlchemy still builds every
statement (so names, types and dialect differences such as ``FOR UPDATE SKIP LOCKED`` come from
one place) and Alembic still owns the schema; only execution moved.

Use::

    BY_PHONE = Statement(select(waba_numbers).where(waba_numbers.c.phone == bindparam("phone")))

    async with db.read() as tx:
        row = await tx.one(BY_PHONE, phone="4477...")      # row["phone"], row[0]
    async with db.write() as tx:                            # one transaction: all or nothing
        await tx.run(update(...).values(...))               # a clause is compiled on the spot
        await tx.many(INSERT_ROWS, rows)

Rows are the driver's (``sqlite3.Row`` or ``asyncpg.Record``): index them by column name or
position. SQLite hands booleans back as 0/1, so callers wrap them in ``bool()``.

SQLite: one writer at a time. Writers of this process queue on the same asyncio lock as
SQLAlchemy's (``engine.writing``) and begin ``IMMEDIATE``; reads begin deferred and never wait
(WAL). A statement runs synchronously on the loop thread, so it can hold the loop while another
*process* holds SQLite's write lock (``busy_timeout``): several processes belong on PostgreSQL.

Driver errors are translated here and nowhere else: a unique or foreign-key violation is
:class:`~numgate.errors.Conflict`, an unreachable or locked database is
:class:`~numgate.errors.StorageUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import sqlite3
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

from sqlalchemy import Insert, Table, bindparam
from sqlalchemy import insert as sa_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement

from numgate.db.engine import SQLITE_PRAGMAS, is_sqlite, write_lock
from numgate.errors import Conflict, StorageUnavailable

log = logging.getLogger("numgate.db")

Row = Any  # sqlite3.Row or asyncpg.Record: r["name"] and r[0]


class Compiled:
    """A statement's SQL for one dialect and how to turn named parameters into its arguments."""

    __slots__ = ("_get", "defaults", "names", "processors", "sql")

    def __init__(
        self, sql: str, names: tuple[str, ...], defaults: dict[str, Any], processors: tuple[Any, ...]
    ) -> None:
        self.sql = sql
        self.names = names
        #: values bound in the statement itself (literals, column defaults)
        self.defaults = defaults
        #: SQLAlchemy's bind processors by position (booleans on SQLite, say); empty when none
        self.processors = processors
        if len(names) > 1:
            self._get: Any = operator.itemgetter(*names)
        elif names:
            only = names[0]
            self._get = lambda p: (p[only],)
        else:
            self._get = lambda p: ()

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        try:
            values = self._get({**self.defaults, **params} if self.defaults else params)
        except KeyError:
            missing = ", ".join(n for n in self.names if n not in params and n not in self.defaults)
            raise TypeError(f"statement parameters missing: {missing}\n{self.sql}") from None
        if self.processors:
            return tuple(
                v if p is None or v is None else p(v) for v, p in zip(values, self.processors, strict=True)
            )
        return values  # type: ignore[no-any-return]


def compile_for(clause: ClauseElement, dialect: Dialect) -> Compiled:
    if isinstance(clause, Insert) and not clause._returning:
        # no RETURNING of the new row's key that PostgreSQL would add (nobody reads it here)
        clause = clause.inline()
    c: Any = clause.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    names = tuple(c.positiontup or ())
    required = {n for n, b in c.binds.items() if b.required}
    defaults = {k: v for k, v in c.params.items() if k not in required}
    for col in (*c.insert_prefetch, *c.update_prefetch):
        default = col.default if col in c.insert_prefetch else col.onupdate
        if default is None or not default.is_scalar:
            raise TypeError(f"{col} has a default computed at execution: give it a value")
        defaults[col.key] = default.arg
    found = c._bind_processors
    processors = tuple(found.get(n) for n in names) if any(n in found for n in names) else ()
    return Compiled(c.string, names, defaults, processors)


class Statement:
    """A statement built once (at import) and compiled once per dialect."""

    __slots__ = ("_by_dialect", "clause")

    def __init__(self, clause: ClauseElement) -> None:
        self.clause = clause
        self._by_dialect: dict[str, Compiled] = {}

    def compiled(self, dialect: Dialect) -> Compiled:
        c = self._by_dialect.get(dialect.name)
        if c is None:
            c = self._by_dialect[dialect.name] = compile_for(self.clause, dialect)
        return c


Query = Statement | ClauseElement


class BulkInsert:
    """Many rows into one table, named columns only: ``COPY`` on PostgreSQL (several times
    faster than an INSERT per row), ``executemany`` of an INSERT on SQLite."""

    __slots__ = ("columns", "insert", "table")

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        self.table = table
        self.columns = tuple(columns)
        self.insert = Statement(sa_insert(table).values({c: bindparam(c) for c in self.columns}))


def _compiled(q: Query, dialect: Dialect) -> Compiled:
    if isinstance(q, Statement):
        return q.compiled(dialect)
    return compile_for(q, dialect)


class Tx(Protocol):
    """One transaction (or, from ``read()``, one consistent read)."""

    dialect: Dialect

    async def one(self, q: Query, /, **params: Any) -> Row | None:
        """The first row, or None."""
        ...

    async def all(self, q: Query, /, **params: Any) -> list[Row]: ...

    async def scalar(self, q: Query, /, **params: Any) -> Any:
        """The first column of the first row, or None."""
        ...

    async def run(self, q: Query, /, **params: Any) -> int:
        """Execute; the number of rows changed."""
        ...

    async def many(self, q: Query, rows: Iterable[Mapping[str, Any]], /) -> None:
        """Execute once per parameter set (one driver call)."""
        ...

    async def bulk_insert(self, b: BulkInsert, rows: Sequence[Mapping[str, Any]], /) -> None:
        """Insert the rows (each maps every one of ``b.columns``)."""
        ...

    @property
    def is_postgres(self) -> bool: ...


class Database(Protocol):
    dialect: Dialect

    def read(self) -> Any:  # AbstractAsyncContextManager[Tx]
        ...

    def write(self) -> Any:  # AbstractAsyncContextManager[Tx]
        ...

    async def close(self) -> None: ...


# SQLite ------------------------------------------------------------------------------------------


def _sqlite_error(exc: sqlite3.Error) -> Exception:
    if isinstance(exc, sqlite3.IntegrityError):
        return Conflict(str(exc))
    if isinstance(exc, sqlite3.OperationalError):
        return StorageUnavailable(f"the database is unavailable: {exc}")
    return exc


class SqliteTx:
    __slots__ = ("_conn", "dialect")
    is_postgres = False

    def __init__(self, conn: sqlite3.Connection, dialect: Dialect) -> None:
        self._conn = conn
        self.dialect = dialect

    def _cursor(self, q: Query, params: Mapping[str, Any]) -> sqlite3.Cursor:
        c = _compiled(q, self.dialect)
        try:
            return self._conn.execute(c.sql, c.args(params))
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from exc

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
        c = _compiled(q, self.dialect)
        try:
            self._conn.executemany(c.sql, [c.args(r) for r in rows])
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from exc

    async def bulk_insert(self, b: BulkInsert, rows: Sequence[Mapping[str, Any]], /) -> None:
        await self.many(b.insert, rows)


class SqliteDatabase:
    """Connections kept in a free list and used from the loop thread only.

    Their commits do not checkpoint the WAL into the database file (that is an fsync, tens of
    milliseconds that would stop the event loop); a task does it from a thread every second
    instead, in PASSIVE mode (it never waits for, nor blocks, readers and writers)."""

    KEEP = 8
    CHECKPOINT_EVERY_S = 1.0

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._path = engine.url.database or ":memory:"
        self.dialect = engine.dialect
        self._free: list[sqlite3.Connection] = []
        self._checkpointer: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._written = False
        # the open group commit (see ``write``)
        self._body = asyncio.Lock()
        self._writer: sqlite3.Connection | None = None
        self._group: list[asyncio.Future[None]] | None = None
        self._broken: Exception | None = None
        self._flusher: asyncio.Task[None] | None = None

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self._path, timeout=30, isolation_level=None, check_same_thread=False)
            for pragma in SQLITE_PRAGMAS:
                conn.execute(pragma)
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from exc
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
                        await asyncio.to_thread(conn.execute, "PRAGMA wal_checkpoint(PASSIVE)")
                    except sqlite3.Error as exc:  # busy or locked: the next round will do it
                        log.debug("WAL checkpoint skipped: %s", exc)
        finally:
            conn.close()

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
                raise _sqlite_error(exc) from exc
            return
        self._give(conn)

    def _begin(self, how: str) -> sqlite3.Connection:
        """A connection with a transaction begun (``BEGIN`` or ``BEGIN IMMEDIATE``)."""
        conn = self._take()
        try:
            conn.execute(how)
        except sqlite3.Error as exc:
            conn.close()
            raise _sqlite_error(exc) from exc
        return conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        conn = self._begin("BEGIN")
        try:
            yield SqliteTx(conn, self.dialect)
        except BaseException:
            self._end(conn, "ROLLBACK")
            raise
        self._end(conn, "COMMIT")

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
        self._writer = self._begin("BEGIN IMMEDIATE")
        self._group = []
        self._broken = None
        self._flusher = asyncio.get_running_loop().create_task(self._commit_group())

    async def _commit_group(self) -> None:
        async with self._body:  # after the write whose body is running, if any
            conn, group, broken = self._writer, self._group, self._broken
            self._writer, self._group, self._broken = None, None, None
            assert conn is not None and group is not None
            error: Exception | None = broken
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
                raise self._broken from exc
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


# PostgreSQL --------------------------------------------------------------------------------------


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
        c = _compiled(q, self.dialect)
        try:
            return await self._conn.fetchrow(c.sql, *c.args(params))
        except Exception as exc:
            raise _pg_error(exc) from exc

    async def all(self, q: Query, /, **params: Any) -> list[Row]:
        c = _compiled(q, self.dialect)
        try:
            return list(await self._conn.fetch(c.sql, *c.args(params)))
        except Exception as exc:
            raise _pg_error(exc) from exc

    async def scalar(self, q: Query, /, **params: Any) -> Any:
        c = _compiled(q, self.dialect)
        try:
            return await self._conn.fetchval(c.sql, *c.args(params))
        except Exception as exc:
            raise _pg_error(exc) from exc

    async def run(self, q: Query, /, **params: Any) -> int:
        c = _compiled(q, self.dialect)
        try:
            status: str = await self._conn.execute(c.sql, *c.args(params))
        except Exception as exc:
            raise _pg_error(exc) from exc
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def many(self, q: Query, rows: Iterable[Mapping[str, Any]], /) -> None:
        c = _compiled(q, self.dialect)
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


def open_database(engine: AsyncEngine, *, pool_size: int = 10) -> Database:
    """The direct database for an engine's URL (the engine remains for migrations)."""
    if is_sqlite(engine):
        return SqliteDatabase(engine)
    return PgDatabase(engine, pool_size)


def tuples(rows: Sequence[Row]) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in rows]
