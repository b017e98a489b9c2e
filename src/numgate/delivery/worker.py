"""The delivery worker: hands callbacks to the scheduler where the POSTs are made, records what
happened to each, and schedules the retries. A crash loses nothing: a callback whose attempt was
not recorded stays leased only while its worker lives (the lease is renewed), then any worker
claims it again and sends it with the same delivery id (receivers de-duplicate on it).

Callbacks come two ways. Fresh ones are handed over in memory by this process's check worker
(``Outbox.enqueue``), stored already leased to this worker, when their receiver has room here.
The rest wait in the table, and the worker claims them **per receiver**: it finds the receivers
that have callbacks due (a loose index scan, cheap however many callbacks wait), and claims for
each only what that receiver has room for — nothing for a receiver that is paused or whose queue
here is full. A receiver that hangs therefore holds only its own callbacks; the others are
claimed and sent as if it were not there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from typing import Any, NamedTuple

from sqlalchemy import bindparam, func, select, text, update

from numgate.core import Core
from numgate.db.direct import BulkUpdate, Statement
from numgate.db.tables import callback_receivers, deliveries, in_state
from numgate.delivery.outbound import Done, Outbound, open_outbound
from numgate.delivery.outbox import DELIVERED, FAILED, IN_FLIGHT, PENDING, Leased
from numgate.delivery.retry import next_attempt_ms
from numgate.delivery.sender import Outgoing
from numgate.errors import Unavailable
from numgate.jobs.claims import LeaseKeeper, Leases, new_lease_token
from numgate.jobs.runner import register, run_together, wait_for_work
from numgate.metrics import metrics

log = logging.getLogger("numgate.delivery")

__all__ = ["DELIVERED", "FAILED", "IN_FLIGHT", "PENDING", "DeliveryWorker", "drain"]

#: callbacks claimed for one receiver at a time, at most
CLAIM = 500
#: a receiver's callbacks waiting here (handed over or claimed, not answered): this many times
#: its largest possible number of connections (NUMGATE_CALLBACK_CONCURRENCY) times its batch size,
QUEUE_FACTOR = 4
#: … and at least this many: enough to keep its connections busy while the check worker checks
#: the next numbers of an account held back for it (``Outbox.check_share``); with 256 (4 × 64) the
#: queue ran dry between chunks
QUEUE_MIN = 1024
#: how often the receivers' pace is written for ``numgate deliveries receivers``
PACE_EVERY_S = 2.0

d = deliveries.c
LEASES = Leases(deliveries)
_ROW = [d.uid, d.target_id, d.receiver_id, d.body, d.attempts, d.app_id, d.deadline_ms]
CLAIM_FOR = LEASES.claim_statement(
    where=[in_state(d.status, PENDING), d.receiver_id == bindparam("rid"), d.next_ms <= bindparam("now")],
    order_by=d.next_ms,
    returning=_ROW,
)
#: receivers with a callback due: a loose index scan over the pending (receiver_id, next_ms),
#: and for each receiver its earliest pending callback (one index probe; an EXISTS here was
#: planned as a hash join over every pending callback due, ~4 ms a call with thousands due)
DUE_RECEIVERS = Statement(
    text(
        f"""
        WITH RECURSIVE r(rid) AS (
          SELECT MIN(receiver_id) FROM deliveries WHERE status = {PENDING}
          UNION ALL
          SELECT (SELECT MIN(receiver_id) FROM deliveries WHERE status = {PENDING} AND receiver_id > r.rid)
          FROM r WHERE r.rid IS NOT NULL
        )
        SELECT rid FROM r
        WHERE rid IS NOT NULL AND (
          SELECT MIN(next_ms) FROM deliveries WHERE status = {PENDING} AND receiver_id = r.rid
        ) <= :now
        """
    )
)
RECORD_ATTEMPT = BulkUpdate(
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
    ),
    {
        "b_uid": d.uid.type,
        "b_token": d.lease_token.type,
        "b_status": d.status.type,
        "b_next": d.next_ms.type,
        "b_last_status": d.last_status.type,
        "b_error": d.last_error.type,
        "b_latency": d.last_latency_ms.type,
        "b_done": d.updated_ms.type,
    },
)
NEXT_DUE = Statement(select(func.min(d.next_ms)).where(in_state(d.status, PENDING)))
SAVE_PACE = Statement(
    update(callback_receivers)
    .where(callback_receivers.c.id == bindparam("b_rid"))
    .values(pace=bindparam("b_pace"), pace_ms=bindparam("b_now"))
)


class _Sent(NamedTuple):  # one per attempt: a named tuple is made faster than a dataclass
    token: int
    receiver_id: int
    attempts: int
    deadline_ms: int


class DeliveryWorker:
    """Also the outbox's hand-over (``Handoff``): ``room`` and ``take``."""

    def __init__(self, core: Core, outbound: Outbound) -> None:
        self.core = core
        self.outbound = outbound
        #: the leases this worker holds (renewed by a LeaseKeeper while it runs)
        self.held = core.outbox.held
        self.keeper = LeaseKeeper(
            core.db, LEASES, core.settings.worker_lease_s, core.clock.time_ms, self.held
        )
        self._sent: dict[str, _Sent] = {}
        self._metrics = metrics()
        self._outstanding: Counter[int] = Counter()
        self._token_left: Counter[int] = Counter()
        #: receiver id → its name, and the largest batch size its apps asked for
        self._names: dict[int, str] = {}
        self._batch: dict[int, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_sweep = 0.0
        #: set when a claim round left callbacks due in the table for lack of room here (see
        #: ``starved``), and while a claim round runs (room it did not see may free meanwhile)
        self._starved = False
        self._claiming = False

    # room --------------------------------------------------------------------------------------

    def _state(self, receiver_id: int) -> dict[str, Any] | None:
        """The receiver's pace as its sender shows it (None: not seen yet)."""
        name = self._names.get(receiver_id)
        return self.outbound.receiver(name) if name is not None else None

    def room(self, receiver_id: int, state: dict[str, Any] | None = None) -> int:
        state = state if state is not None else self._state(receiver_id)
        if state is not None and state.get("paused_for_s"):
            return 0
        cap = max(
            QUEUE_FACTOR * self.core.settings.callback_concurrency * self._batch.get(receiver_id, 1),
            QUEUE_MIN,
        )
        return max(cap - self._outstanding[receiver_id], 0)

    def room_while_keeping_up(self, receiver_id: int) -> int | None:
        state = self._state(receiver_id)
        if state is None or state.get("paused_for_s") or state.get("success_rate") != 1.0:
            return None
        return self.room(receiver_id, state)

    @property
    def starved(self) -> bool:
        """The last claim round left callbacks due in the table for lack of room here: the next
        attempt recorded (room again) wakes the claimer, which meanwhile does not poll for them.
        Otherwise a recorded attempt wakes it only when it schedules a retry (handed-over
        callbacks leave nothing to claim)."""
        return self._starved

    @property
    def outstanding(self) -> int:
        """Callbacks taken and not recorded yet (counted when taken, before they are sent)."""
        return sum(self._token_left.values())

    # in ----------------------------------------------------------------------------------------

    def take(self, leased: Leased) -> None:
        """Callbacks leased to this worker: counted now, sent as soon as their app's secret is known."""
        for row in leased.rows:
            self._outstanding[row[2]] += 1
        self._token_left[leased.token] += len(leased.rows)
        task = asyncio.get_running_loop().create_task(self._send(leased))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, leased: Leased) -> None:
        core = self.core
        rows = leased.rows  # uid, target_id, receiver_id, body, attempts, app_id, deadline_ms
        items: list[Outgoing] = []
        # a chunk's callbacks share a few targets and apps: each looked up once
        targets = await core.outbox.targets.get_many(r[1] for r in rows)
        apps = {aid: await core.tenancy.callback_settings(aid) for aid in {r[5] for r in rows}}
        for target in targets.values():
            self._names[target.receiver_id] = target.receiver
        for r in rows:
            target, app = targets[r[1]], apps[r[5]]
            if app.batch > self._batch.get(target.receiver_id, 1):
                self._batch[target.receiver_id] = app.batch
            self._sent[r[0]] = _Sent(leased.token, target.receiver_id, r[4], r[6])
            items.append(
                Outgoing(r[0], target.receiver, target.url, r[3].encode(), app.secret, r[4] + 1, app.batch)
            )
        self.outbound.send(items)

    async def claim_round(self) -> int:
        """Claim, for each receiver with callbacks due, what it has room for; the number claimed."""
        core = self.core
        now = core.clock.time_ms()
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + 5.0
            async with core.db.autocommit() as tx:
                await LEASES.release_expired(tx, now)
        self._starved, self._claiming = False, True
        try:
            return await self._claim_due(now)
        finally:
            self._claiming = False

    async def _claim_due(self, now: int) -> int:
        core = self.core
        async with core.db.read() as tx:
            due = [int(r[0]) for r in await tx.all(DUE_RECEIVERS, now=now)]
        claimed = 0
        for rid in due:
            room = min(self.room(rid), CLAIM)
            if room <= 0:
                self._starved = True
                continue
            token = new_lease_token()
            self.held.add(token)
            try:
                async with core.db.autocommit() as tx:
                    rows = await tx.all(
                        CLAIM_FOR, rid=rid, now=now, limit=room, until=self.keeper.until(), token=token
                    )
            except BaseException:
                self.held.discard(token)
                raise
            if not rows:
                self.held.discard(token)
                continue
            if len(rows) >= room:  # perhaps more due than room: claimed again when there is room
                self._starved = True
            self.take(Leased(token, rows))
            claimed += len(rows)
        return claimed

    # out ---------------------------------------------------------------------------------------

    async def record(self, done: Done) -> None:
        """Record each attempt and schedule what is retried."""
        core = self.core
        now = core.clock.time_ms()
        interval = int(core.settings.callback_retry_interval_s * 1000)
        updates: list[dict[str, Any]] = []
        finished: list[_Sent] = []
        retried = False
        m = self._metrics
        kinds: dict[str, int] = {}
        for uid, o in done:
            sent = self._sent.pop(uid, None)
            if sent is None:  # given back already (a lost sender process, then its late answer)
                continue
            finished.append(sent)
            kind = o.kind
            kinds[kind] = kinds.get(kind, 0) + 1
            if o.lead and o.status is not None:
                m.callback_answered(o.latency_ms / 1000)
            if o.ok:
                status, nxt = DELIVERED, now
            else:
                retry_at = None if o.permanent else next_attempt_ms(now, sent.deadline_ms, interval)
                status, nxt = (PENDING, retry_at) if retry_at is not None else (FAILED, now)
                retried = retried or status == PENDING
                if status == FAILED:
                    m.callbacks_failed.inc()
                    log.warning(
                        "callback %s failed for good after %d attempt(s): %s", uid, sent.attempts + 1, o.error
                    )
            updates.append(
                {
                    "b_uid": uid,
                    "b_token": sent.token,
                    "b_done": now,
                    "b_status": status,
                    "b_next": nxt,
                    "b_last_status": o.status,
                    "b_error": o.error,
                    "b_latency": o.latency_ms,
                }
            )
        m.callbacks_attempted(kinds)
        if updates:
            async with core.db.autocommit() as tx:
                await tx.bulk_update(RECORD_ATTEMPT, updates)
        for sent in finished:
            self._outstanding[sent.receiver_id] -= 1
            self._token_left[sent.token] -= 1
            if self._token_left[sent.token] <= 0:
                del self._token_left[sent.token]
                self.held.discard(sent.token)
        if retried or (finished and (self._starved or self._claiming)):
            core.outbox.wakeup.set()  # a retry to schedule, or room again for what waits

    async def save_pace(self) -> None:
        """Write each receiver's pace for ``numgate deliveries receivers``."""
        state = self.outbound.receivers()
        ids = {name: rid for rid, name in self._names.items()}
        now = self.core.clock.time_ms()
        rows = [
            {"b_rid": ids[name], "b_pace": json.dumps(s), "b_now": now}
            for name, s in state.items()
            if name in ids
        ]
        if rows:
            async with self.core.db.autocommit() as tx:
                await tx.many(SAVE_PACE, rows)

    async def next_due_in(self) -> float | None:
        async with self.core.db.read() as tx:
            nxt = await tx.scalar(NEXT_DUE)
        if nxt is None:
            return None
        return max((int(nxt) - self.core.clock.time_ms()) / 1000, 0.0)

    async def give_back(self) -> None:
        """Stopping: every callback leased here and not recorded is pending again at once (the
        next start sends it, with the same delivery id)."""
        for t in list(self._tasks):
            t.cancel()
        tokens = set(self._token_left) | set(self.held)
        self.held.difference_update(tokens)
        with contextlib.suppress(Exception):
            async with self.core.db.autocommit() as tx:
                for token in tokens:
                    await LEASES.release_token(tx, token)
        self._sent.clear()
        self._token_left.clear()
        self._outstanding.clear()


