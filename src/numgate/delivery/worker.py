"""The delivery worker: claims due callbacks, POSTs them concurrently, records each attempt,
and schedules the retries. A crash loses nothing: an unrecorded attempt's lease runs out and the
callback is sent again with the same delivery id (receivers de-duplicate on it)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy import bindparam, func, select, update

from numgate.core import Core
from numgate.db.direct import Statement
from numgate.db.tables import deliveries
from numgate.delivery.retry import next_attempt_ms
from numgate.delivery.sender import CallbackSender, Outgoing
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
    returning=[d.id, d.uid, d.url, d.body, d.attempts, d.app_id, d.deadline_ms],
)
RECORD_ATTEMPT = Statement(
    update(deliveries)
    .where(d.id == bindparam("b_id"), d.lease_token == bindparam("b_token"))
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
    def __init__(self, core: Core, sender: CallbackSender) -> None:
        self.core = core
        self.sender = sender
        self._next_sweep = 0.0

    async def run_once(self) -> int:
        core = self.core
        now = core.clock.time_ms()
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + 5.0
            async with core.db.write() as tx:
                await LEASES.release_expired(tx, now)
        token = new_lease_token()
        lease = int(max(core.settings.callback_timeout_s * 3, 30.0) * 1000)
        async with core.db.write() as tx:
            rows = await LEASES.claim(tx, CLAIM_DUE, now=now, limit=CLAIM, until=now + lease, token=token)
        if not rows:
            return 0
        secrets = {app_id: await core.tenancy.app_secret(app_id) for app_id in {r["app_id"] for r in rows}}
        outcomes = await asyncio.gather(
            *(
                self.sender.send(
                    Outgoing(r["uid"], r["url"], r["body"].encode(), secrets[r["app_id"]], r["attempts"] + 1)
                )
                for r in rows
            )
        )
        done = core.clock.time_ms()
        interval = int(core.settings.callback_retry_interval_s * 1000)
        updates: list[dict[str, Any]] = []
        for r, o in zip(rows, outcomes, strict=True):
            if o.ok:
                status, nxt = DELIVERED, done
            else:
                retry_at = None if o.permanent else next_attempt_ms(done, r["deadline_ms"], interval)
                status, nxt = (PENDING, retry_at) if retry_at is not None else (FAILED, done)
                if status == FAILED:
                    log.warning(
                        "callback %s failed for good after %d attempt(s): %s",
                        r["uid"],
                        r["attempts"] + 1,
                        o.error,
                    )
            updates.append(
                {
                    "b_id": r["id"],
                    "b_token": token,
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
        return len(rows)

    async def next_due_in(self) -> float | None:
        async with self.core.db.read() as tx:
            nxt = await tx.scalar(NEXT_DUE)
        if nxt is None:
            return None
        return max((int(nxt) - self.core.clock.time_ms()) / 1000, 0.0)


def make_sender(core: Core) -> CallbackSender:
    s = core.settings
    return CallbackSender(
        allow=s.callback_allow, timeout_s=s.callback_timeout_s, concurrency=s.callback_concurrency
    )


async def drain(core: Core) -> int:
    """Attempt every callback that is due now, once (``numgate worker --drain`` and tests)."""
    total = 0
    async with make_sender(core) as sender:
        worker = DeliveryWorker(core, sender)
        while n := await worker.run_once():
            total += n
    return total


@register("deliveries")
async def run_delivery_worker(core: Core, stop: asyncio.Event) -> None:
    wake: asyncio.Event = core.delivery_wakeup
    poll = core.settings.worker_poll_s
    async with make_sender(core) as sender:
        worker = DeliveryWorker(core, sender)
        while not stop.is_set():
            wake.clear()
            if await worker.run_once():
                continue
            due = await worker.next_due_in()
            timeout = poll if due is None else min(max(due, 0.01), poll * 5)
            await wait_for_work(wake, stop, timeout)
