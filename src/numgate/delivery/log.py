"""The delivery log: every callback with its attempts, status, latency and last error, and
sending failed ones again (``numgate deliveries``, the console).

A callback's status as shown is derived from its row: ``in-flight`` only while a worker's lease
on it runs; one whose worker died (lease run out, not yet swept) shows as ``pending``, which is
what it is — any worker will take it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select, update

from numgate.clock import Clock
from numgate.db.direct import Database
from numgate.db.tables import (
    batches,
    callback_receivers,
    callback_targets,
    checks,
    count_in_states,
    deliveries,
    in_state,
)
from numgate.delivery.outbox import DELIVERED, FAILED, IN_FLIGHT, PENDING, STATUS_NAMES, Outbox
from numgate.errors import InvalidParameter, NotFound

#: names accepted for a status filter (what the list shows, and common spellings)
STATUS_BY_NAME = {
    "pending": PENDING,
    "in-flight": IN_FLIGHT,
    "in flight": IN_FLIGHT,
    "in_flight": IN_FLIGHT,
    "inflight": IN_FLIGHT,
    "delivered": DELIVERED,
    "failed": FAILED,
}

d = deliveries.c


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    status: str
    attempts: int
    last_status: int | None
    last_latency_ms: int | None
    last_error: str | None
    url: str
    account_id: int
    message_id: str | None
    created_ms: int
    updated_ms: int
    next_attempt_ms: int | None
    body: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        if self.body is None:
            del out["body"]
        return out


def status_code(name: str) -> int:
    try:
        return STATUS_BY_NAME[name.strip().lower()]
    except KeyError:
        raise InvalidParameter(
            "status", f"status must be one of {', '.join(STATUS_NAMES.values())}; got {name!r}"
        ) from None


@dataclass(frozen=True)
class ReceiverReport:
    receiver: str
    #: callbacks waiting in the table (due or scheduled for a retry)
    queued: int
    #: callbacks leased to a worker (in its queue or being sent)
    in_flight: int
    failed: int
    #: what the delivery worker last reported of its pace (None: never sent to)
    pace: dict[str, Any] | None
    pace_ms: int | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class DeliveryLog:
    def __init__(self, db: Database, clock: Clock, outbox: Outbox) -> None:
        self._db = db
        self._clock = clock
        self._outbox = outbox

    def _row(self, r: Any, now: int, body: bool = False) -> Delivery:
        status = r["status"]
        if status == IN_FLIGHT and (r["lease_until_ms"] or 0) < now:
            status = PENDING  # its worker stopped: any worker takes it
        return Delivery(
            delivery_id=r["uid"],
            status=STATUS_NAMES[status],
            attempts=r["attempts"],
            last_status=r["last_status"],
            last_latency_ms=r["last_latency_ms"],
            last_error=r["last_error"],
            url=r["url"],
            account_id=r["account_id"],
            message_id=r["message_id"],
            created_ms=r["created_ms"],
            updated_ms=r["updated_ms"],
            next_attempt_ms=r["next_ms"] if status == PENDING else None,
            body=r["body"] if body else None,
        )

    def _select(self) -> Any:
        return select(deliveries, callback_targets.c.url, checks.c.message_id).select_from(
            deliveries.join(callback_targets, callback_targets.c.id == d.target_id).outerjoin(
                checks, checks.c.id == d.check_id
            )
        )

    async def recent(
        self,
        *,
        account_id: int | None = None,
        status: str | None = None,
        batch: str | None = None,
        limit: int = 50,
    ) -> list[Delivery]:
        """Newest first; failed ones first when no status is asked for."""
        now = self._clock.time_ms()
        q = self._select()
        if account_id is not None:
            q = q.where(d.account_id == account_id)
        if status is not None:
            code = status_code(status)
            live = and_(in_state(d.status, IN_FLIGHT), d.lease_until_ms >= now)
            dead = and_(in_state(d.status, IN_FLIGHT), d.lease_until_ms < now)
            if code == PENDING:
                q = q.where(or_(in_state(d.status, PENDING), dead))
            elif code == IN_FLIGHT:
                q = q.where(live)
            else:
                q = q.where(in_state(d.status, code))
            q = q.order_by(d.id.desc())
        else:
            q = q.order_by((d.status == FAILED).desc(), d.id.desc())
        if batch is not None:
            batch_id = select(batches.c.id).where(batches.c.message_id == batch).scalar_subquery()
            q = q.where(checks.c.batch_id == batch_id)
        async with self._db.read() as tx:
            rows = await tx.all(q.limit(limit))
        return [self._row(r, now) for r in rows]

    async def get(self, uid: str, account_id: int | None = None) -> Delivery:
        async with self._db.read() as tx:
            r = await tx.one(self._select().where(d.uid == uid))
        if r is None or (account_id is not None and r["account_id"] != account_id):
            raise NotFound(f"no delivery {uid!r}")
        return self._row(r, self._clock.time_ms(), body=True)

    async def receivers(self) -> list[ReceiverReport]:
        """Every receiver: its queue, in flight and failed callbacks, and its last reported pace
        (connection limit, pause, success rate, latency)."""
        counts = count_in_states(deliveries, [PENDING, IN_FLIGHT, FAILED], d.receiver_id)
        async with self._db.read() as tx:
            rows = await tx.all(select(callback_receivers).order_by(callback_receivers.c.receiver))
            by: dict[tuple[int, int], int] = {(int(r[0]), int(r[1])): int(r[2]) for r in await tx.all(counts)}
        return [
            ReceiverReport(
                r["receiver"],
                by.get((r["id"], PENDING), 0),
                by.get((r["id"], IN_FLIGHT), 0),
                by.get((r["id"], FAILED), 0),
                json.loads(r["pace"]) if r["pace"] else None,
                r["pace_ms"],
            )
            for r in rows
        ]

    async def retry(
        self, uids: list[str] | None = None, *, batch: str | None = None, account_id: int | None = None
    ) -> int:
        """Send failed callbacks again now — these, or every failed one of a batch — with a new
        retry window; attempts already made stay counted. The number queued again."""
        now = self._clock.time_ms()
        conds = [in_state(d.status, FAILED)]
        if account_id is not None:
            conds.append(d.account_id == account_id)
        if uids:
            conds.append(d.uid.in_(uids))
        elif batch is not None:
            batch_id = select(batches.c.id).where(batches.c.message_id == batch).scalar_subquery()
            conds.append(d.check_id.in_(select(checks.c.id).where(checks.c.batch_id == batch_id)))
        else:
            raise InvalidParameter("delivery", "name the deliveries to send again, or a batch")
        async with self._db.write() as tx:
            if uids:
                found = {r[0] for r in await tx.all(select(d.uid).where(*conds[1:]))}
                missing = [u for u in uids if u not in found]
                if missing:
                    raise NotFound(f"no delivery {missing[0]!r}")
            n = await tx.run(
                update(deliveries)
                .where(*conds)
                .values(
                    status=PENDING,
                    next_ms=now,
                    deadline_ms=now + int(self._outbox.retry_window_s * 1000),
                    updated_ms=now,
                )
            )
        if n:
            self._outbox.wakeup.set()
        return n
