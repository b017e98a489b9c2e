"""The storage layer the services run on (db/direct.py), on SQLite and PostgreSQL: transactions
are all or nothing, concurrent writes that share one SQLite commit stay independent, a write's
block ends only once it is durable, and driver errors arrive as the core's own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import ARRAY, any_, bindparam, func, select, text

from conftest import run_sync
from numgate.db.direct import BulkInsert, Database, Statement, open_database
from numgate.db.engine import create_engine
from numgate.db.tables import meta
from numgate.errors import Conflict, StorageUnavailable

PUT = Statement(meta.insert().values(key=bindparam("key"), value=bindparam("value")))
GET = Statement(select(meta.c.value).where(meta.c.key == bindparam("key")))
COUNT = Statement(select(func.count()).select_from(meta))


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Database]:
    engine = create_engine(url)
    db = open_database(engine)
    try:
        yield db
    finally:
        await db.close()
        await engine.dispose()


def on(url: str, body: Callable[[Database], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with opened(url) as db:
            return await body(db)

    return run_sync(main())


async def value(db: Database, key: str) -> Any:
    async with db.read() as tx:
        return await tx.scalar(GET, key=key)


def test_a_failing_write_leaves_nothing(database_url: str) -> None:
    async def body(db: Database) -> None:
        with pytest.raises(RuntimeError):
            async with db.write() as tx:
                await tx.run(PUT, key="a", value="1")
                raise RuntimeError("after the first statement")
        assert await value(db, "a") is None

    on(database_url, body)


def test_concurrent_writes_are_independent(database_url: str) -> None:
    """Sixty writes at once (on SQLite they share commits): the ones that fail leave nothing,
    the others are all there, and each is readable from another connection when its block ends."""

    async def body(db: Database) -> None:
        seen_after_block: list[bool] = []

        async def one(i: int) -> None:
            async with db.write() as tx:
                await tx.run(PUT, key=f"k{i}", value=str(i))
                if i % 3 == 0:
                    raise ValueError(i)
            seen_after_block.append(await value(db, f"k{i}") == str(i))

        results = await asyncio.gather(*(one(i) for i in range(60)), return_exceptions=True)
        assert sum(isinstance(r, ValueError) for r in results) == 20
        assert seen_after_block == [True] * 40
        async with db.read() as tx:
            assert await tx.scalar(COUNT) == 40
        for i in range(60):
            assert await value(db, f"k{i}") == (None if i % 3 == 0 else str(i))

    on(database_url, body)


def test_unique_violation_is_conflict_and_spares_the_others(database_url: str) -> None:
    async def body(db: Database) -> None:
        async with db.write() as tx:
            await tx.run(PUT, key="taken", value="first")

        async def clash() -> None:
            async with db.write() as tx:
                await tx.run(PUT, key="mine", value="x")
                await tx.run(PUT, key="taken", value="second")

        async def fine() -> None:
            async with db.write() as tx:
                await tx.run(PUT, key="other", value="y")

        results = await asyncio.gather(clash(), fine(), return_exceptions=True)
        assert isinstance(results[0], Conflict) and results[1] is None
        assert (await value(db, "taken"), await value(db, "mine"), await value(db, "other")) == (
            "first",
            None,
            "y",
        )

    on(database_url, body)


def test_a_commit_that_need_not_wait_for_the_disk(database_url: str) -> None:
    """``autocommit(durable=False)``: on PostgreSQL on connections with synchronous_commit off
    (the others keep it on); its writes are seen by the next reader at once, on both databases."""

    async def body(db: Database) -> tuple[Any, Any]:
        async with db.autocommit(durable=False) as tx:
            await tx.run(PUT, key="relaxed", value="1")
            relaxed = await tx.scalar(Statement(text("SHOW synchronous_commit"))) if tx.is_postgres else None
        async with db.autocommit() as tx:
            durable = await tx.scalar(Statement(text("SHOW synchronous_commit"))) if tx.is_postgres else None
        assert await value(db, "relaxed") == "1"
        return relaxed, durable

    relaxed, durable = on(database_url, body)
    if database_url.startswith("postgresql"):
        assert (relaxed, durable) == ("off", "on")


SETTINGS = Statement(
    text("SELECT current_setting('synchronous_commit') AS sync, current_setting('plan_cache_mode') AS plans")
)
GET_MANY = Statement(
    select(meta.c.key, meta.c.value).where(
        meta.c.key == any_(bindparam("keys", type_=ARRAY(meta.c.key.type)))
    )
)


def test_batched_statements_are_planned_once(database_url: str) -> None:
    """``batched=True`` (PostgreSQL): connections that plan each prepared statement once, so a
    statement that takes its rows as an array is not planned anew on every call; durable or
    not as asked. The other connections leave PostgreSQL to choose."""

    async def settings(db: Database, durable: bool, batched: bool) -> tuple[str, str]:
        async with db.autocommit(durable=durable, batched=batched) as tx:
            row = await tx.one(SETTINGS)
        assert row is not None
        return row["sync"], row["plans"]

    async def body(db: Database) -> Any:
        async with db.autocommit() as tx:
            await tx.run(PUT, key="a", value="1")
        async with db.read(batched=True) as tx:
            if not tx.is_postgres:  # one connection, and no plans kept: nothing to choose
                assert await tx.scalar(GET, key="a") == "1"
                return None
            for n in range(1, 9):  # past the five custom plans PostgreSQL starts with
                rows = await tx.all(GET_MANY, keys=["a", "b"][: 1 + n % 2])
                assert [tuple(r) for r in rows] == [("a", "1")]
            plans = await tx.all(
                Statement(
                    text(
                        "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                        " WHERE statement LIKE '%numgate_meta%'"
                        " AND statement NOT LIKE '%pg_prepared_statements%'"
                    )
                )
            )
        return plans, {(d, b): await settings(db, d, b) for d in (True, False) for b in (True, False)}

    result = on(database_url, body)
    if database_url.startswith("postgresql"):
        plans, by_kind = result
        assert [tuple(p) for p in plans] == [(8, 0)]
        assert by_kind == {
            (True, False): ("on", "auto"),
            (False, False): ("off", "auto"),
            (True, True): ("on", "force_generic_plan"),
            (False, True): ("off", "force_generic_plan"),
        }


def test_bulk_insert(database_url: str) -> None:
    rows = BulkInsert(meta, ("key", "value"))

    async def body(db: Database) -> None:
        async with db.write() as tx:
            await tx.bulk_insert(rows, [{"key": f"b{i}", "value": str(i)} for i in range(500)])
            await tx.bulk_insert(rows, [])
        async with db.read() as tx:
            assert await tx.scalar(COUNT) == 500

    on(database_url, body)


def test_missing_parameter_names_it(database_url: str) -> None:
    async def body(db: Database) -> None:
        with pytest.raises(TypeError, match="missing: value"):
            async with db.write() as tx:
                await tx.run(PUT, key="k")

    on(database_url, body)


def test_unreachable_postgres_is_storage_unavailable() -> None:
    async def body(db: Database) -> None:
        with pytest.raises(StorageUnavailable, match="unavailable"):
            async with db.read() as tx:
                await tx.scalar(COUNT)

    # a port where nothing listens, on loopback
    on("postgresql://nobody@127.0.0.1:9/none", body)


def test_unopenable_sqlite_is_storage_unavailable(tmp_path: Any) -> None:
    async def body(db: Database) -> None:
        with pytest.raises(StorageUnavailable):
            async with db.read() as tx:
                await tx.scalar(COUNT)

    (tmp_path / "dir.db").mkdir()  # a directory where the database file should be
    on(f"sqlite:///{tmp_path / 'dir.db'}", body)


def test_postgres_connections_are_shared_in_turn_and_waits_are_bounded(database_url: str) -> None:
    """numgate's PostgreSQL pool (db/postgres.py): more users than connections are served in
    turn; one waiting past the timeout is told the database is unavailable; a connection whose
    user was cancelled mid-statement is not handed to the next one."""
    from sqlalchemy import text

    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's pool (SQLite has no connections to share)")
    sleep = Statement(text("SELECT pg_sleep(0.05)"))
    backend = Statement(text("SELECT pg_backend_pid()"))

    async def main() -> None:
        engine = create_engine(database_url)
        db = open_database(engine, pool_size=2, timeout_s=0.5)
        try:

            async def use() -> int:
                async with db.read() as tx:
                    await tx.scalar(sleep)
                    return int(await tx.scalar(backend))

            pids = await asyncio.gather(*(use() for _ in range(12)))  # 12 users, 2 connections: 0.3 s
            assert len(set(pids)) == 2

            held = asyncio.Event()

            async def hold() -> None:
                async with db.read():
                    held.set()
                    await asyncio.sleep(1.5)

            holders = [asyncio.create_task(hold()) for _ in range(2)]
            await held.wait()
            await asyncio.sleep(0.05)
            with pytest.raises(StorageUnavailable, match=r"within 0\.5 s"):
                await use()
            await asyncio.gather(*holders)
            assert await use() in pids  # given back and reused

            async def cancelled() -> None:
                async with db.read() as tx:
                    await tx.scalar(Statement(text("SELECT pg_sleep(0.3)")))

            victim = asyncio.create_task(cancelled())
            await asyncio.sleep(0.1)
            victim.cancel()
            with pytest.raises(asyncio.CancelledError):
                await victim
            assert await use() > 0  # served on a sound connection, not the one cut off mid-statement
        finally:
            await db.close()
            await engine.dispose()

    run_sync(main())


def test_lease_sweeps_pass_over_rows_held_elsewhere(database_url: str) -> None:
    """Renewing and releasing leases (jobs/claims.py) skip a row another transaction holds — a
    worker recording that callback's attempt right now — instead of waiting for it. Waiting
    deadlocked on PostgreSQL: the renewal locked its rows in index order while a round of attempts
    locked its own in the round's order. The held row is left to its holder; the others move."""
    from sqlalchemy import insert, update

    from numgate.db.tables import callback_receivers, callback_targets, deliveries
    from numgate.delivery.worker import LEASES

    if not database_url.startswith("postgresql"):
        pytest.skip("row locks (SQLite has one writer: nothing is held by another transaction)")
    d = deliveries.c
    token = 77

    async def main() -> None:
        async with opened(database_url) as db:
            async with db.write() as tx:
                await tx.run(
                    insert(callback_receivers).values(id=1, receiver="http://127.0.0.1:9", created_ms=0)
                )
                await tx.run(
                    insert(callback_targets).values(
                        id=1, url_hash="h", url="http://127.0.0.1:9/cb", receiver_id=1, created_ms=0
                    )
                )
                for i in (1, 2):
                    await tx.run(
                        insert(deliveries).values(
                            uid=f"u{i}",
                            check_id=None,
                            account_id=1,
                            app_id=1,
                            target_id=1,
                            receiver_id=1,
                            body="{}",
                            status=1,
                            attempts=0,
                            next_ms=0,
                            deadline_ms=10**13,
                            lease_until_ms=1_000,
                            lease_token=token,
                            created_ms=0,
                            updated_ms=0,
                        )
                    )
            holding, release = asyncio.Event(), asyncio.Event()

            async def recorder() -> None:  # holds row u1 as a round of attempts does
                async with db.write() as tx:
                    await tx.run(update(deliveries).where(d.uid == "u1").values(updated_ms=1))
                    holding.set()
                    await release.wait()

            task = asyncio.create_task(recorder())
            await holding.wait()
            try:
                async with db.autocommit() as tx:
                    renewed = await asyncio.wait_for(LEASES.renew(tx, [token], 5_000), 5)
                async with db.autocommit() as tx:
                    released = await asyncio.wait_for(LEASES.release_expired(tx, 10_000), 5)
            finally:
                release.set()
                await task
            assert (renewed, released) == (1, 1)
            async with db.read() as tx:
                rows = await tx.all(select(d.uid, d.status, d.lease_until_ms).order_by(d.uid))
            assert [tuple(r) for r in rows] == [("u1", 1, 1_000), ("u2", 0, None)]

    run_sync(main())
