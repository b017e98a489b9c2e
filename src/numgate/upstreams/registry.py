"""The operator's upstream accounts and routes, read through a short per-process cache, and one
adapter per account and level.

A **route** names, for a live level (5 HLR, 4 Call) and a country (ISO 3166 alpha-2, or ``*`` for
any), the upstreams to try in order. A country's own route beats ``*``. ``simulator`` is a built-in
upstream: in sandbox mode (``NUMGATE_SANDBOX``, the default) a level and country with no route is
served by it; outside sandbox mode nothing is simulated unless a route names it.

Accounts and routes are edited by ``numgate admin`` in another process: every process re-reads
them at most :data:`TTL_S` seconds after a change.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update

from numgate.clock import Clock
from numgate.db.direct import Database, Statement
from numgate.db.tables import routes, upstreams
from numgate.errors import Conflict, InvalidParameter, NoRoute, UpstreamNotFound
from numgate.numbers.results import Level
from numgate.upstreams.adapters import simulator
from numgate.upstreams.base import Account, Adapter
from numgate.upstreams.health import Health
from numgate.upstreams.kinds import KINDS
from numgate.vault import Vault

TTL_S = 2.0
LIVE_LEVELS = {Level.HLR: "HLR (level 5)", Level.CALL: "Call (level 4)"}
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

u = upstreams.c
_ALL = Statement(select(upstreams).order_by(u.name))
_ROUTES = Statement(select(routes).order_by(routes.c.level, routes.c.country))
_SAVE_HEALTH = Statement(
    update(upstreams)
    .where(u.name == bindparam("b_name"))
    .values(health=bindparam("b_health"), health_ms=bindparam("b_now"))
)


@dataclass(frozen=True)
class Route:
    level: Level
    country: str  # ISO alpha-2 or "*"
    upstreams: tuple[str, ...]


def parse_level(value: int | str) -> Level:
    try:
        level = Level(int(value))
    except ValueError:
        level = None  # type: ignore[assignment]
    if level not in LIVE_LEVELS:
        raise InvalidParameter("level", f"routes are for the live levels: 5 (HLR) or 4 (Call), got {value!r}")
    return level


def parse_country(value: str) -> str:
    c = value.strip().upper()
    if c != "*" and not (len(c) == 2 and c.isascii() and c.isalpha()):
        raise InvalidParameter(
            "country", f"a country is an ISO 3166 alpha-2 code (NG, GB …) or '*', got {value!r}"
        )
    return c


class Upstreams:
    def __init__(self, db: Database, vault: Vault, clock: Clock, *, sandbox: bool, timeout_s: float) -> None:
        self._db = db
        self._vault = vault
        self._clock = clock
        self.sandbox = sandbox
        self._timeout_s = timeout_s
        self._read_at = -TTL_S
        self._accounts: dict[str, Account] = {}
        self._routes: dict[tuple[Level, str], tuple[str, ...]] = {}
        self._adapters: dict[tuple[str, Level], tuple[Account, Adapter]] = {}
        self.health: dict[str, Health] = {}

    # reading -----------------------------------------------------------------------------------

    async def _fresh(self) -> None:
        if time.monotonic() - self._read_at < TTL_S:
            return
        async with self._db.read() as tx:
            rows = await tx.all(_ALL)
            route_rows = await tx.all(_ROUTES)
        self._accounts = {r["name"]: self._account(r) for r in rows}
        self._routes = {
            (Level(r["level"]), r["country"]): tuple(n for n in r["upstreams"].split(",") if n)
            for r in route_rows
        }
        self._read_at = time.monotonic()

    def _account(self, r: Any) -> Account:
        return Account(
            r["id"],
            r["name"],
            r["kind"],
            r["base_url"] or KINDS[r["kind"]].default_base_url if r["kind"] in KINDS else r["base_url"] or "",
            r["key"],
            self._vault.decrypt(r["secret_enc"]) if r["secret_enc"] else None,
            r["from_number"],
            json.loads(r["options"]) if r["options"] else {},
            r["unit_cost"],
            r["cost_currency"],
            bool(r["enabled"]),
            json.loads(r["health"]) if r["health"] else {},
        )

    async def accounts(self) -> list[Account]:
        self._read_at = -TTL_S
        await self._fresh()
        return list(self._accounts.values())

    async def account(self, name: str) -> Account:
        if name == simulator.NAME:
            return simulator.account()
        await self._fresh()
        acct = self._accounts.get(name)
        if acct is None:
            self._read_at = -TTL_S  # added a moment ago by another process?
            await self._fresh()
            acct = self._accounts.get(name)
        if acct is None:
            raise UpstreamNotFound(f"no upstream named {name!r}: see `numgate admin upstream list`")
        return acct

    async def routes(self) -> list[Route]:
        self._read_at = -TTL_S
        await self._fresh()
        return [Route(lvl, c, names) for (lvl, c), names in sorted(self._routes.items())]

    async def route(self, level: Level, country: str | None) -> tuple[str, ...]:
        """The upstreams that serve ``level`` in ``country``, in order; raises :class:`NoRoute`."""
        await self._fresh()
        names = self._routes.get((level, (country or "").upper())) or self._routes.get((level, "*"))
        if names:
            return names
        if self.sandbox:
            return (simulator.NAME,)
        where = f"in {country}" if country else "for numbers of no known country"
        raise NoRoute(
            f"no upstream serves {LIVE_LEVELS[level]} {where}: numgate is not in sandbox mode, so "
            f"nothing is simulated. The operator adds one with `numgate admin route set --level "
            f"{int(level)} --country {country or '*'} NAME` (`numgate admin upstream list` shows the "
            "upstreams; `simulator` is the built-in one)"
        )

    async def serving(self) -> dict[str, dict[str, list[str]]]:
        """Which upstreams serve which level, per country ({"hlr": {"*": ["simulator"]}, …}) —
        what startup prints and ``/healthz`` returns."""
        await self._fresh()
        out: dict[str, dict[str, list[str]]] = {}
        for level, label in ((Level.HLR, "hlr"), (Level.CALL, "call")):
            per = {c: list(names) for (lvl, c), names in sorted(self._routes.items()) if lvl is level}
            if "*" not in per and self.sandbox:
                per["*"] = [simulator.NAME]
            out[label] = per
        return out

    # adapters ------------------------------------------------------------------------------------

    async def adapter(self, name: str, level: Level) -> Adapter:
        if name == simulator.NAME:
            hit = self._adapters.get((name, level))
            if hit is None:
                hit = self._adapters[(name, level)] = (simulator.account(), simulator.Simulator(level))
            return hit[1]
        acct = await self.account(name)
        hit = self._adapters.get((name, level))
        if hit is not None and hit[0] == acct:
            return hit[1]
        if hit is not None:  # the account changed: a new adapter with its new settings
            await hit[1].close()
        kind = KINDS[acct.kind]
        made = kind.make(acct, level, self._timeout_s)
        self._adapters[(name, level)] = (acct, made)
        return made

    def health_of(self, name: str) -> Health:
        h = self.health.get(name)
        if h is None:
            h = self.health[name] = Health(time.monotonic)
        return h

    async def save_health(self) -> None:
        rows = [
            {"b_name": name, "b_health": json.dumps(h.snapshot()), "b_now": self._clock.time_ms()}
            for name, h in self.health.items()
            if name != simulator.NAME
        ]
        if rows:
            async with self._db.autocommit() as tx:
                await tx.many(_SAVE_HEALTH, rows)

    async def close(self) -> None:
        for _, a in self._adapters.values():
            await a.close()
        self._adapters.clear()

    # editing (numgate admin) -------------------------------------------------------------------

    async def add(
        self,
        name: str,
        kind: str,
        *,
        base_url: str | None = None,
        key: str | None = None,
        secret: str | None = None,
        from_number: str | None = None,
        appkey: str | None = None,
        unit_cost: int = 0,
        currency: str = "USD",
        public_url: str | None = None,
    ) -> Account:
        if not NAME.match(name) or name == simulator.NAME:
            raise InvalidParameter(
                "name",
                f"an upstream name is 1–64 lower-case letters, digits, - and _ (and not {simulator.NAME!r}), "
                f"got {name!r}",
            )
        k = KINDS.get(kind)
        if k is None:
            raise InvalidParameter("kind", f"unknown kind {kind!r}: one of {', '.join(sorted(KINDS))}")
        given = {"key": key, "secret": secret, "from_number": from_number, "appkey": appkey}
        missing = [f"--{n.replace('_', '-')}" for n in k.needs if not given[n]]
        if missing:
            raise InvalidParameter(missing[0], f"a {kind} upstream needs {', '.join(missing)}")
        if base_url is not None and not re.match(r"^https?://[^\s/]+", base_url):
            raise InvalidParameter("base-url", f"--base-url must be an http(s) URL, got {base_url!r}")
        if k.asynchronous and not public_url:
            raise InvalidParameter(
                "kind",
                f"a {kind} upstream answers by webhook: set NUMGATE_PUBLIC_URL (the URL it reaches "
                "numgate at) first",
            )
        options = {"appkey": appkey} if appkey else {}
        try:
            async with self._db.write() as tx:
                await tx.run(
                    insert(upstreams).values(
                        name=name,
                        kind=kind,
                        base_url=base_url.rstrip("/") if base_url else None,
                        key=key,
                        secret_enc=self._vault.encrypt(secret) if secret else None,
                        from_number=from_number,
                        options=json.dumps(options) if options else None,
                        unit_cost=unit_cost,
                        cost_currency=currency,
                        enabled=True,
                        created_ms=self._clock.time_ms(),
                    )
                )
        except Conflict:
            raise Conflict(f"an upstream named {name!r} exists already") from None
        self._read_at = -TTL_S
        return await self.account(name)

    async def set_enabled(self, name: str, enabled: bool) -> Account:
        await self.account(name)
        async with self._db.write() as tx:
            await tx.run(update(upstreams).where(u.name == name).values(enabled=enabled))
        self._read_at = -TTL_S
        return await self.account(name)

    async def set_route(self, level: int | str, country: str, names: list[str]) -> Route:
        lvl, c = parse_level(level), parse_country(country)
        names = [n.strip() for n in names if n.strip()]
        if not names:
            raise InvalidParameter("upstreams", "name at least one upstream (in failover order)")
        if len(set(names)) != len(names):
            raise InvalidParameter("upstreams", "an upstream appears twice in the route")
        for n in names:
            acct = await self.account(n)
            if n != simulator.NAME and lvl not in KINDS[acct.kind].levels:
                raise InvalidParameter("upstreams", f"{n} ({acct.kind}) does not serve {LIVE_LEVELS[lvl]}")
        async with self._db.write() as tx:
            await tx.run(delete(routes).where(routes.c.level == int(lvl), routes.c.country == c))
            await tx.run(
                insert(routes).values(
                    level=int(lvl), country=c, upstreams=",".join(names), updated_ms=self._clock.time_ms()
                )
            )
        self._read_at = -TTL_S
        return Route(lvl, c, tuple(names))

    async def delete_route(self, level: int | str, country: str) -> None:
        lvl, c = parse_level(level), parse_country(country)
        async with self._db.write() as tx:
            n = await tx.run(delete(routes).where(routes.c.level == int(lvl), routes.c.country == c))
        if not n:
            raise UpstreamNotFound(f"no route for level {int(lvl)} in {c}")
        self._read_at = -TTL_S
