"""The check worker: claims pending numbers fairly between accounts, checks them, and in one
transaction writes results, schedules callbacks and settles the batch's reservation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import bindparam, select, update

from numgate import ids
from numgate.core import Core
from numgate.db.engine import writing
from numgate.db.tables import batches, checks, deliveries
from numgate.jobs import claims
from numgate.jobs.runner import register, wait_for_work
from numgate.numbers.check import check_many
from numgate.numbers.classify import warm_up
from numgate.numbers.results import CheckResult, Level, Outcome
from numgate.numbers.service import STATUS_PENDING

log = logging.getLogger("numgate.numbers.worker")

#: a number whose check crashed this many times is finished as an internal error (refunded)
MAX_ATTEMPTS = 5
#: fewest numbers one account gets per cycle, however many accounts are waiting
MIN_SHARE = 25


@dataclass(frozen=True)
class BatchInfo:
    id: int
    account_id: int
    app_id: int
    batch_no: str
    level: Level
    currency: str
    unit_price: int
    dr_url: str | None


class CheckWorker:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.chunk = core.settings.worker_chunk
        self._batches: dict[int, BatchInfo] = {}
        self._next_sweep = 0.0

    async def _batch(self, batch_id: int) -> BatchInfo:
        info = self._batches.get(batch_id)
        if info is None:
            async with self.core.engine.connect() as conn:
                r = (await conn.execute(select(batches).where(batches.c.id == batch_id))).one()
            info = BatchInfo(
                r.id,
                r.account_id,
                r.app_id,
                r.batch_no,
                Level(r.check_level),
                r.currency,
                r.unit_price,
                r.dr_url,
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
        async with writing(self.core.engine) as conn:
            n = await claims.release_expired(conn, checks, self.core.clock.time_ms())
        if n:
            log.warning("released %d numbers whose lease ran out (a worker stopped mid-check)", n)

    async def claim(self, token: int) -> list[Any]:
        now = self.core.clock.time_ms()
        until = now + int(self.core.settings.worker_lease_s * 1000)
        rows: list[Any] = []
        async with writing(self.core.engine) as conn:
            accounts = await claims.accounts_with_pending(conn, "checks")
            if not accounts:
                return rows
            share = max(self.chunk // len(accounts), MIN_SHARE)
            for acct in accounts:
                rows += await claims.claim(
                    conn,
                    checks,
                    where=[checks.c.status == STATUS_PENDING, checks.c.account_id == acct],
                    order_by=checks.c.id,
                    limit=share,
                    lease_until_ms=until,
                    token=token,
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
        return rows

    async def run_once(self) -> int:
        """Claim, check and finish one chunk; the number of numbers finished."""
        await self.sweep()
        token = claims.new_lease_token()
        rows = await self.claim(token)
        if not rows:
            return 0
        try:
            by_batch: dict[int, list[Any]] = defaultdict(list)
            for r in rows:
                by_batch[r.batch_id].append(r)
            results: dict[int, CheckResult] = {}
            infos: dict[int, BatchInfo] = {}
            providers = self.core.providers
            for batch_id, group in by_batch.items():
                info = infos[batch_id] = await self._batch(batch_id)
                todo = [r for r in group if r.attempts <= MAX_ATTEMPTS]
                for r in group:
                    if r.attempts > MAX_ATTEMPTS:
                        results[r.id] = CheckResult(Outcome.INTERNAL)
                checked = await check_many([r.phone for r in todo], info.level, providers)
                results.update({r.id: res for r, res in zip(todo, checked, strict=True)})
            return await self.finish(token, rows, infos, results)
        except BaseException:
            # stopping or a bug: give the numbers back now rather than after the lease
            with contextlib.suppress(Exception):
                async with writing(self.core.engine) as conn:
                    await claims.release_token(conn, checks, token)
            raise

    async def finish(
        self, token: int, rows: list[Any], infos: dict[int, BatchInfo], results: dict[int, CheckResult]
    ) -> int:
        core = self.core
        now = core.clock.time_ms()
        deadline = now + int(core.settings.callback_retry_window_s * 1000)
        renderer = core.numbers.renderer
        updates: list[dict[str, Any]] = []
        outbox: list[dict[str, Any]] = []
        settle: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        async with writing(core.engine) as conn:
            owned = await claims.owned_ids(conn, checks, [r.id for r in rows], token)
            for r in rows:
                if r.id not in owned:
                    continue  # its lease ran out and another worker owns it now
                info = infos[r.batch_id]
                res = results[r.id]
                cost = info.unit_price if res.outcome.charged else 0
                settle[r.batch_id][0 if cost else 1] += info.unit_price
                updates.append(
                    {
                        "b_id": r.id,
                        "b_outcome": int(res.outcome),
                        "b_result": orjson.dumps(res.to_json()).decode(),
                        "b_cost": cost,
                    }
                )
                if info.dr_url:
                    body = renderer.callback(
                        message_id=r.message_id,
                        batch_no=info.batch_no,
                        phone=r.phone,
                        result=res,
                        cost=cost,
                        currency=info.currency,
                    )
                    outbox.append(
                        {
                            "uid": ids.new_message_id(),
                            "check_id": r.id,
                            "account_id": info.account_id,
                            "app_id": info.app_id,
                            "url": info.dr_url,
                            "body": body.decode(),
                            "status": 0,
                            "attempts": 0,
                            "next_ms": now,
                            "deadline_ms": deadline,
                            "created_ms": now,
                            "updated_ms": now,
                        }
                    )
            if updates:
                await conn.execute(
                    update(checks)
                    .where(checks.c.id == bindparam("b_id"))
                    .values(
                        status=2,
                        outcome=bindparam("b_outcome"),
                        result=bindparam("b_result"),
                        cost=bindparam("b_cost"),
                        done_ms=now,
                        lease_until_ms=None,
                        lease_token=None,
                    ),
                    updates,
                )
            if outbox:
                await conn.execute(deliveries.insert(), outbox)
            for batch_id, (charged, released) in settle.items():
                info = infos[batch_id]
                await core.ledger.settle(conn, info.account_id, info.currency, batch_id, charged, released)
        if outbox:
            core.delivery_wakeup.set()
        return len(updates)


async def drain(core: Core) -> int:
    """Check every pending number now (used by ``numgate worker --drain`` and tests)."""
    worker = CheckWorker(core)
    total = 0
    while n := await worker.run_once():
        total += n
    return total


@register("checks")
async def run_check_worker(core: Core, stop: asyncio.Event) -> None:
    await asyncio.to_thread(warm_up)
    worker = CheckWorker(core)
    wake: asyncio.Event = core.numbers.work_available
    poll = core.settings.worker_poll_s
    while not stop.is_set():
        wake.clear()
        if await worker.run_once():
            continue
        await wait_for_work(wake, stop, poll)
