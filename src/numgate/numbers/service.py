"""Number Check batches: submit (validate, price, reserve, store), query, and the synchronous check."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import orjson
from sqlalchemy import and_, bindparam, func, or_, select

from numgate import ids
from numgate.clock import Clock
from numgate.db.direct import BulkInsert, Database, Statement
from numgate.db.tables import batches, checks, in_state
from numgate.delivery.outbox import CallbackTargets
from numgate.delivery.urls import CallbackUrls
from numgate.errors import (
    BatchNoTooLong,
    InvalidCheckLevel,
    InvalidParameter,
    MissingParameter,
    MixedCountries,
    TooManyNumbers,
    UnknownCountry,
)
from numgate.ledger.service import Ledger
from numgate.metrics import metrics
from numgate.numbers.check import check_basic
from numgate.numbers.classify import calling_code_of, main_region
from numgate.numbers.results import CheckResult, Level
from numgate.tenancy.service import MAX_AGE_S, App, TenancyService
from numgate.upstreams.registry import Upstreams

MAX_NUMBERS = 5000
MAX_BATCH_NO = 64
QUERY_DAYS = 14
#: results per pull-feed call, at most
FEED_MAX = 1000
#: the last page a query may ask for (a page past the results is an empty page)
QUERY_MAX_PAGE = 1_000_000

STATUS_PENDING, STATUS_LEASED, STATUS_DONE = 0, 1, 2

_BATCH_COLUMNS = (
    "message_id",
    "account_id",
    "app_id",
    "batch_no",
    "check_level",
    "country",
    "currency",
    "unit_price",
    "target_id",
    "total",
    "cached_price",
    "max_age_s",
    "created_ms",
)
INSERT_BATCH = Statement(
    batches.insert().values({c: bindparam(c) for c in _BATCH_COLUMNS}).returning(batches.c.id)
)
_CHECK_COLUMNS = ("batch_id", "account_id", "seq", "phone", "message_id", "status", "attempts")
INSERT_CHECKS = BulkInsert(checks, _CHECK_COLUMNS)
INSERT_DONE_CHECK = Statement(
    checks.insert().values(
        {c: bindparam(c) for c in (*_CHECK_COLUMNS, "outcome", "result", "cost", "done_ms")}
    )
)


def batch_row(
    message_id: str,
    app: App,
    batch_no: str,
    level: Level,
    country: str | None,
    currency: str,
    unit_price: int,
    now: int,
) -> dict[str, Any]:
    """A batch's columns but its callback target and size (INSERT_BATCH)."""
    return {
        "message_id": message_id,
        "account_id": app.account_id,
        "app_id": app.id,
        "batch_no": batch_no,
        "check_level": int(level),
        "country": country,
        "currency": currency,
        "unit_price": unit_price,
        "created_ms": now,
    }


class CallbackRenderer(Protocol):
    """Renders one number's result as the body its door's callback carries."""

    def callback(
        self, *, message_id: str, batch_no: str, phone: str, result: CheckResult, cost: int, currency: str
    ) -> bytes: ...


@dataclass(frozen=True)
class Submitted:
    message_id: str
    batch_no: str
    total: int


@dataclass(frozen=True)
class QueryRow:
    message_id: str
    batch_no: str
    phone: str
    level: Level
    result: CheckResult | None
    cost: int | None
    currency: str


@dataclass(frozen=True)
class QueryPage:
    page: int
    page_size: int
    total_size: int
    rows: list[QueryRow]

    @property
    def total_page(self) -> int:
        return math.ceil(self.total_size / self.page_size) if self.total_size else 0


@dataclass(frozen=True)
class FeedPage:
    """Results after a cursor, oldest first, and the cursor to ask with next."""

    rows: list[QueryRow]
    cursor: str
    #: more results are ready now (ask again at once)
    more: bool


def _cursor(done_ms: int, check_id: int) -> str:
    return f"{done_ms}.{check_id}"


