"""The check worker: claims pending numbers fairly between accounts, checks them, and in one
transaction writes results, schedules callbacks and settles the batch's reservation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as CountOf
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import bindparam, select, update

from numgate.core import Core
from numgate.db.direct import BulkUpdate, Row, Statement
from numgate.db.tables import batches, checks
from numgate.delivery.outbox import Enqueued, NewCallback
from numgate.jobs.claims import LeaseKeeper, Leases, new_lease_token
from numgate.jobs.runner import register, wait_for_work
from numgate.ledger.service import Settlement
from numgate.metrics import metrics
from numgate.numbers.check import BasicChecks, check_many
from numgate.numbers.results import CheckResult, Level, Outcome
from numgate.numbers.service import STATUS_PENDING

log = logging.getLogger("numgate.numbers.worker")

#: a number whose check crashed this many times is finished as an internal error (refunded)
MAX_ATTEMPTS = 5
#: fewest numbers one account gets per cycle, however many accounts are waiting
MIN_SHARE = 25


LEASES = Leases(checks)
CLAIM = LEASES.claim_statement(
    where=[checks.c.status == STATUS_PENDING, checks.c.account_id == bindparam("account_id")],
    order_by=checks.c.id,
    returning=[
        checks.c.id,
        checks.c.batch_id,
        checks.c.seq,
        checks.c.phone,
        checks.c.message_id,
        checks.c.attempts,
    ],
    extra_values={"attempts": checks.c.attempts + 1},
)
BATCH = Statement(select(batches).where(batches.c.id == bindparam("id")))
FINISH = BulkUpdate(
    update(checks)
    .where(checks.c.id == bindparam("b_id"))
    .values(
        status=2,
        outcome=bindparam("b_outcome"),
        result=bindparam("b_result"),
        cost=bindparam("b_cost"),
        done_ms=bindparam("b_now"),
        lease_until_ms=None,
        lease_token=None,
    ),
    {
        "b_id": checks.c.id.type,
        "b_outcome": checks.c.outcome.type,
        "b_result": checks.c.result.type,
        "b_cost": checks.c.cost.type,
        "b_now": checks.c.done_ms.type,
    },
)


@dataclass
class Writes:
    """What finishing a chunk writes: each number's result, its callback, its charge."""

    updates: list[dict[str, Any]]  # FINISH parameters
    callbacks: list[NewCallback]
    charges: list[tuple[int, int, int]]  # check id, batch id, cost

    def only(self, owned: set[int]) -> Writes:
        """The writes of the numbers still leased to this worker."""
        return Writes(
            [u for u in self.updates if u["b_id"] in owned],
            [c for c in self.callbacks if c.check_id in owned],
            [c for c in self.charges if c[0] in owned],
        )


@dataclass(frozen=True)
class BatchInfo:
    id: int
    account_id: int
    app_id: int
    batch_no: str
    level: Level
    currency: str
    unit_price: int
    #: where the batch's callbacks go (``callback_targets``); None: no callbacks
    target_id: int | None


