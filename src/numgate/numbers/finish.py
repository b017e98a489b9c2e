"""Finishing numbers: in one transaction, each number's result, its callback (``Outbox.enqueue``),
the settlement of its share of the batch's reservation, what its upstream calls cost the operator,
and its fresh answer for the cache — for the numbers the caller still holds (its lease token),
whoever the caller is: the check worker for a chunk, or an upstream's webhook for one number."""

from __future__ import annotations

from collections import Counter as CountOf
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import bindparam, insert, select, update

from numgate.core import Core
from numgate.db.direct import BulkUpdate, Row, Statement, Tx
from numgate.db.tables import batches, checks, upstream_calls
from numgate.delivery.outbox import Enqueued, NewCallback
from numgate.jobs.claims import Leases
from numgate.ledger.service import Settlement
from numgate.metrics import metrics
from numgate.numbers.results import CheckResult, Level, Outcome
from numgate.upstreams import cache

LEASES = Leases(checks)
BATCH = Statement(select(batches).where(batches.c.id == bindparam("id")))
FINISH = BulkUpdate(
    update(checks)
    .where(checks.c.id == bindparam("b_id"))
    .values(
        status=2,
        outcome=bindparam("b_outcome"),
        result=bindparam("b_result"),
        cost=bindparam("b_cost"),
        done_ms=bindparam("b_now"),
        source=bindparam("b_source"),
        observed_ms=bindparam("b_observed"),
        due_ms=None,
        lease_until_ms=None,
        lease_token=None,
    ),
    {
        "b_id": checks.c.id.type,
        "b_outcome": checks.c.outcome.type,
        "b_result": checks.c.result.type,
        "b_cost": checks.c.cost.type,
        "b_now": checks.c.done_ms.type,
        "b_source": checks.c.source.type,
        "b_observed": checks.c.observed_ms.type,
    },
)
RECORD_CALLS = Statement(
    insert(upstream_calls).values(
        {
            c: bindparam(c)
            for c in (
                "check_id",
                "upstream",
                "level",
                "country",
                "outcome",
                "cost",
                "currency",
                "latency_ms",
                "created_ms",
            )
        }
    )
)


@dataclass(frozen=True)
class BatchInfo:
    id: int
    account_id: int
    app_id: int
    batch_no: str
    level: Level
    country: str | None
    currency: str
    unit_price: int
    #: a result from the cache costs this (None: unit_price)
    cached_price: int | None
    #: the age of a cached result the batch accepts, seconds
    max_age_s: int
    #: where the batch's callbacks go (``callback_targets``); None: no callbacks
    target_id: int | None

    def price_of(self, result: CheckResult) -> int:
        if not result.outcome.charged:
            return 0
        if result.source == "cache" and self.cached_price is not None:
            return self.cached_price
        return self.unit_price


def batch_info(r: Row) -> BatchInfo:
    return BatchInfo(
        r["id"],
        r["account_id"],
        r["app_id"],
        r["batch_no"],
        Level(r["check_level"]),
        r["country"],
        r["currency"],
        r["unit_price"],
        r["cached_price"],
        r["max_age_s"],
        r["target_id"],
    )


@dataclass(frozen=True)
class CallRecord:
    """One number's share of one upstream call (``upstream_calls``); no check for a number of
    ``numgate check FILE``."""

    check_id: int | None
    upstream: str
    level: Level
    country: str | None
    outcome: str
    cost: int
    currency: str
    latency_ms: int

    def row(self, now: int) -> dict[str, Any]:
        return {
            "check_id": self.check_id,
            "upstream": self.upstream,
            "level": int(self.level),
            "country": self.country,
            "outcome": self.outcome,
            "cost": self.cost,
            "currency": self.currency,
            "latency_ms": self.latency_ms,
            "created_ms": now,
        }


@dataclass
class Writes:
    """What finishing some numbers writes."""

    updates: list[dict[str, Any]] = field(default_factory=list)  # FINISH parameters
    callbacks: list[NewCallback] = field(default_factory=list)
    charges: list[tuple[int, int, int]] = field(default_factory=list)  # check id, batch id, cost
    calls: list[CallRecord] = field(default_factory=list)
    fresh: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # check id, cache.PUT row

    def only(self, owned: set[int]) -> Writes:
        """The writes of the numbers still held."""
        return Writes(
            [u for u in self.updates if u["b_id"] in owned],
            [c for c in self.callbacks if c.check_id in owned],
            [c for c in self.charges if c[0] in owned],
            [c for c in self.calls if c.check_id in owned],
            [f for f in self.fresh if f[0] in owned],
        )


