"""Money both ways: what tenants were charged for live results (``checks.cost``, by the source
that answered and the batch's country) next to what the upstream calls cost the operator
(``upstream_calls``), per upstream and country — ``numgate admin report margin``.

Revenue is counted where it was earned: a result served from the cache is revenue of ``cache``
(at no upstream cost); a number that failed at every upstream is not charged, but what its calls
cost is still the operator's. Amounts are per currency (a tenant's currency and a vendor's may
differ: numgate converts nothing)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, func, select

from numgate.db.direct import Database
from numgate.db.tables import batches, checks, in_state, upstream_calls

STATUS_DONE = 2


@dataclass
class MarginRow:
    upstream: str
    country: str
    currency: str
    #: numbers answered (charged results)
    numbers: int
    revenue: int
    #: upstream calls made (one per number per upstream tried) and what they cost
    calls: int
    cost: int

    @property
    def margin(self) -> int:
        return self.revenue - self.cost


async def margin(db: Database, since_ms: int | None = None) -> list[MarginRow]:
    c, b, uc = checks.c, batches.c, upstream_calls.c
    rev_conds = [in_state(c.status, STATUS_DONE), c.source.is_not(None), b.check_level != 1]
    cost_conds = []
    if since_ms is not None:
        rev_conds.append(c.done_ms >= since_ms)
        cost_conds.append(uc.created_ms >= since_ms)
    revenue_q = (
        select(
            c.source,
            func.coalesce(b.country, ""),
            b.currency,
            func.count(),
            func.coalesce(func.sum(c.cost), 0),
        )
        .select_from(checks.join(batches, b.id == c.batch_id))
        .where(and_(*rev_conds))
        .group_by(c.source, b.country, b.currency)
    )
    cost_q = (
        select(
            uc.upstream,
            func.coalesce(uc.country, ""),
            uc.currency,
            func.count(),
            func.coalesce(func.sum(uc.cost), 0),
        )
        .where(and_(*cost_conds) if cost_conds else and_(True))
        .group_by(uc.upstream, uc.country, uc.currency)
    )
    async with db.read() as tx:
        revenue = await tx.all(revenue_q)
        costs = await tx.all(cost_q)
    rows: dict[tuple[str, str, str], MarginRow] = {}

    def row(upstream: str, country: str, currency: str) -> MarginRow:
        key = (upstream, country, currency)
        if key not in rows:
            rows[key] = MarginRow(upstream, country, currency, 0, 0, 0, 0)
        return rows[key]

    for source, country, currency, n, total in revenue:
        r = row(source, country, currency)
        r.numbers += int(n)
        r.revenue += int(total)
    for upstream, country, currency, n, total in costs:
        r = row(upstream, country, currency)
        r.calls += int(n)
        r.cost += int(total)
    return sorted(rows.values(), key=lambda r: (r.upstream, r.country, r.currency))
