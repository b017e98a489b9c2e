"""The callback outbox: where every callback enters delivery, and the URLs they go to.

``Outbox.enqueue(tx, callbacks)`` is the one entry point: it stores the callbacks in the caller's
transaction (a check worker finishing a chunk) and, when a delivery worker runs in the same
process and has room for their receiver, stores them already leased to it;
``Outbox.committed(enqueued)`` then hands them over in memory once that transaction has
committed. If the process stops before they are sent, their lease runs out and any delivery
worker claims them from the table.

Callbacks a receiver had no room for wait in the table, and are claimed back from it when it has;
while that receiver keeps up, its account's checking waits for its room (``holdback.py``).

Callback URLs are stored once each (``callback_targets``), with their receiver (scheme, host and
port: ``callback_receivers``); a batch and its callbacks refer to their target by id, and each
process keeps the id ↔ URL mapping in memory (it never changes).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert as upsert  # ON CONFLICT: SQLite renders it too

from numgate import ids
from numgate.clock import Clock
from numgate.db.direct import BulkInsert, Database, Statement
from numgate.db.tables import callback_receivers, callback_targets, deliveries
from numgate.delivery.holdback import HoldBack
from numgate.delivery.urls import receiver_of
from numgate.jobs.claims import new_lease_token

PENDING, IN_FLIGHT, DELIVERED, FAILED = 0, 1, 2, 3
STATUS_NAMES = {PENDING: "pending", IN_FLIGHT: "in-flight", DELIVERED: "delivered", FAILED: "failed"}


ct, cr = callback_targets.c, callback_receivers.c
_TARGET_BY_HASH = Statement(select(ct.id, ct.receiver_id).where(ct.url_hash == bindparam("h")))
_TARGET_BY_ID = Statement(
    select(ct.url, ct.receiver_id, cr.receiver)
    .select_from(callback_targets.join(callback_receivers, cr.id == ct.receiver_id))
    .where(ct.id == bindparam("id"))
)
_RECEIVER_BY_KEY = Statement(select(cr.id).where(cr.receiver == bindparam("key")))
# stored once however many requests see a new URL at the same moment: an insert that finds the
# row there does nothing, and the read after it, in the same transaction, finds it either way
# (PostgreSQL waits for the other inserter's outcome; SQLite's writes share one transaction)
_INSERT_RECEIVER = Statement(
    upsert(callback_receivers)
    .values({c: bindparam(c) for c in ("receiver", "created_ms")})
    .on_conflict_do_nothing(index_elements=["receiver"])
)
_INSERT_TARGET = Statement(
    upsert(callback_targets)
    .values({c: bindparam(c) for c in ("url_hash", "url", "receiver_id", "created_ms")})
    .on_conflict_do_nothing(index_elements=["url_hash"])
)
_INSERT = BulkInsert(
    deliveries,
    (
        "uid",
        "check_id",
        "account_id",
        "app_id",
        "target_id",
        "receiver_id",
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


@dataclass(frozen=True)
class Target:
    url: str
    receiver_id: int
    #: scheme://host:port
    receiver: str


class CallbackTargets:
    """Callback URL ↔ target, and its receiver, stored once each and cached per process (a
    target never changes)."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._ids: dict[str, int] = {}
        self._targets: dict[int, Target] = {}

    async def id_for(self, url: str) -> int:
        """The id of a (checked) URL, stored the first time it is seen."""
        tid = self._ids.get(url)
        if tid is not None:
            return tid
        h = hashlib.sha256(url.encode()).hexdigest()
        async with self._db.read() as tx:
            row = await tx.one(_TARGET_BY_HASH, h=h)
        if row is None:
            receiver_id = await self._receiver_id(receiver_of(url))
            async with self._db.write() as tx:
                await tx.run(
                    _INSERT_TARGET, url_hash=h, url=url, receiver_id=receiver_id, created_ms=self._now()
                )
                row = await tx.one(_TARGET_BY_HASH, h=h)
        assert row is not None
        tid = int(row[0])
        if len(self._ids) > 100_000:
            self._ids.clear()
        self._ids[url] = tid
        return tid

    async def _receiver_id(self, key: str) -> int:
        async with self._db.read() as tx:
            rid = await tx.scalar(_RECEIVER_BY_KEY, key=key)
        if rid is None:
            async with self._db.write() as tx:
                await tx.run(_INSERT_RECEIVER, receiver=key, created_ms=self._now())
                rid = await tx.scalar(_RECEIVER_BY_KEY, key=key)
        return int(rid)

    async def get(self, target_id: int) -> Target:
        hit = self._targets.get(target_id)
        if hit is None:
            async with self._db.read() as tx:
                row = await tx.one(_TARGET_BY_ID, id=target_id)
            assert row is not None, f"callback target {target_id} is gone"
            hit = self._targets[target_id] = Target(row["url"], int(row["receiver_id"]), row["receiver"])
        return hit

    async def get_many(self, target_ids: Iterable[int]) -> dict[int, Target]:
        """:meth:`get` for each distinct id (a chunk's callbacks share a few targets)."""
        return {tid: await self.get(tid) for tid in set(target_ids)}

    def cached(self, target_id: int) -> Target | None:
        return self._targets.get(target_id)

    def _now(self) -> int:
        return self._clock.time_ms()


