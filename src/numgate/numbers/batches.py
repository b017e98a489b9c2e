"""Batches as an operator or a tenant follows them: how far each has got, what its numbers came
to, what was charged, and how its callbacks stand (``numgate batches``, the console)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import func, select

from numgate.db.direct import Database
from numgate.db.tables import apps, batches, callback_targets, checks, deliveries, in_state
from numgate.delivery.outbox import STATUS_NAMES
from numgate.errors import NotFound
from numgate.numbers.results import CheckResult, Level, Outcome

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
            .where(checks.c.batch_id == r["id"], in_state(checks.c.status, STATUS_DONE))
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


# a batch's numbers (the console's batch page and its downloads) ----------------------------------


@dataclass(frozen=True)
class NumberFilter:
    """What the batch page filters on; None: any."""

    outcome: Outcome | None = None
    validity: str | None = None  # YES / NO / UNKNOWN (HLR)
    reachable: str | None = None
    number_type: str | None = None  # a NumberKind value
    carrier: str | None = None  # a substring, any case

    def matches(self, outcome: Outcome | None, r: CheckResult | None) -> bool:
        if self.outcome is not None and outcome is not self.outcome:
            return False
        basic = r.basic if r is not None else None
        live = r.live if r is not None else None
        if self.validity is not None and (live is None or live.validity.value != self.validity):
            return False
        if self.reachable is not None and (live is None or live.reachable.value != self.reachable):
            return False
        if self.number_type is not None and (basic is None or basic.kind.value != self.number_type):
            return False
        return self.carrier is None or (
            basic is not None and self.carrier.lower() in (basic.carrier or "").lower()
        )


@dataclass(frozen=True)
class NumberRow:
    seq: int
    message_id: str
    phone: str
    outcome: Outcome | None  # None: not checked yet
    result: CheckResult | None
    cost: int | None
    done_ms: int | None


#: rows read per statement while scanning a batch
SCAN = 2000


class BatchNumbers:
    """A batch's numbers in submit order, filtered, by keyset (``after`` = the last ``seq`` seen):
    a page costs what it reads, and a download streams in bounded memory."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def batch_id(self, message_id: str, account_id: int | None) -> int:
        async with self._db.read() as tx:
            r = await tx.one(
                select(batches.c.id, batches.c.account_id).where(batches.c.message_id == message_id)
            )
        if r is None or (account_id is not None and r["account_id"] != account_id):
            raise NotFound(f"no batch with messageId {message_id!r}")
        return int(r["id"])

    async def page(
        self, batch_id: int, f: NumberFilter, *, after: int = 0, limit: int = 50
    ) -> tuple[list[NumberRow], int | None]:
        """Up to ``limit`` matching rows after ``after``, and the cursor of the next page (None:
        no more)."""
        out: list[NumberRow] = []
        async for row in self.scan(batch_id, f, after=after):
            if len(out) == limit:
                return out, out[-1].seq
            out.append(row)
        return out, None

    async def scan(self, batch_id: int, f: NumberFilter, *, after: int = 0) -> AsyncIterator[NumberRow]:
        c = checks.c
        sql_outcome = [c.outcome == int(f.outcome)] if f.outcome is not None else []
        while True:
            async with self._db.read() as tx:
                rows = await tx.all(
                    select(c.seq, c.message_id, c.phone, c.outcome, c.result, c.cost, c.done_ms)
                    .where(c.batch_id == batch_id, c.seq > after, *sql_outcome)
                    .order_by(c.seq)
                    .limit(SCAN)
                )
            for r in rows:
                outcome = Outcome(r["outcome"]) if r["outcome"] is not None else None
                result = CheckResult.from_json(orjson.loads(r["result"])) if r["result"] else None
                if f.matches(outcome, result):
                    yield NumberRow(
                        r["seq"], r["message_id"], r["phone"], outcome, result, r["cost"], r["done_ms"]
                    )
            if len(rows) < SCAN:
                return
            after = rows[-1]["seq"]


