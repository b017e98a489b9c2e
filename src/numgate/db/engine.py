"""Engine construction for SQLite (default) and PostgreSQL, chosen by the URL alone."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from numgate.errors import ConfigurationError, DatabaseMissing


def normalise_url(raw: str) -> URL:
    """Accept plain ``sqlite:///`` / ``postgresql://`` URLs and pick numgate's async drivers."""
    try:
        url = make_url(raw)
    except Exception as exc:  # sqlalchemy raises ArgumentError with a terse text
        raise ConfigurationError(f"NUMGATE_DATABASE_URL is not a database URL: {raw!r}") from exc
    backend = url.get_backend_name()
    if backend == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    if backend in {"postgresql", "postgres"}:
        return url.set(drivername="postgresql+asyncpg")
    raise ConfigurationError(f"unsupported database {backend!r}: numgate runs on SQLite or PostgreSQL")


class _RunNow:
    """Stands in for aiosqlite's queue to its thread: runs the call at once."""

    def put_nowait(self, item: tuple[Any, Any]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:
            if future is not None:
                future.set_exception(exc)
            return
        if future is not None:
            future.set_result(result)


class _InlineSqlite(aiosqlite.Connection):
    """An aiosqlite connection that runs each call on the event loop's own thread.

    aiosqlite hands every call to a per-connection thread and back; for SQLite's
    microsecond-scale reads and WAL commits those two thread switches cost far more than the
    work (about 1 ms per transaction under load). Writers are queued by ``writing`` so a call
    does not wait on another in-process writer; it can still wait (``busy_timeout``) on a writer
    in another process, which is why several-process deployments belong on PostgreSQL."""

    def __init__(self, connector: Any) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._tx = _RunNow()  # type: ignore[assignment]  # SQLAlchemy queues some calls itself

    async def _execute(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if not self._running or self._connection is None:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    async def _connect(self) -> aiosqlite.Connection:
        if self._connection is None:
            self._connection = self._connector()
        return self

    def __await__(self) -> Any:
        return self._connect().__await__()

    def stop(self) -> None:  # type: ignore[override]
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def close(self) -> None:
        self.stop()


async def _inline_sqlite(path: str, timeout_s: float) -> aiosqlite.Connection:
    conn = _InlineSqlite(lambda: sqlite3.connect(path, timeout=timeout_s, check_same_thread=False))
    return await conn


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def sqlite_path(raw_url: str) -> Path | None:
    """The file of an SQLite URL (None for PostgreSQL or an in-memory database)."""
    url = normalise_url(raw_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def require_database(raw_url: str) -> None:
    """Raise DatabaseMissing unless an SQLite URL's file exists (never creates it)."""
    path = sqlite_path(raw_url)
    if path is not None and not path.exists():
        raise DatabaseMissing(
            f"no numgate database at {path.resolve()}: run this command where `numgate migrate` (or "
            "`make run`) was run, or point NUMGATE_DATA_DIR or NUMGATE_DATABASE_URL at the existing "
            "database; `numgate migrate` creates a new one there"
        )


def prepare_sqlite_file(path: Path) -> None:
    """Create the data directory (0700) and the database file (0600) if missing: secrets and
    customers' numbers live there. SQLite gives its -wal and -shm files the database's mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def create_engine(raw_url: str, *, timeout_s: float = 5.0, **kw: Any) -> AsyncEngine:
    url = normalise_url(raw_url)
    if url.get_backend_name() == "sqlite":
        path = url.database or ":memory:"
        # connections are cheap and used by one thread; keep enough that concurrent requests
        # do not open and close overflow connections (each opening runs the PRAGMAs)
        kw.setdefault("pool_size", 32)
        kw.setdefault("max_overflow", 32)
        engine = create_async_engine(url, async_creator=lambda: _inline_sqlite(path, timeout_s), **kw)
        _configure_sqlite(engine, timeout_s)
        return engine
    kw.setdefault("pool_size", 10)
    kw.setdefault("max_overflow", 10)
    kw.setdefault("pool_pre_ping", False)
    kw.setdefault("pool_timeout", timeout_s)
    kw.setdefault("connect_args", {"timeout": timeout_s, "command_timeout": timeout_s})
    return create_async_engine(url, **kw)


#: one in-process queue of writers per SQLite engine (see ``writing``)
_write_locks: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()


def sqlite_pragmas(timeout_s: float) -> tuple[str, ...]:
    """Run on every new SQLite connection, SQLAlchemy's and the direct layer's (``direct.py``);
    a write waits at most ``timeout_s`` for another process's write lock."""
    return (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",
        f"PRAGMA busy_timeout={int(timeout_s * 1000)}",
        "PRAGMA foreign_keys=ON",
    )


def write_lock(engine: AsyncEngine) -> asyncio.Lock:
    """The queue this process's writers of one SQLite database wait in (see ``writing``)."""
    lock = _write_locks.get(engine.sync_engine)
    if lock is None:
        lock = _write_locks[engine.sync_engine] = asyncio.Lock()
    return lock


@asynccontextmanager
async def writing(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A write transaction: what ``engine.begin()`` is, plus, on SQLite, ``BEGIN IMMEDIATE``
    and an in-process queue. SQLite has one writer at a time; writers of one process wait their
    turn on an asyncio lock instead of polling the database lock in the busy handler (whose
    sleeps, under load, cost far more than the writes). Reads (``engine.connect()``) begin a
    plain deferred transaction and never wait for writers (WAL)."""
    if not is_sqlite(engine):
        async with engine.begin() as conn:
            yield conn
        return
    async with write_lock(engine), engine.connect() as conn:
        await conn.execution_options(numgate_write=True)
        async with conn.begin():
            yield conn


def _configure_sqlite(engine: AsyncEngine, timeout_s: float) -> None:
    """WAL, a busy timeout, foreign keys; ``BEGIN IMMEDIATE`` for write transactions.

    pysqlite's default deferred BEGIN lets two transactions read, then fail to upgrade to a
    write; taking the write lock at BEGIN serialises writers cleanly (SQLite has one writer
    anyway) so read-check-write sequences such as a balance reservation stay correct. Writes go
    through ``writing``; everything else is a read and begins deferred.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in sqlite_pragmas(timeout_s):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get("numgate_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
