"""Batches as an operator or a tenant follows them: how far each has got, what its numbers came
to, what was charged, and how its callbacks stand (``numgate batches``, the console)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from numgate.db.direct import Database
from numgate.db.tables import apps, batches, callback_targets, checks, deliveries
from numgate.delivery.outbox import STATUS_NAMES
from numgate.errors import NotFound
from numgate.numbers.results import Level, Outcome

STATUS_DONE = 2


@dataclass(frozen=True)
class BatchProgress:
    message_id: str
    batch_no: str
    account_id: int
    appkey: str
    level: Level
    country: str | None
    currency: str
    unit_price: int
    callback_url: str | None
    total: int
    created_ms: int
    done: int = 0
    #: finished numbers by core outcome name (ok, invalid_format, …)
    outcomes: dict[str, int] = field(default_factory=dict)
    charged: int = 0
    #: callbacks by delivery status name
    callbacks: dict[str, int] = field(default_factory=dict)
    finished_ms: int | None = None

    @property
    def complete(self) -> bool:
        return self.done >= self.total

    def to_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "batch_no": self.batch_no,
            "account_id": self.account_id,
            "appkey": self.appkey,
            "level": int(self.level),
            "country": self.country,
            "currency": self.currency,
            "unit_price": self.unit_price,
            "callback_url": self.callback_url,
            "total": self.total,
            "done": self.done,
            "complete": self.complete,
            "outcomes": self.outcomes,
            "charged": self.charged,
            "callbacks": self.callbacks,
            "created_ms": self.created_ms,
            "finished_ms": self.finished_ms,
        }


_BATCH_COLUMNS = (
    batches.c.id,
    batches.c.message_id,
    batches.c.batch_no,
    batches.c.account_id,
    apps.c.appkey,
    batches.c.check_level,
    batches.c.country,
    batches.c.currency,
    batches.c.unit_price,
    callback_targets.c.url,
    batches.c.total,
    batches.c.created_ms,
)
_FROM = batches.join(apps, apps.c.id == batches.c.app_id).outerjoin(
    callback_targets, callback_targets.c.id == batches.c.target_id
)


class BatchReports:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def recent(
        self, account_id: int | None = None, *, limit: int = 50, unfinished: bool = False
    ) -> list[BatchProgress]:
        """The newest batches first (one account's when given); only unfinished ones if asked."""
        q = select(*_BATCH_COLUMNS).select_from(_FROM).order_by(batches.c.id.desc())
        if account_id is not None:
            q = q.where(batches.c.account_id == account_id)
        if unfinished:
            pending = select(checks.c.batch_id).where(checks.c.status != STATUS_DONE).distinct()
            q = q.where(batches.c.id.in_(pending))
        async with self._db.read() as tx:
            rows = await tx.all(q.limit(limit))
            return [await self._progress(tx, r) for r in rows]

    async def get(self, message_id: str, account_id: int | None = None) -> BatchProgress:
        """One batch by its messageId (a tenant's own only, when ``account_id`` is given)."""
        q = select(*_BATCH_COLUMNS).select_from(_FROM).where(batches.c.message_id == message_id)
        async with self._db.read() as tx:
            row = await tx.one(q)
            if row is None or (account_id is not None and row["account_id"] != account_id):
                raise NotFound(f"no batch with messageId {message_id!r}")
            return await self._progress(tx, row)

    async def _progress(self, tx: Any, r: Any) -> BatchProgress:
        by_outcome = await tx.all(
            select(
                checks.c.outcome,
                func.count(),
                func.coalesce(func.sum(checks.c.cost), 0),
                func.max(checks.c.done_ms),
            )
            .where(checks.c.batch_id == r["id"], checks.c.status == STATUS_DONE)
            .group_by(checks.c.outcome)
        )
        by_status = await tx.all(
            select(deliveries.c.status, func.count())
            .select_from(deliveries.join(checks, checks.c.id == deliveries.c.check_id))
            .where(checks.c.batch_id == r["id"])
            .group_by(deliveries.c.status)
        )
        outcomes = {Outcome(o[0]).name.lower(): int(o[1]) for o in by_outcome}
        done = sum(outcomes.values())
        last = max((int(o[3]) for o in by_outcome if o[3] is not None), default=None)
        return BatchProgress(
            message_id=r["message_id"],
            batch_no=r["batch_no"],
            account_id=r["account_id"],
            appkey=r["appkey"],
            level=Level(r["check_level"]),
            country=r["country"],
            currency=r["currency"],
            unit_price=r["unit_price"],
            callback_url=r["url"],
            total=r["total"],
            created_ms=r["created_ms"],
            done=done,
            outcomes=outcomes,
            charged=sum(int(o[2]) for o in by_outcome),
            callbacks={STATUS_NAMES[s[0]]: int(s[1]) for s in by_status},
            finished_ms=last if done >= r["total"] else None,
        )