# the overview ----------------------------------------------------------------------------------

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Overview:
    #: numbers submitted per UTC day (epoch day number → count), the last ``days`` days
    per_day: dict[int, int]
    #: finished numbers by outcome name, and by country then outcome name, over the period
    outcomes: dict[str, int]
    by_country: dict[str, dict[str, int]]
    #: callbacks by status name over the period
    callbacks: dict[str, int]
    #: of the newest :data:`MIX_SAMPLE` results: valid / invalid, HLR reachability, number type;
    #: ``by_country_type``: each of those counts per country — read from the results themselves,
    #: so a sample of the period, not all of it
    validity: dict[str, int] = field(default_factory=dict)
    reachable: dict[str, int] = field(default_factory=dict)
    number_type: dict[str, int] = field(default_factory=dict)
    by_country_type: dict[str, dict[str, int]] = field(default_factory=dict)
    sampled: int = 0


#: results read for the validity / reachability / number-type mix
MIX_SAMPLE = 10_000


async def overview(db: Database, account_id: int | None, now_ms: int, days: int = 30) -> Overview:
    since = (now_ms // DAY_MS - days + 1) * DAY_MS
    b, c, d = batches.c, checks.c, deliveries.c
    mine = [b.account_id == account_id] if account_id is not None else []
    day = (b.created_ms // DAY_MS).label("day")
    async with db.read() as tx:
        per_day = await tx.all(
            select(day, func.sum(b.total)).where(b.created_ms >= since, *mine).group_by(day)
        )
        mix = await tx.all(
            select(b.country, c.outcome, func.count())
            .select_from(checks.join(batches, batches.c.id == c.batch_id))
            .where(b.created_ms >= since, in_state(c.status, STATUS_DONE), *mine)
            .group_by(b.country, c.outcome)
        )
        cb = await tx.all(
            select(d.status, func.count())
            .where(d.created_ms >= since, *([d.account_id == account_id] if account_id is not None else []))
            .group_by(d.status)
        )
        sample = await tx.all(
            select(b.country, c.result)
            .select_from(checks.join(batches, batches.c.id == c.batch_id))
            .where(b.created_ms >= since, in_state(c.status, STATUS_DONE), *mine)
            .order_by(c.id.desc())
            .limit(MIX_SAMPLE)
        )
    validity: dict[str, int] = {}
    reachable: dict[str, int] = {}
    kinds: dict[str, int] = {}
    by_country_type: dict[str, dict[str, int]] = {}
    for country, raw in sample:
        r = CheckResult.from_json(orjson.loads(raw)) if raw else None
        basic = r.basic if r is not None else None
        key = "not a number" if basic is None else ("valid" if basic.valid else "invalid")
        validity[key] = validity.get(key, 0) + 1
        per = by_country_type.setdefault(country or "?", {})
        per[key] = per.get(key, 0) + 1
        if basic is not None:
            kinds[basic.kind.value] = kinds.get(basic.kind.value, 0) + 1
            per[basic.kind.value] = per.get(basic.kind.value, 0) + 1
        if r is not None and r.live is not None:
            name = {"YES": "reachable", "NO": "unreachable"}.get(r.live.reachable.value, "unknown")
            reachable[name] = reachable.get(name, 0) + 1
            per[name] = per.get(name, 0) + 1
    outcomes: dict[str, int] = {}
    by_country: dict[str, dict[str, int]] = {}
    for country, outcome, n in mix:
        name = Outcome(outcome).name.lower()
        outcomes[name] = outcomes.get(name, 0) + int(n)
        per = by_country.setdefault(country or "?", {})
        per[name] = per.get(name, 0) + int(n)
    return Overview(
        {int(k): int(v or 0) for k, v in per_day},
        outcomes,
        by_country,
        {STATUS_NAMES[s]: int(n) for s, n in cb},
        validity,
        reachable,
        kinds,
        by_country_type,
        len(sample),
    )
