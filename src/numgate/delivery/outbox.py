"""The callback outbox: where every callback enters delivery, and the URLs they go to.

``Outbox.enqueue(tx, callbacks)`` is the one entry point: it stores the callbacks in the caller's
transaction (a check worker finishing a chunk) and, when a delivery worker runs in the same
process and has room, stores them already leased to it; ``Outbox.committed(enqueued)`` then
hands them over in memory once that transaction has committed. If the process stops before they
are sent, their lease runs out and any delivery worker claims them from the table.

Callback URLs are stored once each (``callback_targets``); a batch and its callbacks refer to
their target by id, and each process keeps the id ↔ URL mapping in memory (it never changes).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, select

from numgate import ids
from numgate.clock import Clock
from numgate.db.direct import BulkInsert, Database, Statement
from numgate.db.tables import callback_targets, deliveries
from numgate.delivery.urls import receiver_of
from numgate.errors import Conflict

PENDING, IN_FLIGHT, DELIVERED, FAILED = 0, 1, 2, 3
STATUS_NAMES = {PENDING: "pending", IN_FLIGHT: "in-flight", DELIVERED: "delivered", FAILED: "failed"}

#: chunks of fresh callbacks that may wait in a hand-over (see Handoff)
HANDOFF_CHUNKS = 4

ct = callback_targets.c
_TARGET_BY_HASH = Statement(select(ct.id).where(ct.url_hash == bindparam("h")))
_TARGET_BY_ID = Statement(select(ct.url, ct.receiver).where(ct.id == bindparam("id")))
_INSERT_TARGET = Statement(
    callback_targets.insert().values({c: bindparam(c) for c in ("url_hash", "url", "receiver", "created_ms")})
)
_INSERT = BulkInsert(
    deliveries,
    (
        "uid",
        "check_id",
        "account_id",
        "app_id",
        "target_id",
        "body",
        "status",
        "attempts",
        "next_ms",
        "deadline_ms",
        "lease_until_ms",
        "lease_token",
        "created_ms",
        "updated_ms",
    ),
)


class CallbackTargets:
    """Callback URL ↔ target id, stored once per URL and cached per process."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._ids: dict[str, int] = {}
        self._urls: dict[int, tuple[str, str]] = {}

    async def id_for(self, url: str) -> int:
        """The id of a (checked) URL, stored the first time it is seen."""
        tid = self._ids.get(url)
        if tid is not None:
            return tid
        h = hashlib.sha256(url.encode()).hexdigest()
        async with self._db.read() as tx:
            tid = await tx.scalar(_TARGET_BY_HASH, h=h)
        if tid is None:
            try:
                async with self._db.write() as tx:
                    await tx.run(
                        _INSERT_TARGET,
                        url_hash=h,
                        url=url,
                        receiver=receiver_of(url),
                        created_ms=self._clock.time_ms(),
                    )
            except Conflict:  # stored at the same moment by another request: use that one
                pass
            async with self._db.read() as tx:
                tid = await tx.scalar(_TARGET_BY_HASH, h=h)
        assert tid is not None
        self._remember(url, int(tid))
        return int(tid)

    async def url_of(self, target_id: int) -> str:
        return (await self._target(target_id))[0]

    async def receiver_of(self, target_id: int) -> str:
        return (await self._target(target_id))[1]

    async def _target(self, target_id: int) -> tuple[str, str]:
        hit = self._urls.get(target_id)
        if hit is None:
            async with self._db.read() as tx:
                row = await tx.one(_TARGET_BY_ID, id=target_id)
            assert row is not None, f"callback target {target_id} is gone"
            hit = (row["url"], row["receiver"])
            self._urls[target_id] = hit
        return hit

    def _remember(self, url: str, target_id: int) -> None:
        if len(self._ids) > 100_000:
            self._ids.clear()
        self._ids[url] = target_id


@dataclass(frozen=True)
class NewCallback:
    check_id: int | None
    account_id: int
    app_id: int
    target_id: int
    body: bytes


@dataclass(frozen=True)
class Leased:
    """Callbacks leased under one token: a claim, or a hand-over."""

    token: int
    #: (uid, target_id, body, attempts, app_id, deadline_ms) each, as CLAIM_DUE returns them
    rows: list[Any]


class Handoff:
    """The queue from this process's check worker to its delivery worker. Bounded, so that a
    hand-over never waits long."""

    def __init__(self, chunks: int = HANDOFF_CHUNKS) -> None:
        self._queue: asyncio.Queue[Leased] = asyncio.Queue(chunks)

    def has_room(self) -> bool:
        return not self._queue.full()

    def put(self, leased: Leased) -> None:
        """Raises ``asyncio.QueueFull`` when full (the caller checked ``has_room`` before)."""
        self._queue.put_nowait(leased)

    def take(self) -> Leased | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None


@dataclass
class Enqueued:
    """What ``enqueue`` stored; ``Outbox.committed`` acts on it after the commit."""

    handed_over: Leased | None = None
    count: int = 0


@dataclass
class Outbox:
    db: Database
    clock: Clock
    #: seconds a leased callback may go without its worker renewing the lease
    lease_s: float
    #: seconds after the first attempt during which a failed callback is retried
    retry_window_s: float
    targets: CallbackTargets
    #: set while a delivery worker runs in this process (see ``attach``)
    handoff: Handoff | None = None
    #: leases this process's delivery worker holds and keeps renewing
    held: set[int] = field(default_factory=set)
    #: set when callbacks are queued, so the in-process delivery worker starts at once
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    async def enqueue(self, tx: Any, callbacks: Sequence[NewCallback]) -> Enqueued:
        """Store ``callbacks`` in ``tx``; call :meth:`committed` with the result after it commits."""
        if not callbacks:
            return Enqueued()
        now = self.clock.time_ms()
        deadline = now + int(self.retry_window_s * 1000)
        handoff = self.handoff
        token: int | None = None
        until: int | None = None
        status = PENDING
        if handoff is not None and handoff.has_room():
            from numgate.jobs.claims import new_lease_token

            token, until, status = new_lease_token(), now + int(self.lease_s * 1000), IN_FLIGHT
            self.held.add(token)
        uids = ids.new_message_ids(len(callbacks))
        rows = [
            {
                "uid": uid,
                "check_id": c.check_id,
                "account_id": c.account_id,
                "app_id": c.app_id,
                "target_id": c.target_id,
                "body": c.body.decode(),
                "status": status,
                "attempts": 0,
                "next_ms": now,
                "deadline_ms": deadline,
                "lease_until_ms": until,
                "lease_token": token,
                "created_ms": now,
                "updated_ms": now,
            }
            for uid, c in zip(uids, callbacks, strict=True)
        ]
        try:
            await tx.bulk_insert(_INSERT, rows)
        except BaseException:
            if token is not None:
                self.held.discard(token)
            raise
        leased = None
        if token is not None:
            leased = Leased(
                token, [(r["uid"], r["target_id"], r["body"], 0, r["app_id"], deadline) for r in rows]
            )
        return Enqueued(leased, len(rows))

    def committed(self, enqueued: Enqueued) -> None:
        if not enqueued.count:
            return
        leased = enqueued.handed_over
        if leased is not None:
            try:
                if self.handoff is None:
                    raise asyncio.QueueFull
                self.handoff.put(leased)
            except asyncio.QueueFull:  # the worker stopped meanwhile: let the lease run out
                self.held.discard(leased.token)
        self.wakeup.set()

    def rolled_back(self, enqueued: Enqueued) -> None:
        if enqueued.handed_over is not None:
            self.held.discard(enqueued.handed_over.token)
