"""The check worker: claims pending numbers fairly between accounts, checks them (Basic in a
classifier process; HLR and Call through the upstreams, ``live.py``), and finishes them in one
transaction each chunk (``finish.py``): results, callbacks, settlement. A chunk is leased (its
claim committed on its own, the lease renewed while the work runs); on PostgreSQL it is locked
instead by the transaction that finishes its Basic numbers (``CheckWorker._locked_chunk``).
Numbers handed to an upstream that answers by webhook wait (status 3) and are finished when it
does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import Any

from sqlalchemy import bindparam, update

from numgate.core import Core
from numgate.db.direct import Row, Statement, Tx
from numgate.db.tables import any_of, checks, in_state
from numgate.delivery.outbox import Enqueued
from numgate.errors import Unavailable
from numgate.jobs.claims import LeaseKeeper, new_lease_token
from numgate.jobs.runner import register, run_together, wait_for_work
from numgate.numbers.check import BasicChecks
from numgate.numbers.finish import BATCH, LEASES, BatchInfo, Finisher, batch_info
from numgate.numbers.live import Item, LiveStep, requeue_overdue
from numgate.numbers.results import CheckResult, Level, Outcome
from numgate.numbers.service import STATUS_PENDING

log = logging.getLogger("numgate.numbers.worker")

#: a number whose check crashed this many times is finished as an internal error (refunded)
MAX_ATTEMPTS = 5
#: fewest numbers one account gets per cycle, however many accounts are waiting
MIN_SHARE = 25
#: seconds between sweeps (expired leases, overdue webhooks, upstream health saved)
SWEEP_S = 5.0
#: seconds a worker goes on claiming for the accounts it last found with pending numbers before
#: it lists them again. Listing them walks the pending index past the numbers claimed since the
#: last vacuum: on PostgreSQL 3–10 ms a call while a large batch runs (a chunk takes ~40 ms). It
#: lists them at once when numbers were stored in its own process since (``numgate serve``
#: running the workers) or none is left to claim for; a separate ``numgate worker`` picks up a new
#: account within this time
ACCOUNTS_EVERY_S = 0.25
#: seconds a worker whose only pending numbers are held back (``Outbox.check_share``: their
#: receiver keeps up but has no room yet) waits before it looks again
HELD_BACK_WAIT_S = 0.02
#: the result of a number whose checks kept crashing (``MAX_ATTEMPTS``)
_CRASHED = CheckResult(Outcome.INTERNAL)

_PENDING_OF = [in_state(checks.c.status, STATUS_PENDING), checks.c.account_id == bindparam("account_id")]
_CLAIMED = [
    checks.c.id,
    checks.c.batch_id,
    checks.c.seq,
    checks.c.phone,
    checks.c.message_id,
    checks.c.attempts,
    checks.c.route_pos,
]
#: an account's first pending numbers, leased to the worker (``attempts`` counts the claims)
CLAIM = LEASES.claim_statement(
    where=_PENDING_OF,
    order_by=checks.c.id,
    returning=_CLAIMED,
    extra_values={"attempts": checks.c.attempts + 1},
)
#: the same numbers, locked by the worker's transaction instead (PostgreSQL: see ``_locked_chunk``)
LOCK = LEASES.lock_statement(where=_PENDING_OF, order_by=checks.c.id, returning=_CLAIMED)
#: locked numbers of a live level, leased for the upstream calls that follow the commit
LEASE_LOCKED = LEASES.lease_ids_statement(
    returning=_CLAIMED, extra_values={"attempts": checks.c.attempts + 1}
)
#: locked numbers whose chunk's transaction failed: counted like a claim, for ``MAX_ATTEMPTS``
TRIED = Statement(
    update(checks)
    .where(
        any_of(checks.c.id, "ids"),
        in_state(checks.c.status, STATUS_PENDING),
    )
    .values(attempts=checks.c.attempts + 1)
)


class CheckWorker:
    def __init__(self, core: Core, basic: BasicChecks) -> None:
        self.core = core
        self.basic = basic
        self.chunk = core.settings.worker_chunk
        self.finisher = Finisher(core)
        self.live = LiveStep(core)
        self._batches: dict[int, BatchInfo] = {}
        self._next_sweep = 0.0
        #: accounts with pending numbers as last listed, until when that list is used, and
        #: ``core.numbers.stored`` then
        self._accounts: list[int] = []
        self._accounts_until = 0.0
        self._accounts_stored = -1
        #: whether the last claim left an account's numbers for later (its receiver's room)
        self.held_back = False
        #: the lease this worker holds while it checks a chunk (renewed by ``keeper``)
        self.held: set[int] = set()
        #: whether chunks are claimed under row locks (``_locked_chunk``)
        self.row_locks = core.db.dialect.name == "postgresql"
        self.keeper = LeaseKeeper(
            core.db, LEASES, core.settings.worker_lease_s, core.clock.time_ms, self.held
        )

    async def _batch(self, batch_id: int) -> BatchInfo:
        info = self._batches.get(batch_id)
        if info is None:
            async with self.core.db.read() as tx:
                r = await tx.one(BATCH, id=batch_id)
            assert r is not None, f"batch {batch_id} of a leased check is gone"
            info = batch_info(r)
            if len(self._batches) > 5000:
                self._batches.clear()
            self._batches[batch_id] = info
        return info

    async def sweep(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_S
        async with self.core.db.autocommit() as tx:
            n = await LEASES.release_expired(tx, self.core.clock.time_ms())
        if n:
            log.warning("released %d numbers whose lease ran out (a worker stopped mid-check)", n)
        await requeue_overdue(self.core)
        with contextlib.suppress(Unavailable):
            await self.core.upstreams.save_health()

    async def claim(self, tx: Tx, claim: Statement, **params: Any) -> list[Row]:
        """Run ``claim`` (``CLAIM`` or ``LOCK``, with its ``params``) for the accounts with
        pending numbers, each its share of a chunk."""
        rows: list[Row] = []
        now, stored = time.monotonic(), self.core.numbers.stored
        if not self._accounts or now >= self._accounts_until or stored != self._accounts_stored:
            self._accounts = await LEASES.accounts_with_pending(tx)
            self._accounts_until, self._accounts_stored = now + ACCOUNTS_EVERY_S, stored
        accounts = self._accounts
        if not accounts:
            return rows
        share = max(self.chunk // len(accounts), MIN_SHARE)
        drained = set()
        self.held_back = False
        for acct in accounts:
            limit = self.core.outbox.check_share(acct, share)
            if limit <= 0:  # its receiver keeps up and has no room yet: the others go first
                self.held_back = True
                continue
            got = await tx.all(claim, account_id=acct, limit=limit, **params)
            if len(got) < limit:
                drained.add(acct)
            rows += got
        if drained:
            self._accounts = [a for a in accounts if a not in drained]
        return rows

    async def run_once(self) -> int:
        """Claim, check and finish one chunk; the number of numbers finished or handed to an
        upstream that answers later."""
        await self.sweep()
        token = new_lease_token()
        self.held.add(token)
        try:
            if self.row_locks:
                return await self._locked_chunk(token)
            return await self._check_leased(token, await self.claim_leased(token))
        finally:
            self.held.discard(token)

    async def claim_leased(self, token: int) -> list[Row]:
        """A chunk leased under ``token`` (``CLAIM``, in its own transaction)."""
        async with self.core.db.autocommit() as tx:
            return await self.claim(tx, CLAIM, until=self.keeper.until(), token=token)

    async def _basics(self, rows: list[Row], uncounted: int = 0) -> list[CheckResult]:
        """The Basic results of ``rows``: a number claimed more than ``MAX_ATTEMPTS`` times (its
        checks kept crashing) is an internal error (refunded). ``uncounted`` is 1 for locked
        rows, whose ``attempts`` does not count the claim in hand (a leased row's does)."""
        most = MAX_ATTEMPTS - uncounted
        todo = [r["phone"] for r in rows if r["attempts"] <= most]
        done = iter(await self.basic.run(todo) if todo else ())
        return [next(done) if r["attempts"] <= most else _CRASHED for r in rows]

    async def _locked_chunk(self, token: int) -> int:
        """PostgreSQL: claim a chunk under row locks in one transaction that also checks and
        finishes its Basic numbers, so a Basic number's row is written twice (stored, finished)
        rather than three times (and its index entries with it). Numbers of a live level are
        leased in the same transaction and checked after it commits, as ``_check_leased``
        does: their upstream calls take too long to hold a transaction open. The numbers of a
        chunk whose transaction failed are counted as tried (``TRIED``) after the rollback."""
        core = self.core
        enqueued = Enqueued()
        held: list[int] = []
        try:
            async with core.db.write() as tx:
                rows = await self.claim(tx, LOCK)
                if not rows:
                    return 0
                held = [r["id"] for r in rows]
                infos = {b: await self._batch(b) for b in {r["batch_id"] for r in rows}}
                basic = [r for r in rows if infos[r["batch_id"]].level is Level.BASIC]
                live = [r["id"] for r in rows if infos[r["batch_id"]].level is not Level.BASIC]
                leased = (
                    await tx.all(LEASE_LOCKED, ids=live, until=self.keeper.until(), token=token)
                    if live
                    else []
                )
                w = None
                if basic:
                    results = dict(
                        zip((r["id"] for r in basic), await self._basics(basic, uncounted=1), strict=True)
                    )
                    w = self.finisher.writes(basic, infos, results, core.clock.time_ms())
                    w, enqueued = await self.finisher.write(tx, None, w, infos, len(basic))
        except BaseException:
            core.outbox.rolled_back(enqueued)
            if held:
                with contextlib.suppress(Exception):
                    async with core.db.autocommit() as tx:
                        await tx.run(TRIED, ids=held)
            raise
        if w is not None:
            self.finisher.committed(w, enqueued, infos)
        if leased:
            await self._check_leased(token, leased)
        return len(rows)

    async def _check_leased(self, token: int, rows: list[Row]) -> int:
        """Check and finish ``rows``, leased under ``token``."""
        if not rows:
            return 0
        try:
            by_batch: dict[int, list[Row]] = defaultdict(list)
            for r in rows:
                by_batch[r["batch_id"]].append(r)
            results: dict[int, CheckResult] = {}
            infos: dict[int, BatchInfo] = {}
            calls = []
            waiting: set[int] = set()
            for batch_id, group in by_batch.items():
                info = infos[batch_id] = await self._batch(batch_id)
                basics = await self._basics(group)
                if info.level is Level.BASIC:
                    results.update({r["id"]: b for r, b in zip(group, basics, strict=True)})
                    continue
                items = []
                for r, b in zip(group, basics, strict=True):
                    if b is _CRASHED:
                        results[r["id"]] = b
                    else:
                        items.append(Item(r["id"], b, r["route_pos"]))
                step = await self.live.run(info.level, info.country, info.max_age_s, items, token)
                results.update(step.results)
                calls += step.calls
                waiting |= step.waiting
            finished = [r for r in rows if r["id"] not in waiting]
            if finished:
                w = self.finisher.writes(finished, infos, results, self.core.clock.time_ms(), calls)
                await self.finisher.commit(token, w, infos, len(finished))
            return len(rows)
        except BaseException:
            # stopping or a bug: give the numbers back now rather than after the lease
            with contextlib.suppress(Exception):
                async with self.core.db.write() as tx:
                    await LEASES.release_token(tx, token)
            raise


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
        wake: asyncio.Event = core.numbers.work_available
        poll = core.settings.worker_poll_s

        async def cycles() -> None:
            while not stop.is_set():
                wake.clear()
                if await worker.run_once():
                    continue
                await wait_for_work(wake, stop, HELD_BACK_WAIT_S if worker.held_back else poll)

        # each loop claims, checks and finishes its own chunks: while one chunk is classified in
        # the helper processes, another is claimed or finished on this event loop
        loops = [cycles() for _ in range(core.settings.worker_chunks_in_flight)]
        await run_together([*loops, worker.keeper.run(stop)])
    finally:
        await basic.close()
