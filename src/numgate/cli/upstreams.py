"""``numgate admin upstream``, ``admin route`` and ``admin report margin``: the operator's vendor
accounts for the HLR and Call levels, which of them serve which level and country, and what they
cost against what tenants paid (docs/upstreams.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from numgate.cli.common import JsonOpt, emit, run, settings, split_values
from numgate.core import Core
from numgate.ledger.money import to_decimal

upstream_cmd = typer.Typer(
    help="The operator's HLR and test-call vendor accounts (secrets kept encrypted).", no_args_is_help=True
)
route_cmd = typer.Typer(
    help="Which upstreams serve a live level (5 HLR, 4 Call) in a country, in failover order.",
    no_args_is_help=True,
)
report_cmd = typer.Typer(help="Reports over the ledger and the upstreams.", no_args_is_help=True)


def _kinds_help() -> str:
    from numgate.upstreams.kinds import KINDS

    return "; ".join(f"{k.name}: {k.summary}" for k in KINDS.values())


def _upstream_json(a: Any) -> dict[str, Any]:
    from numgate.upstreams.kinds import KINDS

    kind = KINDS.get(a.kind)
    return {
        "name": a.name,
        "kind": a.kind,
        "levels": sorted(int(lv) for lv in kind.levels) if kind else [],
        "base_url": a.base_url,
        "key": a.key,
        "from_number": a.from_number,
        "unit_cost": str(to_decimal(a.unit_cost)),
        "cost_currency": a.cost_currency,
        "enabled": a.enabled,
        "health": a.health or None,
    }


@upstream_cmd.command("add")
def upstream_add(
    name: Annotated[str, typer.Argument(help="Your name for this account (used in routes), e.g. hlr-eu.")],
    kind: Annotated[str, typer.Option(help="The vendor's API. " + "Kinds — " + _kinds_help())],
    base_url: Annotated[
        str | None,
        typer.Option(
            help="The vendor's API base URL (default: its public one; for regional endpoints, tests)."
        ),
    ] = None,
    key: Annotated[str | None, typer.Option(help="API key, Account SID or accessKey.")] = None,
    secret: Annotated[
        str | None,
        typer.Option(help="API secret, Auth Token or accessSecret (stored encrypted, never shown)."),
    ] = None,
    from_number: Annotated[str | None, typer.Option(help="Caller number for test calls (E.164).")] = None,
    appkey: Annotated[str | None, typer.Option(help="NXCloud: the appkey numgate submits with.")] = None,
    unit_cost: Annotated[
        str,
        typer.Option(
            help="What one lookup or call costs you when the vendor's answer does not say (hlrlookup: one "
            "credit), up to 4 decimals."
        ),
    ] = "0",
    currency: Annotated[str, typer.Option(help="Currency of --unit-cost.")] = "USD",
    as_json: JsonOpt = False,
) -> None:
    """Add a vendor account. Kinds that answer by webhook (nxcloud, twilio-voice) need
    NUMGATE_PUBLIC_URL: their events come to <public URL>/upstreams/NAME/events."""
    from numgate.cli.admin import _amount
    from numgate.ledger.money import parse_currency

    cost = _amount(unit_cost, "unit cost")
    public = settings().public_url

    async def main(core: Core) -> dict[str, Any]:
        a = await core.upstreams.add(
            name,
            kind,
            base_url=base_url,
            key=key,
            secret=secret,
            from_number=from_number,
            appkey=appkey,
            unit_cost=cost,
            currency=parse_currency(currency),
            public_url=public,
        )
        return _upstream_json(a)

    data = run(main)
    emit(
        data,
        as_json,
        text=f"upstream {data['name']} ({data['kind']}, levels {data['levels']}) at {data['base_url']}",
    )


@upstream_cmd.command("list")
def upstream_list(as_json: JsonOpt = False) -> None:
    """The upstream accounts with their health, as the workers last saved it (success rate and
    latency over their recent answers; a cool-down after repeated failures)."""

    async def main(core: Core) -> list[dict[str, Any]]:
        return [_upstream_json(a) for a in await core.upstreams.accounts()]

    rows = run(main)
    t = Table(
        "name",
        "kind",
        "levels",
        "enabled",
        "base URL",
        "unit cost",
        "calls",
        "success",
        "p50/p99 ms",
        "cooling",
    )
    for r in rows:
        h = r["health"] or {}
        rate = h.get("success_rate")
        t.add_row(
            r["name"],
            r["kind"],
            ",".join(map(str, r["levels"])),
            "yes" if r["enabled"] else "no",
            r["base_url"],
            f"{r['unit_cost']} {r['cost_currency']}",
            str(h.get("calls", "")),
            f"{rate:.1%}" if rate is not None else "",
            f"{h.get('p50_ms') or ''}/{h.get('p99_ms') or ''}" if h else "",
            f"{h['cooling_for_s']} s" if h.get("cooling_for_s") else "",
        )
    emit(rows, as_json, t)


def _set_enabled(name: str, enabled: bool, as_json: bool) -> None:
    data = run(lambda core: core.upstreams.set_enabled(name, enabled))
    emit(_upstream_json(data), as_json, text=f"upstream {name} {'enabled' if enabled else 'disabled'}")


@upstream_cmd.command("disable")
def upstream_disable(name: str, as_json: JsonOpt = False) -> None:
    """Stop using an upstream: routes pass over it (the next one of each route is tried)."""
    _set_enabled(name, False, as_json)


@upstream_cmd.command("enable")
def upstream_enable(name: str, as_json: JsonOpt = False) -> None:
    """Use a disabled upstream again."""
    _set_enabled(name, True, as_json)


def _route_json(r: Any) -> dict[str, Any]:
    return {"level": int(r.level), "country": r.country, "upstreams": list(r.upstreams)}


@route_cmd.command("set")
def route_set(
    level: Annotated[int, typer.Option(help="5 (HLR) or 4 (Call).")],
    country: Annotated[str, typer.Option(help="ISO 3166 alpha-2 code, or '*' for every other country.")],
    upstreams: Annotated[
        list[str],
        typer.Argument(
            help="Upstream names in failover order (comma-separated or several); 'simulator' is built in."
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Route a level in a country to upstreams, tried in order: a failure, a throttle or a time-out
    moves a number to the next. A country's own route beats '*'."""
    names = split_values(upstreams)
    r = run(lambda core: core.upstreams.set_route(level, country, names))
    emit(_route_json(r), as_json, text=f"level {int(r.level)} in {r.country}: {' → '.join(r.upstreams)}")


