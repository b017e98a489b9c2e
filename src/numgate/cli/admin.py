"""``numgate admin``: accounts, access keys, apps, balances and prices."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from numgate.cli.common import JsonOpt, emit, fail, money, run, split_values, when, yes_no
from numgate.core import Core
from numgate.errors import AppNotFound, NumgateError
from numgate.ledger.money import parse_amount, to_decimal
from numgate.tenancy.operations import OPERATIONS, parse_allowed

admin = typer.Typer(
    help="Manage tenants (accounts, access keys, apps and CAMS spaces, WhatsApp numbers, balances, "
    "prices), console users, and the operator's upstreams, routes and reports.",
    no_args_is_help=True,
)
account_cmd = typer.Typer(help="Customer accounts.", no_args_is_help=True)
key_cmd = typer.Typer(help="Access keys (an account may hold several).", no_args_is_help=True)
app_cmd = typer.Typer(
    help="Apps (appkey; on the CAMS door the same object is a space, CustSpaceId).", no_args_is_help=True
)
balance_cmd = typer.Typer(help="Top-ups, balances and the ledger statement.", no_args_is_help=True)
price_cmd = typer.Typer(help="Prices per country and check level.", no_args_is_help=True)
admin.add_typer(account_cmd, name="account")
admin.add_typer(key_cmd, name="key")
admin.add_typer(app_cmd, name="app")
admin.add_typer(balance_cmd, name="balance")
admin.add_typer(price_cmd, name="price")


class CheckLevel(StrEnum):
    basic = "1"
    call = "4"
    hlr = "5"


LevelOpt = Annotated[CheckLevel, typer.Option(help="1 Basic, 4 Call, 5 HLR.")]


def _amount(text: str, field: str) -> int:
    try:
        return parse_amount(text, field=field)
    except NumgateError as exc:
        fail(str(exc))


# accounts ---------------------------------------------------------------------------------------


def _account_json(a: Any, keys: int | None = None, apps: int | None = None) -> dict[str, Any]:
    data = {
        "account_id": a.id,
        "name": a.name,
        "enabled": a.enabled,
        "integrator": a.integrator,
        "number_check": a.number_check,
        "whatsapp": a.whatsapp,
    }
    if keys is not None:
        data.update(keys=keys, apps=apps)
    return data


@account_cmd.command("create")
def account_create(
    name: str,
    integrator: Annotated[
        bool, typer.Option("--integrator", help="May call the WhatsApp integrator endpoints.")
    ] = False,
    number_check: Annotated[bool, typer.Option("--number-check/--no-number-check")] = True,
    whatsapp: Annotated[bool, typer.Option("--whatsapp/--no-whatsapp")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Create an account and its first access key; prints the account id, accessKey, accessSecret."""

    async def main(core: Core) -> dict[str, Any]:
        acct, creds = await core.tenancy.create_account(
            name, integrator=integrator, number_check=number_check, whatsapp=whatsapp
        )
        return _account_json(acct) | {"access_key": creds.access_key, "access_secret": creds.access_secret}

    data = run(main)
    emit(
        data,
        as_json,
        text=(
            f"account {data['account_id']} ({data['name']})\naccessKey    {data['access_key']}\n"
            f"accessSecret {data['access_secret']}\nKeep the secret: it is not shown again."
        ),
    )


@account_cmd.command("list")
def account_list(as_json: JsonOpt = False) -> None:
    """List accounts with their flags, enabled keys and apps."""
    rows = run(lambda core: core.tenancy.list_accounts())
    data: list[dict[str, Any]] = [_account_json(a, k, n) for a, k, n in rows]
    t = Table("id", "name", "enabled", "integrator", "number check", "whatsapp", "keys", "apps")
    for r in data:
        t.add_row(
            str(r["account_id"]),
            r["name"],
            yes_no(r["enabled"]),
            yes_no(r["integrator"]),
            yes_no(r["number_check"]),
            yes_no(r["whatsapp"]),
            str(r["keys"]),
            str(r["apps"]),
        )
    emit(data, as_json, t)


def _set_account(account_id: int, enabled: bool, as_json: bool) -> None:
    a = run(lambda core: core.tenancy.set_account_enabled(account_id, enabled))
    state = "enabled" if enabled else "disabled: its keys are refused on every door"
    emit(_account_json(a), as_json, text=f"account {a.id} ({a.name}) {state}")