class NewCallback(NamedTuple):  # one per number: a named tuple is made faster than a dataclass
    check_id: int | None
    account_id: int
    app_id: int
    target_id: int
    body: bytes


@dataclass(frozen=True)
class Leased:
    """Callbacks leased under one token: a claim, or a hand-over."""

    token: int
    #: (uid, target_id, receiver_id, body, attempts, app_id, deadline_ms) each, as CLAIM_DUE
    #: returns them
    rows: list[Any]


class Handoff(Protocol):
    """This process's delivery worker, as the outbox sees it."""

    def room(self, receiver_id: int) -> int:
        """How many more callbacks for this receiver it takes now (0: store them for later)."""
        ...

    def room_while_keeping_up(self, receiver_id: int) -> int | None:
        """:meth:`room` while the receiver answers every callback and is not paused; None while
        it does not (or has not answered yet)."""
        ...

    def take(self, leased: Leased) -> None:
        """Callbacks stored leased to it, their transaction committed."""
        ...


@dataclass
class Enqueued:
    """What ``enqueue`` stored; ``Outbox.committed`` acts on it after the commit."""

    handed_over: Leased | None = None
    count: int = 0
    #: account id → the receivers that had no room for some of its callbacks
    waiting: dict[int, set[int]] = field(default_factory=dict)


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
    #: the accounts whose checking waits for a receiver's room
    hold_back: HoldBack = field(default_factory=HoldBack)

    async def enqueue(self, tx: Any, callbacks: Sequence[NewCallback]) -> Enqueued:
        """Store ``callbacks`` in ``tx``; call :meth:`committed` with the result after it commits.
        Those whose receiver this process's delivery worker has room for are stored leased to it
        and handed over after the commit; the rest wait in the table for any worker's claim."""
        if not callbacks:
            return Enqueued()
        now = self.clock.time_ms()
        deadline = now + int(self.retry_window_s * 1000)
        handoff = self.handoff
        targets = await self.targets.get_many(c.target_id for c in callbacks)
        room: dict[int, int] = {}
        waiting: dict[int, set[int]] = {}
        token: int | None = None
        until = now + int(self.lease_s * 1000)
        uids = ids.new_delivery_ids(len(callbacks), now)
        rows = []
        for uid, c in zip(uids, callbacks, strict=True):
            receiver_id = targets[c.target_id].receiver_id
            lease = False
            if handoff is not None:
                left = room.get(receiver_id)
                if left is None:
                    left = handoff.room(receiver_id)
                lease = left > 0
                room[receiver_id] = left - 1
                if not lease:
                    waiting.setdefault(c.account_id, set()).add(receiver_id)
            if lease and token is None:
                token = new_lease_token()
                self.held.add(token)
            rows.append(
                {
                    "uid": uid,
                    "check_id": c.check_id,
                    "account_id": c.account_id,
                    "app_id": c.app_id,
                    "target_id": c.target_id,
                    "receiver_id": receiver_id,
                    "body": c.body.decode(),
                    "status": IN_FLIGHT if lease else PENDING,
                    "attempts": 0,
                    "next_ms": now,
                    "deadline_ms": deadline,
                    "lease_until_ms": until if lease else None,
                    "lease_token": token if lease else None,
                    "created_ms": now,
                    "updated_ms": now,
                }
            )
        try:
            await tx.bulk_insert(_INSERT, rows)
        except BaseException:
            if token is not None:
                self.held.discard(token)
            raise
        leased = None
        if token is not None:
            leased = Leased(
                token,
                [
                    (r["uid"], r["target_id"], r["receiver_id"], r["body"], 0, r["app_id"], deadline)
                    for r in rows
                    if r["lease_token"] is not None
                ],
            )
        return Enqueued(leased, len(rows), waiting)

    def committed(self, enqueued: Enqueued) -> None:
        if not enqueued.count:
            return
        leased = enqueued.handed_over
        if leased is not None:
            if self.handoff is None:  # the worker stopped meanwhile: let the lease run out
                self.held.discard(leased.token)
            else:
                self.handoff.take(leased)
        self.hold_back.waited(enqueued.waiting)
        if enqueued.waiting:  # some wait in the table for room: the claimer looks for them
            self.wakeup.set()

    def check_share(self, account_id: int, share: int) -> int:
        """How many of ``account_id``'s pending numbers to check now, at most ``share``
        (``HoldBack.share``)."""
        handoff = self.handoff
        return self.hold_back.share(
            account_id, share, handoff.room_while_keeping_up if handoff is not None else None
        )

    def rolled_back(self, enqueued: Enqueued) -> None:
        if enqueued.handed_over is not None:
            self.held.discard(enqueued.handed_over.token)