class Finisher:
    def __init__(self, core: Core) -> None:
        self.core = core

    def writes(
        self,
        rows: list[Row],
        infos: dict[int, BatchInfo],
        results: dict[int, CheckResult],
        now: int,
        calls: list[CallRecord] | None = None,
    ) -> Writes:
        """What finishing ``rows`` (each with ``id``, ``batch_id``, ``message_id``, ``phone``)
        writes; ``calls`` are the upstream calls made for them."""
        renderer = self.core.numbers.renderer
        w = Writes(calls=list(calls or ()))
        for r in rows:
            check_id, batch_id = r["id"], r["batch_id"]
            info = infos[batch_id]
            res = results[check_id]
            cost = info.price_of(res)
            w.charges.append((check_id, batch_id, cost))
            w.updates.append(
                {
                    "b_id": check_id,
                    "b_outcome": int(res.outcome),
                    "b_result": orjson.dumps(res.to_json()).decode(),
                    "b_cost": cost,
                    "b_now": now,
                    "b_source": res.source,
                    "b_observed": res.observed_ms,
                }
            )
            answer = res.live or res.dial
            if (
                answer is not None
                and res.source not in (None, "cache")
                and res.observed_ms is not None
                and res.basic is not None
                and cache.worth_keeping(answer)
            ):
                w.fresh.append(
                    (
                        check_id,
                        {
                            "e164": res.basic.e164,
                            "level": int(info.level),
                            "result": cache.encode(answer),
                            "source": res.source,
                            "observed_ms": res.observed_ms,
                        },
                    )
                )
            if info.target_id is None:
                continue
            body = renderer.callback(
                message_id=r["message_id"],
                batch_no=info.batch_no,
                phone=r["phone"],
                result=res,
                cost=cost,
                currency=info.currency,
            )
            w.callbacks.append(NewCallback(check_id, info.account_id, info.app_id, info.target_id, body))
        return w

    async def write(
        self, tx: Tx, token: int | None, w: Writes, infos: dict[int, BatchInfo], expected: int
    ) -> tuple[Writes, Enqueued]:
        """Write ``w`` for the numbers still leased under ``token`` (``expected`` of them, if no
        lease ran out), or all of them when ``token`` is None (``tx`` holds their rows locked:
        ``Leases.lock_statement``); what was written and the callbacks enqueued (to hand over
        on commit, :meth:`committed`)."""
        core = self.core
        if token is not None:
            owned = await LEASES.owned_ids(tx, token)
            if len(owned) < expected:  # some leases ran out and other workers own them now
                w = w.only(owned)
        settle: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for _, batch_id, cost in w.charges:
            unit = infos[batch_id].unit_price
            settle[batch_id][0] += cost
            settle[batch_id][1] += unit - cost
        await tx.bulk_update(FINISH, w.updates)
        enqueued = await core.outbox.enqueue(tx, w.callbacks)
        await core.ledger.settle(
            tx,
            [
                Settlement(infos[b].account_id, infos[b].currency, b, charged, released)
                for b, (charged, released) in settle.items()
            ],
        )
        now = core.clock.time_ms()
        if w.calls:
            await tx.many(RECORD_CALLS, [c.row(now) for c in w.calls])
        if w.fresh:
            await tx.many(cache.PUT, [f for _, f in sorted(w.fresh, key=lambda f: f[1]["e164"])])
        return w, enqueued

    async def commit(self, token: int, w: Writes, infos: dict[int, BatchInfo], expected: int) -> int:
        """:meth:`write` in its own transaction, then the callbacks handed over and counted."""
        core = self.core
        enqueued = Enqueued()
        try:
            async with core.db.write() as tx:
                w, enqueued = await self.write(tx, token, w, infos, expected)
        except BaseException:
            core.outbox.rolled_back(enqueued)
            raise
        return self.committed(w, enqueued, infos)

    def committed(self, w: Writes, enqueued: Enqueued, infos: dict[int, BatchInfo]) -> int:
        """After the transaction that wrote ``w`` committed: its callbacks handed over, its
        numbers counted; how many were finished."""
        self.core.outbox.committed(enqueued)
        count(w, infos)
        return len(w.updates)


def count(w: Writes, infos: dict[int, BatchInfo]) -> None:
    # counted by raw (batch, outcome code) first: names are looked up once per distinct pair
    ended: CountOf[tuple[int, int]] = CountOf(
        (batch_id, u["b_outcome"]) for (_, batch_id, _), u in zip(w.charges, w.updates, strict=True)
    )
    m = metrics()
    for (batch_id, code), n in ended.items():
        outcome = Outcome(code)
        m.checked(infos[batch_id].level.name.lower(), outcome.name.lower(), outcome.charged, n)