def _parse_cursor(cursor: str | None) -> tuple[int, int] | None:
    if not cursor:
        return None
    ms, dot, cid = cursor.partition(".")
    if not (dot and ms.isascii() and ms.isdigit() and cid.isascii() and cid.isdigit() and len(cursor) < 40):
        raise InvalidParameter("cursor", f"cursor must be one a previous reply gave, got {cursor[:40]!r}")
    return int(ms), int(cid)


@dataclass(frozen=True)
class SyncCheck:
    request_id: str
    batch_no: str
    phone: str
    result: CheckResult
    cost: int
    currency: str


def parse_level(value: int) -> Level:
    try:
        return Level(value)
    except ValueError:
        raise InvalidCheckLevel(f"checkLevel must be 1 (Basic), 4 (Call) or 5 (HLR), got {value}") from None


def split_phones(phone: str) -> list[str]:
    items = [p.strip() for p in phone.split(",")]
    items = [p for p in items if p]
    if not items:
        raise MissingParameter("phone", "phone is empty: give numbers with country code, comma separated")
    if len(items) > MAX_NUMBERS:
        raise TooManyNumbers(f"{len(items)} numbers in one request; the limit is {MAX_NUMBERS}")
    return items


def batch_country(items: Sequence[str]) -> tuple[int, str]:
    """The one calling code of a batch and its main region (prices are per region)."""
    codes = {cc for cc in (calling_code_of(i) for i in items) if cc is not None}
    if not codes:
        raise UnknownCountry("no number in this request has a recognisable country code")
    if len(codes) > 1:
        listed = ", ".join(f"+{c}" for c in sorted(codes))
        raise MixedCountries(
            f"all numbers of one request must belong to one country; this one mixes {listed}"
        )
    cc = codes.pop()
    region = main_region(cc)
    if region is None:
        raise UnknownCountry(f"+{cc} is not a country numgate can price")
    return cc, region