def make_outbound(core: Core, processes: int | None = None) -> Outbound:
    s = core.settings
    return open_outbound(
        s.resolved_callback_processes if processes is None else processes,
        allow=s.callback_allow,
        timeout_s=s.callback_timeout_s,
        concurrency=s.callback_concurrency,
        response_max=s.callback_response_max,
        pause_max_s=s.callback_retry_interval_s,
    )


async def drain(core: Core) -> int:
    """Attempt every callback that is due now, once (``numgate worker --drain`` and tests)."""
    total = 0
    async with make_outbound(core, 0) as outbound:
        worker = DeliveryWorker(core, outbound)
        try:
            while n := await worker.claim_round():
                total += n
                while worker.outstanding:
                    await worker.record(await outbound.outcomes(0.2))
        finally:
            await worker.give_back()
    return total


@register("deliveries")
async def run_delivery_worker(core: Core, stop: asyncio.Event) -> None:
    wake: asyncio.Event = core.outbox.wakeup
    poll = core.settings.worker_poll_s
    async with make_outbound(core) as outbound:
        worker = DeliveryWorker(core, outbound)

        async def recorder() -> None:
            while not stop.is_set():
                done = await outbound.outcomes(poll)
                if done:
                    await worker.record(done)

        async def claimer() -> None:
            while not stop.is_set():
                wake.clear()
                if await worker.claim_round():
                    continue
                if worker.starved:  # what is due waits for room: a record wakes this loop then
                    timeout = poll
                else:
                    due = await worker.next_due_in()
                    timeout = poll if due is None else min(max(due, 0.01), poll * 5)
                await wait_for_work(wake, stop, timeout)

        async def pacer() -> None:
            while not stop.is_set():
                await wait_for_work(asyncio.Event(), stop, PACE_EVERY_S)
                with contextlib.suppress(Unavailable):
                    await worker.save_pace()

        core.outbox.handoff = worker
        try:
            await run_together([recorder(), claimer(), pacer(), worker.keeper.run(stop)])
        finally:
            core.outbox.handoff = None
            await worker.give_back()
