"""Prices, balances and the ledger. Money is a ledger of entries, never a number edited in place.

Entry kinds (``amount`` is always positive):

- ``topup``   money added by the operator;
- ``reserve`` money held for a submitted batch;
- ``charge``  part of a reservation consumed by a successful check;
- ``release`` part of a reservation returned (failed check, or anything not charged).

balance = Σtopup − Σcharge − open reservations, and open reservations = Σreserve − Σcharge −
Σrelease; so the spendable balance is Σtopup − Σreserve + Σrelease.

That sum is over an account's whole history, so the spendable balance is also kept as a
projection (``balances``), moved in the same transaction as every entry: a reservation is one
conditional UPDATE (it fits, or nothing changes) and the row it updates is what serialises
spending on the account. The entries stay the record; ``balances()`` reports both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import bindparam, case, func, or_, select, update

from numgate.clock import Clock
from numgate.db.direct import Database, Statement, Tx
from numgate.db.tables import accounts, balances, batches, ledger_entries, prices
from numgate.errors import InsufficientBalance, InvalidParameter, NotFound, PriceNotFound
from numgate.ledger.money import parse_currency
from numgate.numbers.classify import parse_region

LEVELS = (1, 4, 5)


@dataclass(frozen=True)
class Balance:
    currency: str
    topups: int
    charges: int
    reserved: int
    released: int
    #: the projection the hot paths read (``balances``); equal to ``balance`` unless broken
    available: int | None = None

    @property
    def open_reservations(self) -> int:
        return self.reserved - self.charges - self.released

    @property
    def balance(self) -> int:
        return self.topups - self.charges - self.open_reservations


#: how each entry kind moves the spendable balance (a charge consumes money reserved before)
EFFECT = {"topup": 1, "reserve": -1, "release": 1, "charge": 0}


@dataclass(frozen=True)
class StatementLine:
    id: int
    at_ms: int
    currency: str
    kind: str
    amount: int
    #: what the entry did to the spendable balance
    change: int
    #: the spendable balance after it, in its currency
    balance: int
    batch: str | None
    note: str | None


@dataclass(frozen=True)
class Price:
    country: str
    level: int
    currency: str
    price: int
    account_id: int
    app_id: int
    #: a live result served from the cache costs this (None: the full price)
    cached_price: int | None = None


def _sum(kind: str) -> Any:
    return func.coalesce(func.sum(case((ledger_entries.c.kind == kind, ledger_entries.c.amount), else_=0)), 0)


def _price(r: Any) -> Price:
    return Price(
        r["country"], r["level"], r["currency"], r["price"], r["account_id"], r["app_id"], r["cached_price"]
    )


_ACCOUNT = Statement(select(accounts.c.id).where(accounts.c.id == bindparam("id")))
_BAL = balances.c
_BALANCE_KEY = (_BAL.account_id == bindparam("account_id"), _BAL.currency == bindparam("currency"))
#: spend, only if it fits: the check and the update in one statement
_DEBIT = Statement(
    update(balances)
    .where(*_BALANCE_KEY, _BAL.available >= bindparam("amount"))
    .values(available=_BAL.available - bindparam("amount"), updated_ms=bindparam("now"))
)
_CREDIT = Statement(
    update(balances)
    .where(*_BALANCE_KEY)
    .values(available=_BAL.available + bindparam("amount"), updated_ms=bindparam("now"))
)
_OPEN_BALANCE = Statement(
    balances.insert().values({c: bindparam(c) for c in ("account_id", "currency", "available", "updated_ms")})
)
_AVAILABLE = Statement(select(_BAL.available).where(*_BALANCE_KEY))
_PRICES_FOR = Statement(
    select(prices).where(
        prices.c.country == bindparam("country"),
        prices.c.level == bindparam("level"),
        or_(prices.c.account_id == 0, prices.c.account_id == bindparam("account_id")),
        or_(prices.c.app_id == 0, prices.c.app_id == bindparam("app_id")),
    )
)
_BALANCE = Statement(
    select(_sum("topup"), _sum("charge"), _sum("reserve"), _sum("release")).where(
        ledger_entries.c.account_id == bindparam("account_id"),
        ledger_entries.c.currency == bindparam("currency"),
    )
)
_APPEND = Statement(
    ledger_entries.insert().values(
        {
            c: bindparam(c)
            for c in ("account_id", "currency", "kind", "amount", "batch_id", "note", "created_ms")
        }
    )
)


async def require_account(tx: Tx, account_id: int) -> None:
    """Raise NotFound unless the account exists (inside the caller's transaction)."""
    if await tx.one(_ACCOUNT, id=account_id) is None:
        raise NotFound(f"no account with id {account_id}")


@dataclass(frozen=True)
class Settlement:
    """What a finished part of a batch turns into: ``charged`` of its reservation charged,
    ``released`` returned."""

    account_id: int
    currency: str
    batch_id: int
    charged: int
    released: int


class Ledger:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    # prices --------------------------------------------------------------------------------

    async def set_price(
        self,
        *,
        country: str,
        level: int,
        price: int,
        currency: str = "USD",
        account_id: int = 0,
        app_id: int = 0,
        cached_price: int | None = None,
    ) -> Price:
        return (
            await self.set_prices(
                [(country, level, price)],
                currency=currency,
                account_id=account_id,
                app_id=app_id,
                cached_price=cached_price,
            )
        )[0]

    async def set_prices(
        self,
        table: list[tuple[str, int, int]],
        *,
        currency: str = "USD",
        account_id: int = 0,
        app_id: int = 0,
        cached_price: int | None = None,
    ) -> list[Price]:
        """Set several (country, level, price) entries of one scope in one transaction;
        ``cached_price`` (live levels) is what a result served from the cache costs."""
        currency = parse_currency(currency)
        out: list[Price] = []
        async with self._db.write() as tx:
            if account_id:
                await require_account(tx, account_id)
            now = self._clock.time_ms()
            for country, level, price in table:
                country = parse_region(country, "country")
                if level not in LEVELS:
                    raise InvalidParameter(
                        "level", f"level must be 1 (Basic), 4 (Call) or 5 (HLR), got {level}"
                    )
                scope = (
                    (prices.c.account_id == account_id)
                    & (prices.c.app_id == app_id)
                    & (prices.c.country == country)
                    & (prices.c.level == level)
                )
                if cached_price is not None and level == 1:
                    raise InvalidParameter(
                        "cached_price", "a cache price is for the live levels (4 Call, 5 HLR)"
                    )
                if cached_price is not None and cached_price > price:
                    raise InvalidParameter(
                        "cached_price",
                        "the cache price cannot be above the price (it is charged instead of it)",
                    )
                n = await tx.run(
                    update(prices)
                    .where(scope)
                    .values(price=price, currency=currency, cached_price=cached_price, updated_ms=now)
                )
                if not n:
                    await tx.run(
                        prices.insert().values(
                            account_id=account_id,
                            app_id=app_id,
                            country=country,
                            level=level,
                            currency=currency,
                            price=price,
                            cached_price=cached_price,
                            updated_ms=now,
                        )
                    )
                out.append(Price(country, level, currency, price, account_id, app_id, cached_price))
        return out

    async def list_prices(
        self,
        account_id: int | None = None,
        *,
        app_id: int | None = None,
        country: str | None = None,
        level: int | None = None,
        limit: int | None = None,
    ) -> list[Price]:
        """Prices in force for an account (its own and the defaults) or an app, or every price;
        optionally one country and level."""
        q = select(prices).order_by(prices.c.account_id, prices.c.app_id, prices.c.country, prices.c.level)
        if account_id is not None:
            q = q.where(prices.c.account_id.in_([0, account_id]))
        if app_id is not None:
            q = q.where(prices.c.app_id.in_([0, app_id]))
        if country is not None:
            q = q.where(prices.c.country == parse_region(country, "country"))
        if level is not None:
            q = q.where(prices.c.level == level)
        if limit is not None:
            q = q.limit(limit)
        async with self._db.read() as tx:
            rows = await tx.all(q)
        return [_price(r) for r in rows]

    @staticmethod
    async def find_price(tx: Tx, account_id: int, app_id: int, country: str, level: int) -> Price:
        """The most specific price: the app's, else the account's, else numgate's default."""
        rows = await tx.all(_PRICES_FOR, country=country, level=level, account_id=account_id, app_id=app_id)
        best = None
        for r in rows:
            if r["app_id"] and r["account_id"] != account_id:
                continue
            rank = (r["account_id"] != 0, r["app_id"] != 0)
            if best is None or rank > best[0]:
                best = (rank, r)
        if best is None:
            raise PriceNotFound(f"no price for level {level} in {country}")
        return _price(best[1])

    # entries -------------------------------------------------------------------------------

    async def topup(
        self, account_id: int, amount: int, currency: str = "USD", note: str | None = None
    ) -> Balance:
        if amount <= 0:
            raise InvalidParameter("amount", "a top-up must be a positive amount")
        currency = parse_currency(currency)
        async with self._db.write() as tx:
            await require_account(tx, account_id)
            await self._append(tx, account_id, currency, [("topup", amount)], None, note)
            if not await tx.run(
                _CREDIT, account_id=account_id, currency=currency, amount=amount, now=self._now()
            ):
                await tx.run(
                    _OPEN_BALANCE,
                    account_id=account_id,
                    currency=currency,
                    available=amount,
                    updated_ms=self._now(),
                )
            return await self.balance_in(tx, account_id, currency)

    def _now(self) -> int:
        return self._clock.time_ms()

    async def _append(
        self,
        tx: Tx,
        account_id: int,
        currency: str,
        entries: list[tuple[str, int]],
        batch_id: int | None,
        note: str | None = None,
    ) -> None:
        """Ledger entries (kind, amount) in one driver call."""
        now = self._now()
        await tx.many(
            _APPEND,
            [
                {
                    "account_id": account_id,
                    "currency": currency,
                    "kind": kind,
                    "amount": amount,
                    "batch_id": batch_id,
                    "note": note,
                    "created_ms": now,
                }
                for kind, amount in entries
            ],
        )

    @staticmethod
    async def balance_in(tx: Tx, account_id: int, currency: str) -> Balance:
        """The full reconciliation from the entries (a sum over the account's history: for
        reports, not for the hot path, which reads ``balances``)."""
        row = await tx.one(_BALANCE, account_id=account_id, currency=currency)
        assert row is not None  # an aggregate always has a row
        return Balance(currency, int(row[0]), int(row[1]), int(row[2]), int(row[3]))

    async def balances(self, account_id: int) -> list[Balance]:
        """Per currency, reconciled from the entries, with the projection beside it."""
        async with self._db.read() as tx:
            await require_account(tx, account_id)
            currencies = await tx.all(
                select(ledger_entries.c.currency)
                .where(ledger_entries.c.account_id == account_id)
                .distinct()
                .order_by(ledger_entries.c.currency)
            )
            out = []
            for (currency,) in currencies:
                b = await self.balance_in(tx, account_id, currency)
                available = await tx.scalar(_AVAILABLE, account_id=account_id, currency=currency)
                out.append(replace(b, available=int(available or 0)))
            return out

    async def statement(
        self,
        account_id: int,
        *,
        currency: str | None = None,
        since_ms: int | None = None,
        limit: int = 1000,
    ) -> list[StatementLine]:
        """The ledger entries of an account, oldest first, each with the spendable balance after
        it (from ``since_ms``, at most ``limit`` entries)."""
        le = ledger_entries.c
        conds = [le.account_id == account_id]
        if currency is not None:
            conds.append(le.currency == parse_currency(currency))
        async with self._db.read() as tx:
            await require_account(tx, account_id)
            opening: dict[str, int] = {}
            if since_ms is not None:
                before = await tx.all(
                    select(le.currency, le.kind, func.sum(le.amount))
                    .where(*conds, le.created_ms < since_ms)
                    .group_by(le.currency, le.kind)
                )
                for cur, kind, total in before:
                    opening[cur] = opening.get(cur, 0) + EFFECT[kind] * int(total)
                conds.append(le.created_ms >= since_ms)
            rows = await tx.all(
                select(ledger_entries, batches.c.message_id)
                .select_from(ledger_entries.outerjoin(batches, batches.c.id == le.batch_id))
                .where(*conds)
                .order_by(le.id)
                .limit(limit)
            )
        out: list[StatementLine] = []
        running = dict(opening)
        for r in rows:
            change = EFFECT[r["kind"]] * r["amount"]
            running[r["currency"]] = running.get(r["currency"], 0) + change
            out.append(
                StatementLine(
                    r["id"],
                    r["created_ms"],
                    r["currency"],
                    r["kind"],
                    r["amount"],
                    change,
                    running[r["currency"]],
                    r["message_id"],
                    r["note"],
                )
            )
        return out

    async def reserve(self, tx: Tx, account_id: int, currency: str, amount: int, batch_id: int) -> None:
        """Hold ``amount`` for a batch inside the caller's transaction, or raise
        InsufficientBalance: one conditional UPDATE of the balance (which also serialises
        spending on the account) and one entry."""
        if not await tx.run(_DEBIT, account_id=account_id, currency=currency, amount=amount, now=self._now()):
            available = await tx.scalar(_AVAILABLE, account_id=account_id, currency=currency) or 0
            raise InsufficientBalance(
                f"the batch costs {amount / 10000:.4f} {currency} but the balance is "
                f"{available / 10000:.4f} {currency}"
            )
        await self._append(tx, account_id, currency, [("reserve", amount)], batch_id)

    async def settle(self, tx: Tx, settlements: list[Settlement]) -> None:
        """Turn parts of batches' reservations into charges and return the rest, in two driver
        calls: every entry in one, every balance credit in the other. Balances are updated in
        (account, currency) order, so two workers settling the same accounts never wait on each
        other in a cycle."""
        now = self._now()
        entries = [
            {
                "account_id": s.account_id,
                "currency": s.currency,
                "kind": kind,
                "amount": amount,
                "batch_id": s.batch_id,
                "note": None,
                "created_ms": now,
            }
            for s in settlements
            for kind, amount in (("charge", s.charged), ("release", s.released))
            if amount
        ]
        if entries:
            await tx.many(_APPEND, entries)
        credits: dict[tuple[int, str], int] = {}
        for s in settlements:
            if s.released:
                credits[(s.account_id, s.currency)] = credits.get((s.account_id, s.currency), 0) + s.released
        if credits:
            await tx.many(
                _CREDIT,
                [
                    {"account_id": a, "currency": c, "amount": n, "now": now}
                    for (a, c), n in sorted(credits.items())
                ],
            )

    async def charge_now(self, tx: Tx, account_id: int, currency: str, amount: int, batch_id: int) -> None:
        """Reserve and charge at once (a check answered in the request): the same two entries a
        batch gets, one balance update."""
        if not amount:
            return
        if not await tx.run(_DEBIT, account_id=account_id, currency=currency, amount=amount, now=self._now()):
            available = await tx.scalar(_AVAILABLE, account_id=account_id, currency=currency) or 0
            raise InsufficientBalance(
                f"the check costs {amount / 10000:.4f} {currency} but the balance is "
                f"{available / 10000:.4f} {currency}"
            )
        await self._append(tx, account_id, currency, [("reserve", amount), ("charge", amount)], batch_id)

    async def available(self, account_id: int, currency: str) -> int:
        """The spendable balance (the projection the hot paths read)."""
        async with self._db.read() as tx:
            return int(
                await tx.scalar(_AVAILABLE, account_id=account_id, currency=parse_currency(currency)) or 0
            )