class NumberCheckService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        tenancy: TenancyService,
        ledger: Ledger,
        renderer: CallbackRenderer,
        urls: CallbackUrls,
        targets: CallbackTargets,
        upstreams: Upstreams,
    ) -> None:
        self._db = db
        self._upstreams = upstreams
        self._clock = clock
        self._tenancy = tenancy
        self._ledger = ledger
        self.renderer = renderer
        self._urls = urls
        self._targets = targets
        #: set when new work is stored, so in-process workers start without waiting for a poll
        self.work_available = asyncio.Event()
        #: how many times work was stored in this process (a worker that keeps a list of the
        #: accounts with work knows it may have changed)
        self.stored = 0

    def announce(self) -> None:
        """New pending numbers were stored (submitted, or moved on to the next upstream)."""
        self.stored += 1
        self.work_available.set()

    async def submit(
        self,
        account_id: int,
        *,
        appkey: str,
        phone: str,
        level: int = 1,
        batch_no: str | None = None,
        dr_url: str | None = None,
        url_field: str = "drUrl",
        max_age_s: int | None = None,
    ) -> Submitted:
        """``url_field`` names ``dr_url`` in messages the way the caller's client does;
        ``max_age_s``: how old a cached HLR / call result may be (None: the app's setting)."""
        items = split_phones(phone)
        lvl = parse_level(level)
        if max_age_s is not None and not 0 <= max_age_s <= MAX_AGE_S:
            raise InvalidParameter(
                "maxAge", f"maxAge is a number of seconds from 0 to {MAX_AGE_S}, got {max_age_s}"
            )
        if batch_no is not None and len(batch_no) > MAX_BATCH_NO:
            raise BatchNoTooLong(f"batchNo has {len(batch_no)} characters; the limit is {MAX_BATCH_NO}")
        if dr_url:
            dr_url = self._urls.check(dr_url, url_field)
        app = await self._tenancy.app_of(account_id, appkey)
        _, region = batch_country(items)
        if lvl is not Level.BASIC:  # refused now, nothing reserved, when no upstream serves it
            await self._upstreams.route(lvl, region)
        url = dr_url or app.callback_url
        target_id = await self._targets.id_for(url) if url else None
        batch_no = batch_no or ids.new_batch_no()
        message_id = ids.new_message_id()
        now = self._clock.time_ms()
        single = len(items) == 1
        async with self._db.write() as tx:
            price = await self._ledger.find_price(tx, account_id, app.id, region, int(lvl))
            batch_id = await tx.scalar(
                INSERT_BATCH,
                **batch_row(message_id, app, batch_no, lvl, region, price.currency, price.price, now),
                target_id=target_id,
                total=len(items),
                cached_price=price.cached_price,
                max_age_s=app.max_age_s if max_age_s is None else max_age_s,
            )
            await self._ledger.reserve(tx, account_id, price.currency, price.price * len(items), batch_id)
            await tx.bulk_insert(
                INSERT_CHECKS,
                [
                    {
                        "batch_id": batch_id,
                        "account_id": account_id,
                        "seq": i,
                        "phone": item,
                        "message_id": message_id if single else f"{message_id}-{i:06d}",
                        "status": STATUS_PENDING,
                        "attempts": 0,
                    }
                    for i, item in enumerate(items, 1)
                ],
            )
        self.announce()
        metrics().numbers_submitted.labels(lvl.name.lower()).inc(len(items))
        return Submitted(message_id, batch_no, len(items))

    async def query(
        self,
        account_id: int,
        *,
        day: date,
        page: int,
        page_size: int,
        message_id: str | None = None,
        batch_no: str | None = None,
        phone: str | None = None,
        appkey: str | None = None,
    ) -> QueryPage:
        if not message_id and not batch_no:
            raise MissingParameter("messageId", "give messageId or batchNo (at least one of the two)")
        if not 1 <= page <= QUERY_MAX_PAGE:
            raise InvalidParameter("page", f"page must be an integer from 1 to {QUERY_MAX_PAGE}")
        if not 1 <= page_size <= 100:
            raise InvalidParameter("pageSize", "pageSize must be an integer from 1 to 100")
        today = self._clock.now().date()
        if not today - timedelta(days=QUERY_DAYS - 1) <= day <= today:
            raise InvalidParameter(
                "date",
                f"date must be within the last {QUERY_DAYS} days ({today - timedelta(days=QUERY_DAYS - 1)} "
                f"to {today}, UTC)",
            )
        start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
        conds = [
            batches.c.account_id == account_id,
            batches.c.created_ms >= start,
            batches.c.created_ms < start + 86_400_000,
        ]
        if message_id:
            conds.append(or_(batches.c.message_id == message_id, checks.c.message_id == message_id))
        if batch_no:
            conds.append(batches.c.batch_no == batch_no)
        if phone:
            conds.append(checks.c.phone == phone)
        if appkey:
            app = await self._tenancy.app_of(account_id, appkey)
            conds.append(batches.c.app_id == app.id)
        where = and_(*conds)
        joined = checks.join(batches, batches.c.id == checks.c.batch_id)
        async with self._db.read() as tx:
            total = await tx.scalar(select(func.count()).select_from(joined).where(where))
            rows = await tx.all(
                select(
                    checks.c.message_id,
                    checks.c.phone,
                    checks.c.result,
                    checks.c.cost,
                    batches.c.batch_no,
                    batches.c.check_level,
                    batches.c.currency,
                )
                .select_from(joined)
                .where(where)
                .order_by(checks.c.batch_id, checks.c.seq)
                .limit(page_size)
                .offset((page - 1) * page_size)
            )
        return QueryPage(
            page,
            page_size,
            total,
            [
                QueryRow(
                    r["message_id"],
                    r["batch_no"],
                    r["phone"],
                    Level(r["check_level"]),
                    CheckResult.from_json(orjson.loads(r["result"])) if r["result"] else None,
                    r["cost"],
                    r["currency"],
                )
                for r in rows
            ],
        )

    async def results(
        self,
        account_id: int,
        *,
        cursor: str | None = None,
        limit: int = FEED_MAX,
        appkey: str | None = None,
        lag_ms: int = 10_000,
    ) -> FeedPage:
        """The account's results finished after ``cursor``, oldest first (at most ``limit``), from
        the last 14 days. A result is shown once it is ``lag_ms`` old: a check finished a moment
        ago may still be committing, and a cursor must never step past a result that appears
        behind it later."""
        if not 1 <= limit <= FEED_MAX:
            raise InvalidParameter("limit", f"limit must be an integer from 1 to {FEED_MAX}")
        after = _parse_cursor(cursor)
        now = self._clock.time_ms()
        c = checks.c
        conds = [
            c.account_id == account_id,
            in_state(c.status, STATUS_DONE),
            c.done_ms >= now - QUERY_DAYS * 86_400_000,
            c.done_ms <= now - lag_ms,
        ]
        if after is not None:
            conds.append(or_(c.done_ms > after[0], and_(c.done_ms == after[0], c.id > after[1])))
        if appkey:
            app = await self._tenancy.app_of(account_id, appkey)
            conds.append(batches.c.app_id == app.id)
        q = (
            select(
                c.id,
                c.done_ms,
                c.message_id,
                c.phone,
                c.result,
                c.cost,
                batches.c.batch_no,
                batches.c.check_level,
                batches.c.currency,
            )
            .select_from(checks.join(batches, batches.c.id == c.batch_id))
            .where(*conds)
            .order_by(c.done_ms, c.id)
            .limit(limit + 1)
        )
        async with self._db.read() as tx:
            rows = await tx.all(q)
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if rows else None
        return FeedPage(
            [
                QueryRow(
                    r["message_id"],
                    r["batch_no"],
                    r["phone"],
                    Level(r["check_level"]),
                    CheckResult.from_json(orjson.loads(r["result"])),
                    r["cost"],
                    r["currency"],
                )
                for r in rows
            ],
            _cursor(last["done_ms"], last["id"]) if last is not None else (cursor or ""),
            more,
        )

    async def check_now(
        self, account_id: int, *, appkey: str, phone: str, level: int = 1, batch_no: str | None = None
    ) -> SyncCheck:
        """One Basic check answered in the request (v2). Charged like a batch of one; queryable."""
        items = split_phones(phone)
        if len(items) != 1:
            raise InvalidParameter("phone", "this endpoint checks exactly one number")
        if parse_level(level) is not Level.BASIC:
            raise InvalidCheckLevel("the synchronous check supports checkLevel 1 (Basic) only")
        if batch_no is not None and len(batch_no) > MAX_BATCH_NO:
            raise BatchNoTooLong(f"batchNo has {len(batch_no)} characters; the limit is {MAX_BATCH_NO}")
        app = await self._tenancy.app_of(account_id, appkey)
        item = items[0]
        result = check_basic(item)
        batch_no = batch_no or ids.new_batch_no()
        message_id = ids.new_message_id()
        now = self._clock.time_ms()
        async with self._db.write() as tx:
            region = result.basic.region if result.basic is not None and result.basic.region else None
            if region is None:
                cc = calling_code_of(item)
                region = main_region(cc) if cc is not None else None
            if region is not None:
                price = await self._ledger.find_price(tx, account_id, app.id, region, 1)
                unit, currency = price.price, price.currency
            else:
                unit, currency = 0, "USD"
            cost = unit if result.outcome.charged else 0
            batch_id = await tx.scalar(
                INSERT_BATCH,
                **batch_row(message_id, app, batch_no, Level.BASIC, region, currency, unit, now),
                target_id=None,
                total=1,
                cached_price=None,
                max_age_s=0,
            )
            await self._ledger.charge_now(tx, account_id, currency, cost, batch_id)
            await tx.run(
                INSERT_DONE_CHECK,
                batch_id=batch_id,
                account_id=account_id,
                seq=1,
                phone=item,
                message_id=message_id,
                status=STATUS_DONE,
                attempts=1,
                outcome=int(result.outcome),
                result=orjson.dumps(result.to_json()).decode(),
                cost=cost,
                done_ms=now,
            )
        m = metrics()
        m.numbers_submitted.labels(Level.BASIC.name.lower()).inc()
        m.checked(Level.BASIC.name.lower(), result.outcome.name.lower(), result.outcome.charged)
        return SyncCheck(message_id, batch_no, item, result, cost, currency)
