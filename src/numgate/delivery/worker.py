"""The delivery worker: claims due callbacks, POSTs them concurrently, records each attempt,
and schedules the retries. A crash loses nothing: an unrecorded attempt's lease runs out and the
callback is sent again with the same delivery id (receivers de-duplicate on it).

Fresh callbacks skip the claim: a check worker in the same process stores them already leased to
this process and hands them over in memory (:class:`Handoff`) once its transaction commits. If
the process stops first, their lease runs out and any worker claims them from the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from sqlalchemy import bindparam, func, select, update

from numgate.core import Core
from numgate.db.direct import Statement
from numgate.db.tables import deliveries
from numgate.delivery.outbound import Outbound, open_outbound
from numgate.delivery.outbox import DELIVERED, FAILED, IN_FLIGHT, PENDING, Handoff, Leased
from numgate.delivery.retry import next_attempt_ms
from numgate.delivery.sender import Outgoing
from numgate.jobs.claims import LeaseKeeper, Leases, new_lease_token
from numgate.jobs.runner import register, wait_for_work

log = logging.getLogger("numgate.delivery")

__all__ = ["DELIVERED", "FAILED", "IN_FLIGHT", "PENDING", "DeliveryWorker", "drain"]

CLAIM = 500

d = deliveries.c
LEASES = Leases(deliveries)
CLAIM_DUE = LEASES.claim_statement(
    where=[d.status == PENDING, d.next_ms <= bindparam("now")],
    order_by=d.next_ms,
    returning=[d.uid, d.target_id, d.body, d.attempts, d.app_id, d.deadline_ms],
)
RECORD_ATTEMPT = Statement(
    update(deliveries)
    .where(d.uid == bindparam("b_uid"), d.lease_token == bindparam("b_token"))
    .values(
        status=bindparam("b_status"),
        attempts=d.attempts + 1,
        next_ms=bindparam("b_next"),
        last_status=bindparam("b_last_status"),
        last_error=bindparam("b_error"),
        last_latency_ms=bindparam("b_latency"),
        lease_until_ms=None,
        lease_token=None,
        updated_ms=bindparam("b_done"),
    )
)
NEXT_DUE = Statement(select(func.min(d.next_ms)).where(d.status == PENDING))


class DeliveryWorker:
    def __init__(self, core: Core, outbound: Outbound, handoff: Handoff | None = None) -> None:
        self.core = core
        self.outbound = outbound
        self.handoff = handoff
        self._next_sweep = 0.0
        #: the leases this worker holds (renewed by a LeaseKeeper while it runs)
        self.held = core.outbox.held
        self.keeper = LeaseKeeper(
            core.db, LEASES, core.settings.worker_lease_s, core.clock.time_ms, self.held
        )

    async def _claim(self) -> Leased | None:
        core = self.core
        now = core.clock.time_ms()
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + 5.0
            async with core.db.write() as tx:
                await LEASES.release_expired(tx, now)
        token = new_lease_token()
        self.held.add(token)
        try:
            async with core.db.write() as tx:
                rows = await tx.all(CLAIM_DUE, now=now, limit=CLAIM, until=self.keeper.until(), token=token)
        except BaseException:
            self.held.discard(token)
            raise
        if not rows:
            self.held.discard(token)
            return None
        return Leased(token, rows)

    async def run_once(self) -> int:
        leased = self.handoff.take() if self.handoff is not None else None
        if leased is None:
            leased = await self._claim()
        if leased is None:
            return 0
        try:
            await self.attempt(leased)
        except BaseException:
            # stopping (or the database is down): give the callbacks back now, not after the lease
            with contextlib.suppress(Exception):
                async with self.core.db.write() as tx:
                    await LEASES.release_token(tx, leased.token)
            raise
        finally:
            self.held.discard(leased.token)
        return len(leased.rows)

    async def attempt(self, leased: Leased) -> None:
        """POST each callback once and record how it went."""
        core = self.core
        rows = leased.rows  # uid, target_id, body, attempts, app_id, deadline_ms
        secrets = {app_id: await core.tenancy.app_secret(app_id) for app_id in {r[4] for r in rows}}
        urls = {tid: await core.outbox.targets.url_of(tid) for tid in {r[1] for r in rows}}
        outcomes = await self.outbound.send_all(
            [Outgoing(r[0], urls[r[1]], r[2].encode(), secrets[r[4]], r[3] + 1) for r in rows]
        )
        done = core.clock.time_ms()
        interval = int(core.settings.callback_retry_interval_s * 1000)
        updates: list[dict[str, Any]] = []
        for r, o in zip(rows, outcomes, strict=True):
            if o.ok:
                status, nxt = DELIVERED, done
            else:
                retry_at = None if o.permanent else next_attempt_ms(done, r[5], interval)
                status, nxt = (PENDING, retry_at) if retry_at is not None else (FAILED, done)
                if status == FAILED:
                    log.warning(
                        "callback %s failed for good after %d attempt(s): %s", r[0], r[3] + 1, o.error
                    )
            updates.append(
                {
                    "b_uid": r[0],
                    "b_token": leased.token,
                    "b_done": done,
                    "b_status": status,
                    "b_next": nxt,
                    "b_last_status": o.status,
                    "b_error": o.error,
                    "b_latency": o.latency_ms,
                }
            )
        async with core.db.write() as tx:
            await tx.many(RECORD_ATTEMPT, updates)

    async def next_due_in(self) -> float | None:
        async with self.core.db.read() as tx:
            nxt = await tx.scalar(NEXT_DUE)
        if nxt is None:
            return None
        return max((int(nxt) - self.core.clock.time_ms()) / 1000, 0.0)


def make_outbound(core: Core, processes: int | None = None) -> Outbound:
    s = core.settings
    return open_outbound(
        s.resolved_callback_processes if processes is None else processes,
        allow=s.callback_allow,
        timeout_s=s.callback_timeout_s,
        concurrency=s.callback_concurrency,
        response_max=s.callback_response_max,
    )


async def drain(core: Core) -> int:
    """Attempt every callback that is due now, once (``numgate worker --drain`` and tests)."""
    total = 0
    async with make_outbound(core, 0) as outbound:
        worker = DeliveryWorker(core, outbound)
        while n := await worker.run_once():
            total += n
    return total


async def _release_handed_over(core: Core, handoff: Handoff) -> None:
    """Stopping: give back what was handed over and not sent, so the next start sends it at once."""
    while (leased := handoff.take()) is not None:
        core.outbox.held.discard(leased.token)
        with contextlib.suppress(Exception):
            async with core.db.write() as tx:
                await LEASES.release_token(tx, leased.token)


@register("deliveries")
async def run_delivery_worker(core: Core, stop: asyncio.Event) -> None:
    wake: asyncio.Event = core.outbox.wakeup
    poll = core.settings.worker_poll_s
    handoff = Handoff()
    async with make_outbound(core) as outbound:
        worker = DeliveryWorker(core, outbound, handoff)
        keeper = asyncio.create_task(worker.keeper.run(stop))
        # with sender processes, one lane more than senders keeps each busy while a lane
        # records its batch
        senders = core.settings.resolved_callback_processes
        lanes = senders + 1 if senders else 1

        async def lane() -> None:
            while not stop.is_set():
                wake.clear()
                if await worker.run_once():
                    continue
                due = await worker.next_due_in()
                timeout = poll if due is None else min(max(due, 0.01), poll * 5)
                await wait_for_work(wake, stop, timeout)

        core.outbox.handoff = handoff
        try:
            await asyncio.gather(*(lane() for _ in range(lanes)))
        finally:
            core.outbox.handoff = None
            await _release_handed_over(core, handoff)
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
