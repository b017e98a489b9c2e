"""The hot statements on the work tables reach the partial index of the state they look for, on
SQLite and on PostgreSQL — there with the generic plan that a prepared statement (asyncpg prepares
every statement) ends up running, which can use a partial index only if the statement names the
state as a literal (``numgate.db.tables.in_state``)."""

from __future__ import annotations

import sqlite3

import asyncpg
import pytest

from conftest import run_sync
from numgate.db.direct import Statement
from numgate.db.engine import create_engine
from numgate.db.tables import checks, count_in_states, deliveries
from numgate.delivery import worker as delivery_worker
from numgate.delivery.outbox import FAILED
from numgate.numbers import finish, live
from numgate.numbers import worker as check_worker

#: every parameter of these statements is an integer (ids, tokens, times, limits)
VALUES = {"account_id": 1, "limit": 25, "until": 2, "token": 3, "rid": 4, "now": 5}

CASES: list[tuple[str, Statement, str]] = [
    ("claim pending numbers", check_worker.CLAIM, "ix_checks_pending"),
    ("lock pending numbers", check_worker.LOCK, "ix_checks_pending"),
    ("accounts with pending numbers", finish.LEASES._pending_accounts, "ix_checks_pending"),
    ("a worker's leased numbers", finish.LEASES._owned, "ix_checks_leased"),
    ("give back a worker's numbers", finish.LEASES._release_token, "ix_checks_leased"),
    ("overdue waiting numbers", live._OVERDUE, "ix_checks_waiting"),
    ("claim a receiver's callbacks", delivery_worker.CLAIM_FOR, "ix_deliveries_pending"),
    ("receivers with callbacks due", delivery_worker.DUE_RECEIVERS, "ix_deliveries_pending"),
    ("the next callback due", delivery_worker.NEXT_DUE, "ix_deliveries_pending_due"),
    ("a worker's callbacks in flight", delivery_worker.LEASES._owned, "ix_deliveries_leased"),
    ("numbers pending (metrics)", Statement(count_in_states(checks, [0])), "ix_checks_pending"),
    (
        "failed callbacks per receiver (metrics, receivers)",
        Statement(count_in_states(deliveries, [FAILED], deliveries.c.receiver_id)),
        "ix_deliveries_failed",
    ),
]


def sqlite_plan(path: str, stmt: Statement) -> str:
    c = stmt.compiled(create_engine(f"sqlite:///{path}").sync_engine.dialect)
    params = {**c.defaults, **VALUES}
    with sqlite3.connect(path) as conn:
        rows = conn.execute(f"EXPLAIN QUERY PLAN {c.sql}", [params[n] for n in c.names]).fetchall()
    return "\n".join(str(r[-1]) for r in rows)


def postgres_plan(url: str, stmt: Statement) -> str:
    c = stmt.compiled(create_engine(url).sync_engine.dialect)
    params = {**c.defaults, **VALUES}

    async def main() -> str:
        conn = await asyncpg.connect(url)
        try:
            # the plan a prepared statement settles on after its first executions; sequential
            # scans priced out so that an empty test table does not hide an index that is unusable
            await conn.execute("SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off")
            await conn.execute(f"PREPARE p AS {c.sql}")
            args = ", ".join("NULL" if params[n] is None else str(int(params[n])) for n in c.names)
            rows = await conn.fetch(f"EXPLAIN EXECUTE p({args})" if args else "EXPLAIN EXECUTE p")
            return "\n".join(r[0] for r in rows)
        finally:
            await conn.close()

    return str(run_sync(main()))


@pytest.mark.parametrize(("what", "stmt", "index"), CASES, ids=[c[0] for c in CASES])
def test_hot_statements_use_their_state_index(
    database_url: str, what: str, stmt: Statement, index: str
) -> None:
    if database_url.startswith("sqlite"):
        plan = sqlite_plan(database_url.removeprefix("sqlite:///"), stmt)
    else:
        plan = postgres_plan(database_url, stmt)
    assert index in plan, f"{what}: expected {index} in the plan:\n{plan}"
