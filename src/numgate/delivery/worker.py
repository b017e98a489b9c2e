"""The delivery worker: claims due callbacks, POSTs them concurrently, records each attempt,
and schedules the retries. A crash loses nothing: an unrecorded attempt's lease runs out and the
callback is sent again with the same delivery id (receivers de-duplicate on it).

Fresh callbacks skip the claim: a check worker in the same process stores them already leased to
this process and hands them over in memory (:class:`Handoff`) once its transaction commits. If
the process stops first, their lease runs out and any worker claims them from the table.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, update

from numgate.core import Core
from numgate.db.direct import Row, Statement
from numgate.db.tables import deliveries
from numgate.delivery.outbound import Outbound, open_outbound
from numgate.delivery.retry import next_attempt_ms
from numgate.delivery.sender import Outgoing
from numgate.jobs.claims import Leases, new_lease_token
from numgate.jobs.runner import register, wait_for_work

log = logging.getLogger("numgate.delivery")

PENDING, IN_FLIGHT, DELIVERED, FAILED = 0, 1, 2, 3
STATUS_NAMES = {PENDING: "pending", IN_FLIGHT: "in flight", DELIVERED: "delivered", FAILED: "failed"}
CLAIM = 500

d = deliveries.c
LEASES = Leases(deliveries)
CLAIM_DUE = LEASES.claim_statement(
    where=[d.status == PENDING, d.next_ms <= bindparam("now")],
    order_by=d.next_ms,
    returning=[d.uid, d.url, d.body, d.attempts, d.app_id, d.deadline_ms],
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


#: chunks of fresh callbacks that may wait in a hand-over (see Handoff)
HANDOFF_CHUNKS = 4


def lease_ms(core: Core, *, handed_over: bool = False) -> int:
    """How long a leased callback may wait for its attempt to be recorded before any worker may
    claim it again: a whole batch against receivers that all time out (``concurrency`` at a
    time), plus, for a hand-over, the chunks queued before it — a lease that ran out under a
    batch still being sent would send its callbacks twice."""
    s = core.settings
    batch_s = math.ceil(CLAIM / max(s.callback_concurrency, 1)) * s.callback_timeout_s
    waits = HANDOFF_CHUNKS + 1 if handed_over else 1
    return int((batch_s * waits + 30.0) * 1000)


@dataclass(frozen=True)
class Leased:
    """Callbacks leased under one token: a claim, or a check worker's hand-over."""

    token: int
    #: (uid, url, body, attempts, app_id, deadline_ms) each, as CLAIM_DUE returns them
    rows: list[Row] | list[tuple[Any, ...]]


class Handoff:
    """The queue from this process's check worker to its delivery worker. Bounded, so that a
    hand-over never waits long enough for its lease to run out."""

    def __init__(self, chunks: int = HANDOFF_CHUNKS) -> None:
        self._queue: asyncio.Queue[Leased] = asyncio.Queue(chunks)

    def has_room(self) -> bool:
        return not self._queue.full()

    def put(self, leased: Leased) -> None:
        """Called by the one check worker of this process, after its transaction committed."""
        self._queue.put_nowait(leased)

    def take(self) -> Leased | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None


class DeliveryWorker:
    def __init__(self, core: Core, outbound: Outbound, handoff: Handoff | None = None) -> None:
        self.core = core
        self.outbound = outbound
        self.handoff = handoff
        self._next_sweep = 0.0

    async def _claim(self) -> Leased | None:
        core = self.core
        now = core.clock.time_ms()
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + 5.0
            async with core.db.write() as tx:
                await LEASES.release_expired(tx, now)
        token = new_lease_token()
        async with core.db.write() as tx:
            rows = await tx.all(CLAIM_DUE, now=now, limit=CLAIM, until=now + lease_ms(core), token=token)
        return Leased(token, rows) if rows else None

    async def run_once(self) -> int:
        leased = self.handoff.take() if self.handoff is not None else None
        if leased is None:
            leased = await self._claim()
        if leased is None:
            return 0
        await self.attempt(leased)
        return len(leased.rows)

    async def attempt(self, leased: Leased) -> None:
        """POST each callback once and record how it went."""
        core = self.core
        rows = leased.rows  # uid, url, body, attempts, app_id, deadline_ms
        secrets = {app_id: await core.tenancy.app_secret(app_id) for app_id in {r[4] for r in rows}}
        outcomes = await self.outbound.send_all(
            [Outgoing(r[0], r[1], r[2].encode(), secrets[r[4]], r[3] + 1) for r in rows]
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
    )


async def drain(core: Core) -> int:
    """Attempt every callback that is due now, once (``numgate worker --drain`` and tests)."""
    total = 0
    async with make_outbound(core, 0) as outbound:
        worker = DeliveryWorker(core, outbound)
        while n := await worker.run_once():
            total += n
    return total


@register("deliveries")
async def run_delivery_worker(core: Core, stop: asyncio.Event) -> None:
    wake: asyncio.Event = core.delivery_wakeup
    poll = core.settings.worker_poll_s
    handoff = Handoff()
    async with make_outbound(core) as outbound:
        worker = DeliveryWorker(core, outbound, handoff)
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

        core.callback_handoff = handoff
        try:
            await asyncio.gather(*(lane() for _ in range(lanes)))
        finally:
            core.callback_handoff = None
