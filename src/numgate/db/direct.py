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

SQLite: one writer at a time. Writes of this process that arrive in one turn of the event loop
share a transaction (``BEGIN IMMEDIATE``, behind the same asyncio lock as SQLAlchemy's
``engine.writing``) and one COMMIT, each in its own SAVEPOINT, and each waits for that COMMIT
(``sqlite.py``); reads begin deferred and never wait (WAL). A statement runs synchronously on the
loop thread, so it can hold the loop while another *process* holds SQLite's write lock
(``busy_timeout``): several processes belong on PostgreSQL.

The drivers' sides are ``sqlite.py`` and ``postgres.py``; driver errors are translated by
``errors.py`` and nowhere else: a unique or foreign-key violation is
:class:`~numgate.errors.Conflict`, an unreachable, locked or too slow database
:class:`~numgate.errors.StorageUnavailable`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, cast

from sqlalchemy import Insert, String, Table, Update, bindparam, column, func
from sqlalchemy import insert as sa_insert
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.type_api import TypeEngine
from sqlalchemy.sql.visitors import replacement_traverse

from numgate.db.engine import is_sqlite

Row = Any  # sqlite3.Row or asyncpg.Record: r["name"] and r[0]


class Compiled:
    """A statement's SQL for one dialect and how to turn named parameters into its arguments."""

    __slots__ = ("_get", "defaults", "names", "processors", "sql")

    def __init__(
        self, sql: str, names: tuple[str, ...], defaults: dict[str, Any], processors: tuple[Any, ...]
    ) -> None:
        self.sql = sql
        self.names = names
        #: values bound in the statement itself (literals, column defaults); a parameter of the
        #: same name overrides one
        self.defaults = defaults
        #: SQLAlchemy's bind processors by position (booleans on SQLite, say); empty when none
        self.processors = processors
        self._get = _getter(names, defaults, processors)

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        p = params if type(params) is dict else dict(params)  # a driver's row: its keys, not values
        try:
            return self._get(p)  # type: ignore[no-any-return]
        except KeyError:
            missing = ", ".join(n for n in self.names if n not in p and n not in self.defaults)
            raise TypeError(f"statement parameters missing: {missing}\n{self.sql}") from None


def _getter(names: tuple[str, ...], defaults: dict[str, Any], processors: tuple[Any, ...]) -> Any:
    """A function of the parameters that returns the statement's arguments in order: written for
    the statement once (the way ``dataclasses`` writes ``__init__``), because it runs for every row
    of every statement — merging the defaults into a copy of each row's dict, then converting
    value by value, took twice as long (0.60 against 0.30 µs a row of the finish update on
    SQLite), on paths that write a few rows a number."""
    env: dict[str, Any] = {}
    parts = []
    for i, name in enumerate(names):
        if name in defaults:
            env[f"d{i}"] = defaults[name]
            value = f"p.get({name!r}, d{i})"
        else:
            value = f"p[{name!r}]"
        proc = processors[i] if processors else None
        if proc is not None:
            env[f"f{i}"] = proc
            value = f"(None if (v{i} := {value}) is None else f{i}(v{i}))"
        parts.append(value)
    src = f"def args(p):\n    return ({''.join(v + ', ' for v in parts)})\n"
    exec(src, env)  # the source is made above from the statement's own names and no input
    return env["args"]


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


def array_rows(types: Mapping[str, TypeEngine[Any]]) -> Any:
    """(PostgreSQL) ``unnest($1::type[], …) AS v(name, …)``: rows from one array parameter per
    column, named and typed by ``types``; its columns are ``.c.name``. One statement then serves
    a whole batch (see :class:`BulkUpdate`, and the group commits of ``coalesce.py``).

    A string type loses its length in the array: PostgreSQL *truncates* a value cast to
    ``varchar(n)`` where storing it in a ``varchar(n)`` column refuses it, and a value compared
    with the table's (a code, a key) must be compared whole."""
    types = {n: String() if isinstance(t, String) else t for n, t in types.items()}
    return (
        func.unnest(*(bindparam(n, type_=ARRAY(t)) for n, t in types.items()))
        .table_valued(*(column(n, t) for n, t in types.items()))
        .render_derived(name="v")
    )