@account_cmd.command("disable")
def account_disable(account_id: int, as_json: JsonOpt = False) -> None:
    """Disable an account: every one of its keys is refused (NXCloud 1005, CAMS
    InvalidAccessKeyId.Inactive) until it is enabled again. Nothing is deleted."""
    _set_account(account_id, False, as_json)


@account_cmd.command("enable")
def account_enable(account_id: int, as_json: JsonOpt = False) -> None:
    """Enable a disabled account again."""
    _set_account(account_id, True, as_json)


@account_cmd.command("update")
def account_update(
    account_id: int,
    integrator: Annotated[
        bool | None, typer.Option("--integrator/--no-integrator", help="The WhatsApp integrator endpoints.")
    ] = None,
    number_check: Annotated[
        bool | None, typer.Option("--number-check/--no-number-check", help="The Number Check business.")
    ] = None,
    whatsapp: Annotated[
        bool | None, typer.Option("--whatsapp/--no-whatsapp", help="The WhatsApp business.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Turn an account's businesses on or off (what is not given is unchanged)."""
    if integrator is None and number_check is None and whatsapp is None:
        fail(
            "nothing to change: give --integrator, --number-check or --whatsapp (or their --no- forms)",
            code=2,
        )
    a = run(
        lambda core: core.tenancy.set_businesses(
            account_id, integrator=integrator, number_check=number_check, whatsapp=whatsapp
        )
    )
    emit(_account_json(a), as_json, text=f"account {a.id} ({a.name}) updated")


# access keys ------------------------------------------------------------------------------------

ALLOW_HELP = (
    "An operation this key may call: repeat the option or separate names with commas; "
    "`numgate admin key operations` lists them (numbercheck:*, whatsapp:* for all of one business). "
    "Default: every operation."
)


@key_cmd.command("create")
def key_create(
    account_id: int,
    allow: Annotated[list[str] | None, typer.Option(metavar="OPERATION", help=ALLOW_HELP)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create another access key for an account (its secret is shown once)."""
    try:
        allowed = parse_allowed(split_values(allow)) if allow else None
    except NumgateError as exc:
        fail(str(exc))
    creds = run(lambda core: core.tenancy.create_key(account_id, allowed))
    data = {
        "account_id": creds.account_id,
        "access_key": creds.access_key,
        "access_secret": creds.access_secret,
        "allowed": allowed,
    }
    scope = ", ".join(allowed) if allowed else "every operation"
    emit(
        data,
        as_json,
        text=f"accessKey    {creds.access_key}\naccessSecret {creds.access_secret}\nallowed      {scope}",
    )


@key_cmd.command("list")
def key_list(
    account_id: Annotated[int | None, typer.Argument(help="Only this account's keys.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List access keys (never their secrets): account, enabled, allowed operations, created."""
    keys = run(lambda core: core.tenancy.list_keys(account_id))
    data: list[dict[str, Any]] = [
        {
            "access_key": k.access_key,
            "account_id": k.account_id,
            "enabled": k.enabled,
            "allowed": k.allowed,
            "created": when(k.created_ms),
        }
        for k in keys
    ]
    t = Table("access key", "account", "enabled", "allowed", "created")
    for r in data:
        t.add_row(
            r["access_key"],
            str(r["account_id"]),
            yes_no(r["enabled"]),
            ", ".join(r["allowed"]) if r["allowed"] is not None else "every operation",
            r["created"],
        )
    emit(data, as_json, t)


def _set_key(access_key: str, enabled: bool, as_json: bool) -> None:
    run(lambda core: core.tenancy.set_key_enabled(access_key, enabled))
    emit(
        {"access_key": access_key, "enabled": enabled},
        as_json,
        text=f"{'enabled' if enabled else 'disabled'} {access_key}",
    )


@key_cmd.command("disable")
def key_disable(access_key: str, as_json: JsonOpt = False) -> None:
    """Disable an access key: requests signed with it get 1005 (NXCloud) or
    InvalidAccessKeyId.Inactive (CAMS)."""
    _set_key(access_key, False, as_json)


@key_cmd.command("enable")
def key_enable(access_key: str, as_json: JsonOpt = False) -> None:
    """Enable a disabled access key again."""
    _set_key(access_key, True, as_json)


@key_cmd.command("operations")
def key_operations(as_json: JsonOpt = False) -> None:
    """The operation names `key create --allow` takes, with the door endpoints each covers."""
    data: list[dict[str, Any]] = [
        {"operation": op.name, "business": op.business.value, "what": op.summary, "aliases": list(op.aliases)}
        for op in OPERATIONS
    ]
    t = Table("operation", "business", "what", "also accepted as")
    for r in data:
        t.add_row(r["operation"], r["business"], r["what"], ", ".join(r["aliases"]))
    emit(data, as_json, t)


# apps -------------------------------------------------------------------------------------------


def _app_json(a: Any) -> dict[str, Any]:
    return {
        "app_id": a.id,
        "account_id": a.account_id,
        "appkey": a.appkey,
        "name": a.name,
        "callback_url": a.callback_url,
        "callback_batch": a.callback_batch,
        "max_age_s": a.max_age_s,
    }


@app_cmd.command("create")
def app_create(
    account_id: int,
    name: str,
    callback_url: Annotated[
        str | None, typer.Option(help="Default callback URL for this app's results (http or https).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an app for an account; prints the app id and appkey."""
    a = run(lambda core: core.tenancy.create_app(account_id, name, callback_url, url_field="--callback-url"))
    emit(_app_json(a), as_json, text=f"app {a.id} ({a.name})\nappkey {a.appkey}")


@app_cmd.command("list")
def app_list(account_id: int, as_json: JsonOpt = False) -> None:
    """List an account's apps."""
    apps = run(lambda core: core.tenancy.list_apps(account_id))
    data = [_app_json(a) for a in apps]
    t = Table("id", "appkey", "name", "callback URL")
    for r in data:
        t.add_row(str(r["app_id"]), r["appkey"], r["name"], r["callback_url"] or "")
    emit(data, as_json, t)


@app_cmd.command("update")
def app_update(
    appkey: str,
    callback_url: Annotated[
        str | None, typer.Option(help="New default callback URL (http or https).")
    ] = None,
    no_callback_url: Annotated[
        bool, typer.Option("--no-callback-url", help="Remove the default callback URL.")
    ] = False,
    callback_batch: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=1000,
            help="Callbacks per POST: 1 (NXCloud's one per number, the default) or up to 1,000 in one "
            "JSON array (docs/numbercheck.md, 'Batched callbacks').",
        ),
    ] = None,
    max_age: Annotated[
        int | None,
        typer.Option(
            metavar="SECONDS",
            min=0,
            max=30 * 86_400,
            help="How old a cached HLR or call result this app accepts when a submit does not say "
            "(maxAge); 0 (the default) = always live (docs/upstreams.md, 'Cache').",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change an app's settings: its default callback URL, its callbacks per POST, the age of a
    cached result it accepts."""
    if callback_url is None and not no_callback_url and callback_batch is None and max_age is None:
        fail(
            "nothing to change: give --callback-url URL, --no-callback-url, --callback-batch N or --max-age S"
        )
    if callback_url is not None and no_callback_url:
        fail("give --callback-url or --no-callback-url, not both")

    async def main(core: Core) -> Any:
        a = await core.tenancy.find_app(appkey)
        if callback_url is not None or no_callback_url:
            a = await core.tenancy.set_callback_url(appkey, callback_url, "--callback-url")
        if callback_batch is not None:
            a = await core.tenancy.set_callback_batch(appkey, callback_batch)
        if max_age is not None:
            a = await core.tenancy.set_max_age(appkey, max_age)
        if a is None:
            raise AppNotFound(f"no app with appkey {appkey!r}")
        return a

    a = run(main)
    emit(
        _app_json(a),
        as_json,
        text=f"app {a.appkey}: callback URL {a.callback_url or '(none)'}, "
        f"{a.callback_batch} callback(s) per POST, cached results up to {a.max_age_s} s old",
    )


@app_cmd.command("delete")
def app_delete(appkey: str, as_json: JsonOpt = False) -> None:
    """Delete an app: its appkey stops working on every door (202 / Unknown.ResourceOwnerId) and is
    not reused; its batches and results stay. Refused while WhatsApp numbers are attached."""
    a = run(lambda core: core.tenancy.delete_app(appkey, core.waba.app_has_numbers))
    emit(_app_json(a) | {"deleted": True}, as_json, text=f"deleted app {a.appkey} ({a.name})")


@app_cmd.command("secret")
def app_secret(appkey: str, as_json: JsonOpt = False) -> None:
    """Print an app's callback-signing secret (to verify X-Numgate-Signature on your receiver)."""

    async def main(core: Core) -> str:
        app = await core.tenancy.find_app(appkey)
        if app is None:
            raise AppNotFound(f"no app with appkey {appkey!r}")
        return await core.tenancy.app_secret(app.id)

    secret = run(main)
    emit({"appkey": appkey, "secret": secret}, as_json, text=secret)


# money ------------------------------------------------------------------------------------------


def _balances_json(bals: list[Any]) -> list[dict[str, Any]]:
    out = []
    for b in bals:
        row = {
            "currency": b.currency,
            "balance": money(b.balance),
            "topups": money(b.topups),
            "charges": money(b.charges),
            "open_reservations": money(b.open_reservations),
        }
        if b.available is not None and b.available != b.balance:
            # the projection disagrees with the entries: say so (the entries are the record)
            row["projection_differs"] = money(b.available)
        out.append(row)
    return out


@balance_cmd.command("topup")
def balance_topup(
    account_id: int,
    amount: str,
    currency: Annotated[str, typer.Option(help="ISO 4217 code.")] = "USD",
    note: Annotated[str | None, typer.Option(help="Free text kept with the ledger entry.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add money to an account (an append-only ledger entry)."""
    units = _amount(amount, "amount")
    bal = run(lambda core: core.ledger.topup(account_id, units, currency, note))
    data = _balances_json([bal])[0] | {"account_id": account_id}
    emit(data, as_json, text=f"balance {data['balance']} {bal.currency}")


@balance_cmd.command("show")
def balance_show(account_id: int, as_json: JsonOpt = False) -> None:
    """Balances per currency, reconciled from the ledger: balance = top-ups − charges − open
    reservations (a warning column appears if the kept balance ever disagrees with the entries)."""
    rows = _balances_json(run(lambda core: core.ledger.balances(account_id)))
    t = Table("currency", "balance", "top-ups", "charges", "open reservations")
    for r in rows:
        t.add_row(r["currency"], r["balance"], r["topups"], r["charges"], r["open_reservations"])
        if "projection_differs" in r:
            t.add_row("", f"[red]kept balance {r['projection_differs']} differs[/]", "", "", "")
    emit(rows, as_json, t)


def _since(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        day = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--since must be a date or time in ISO-8601 (2026-11-01, 2026-11-01T08:00), got {value!r}")
    if day.tzinfo is None:
        day = day.astimezone()  # the local zone, as the statement shows times
    return int(day.astimezone(UTC).timestamp() * 1000)


@balance_cmd.command("statement")
def balance_statement(
    account_id: int,
    currency: Annotated[str | None, typer.Option(help="Only this currency (ISO 4217).")] = None,
    since: Annotated[
        str | None, typer.Option(help="From this date or time (ISO-8601, local zone unless given).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many entries.")] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """The ledger, oldest first: top-ups, reservations, charges and releases, each with the
    spendable balance after it (a charge consumes money reserved at submit, so it moves nothing)."""
    lines = run(
        lambda core: core.ledger.statement(account_id, currency=currency, since_ms=_since(since), limit=limit)
    )
    data: list[dict[str, Any]] = [
        {
            "entry": ln.id,
            "time": when(ln.at_ms),
            "kind": ln.kind,
            "amount": money(ln.amount),
            "change": money(ln.change),
            "balance": money(ln.balance),
            "currency": ln.currency,
            "batch": ln.batch,
            "note": ln.note,
        }
        for ln in lines
    ]
    t = Table("time", "kind", "amount", "change", "balance", "currency", "batch (messageId)", "note")
    for r in data:
        t.add_row(
            r["time"],
            r["kind"],
            r["amount"],
            r["change"],
            r["balance"],
            r["currency"],
            r["batch"] or "",
            r["note"] or "",
        )
    emit(data, as_json, t)


def _price_json(p: Any, appkeys: dict[int, str]) -> dict[str, Any]:
    return {
        "country": p.country,
        "level": p.level,
        "price": str(to_decimal(p.price)),
        "cached_price": str(to_decimal(p.cached_price)) if p.cached_price is not None else None,
        "currency": p.currency,
        "account_id": p.account_id or None,
        "appkey": appkeys.get(p.app_id) if p.app_id else None,
    }


async def _appkeys(core: Core, account_ids: set[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for account_id in account_ids:
        out |= {a.id: a.appkey for a in await core.tenancy.list_apps(account_id)}
    return out


@price_cmd.command("set")
def price_set(
    country: Annotated[str, typer.Option(help="ISO 3166 alpha-2 code of a numbering region, e.g. NG.")],
    level: LevelOpt,
    price: Annotated[str, typer.Option(help="Price per number, up to 4 decimals.")],
    cached_price: Annotated[
        str | None,
        typer.Option(
            help="Levels 4 and 5: the price of a result served from the cache (at most --price); "
            "unset, a cached result costs the full price."
        ),
    ] = None,
    currency: Annotated[str, typer.Option(help="ISO 4217 code.")] = "USD",
    account: Annotated[
        int | None, typer.Option(help="Only for this account (default: every account).")
    ] = None,
    app: Annotated[
        str | None, typer.Option(metavar="APPKEY", help="Only for this app (it beats the account's price).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Set the price of one check level in one country: numgate's default, an account's, or an app's.
    A number is priced with its app's price, else its account's, else the default."""
    units = _amount(price, "price")
    cached = _amount(cached_price, "cached price") if cached_price is not None else None

    async def main(core: Core) -> dict[str, Any]:
        account_id, app_id = account or 0, 0
        if app is not None:
            a = await core.tenancy.find_app(app)
            if a is None:
                raise AppNotFound(f"no app with appkey {app!r}")
            if account is not None and a.account_id != account:
                raise AppNotFound(f"app {app} is not account {account}'s")
            account_id, app_id = a.account_id, a.id
        p = await core.ledger.set_price(
            country=country,
            level=int(level.value),
            price=units,
            currency=currency,
            account_id=account_id,
            app_id=app_id,
            cached_price=cached,
        )
        return _price_json(p, {app_id: app} if app else {})

    data = run(main)
    scope = f"app {app}" if app else f"account {account}" if account else "default"
    emit(
        data,
        as_json,
        text=f"{data['country']} level {data['level']}: {data['price']} {data['currency']} ({scope})",
    )


@price_cmd.command("list")
def price_list(
    account: Annotated[int | None, typer.Option(help="Prices that apply to this account.")] = None,
    app: Annotated[str | None, typer.Option(metavar="APPKEY", help="Prices that apply to this app.")] = None,
    country: Annotated[str | None, typer.Option(help="Only this country (ISO 3166 alpha-2).")] = None,
    level: Annotated[CheckLevel | None, typer.Option(help="Only this level: 1, 4 or 5.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1_000_000, help="At most this many rows.")] = 200,
    as_json: JsonOpt = False,
) -> None:
    """List prices (default, account and app scopes), filtered."""

    async def main(core: Core) -> list[dict[str, Any]]:
        account_id, app_id = account, None
        if app is not None:
            a = await core.tenancy.find_app(app)
            if a is None:
                raise AppNotFound(f"no app with appkey {app!r}")
            account_id, app_id = a.account_id, a.id
        ps = await core.ledger.list_prices(
            account_id,
            app_id=app_id,
            country=country,
            level=int(level.value) if level else None,
            limit=limit,
        )
        keys = await _appkeys(core, {p.account_id for p in ps if p.app_id})
        return [_price_json(p, keys) for p in ps]

    rows = run(main)
    t = Table("country", "level", "price", "cached", "currency", "account", "app")
    for r in rows:
        t.add_row(
            r["country"],
            str(r["level"]),
            r["price"],
            r["cached_price"] or "",
            r["currency"],
            str(r["account_id"] or "default"),
            r["appkey"] or "",
        )
    emit(rows, as_json, t)