@route_cmd.command("delete")
def route_delete(
    level: Annotated[int, typer.Option(help="5 (HLR) or 4 (Call).")],
    country: Annotated[str, typer.Option(help="ISO 3166 alpha-2 code, or '*'.")],
    as_json: JsonOpt = False,
) -> None:
    """Remove a route (a country falls back to '*'; with neither, the level is refused there with
    206 outside sandbox mode)."""
    run(lambda core: core.upstreams.delete_route(level, country))
    emit({"level": level, "country": country.upper(), "deleted": True}, as_json, text="route deleted")


@route_cmd.command("list")
def route_list(as_json: JsonOpt = False) -> None:
    """Every route, and what serves levels and countries with none (the simulator, in sandbox mode)."""

    async def main(core: Core) -> dict[str, Any]:
        return {
            "routes": [_route_json(r) for r in await core.upstreams.routes()],
            "sandbox": core.settings.sandbox,
        }

    data = run(main)
    t = Table("level", "country", "upstreams (in order)")
    for r in data["routes"]:
        t.add_row(str(r["level"]), r["country"], " → ".join(r["upstreams"]))
    if data["sandbox"]:
        t.add_row("4, 5", "(no route)", "simulator (sandbox mode)")
    emit(data if as_json else data["routes"], as_json, t)


@report_cmd.command("margin")
def report_margin(
    since: Annotated[str | None, typer.Option(help="From this date (YYYY-MM-DD, local time) on.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Revenue from live results, what the upstream calls cost, and the margin, per upstream and
    country (per currency: nothing is converted)."""
    from numgate.cli.admin import _since
    from numgate.upstreams.margin import margin

    since_ms = _since(since)
    rows = run(lambda core: margin(core.db, since_ms))
    data: list[dict[str, Any]] = [
        {
            "upstream": r.upstream,
            "country": r.country or None,
            "currency": r.currency,
            "numbers": r.numbers,
            "revenue": str(to_decimal(r.revenue)),
            "calls": r.calls,
            "upstream_cost": str(to_decimal(r.cost)),
            "margin": str(to_decimal(r.margin)),
        }
        for r in rows
    ]
    t = Table("upstream", "country", "currency", "numbers", "revenue", "calls", "upstream cost", "margin")
    for d in data:
        t.add_row(
            d["upstream"],
            d["country"] or "",
            d["currency"],
            str(d["numbers"]),
            d["revenue"],
            str(d["calls"]),
            d["upstream_cost"],
            d["margin"],
        )
    emit(data, as_json, t)