class BulkUpdate:
    """Many rows of one table updated, each with its own values: on PostgreSQL one statement
    for all of them, ``UPDATE … FROM unnest($1::type[], …) AS v(…)`` (one execution and one
    message, where ``executemany`` sends and runs the statement once per row); on SQLite
    ``executemany`` of the one-row UPDATE.

    ``clause`` is that one-row UPDATE with bound parameters; ``types`` gives each parameter's
    type (the arrays are typed by it)."""

    __slots__ = ("names", "postgres", "single")

    def __init__(self, clause: Update, types: Mapping[str, TypeEngine[Any]]) -> None:
        self.single = Statement(clause)
        self.names = tuple(types)
        rows = array_rows(types)

        def swap(element: Any, **kw: Any) -> Any:
            if isinstance(element, BindParameter) and element.key in types:
                return rows.c[element.key]
            return None

        self.postgres = Statement(cast(ClauseElement, replacement_traverse(clause, {}, swap)))

    def columns(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
        """The rows as one list per parameter (the arrays ``unnest`` reads)."""
        return {n: [r[n] for r in rows] for n in self.names}


def compiled(q: Query, dialect: Dialect) -> Compiled:
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

    async def bulk_update(self, b: BulkUpdate, rows: Sequence[Mapping[str, Any]], /) -> int:
        """Update with each row's values (each maps every one of ``b.names``); rows changed."""
        ...

    @property
    def is_postgres(self) -> bool: ...


class Database(Protocol):
    dialect: Dialect

    def read(self, batched: bool = False) -> Any:  # AbstractAsyncContextManager[Tx]
        """For reads; ``batched`` as for ``autocommit``."""
        ...

    def write(self) -> Any:  # AbstractAsyncContextManager[Tx]
        ...

    def autocommit(
        self, durable: bool = True, batched: bool = False
    ) -> Any:  # AbstractAsyncContextManager[Tx]
        """For a write that is one statement (or statements each of which may commit alone):
        PostgreSQL runs each as its own transaction, without the ``BEGIN`` and ``COMMIT`` round
        trips of ``write()``; SQLite runs them as ``write()`` does (group commit).

        ``durable=False`` (PostgreSQL): each commit returns without waiting for its record to
        reach the disk (``synchronous_commit = off``, on a few connections of their own). The
        next durable commit, of any connection, flushes it too; only a crash of the database
        server (not of numgate) in the fraction of a second before that can lose it. For writes
        whose loss would be harmless, or that a durable commit always follows when it matters:
        the replay memory's keys (the work they guard commits durably after them) and replies,
        and the sandbox simulators' records.

        ``batched=True`` (PostgreSQL): for statements that take their rows as arrays, the group
        commits of ``coalesce.py``. They run on connections of their own that plan each
        prepared statement once (``plan_cache_mode = force_generic_plan``). Left to choose,
        PostgreSQL plans such a statement anew on every call: its generic plan's guess for an
        array parameter (10 elements) costs more than the custom plan for the short array in
        hand, though both are the same index lookups, and the planning (~0.3 ms for a code
        check's statement) cost more than running it. Statements whose best plan depends on
        their values (ranges, limits, optional filters) stay on the other connections."""
        ...

    async def close(self) -> None: ...


def open_database(
    engine: AsyncEngine, *, pool_size: int = 10, timeout_s: float = 5.0, wal_max: int = 64 * 1024 * 1024
) -> Database:
    """The direct database for an engine's URL (the engine remains for migrations). Every wait
    for the database is bounded by ``timeout_s``; an SQLite WAL past ``wal_max`` bytes is
    truncated by the next checkpoint."""
    if is_sqlite(engine):
        from numgate.db.sqlite import SqliteDatabase

        return SqliteDatabase(engine, timeout_s, wal_max)
    from numgate.db.postgres import PgDatabase

    return PgDatabase(engine, pool_size, timeout_s)
