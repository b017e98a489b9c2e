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
from numgate.db.engine import writing
from numgate.db.tables import deliveries
from numgate.delivery.retry import next_attempt_ms
from numgate.delivery.sender import CallbackSender, Outgoing
from numgate.jobs import claims
from numgate.jobs.runner import register, wait_for_work

log = logging.getLogger("numgate.delivery")

PENDING, IN_FLIGHT, DELIVERED, FAILED = 0, 1, 2, 3
STATUS_NAMES = {PENDING: "pending", IN_FLIGHT: "in flight", DELIVERED: "delivered", FAILED: "failed"}
CLAIM = 500


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
            async with writing(core.engine) as conn:
                await claims.release_expired(conn, deliveries, now)
        token = claims.new_lease_token()
        lease = int(max(core.settings.callback_timeout_s * 3, 30.0) * 1000)
        async with writing(core.engine) as conn:
            rows = await claims.claim(
                conn,
                deliveries,
                where=[deliveries.c.status == PENDING, deliveries.c.next_ms <= now],
                order_by=deliveries.c.next_ms,
                limit=CLAIM,
                lease_until_ms=now + lease,
                token=token,
                returning=[
                    deliveries.c.id,
                    deliveries.c.uid,
                    deliveries.c.url,
                    deliveries.c.body,
                    deliveries.c.attempts,
                    deliveries.c.app_id,
                    deliveries.c.deadline_ms,
                ],
            )
        if not rows:
            return 0
        secrets = {app_id: await core.tenancy.app_secret(app_id) for app_id in {r.app_id for r in rows}}
        outcomes = await asyncio.gather(
            *(
                self.sender.send(Outgoing(r.uid, r.url, r.body.encode(), secrets[r.app_id], r.attempts + 1))
                for r in rows
            )
        )
        done = core.clock.time_ms()
        interval = int(core.settings.callback_retry_interval_s * 1000)
        updates: list[dict[str, Any]] = []
        for r, o in zip(rows, outcomes, strict=True):
            if o.ok:
                status, nxt = DELIVERED, r.attempts
            else:
                retry_at = None if o.permanent else next_attempt_ms(done, r.deadline_ms, interval)
                status, nxt = (PENDING, retry_at) if retry_at is not None else (FAILED, r.attempts)
                if status == FAILED:
                    log.warning(
                        "callback %s failed for good after %d attempt(s): %s", r.uid, r.attempts + 1, o.error
                    )
            updates.append(
                {
                    "b_id": r.id,
                    "b_status": status,
                    "b_next": nxt if status == PENDING else done,
                    "b_last_status": o.status,
                    "b_error": o.error,
                    "b_latency": o.latency_ms,
                }
            )
        async with writing(core.engine) as conn:
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.id == bindparam("b_id"), deliveries.c.lease_token == token)
                .values(
                    status=bindparam("b_status"),
                    attempts=deliveries.c.attempts + 1,
                    next_ms=bindparam("b_next"),
                    last_status=bindparam("b_last_status"),
                    last_error=bindparam("b_error"),
                    last_latency_ms=bindparam("b_latency"),
                    lease_until_ms=None,
                    lease_token=None,
                    updated_ms=done,
                ),
                updates,
            )
        return len(rows)

    async def next_due_in(self) -> float | None:
        async with self.core.engine.connect() as conn:
            nxt = (
                await conn.execute(
                    select(func.min(deliveries.c.next_ms)).where(deliveries.c.status == PENDING)
                )
            ).scalar_one_or_none()
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