class CheckWorker:
    def __init__(self, core: Core, basic: BasicChecks) -> None:
        self.core = core
        self.basic = basic
        self.chunk = core.settings.worker_chunk
        self._batches: dict[int, BatchInfo] = {}
        self._next_sweep = 0.0
        #: the lease this worker holds while it checks a chunk (renewed by ``keeper``)
        self.held: set[int] = set()
        self.keeper = LeaseKeeper(
            core.db, LEASES, core.settings.worker_lease_s, core.clock.time_ms, self.held
        )

    async def _batch(self, batch_id: int) -> BatchInfo:
        info = self._batches.get(batch_id)
        if info is None:
            async with self.core.db.read() as tx:
                r = await tx.one(BATCH, id=batch_id)
            assert r is not None, f"batch {batch_id} of a leased check is gone"
            info = BatchInfo(
                r["id"],
                r["account_id"],
                r["app_id"],
                r["batch_no"],
                Level(r["check_level"]),
                r["currency"],
                r["unit_price"],
                r["target_id"],
            )
            if len(self._batches) > 5000:
                self._batches.clear()
            self._batches[batch_id] = info
        return info

    async def sweep(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 5.0
        async with self.core.db.autocommit() as tx:
            n = await LEASES.release_expired(tx, self.core.clock.time_ms())
        if n:
            log.warning("released %d numbers whose lease ran out (a worker stopped mid-check)", n)

    async def claim(self, token: int) -> list[Row]:
        until = self.keeper.until()
        rows: list[Row] = []
        async with self.core.db.autocommit() as tx:
            accounts = await LEASES.accounts_with_pending(tx)
            if not accounts:
                return rows
            share = max(self.chunk // len(accounts), MIN_SHARE)
            for acct in accounts:
                rows += await tx.all(CLAIM, account_id=acct, limit=share, until=until, token=token)
        return rows

    async def run_once(self) -> int:
        """Claim, check and finish one chunk; the number of numbers finished."""
        await self.sweep()
        token = new_lease_token()
        self.held.add(token)
        try:
            return await self._check_chunk(token)
        finally:
            self.held.discard(token)

    async def _check_chunk(self, token: int) -> int:
        rows = await self.claim(token)
        if not rows:
            return 0
        try:
            by_batch: dict[int, list[Row]] = defaultdict(list)
            for r in rows:
                by_batch[r["batch_id"]].append(r)
            results: dict[int, CheckResult] = {}
            infos: dict[int, BatchInfo] = {}
            providers = self.core.providers
            for batch_id, group in by_batch.items():
                info = infos[batch_id] = await self._batch(batch_id)
                todo = [r for r in group if r["attempts"] <= MAX_ATTEMPTS]
                for r in group:
                    if r["attempts"] > MAX_ATTEMPTS:
                        results[r["id"]] = CheckResult(Outcome.INTERNAL)
                checked = await check_many([r["phone"] for r in todo], info.level, providers, self.basic)
                results.update({r["id"]: res for r, res in zip(todo, checked, strict=True)})
            return await self.finish(token, rows, infos, results)
        except BaseException:
            # stopping or a bug: give the numbers back now rather than after the lease
            with contextlib.suppress(Exception):
                async with self.core.db.write() as tx:
                    await LEASES.release_token(tx, token)
            raise

    def _writes(
        self, rows: list[Row], infos: dict[int, BatchInfo], results: dict[int, CheckResult], now: int
    ) -> Writes:
        """What finishing ``rows`` writes."""
        renderer = self.core.numbers.renderer
        w = Writes([], [], [])
        for r in rows:
            check_id, batch_id = r["id"], r["batch_id"]
            info = infos[batch_id]
            res = results[check_id]
            cost = info.unit_price if res.outcome.charged else 0
            w.charges.append((check_id, batch_id, cost))
            w.updates.append(
                {
                    "b_id": check_id,
                    "b_outcome": int(res.outcome),
                    "b_result": orjson.dumps(res.to_json()).decode(),
                    "b_cost": cost,
                    "b_now": now,
                }
            )
            if info.target_id is None:
                continue
            body = renderer.callback(
                message_id=r["message_id"],
                batch_no=info.batch_no,
                phone=r["phone"],
                result=res,
                cost=cost,
                currency=info.currency,
            )
            w.callbacks.append(NewCallback(check_id, info.account_id, info.app_id, info.target_id, body))
        return w

    async def finish(
        self, token: int, rows: list[Row], infos: dict[int, BatchInfo], results: dict[int, CheckResult]
    ) -> int:
        """In one transaction: the results, the callbacks (``Outbox.enqueue``) and the settlement
        of the numbers this worker still holds."""
        core = self.core
        w = self._writes(rows, infos, results, core.clock.time_ms())
        enqueued = Enqueued()
        try:
            async with core.db.write() as tx:
                owned = await LEASES.owned_ids(tx, token)
                if len(owned) < len(rows):  # some leases ran out and other workers own them now
                    w = w.only(owned)
                settle: dict[int, list[int]] = defaultdict(lambda: [0, 0])
                for _, batch_id, cost in w.charges:
                    settle[batch_id][0 if cost else 1] += infos[batch_id].unit_price
                await tx.bulk_update(FINISH, w.updates)
                enqueued = await core.outbox.enqueue(tx, w.callbacks)
                await core.ledger.settle(
                    tx,
                    [
                        Settlement(infos[b].account_id, infos[b].currency, b, charged, released)
                        for b, (charged, released) in settle.items()
                    ],
                )
        except BaseException:
            core.outbox.rolled_back(enqueued)
            raise
        core.outbox.committed(enqueued)
        self._count(w, infos, results)
        return len(w.updates)

    @staticmethod
    def _count(w: Writes, infos: dict[int, BatchInfo], results: dict[int, CheckResult]) -> None:
        ended: CountOf[tuple[str, Outcome]] = CountOf(
            (infos[batch_id].level.name.lower(), results[check_id].outcome)
            for check_id, batch_id, _ in w.charges
        )
        m = metrics()
        for (level, outcome), n in ended.items():
            m.checked(level, outcome.name.lower(), outcome.charged, n)


async def drain(core: Core) -> int:
    """Check every pending number now (used by ``numgate worker --drain`` and tests)."""
    basic = BasicChecks(core.settings.resolved_check_processes)
    try:
        worker = CheckWorker(core, basic)
        total = 0
        while n := await worker.run_once():
            total += n
        return total
    finally:
        await basic.close()


@register("checks")
async def run_check_worker(core: Core, stop: asyncio.Event) -> None:
    basic = BasicChecks(core.settings.resolved_check_processes)
    try:
        await basic.start()
        worker = CheckWorker(core, basic)
        keeper = asyncio.create_task(worker.keeper.run(stop))
        wake: asyncio.Event = core.numbers.work_available
        poll = core.settings.worker_poll_s
        try:
            while not stop.is_set():
                wake.clear()
                if await worker.run_once():
                    continue
                await wait_for_work(wake, stop, poll)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
    finally:
        await basic.close()
