"""numgate's one entry point: serve, worker, migrate, demo, check, admin …, deliveries …, sandbox …"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from numgate import __version__, logs
from numgate.core import Core, open_core
from numgate.errors import NotFound, NumgateError
from numgate.ledger.money import parse_amount, to_decimal
from numgate.settings import Settings

T = TypeVar("T")

app = typer.Typer(
    name="numgate",
    help="numgate: a self-hostable phone-number verification gateway (NXCloud and Alibaba CAMS wire APIs).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
admin = typer.Typer(
    help="Manage tenants: accounts, access keys, apps and CAMS spaces, WhatsApp numbers, balances, prices.",
    no_args_is_help=True,
)
account_cmd = typer.Typer(help="Customer accounts.", no_args_is_help=True)
key_cmd = typer.Typer(help="Access keys (an account may hold several).", no_args_is_help=True)
app_cmd = typer.Typer(
    help="Apps (appkey; on the CAMS door the same object is a space, CustSpaceId).", no_args_is_help=True
)
balance_cmd = typer.Typer(help="Top-ups and balances (the ledger).", no_args_is_help=True)
price_cmd = typer.Typer(help="Prices per country and check level.", no_args_is_help=True)
deliveries_cmd = typer.Typer(help="The callback delivery log.", no_args_is_help=True)
app.add_typer(admin, name="admin")
admin.add_typer(account_cmd, name="account")
admin.add_typer(key_cmd, name="key")
admin.add_typer(app_cmd, name="app")
admin.add_typer(balance_cmd, name="balance")
admin.add_typer(price_cmd, name="price")
app.add_typer(deliveries_cmd, name="deliveries")

out = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


def settings() -> Settings:
    try:
        return Settings.from_env()
    except NumgateError as exc:
        fail(str(exc))


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def run(fn: Callable[[Core], Awaitable[T]]) -> T:
    """Open the core (schema must be current), run ``fn``, close; errors become one clean line."""

    async def main() -> T:
        core = await open_core(settings())
        try:
            return await fn(core)
        finally:
            await core.close()

    return run_async(main())


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except NumgateError as exc:
        fail(str(exc))


def emit(data: Any, as_json: bool, table: Table | None = None, text: str | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    elif table is not None:
        out.print(table)
    elif text is not None:
        out.print(text, highlight=False)


# serving ---------------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default NUMGATE_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default NUMGATE_PORT or 8080).")] = None,
    workers: Annotated[
        bool,
        typer.Option(
            "--workers/--no-workers",
            help="Run check and delivery workers in this process (with their classifier and sender "
            "helper processes: NUMGATE_CHECK_PROCESSES, NUMGATE_CALLBACK_PROCESSES).",
        ),
    ] = True,
) -> None:
    """Serve the NXCloud and CAMS doors over HTTP (uvicorn). Refuses to start on an old schema."""
    s = settings()
    s = s.with_overrides(
        host=host or s.host, port=port or s.port, inprocess_workers=workers and s.inprocess_workers
    )
    _serve(s)


def _serve(s: Settings) -> None:
    import uvicorn

    from numgate.app import create_app
    from numgate.db.engine import create_engine
    from numgate.db.migrate import ensure_current

    logs.configure(s.log_level)

    async def check() -> None:
        engine = create_engine(s.resolved_database_url)
        try:
            await ensure_current(engine)
        finally:
            await engine.dispose()

    run_async(check())
    config = uvicorn.Config(
        create_app(s),
        host=s.host,
        port=s.port,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    err.print(
        f"numgate {__version__} listening on http://{s.host}:{s.port} (sandbox={s.sandbox})", highlight=False
    )
    uvicorn.Server(config).run()


@app.command()
def worker(
    drain: Annotated[bool, typer.Option(help="Process what is due now, then exit.")] = False,
    only: Annotated[str | None, typer.Option(help="Comma-separated: checks, deliveries.")] = None,
) -> None:
    """Run check and delivery workers as a separate process (several may run against PostgreSQL).

    Each starts classifier and sender helpers (NUMGATE_CHECK_PROCESSES, NUMGATE_CALLBACK_PROCESSES).

    With several workers on a small machine, set both to 0."""
    s = settings()
    logs.configure(s.log_level)
    names = {n.strip() for n in only.split(",")} if only else None

    async def main(core: Core) -> None:
        if drain:
            from numgate.delivery.worker import drain as drain_deliveries
            from numgate.numbers.worker import drain as drain_checks

            n = await drain_checks(core) if names is None or "checks" in names else 0
            m = await drain_deliveries(core) if names is None or "deliveries" in names else 0
            err.print(f"checked {n} number(s), attempted {m} callback(s)")
            return
        import signal

        from numgate.jobs.runner import WorkerSet

        ws = WorkerSet(core, names)
        await ws.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        err.print("numgate worker running; Ctrl-C to stop")
        await stop.wait()
        await ws.stop()

    run(main)


@app.command()
def migrate() -> None:
    """Apply database migrations (creates the SQLite file under NUMGATE_DATA_DIR by default)."""
    from numgate.db.engine import create_engine
    from numgate.db.migrate import current_revisions, upgrade

    s = settings()

    async def main() -> set[str]:
        engine = create_engine(s.resolved_database_url)
        try:
            await upgrade(engine)
            return await current_revisions(engine)
        finally:
            await engine.dispose()

    revs = run_async(main())
    err.print(
        f"database is at {', '.join(sorted(revs))} ({_redact(s.resolved_database_url)})", highlight=False
    )


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command()
def demo(
    serve_after: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve after printing the keys.")
    ] = True,
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Migrate, create the demo tenant the first time, print its keys and an example, then serve."""
    from numgate.demo import ensure_demo, example_text

    migrate()
    s = settings()
    s = s.with_overrides(host=host or s.host, port=port or s.port)
    info = run(ensure_demo)
    if as_json:
        emit(info, True)
    else:
        sys.stdout.write(example_text(info, f"http://{s.host}:{s.port}"))
        sys.stdout.flush()
    if serve_after:
        _serve(s)


@app.command()
def check(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV, or one number per line.")],
    level: Annotated[int, typer.Option(help="1 Basic (offline), 4 Call, 5 HLR (through the providers).")] = 1,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="OUT.csv or OUT.jsonl (default: CSV on stdout).")
    ] = None,
) -> None:
    """Check every number of a file and write one row per number (bounded memory, progress on stderr).

    No server and no database are needed: Basic runs libphonenumber offline; Call and HLR use the
    configured providers (the simulator in sandbox mode)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from numgate.numbers.filecheck import check_file, count_items
    from numgate.numbers.providers import simulator
    from numgate.numbers.results import Level

    if level not in (1, 4, 5):
        fail("--level must be 1 (Basic), 4 (Call) or 5 (HLR)")
    fmt = "jsonl" if output is not None and output.suffix == ".jsonl" else "csv"
    if output is not None and output.suffix not in (".csv", ".jsonl"):
        fail("-o must end in .csv or .jsonl")
    total = count_items(file)
    sink = output.open("w", newline="", encoding="utf-8") if output is not None else sys.stdout
    columns = [
        TextColumn("checking"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8.0f}/s"),
        TimeRemainingColumn(),
    ]
    try:
        with Progress(*columns, console=err, transient=output is None) as bar:
            task = bar.add_task("check", total=total, rate=0.0)

            def advance(n: int) -> None:
                bar.advance(task, n)
                t = bar.tasks[0]
                bar.update(task, rate=(t.completed / t.elapsed) if t.elapsed else 0.0)

            counts = asyncio.run(check_file(file, sink, fmt, Level(level), simulator(), advance))
    finally:
        if output is not None:
            sink.close()
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    err.print(f"checked {sum(counts.values())} number(s): {summary or 'none'}", highlight=False)


# admin: accounts and keys -------------------------------------------------------------------------


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
        return {
            "account_id": acct.id,
            "name": acct.name,
            "integrator": acct.integrator,
            "number_check": acct.number_check,
            "whatsapp": acct.whatsapp,
            "access_key": creds.access_key,
            "access_secret": creds.access_secret,
        }

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

    async def main(core: Core) -> list[dict[str, Any]]:
        return [
            {
                "account_id": a.id,
                "name": a.name,
                "integrator": a.integrator,
                "number_check": a.number_check,
                "whatsapp": a.whatsapp,
                "keys": k,
                "apps": n,
            }
            for a, k, n in await core.tenancy.list_accounts()
        ]

    rows = run(main)
    t = Table("id", "name", "integrator", "number check", "whatsapp", "keys", "apps")
    for r in rows:
        t.add_row(
            str(r["account_id"]),
            r["name"],
            _yn(r["integrator"]),
            _yn(r["number_check"]),
            _yn(r["whatsapp"]),
            str(r["keys"]),
            str(r["apps"]),
        )
    emit(rows, as_json, t)


def _yn(v: bool) -> str:
    return "yes" if v else "no"


@key_cmd.command("create")
def key_create(
    account_id: int,
    allow: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated actions this key may call "
            "(e.g. GetPhoneNumberVerificationStatus); default all."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create another access key for an account."""
    allowed = [a.strip() for a in allow.split(",") if a.strip()] if allow else None
    creds = run(lambda core: core.tenancy.create_key(account_id, allowed))
    data = {
        "account_id": creds.account_id,
        "access_key": creds.access_key,
        "access_secret": creds.access_secret,
        "allowed_actions": allowed,
    }
    emit(data, as_json, text=f"accessKey    {creds.access_key}\naccessSecret {creds.access_secret}")


@key_cmd.command("disable")
def key_disable(access_key: str, as_json: JsonOpt = False) -> None:
    """Disable an access key: requests signed with it get 1005 (NXCloud) / 404 (CAMS)."""
    run(lambda core: core.tenancy.disable_key(access_key))
    emit({"access_key": access_key, "enabled": False}, as_json, text=f"disabled {access_key}")


# admin: apps --------------------------------------------------------------------------------------


@app_cmd.command("create")
def app_create(
    account_id: int,
    name: str,
    callback_url: Annotated[
        str | None, typer.Option(help="Default callback URL for this app's results.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an app for an account; prints the app id and appkey."""
    from numgate.numbers.service import validate_callback_url

    if callback_url:
        try:
            validate_callback_url(callback_url)
        except NumgateError as exc:
            fail(str(exc))
    a = run(lambda core: core.tenancy.create_app(account_id, name, callback_url))
    data = {
        "app_id": a.id,
        "account_id": a.account_id,
        "appkey": a.appkey,
        "name": a.name,
        "callback_url": a.callback_url,
    }
    emit(data, as_json, text=f"app {a.id} ({a.name})\nappkey {a.appkey}")


@app_cmd.command("list")
def app_list(account_id: int, as_json: JsonOpt = False) -> None:
    """List an account's apps."""
    apps = run(lambda core: core.tenancy.list_apps(account_id))
    rows = [
        {"app_id": a.id, "appkey": a.appkey, "name": a.name, "callback_url": a.callback_url} for a in apps
    ]
    t = Table("id", "appkey", "name", "callback URL")
    for r in rows:
        t.add_row(str(r["app_id"]), str(r["appkey"]), str(r["name"]), str(r["callback_url"] or ""))
    emit(rows, as_json, t)


@app_cmd.command("secret")
def app_secret(appkey: str, as_json: JsonOpt = False) -> None:
    """Print an app's callback-signing secret (to verify X-Numgate-Signature on your receiver)."""

    async def main(core: Core) -> str:
        app = await core.tenancy.find_app(appkey)
        if app is None:
            raise NotFound(f"no app with appkey {appkey!r}")
        return await core.tenancy.app_secret(app.id)

    secret = run(main)
    emit({"appkey": appkey, "secret": secret}, as_json, text=secret)


# admin: money ---------------------------------------------------------------------------------


def _balances_json(bals: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "currency": b.currency,
            "balance": str(to_decimal(b.balance)),
            "topups": str(to_decimal(b.topups)),
            "charges": str(to_decimal(b.charges)),
            "open_reservations": str(to_decimal(b.open_reservations)),
        }
        for b in bals
    ]


@balance_cmd.command("topup")
def balance_topup(
    account_id: int,
    amount: str,
    currency: Annotated[str, typer.Option(help="ISO 4217 code.")] = "USD",
    note: Annotated[str | None, typer.Option(help="Free text kept with the ledger entry.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add money to an account (an append-only ledger entry)."""
    try:
        units = parse_amount(amount)
    except NumgateError as exc:
        fail(str(exc))
    bal = run(lambda core: core.ledger.topup(account_id, units, currency, note))
    data = _balances_json([bal])[0] | {"account_id": account_id}
    emit(data, as_json, text=f"balance {data['balance']} {bal.currency}")


@balance_cmd.command("show")
def balance_show(account_id: int, as_json: JsonOpt = False) -> None:
    """Balances per currency, reconciled: balance = top-ups − charges − open reservations."""
    rows = _balances_json(run(lambda core: core.ledger.balances(account_id)))
    t = Table("currency", "balance", "top-ups", "charges", "open reservations")
    for r in rows:
        t.add_row(r["currency"], r["balance"], r["topups"], r["charges"], r["open_reservations"])
    emit(rows, as_json, t)


@price_cmd.command("set")
def price_set(
    country: Annotated[str, typer.Option(help="ISO 3166 alpha-2 code, e.g. NG.")],
    level: Annotated[int, typer.Option(help="1 Basic, 4 Call, 5 HLR.")],
    price: Annotated[str, typer.Option(help="Price per number, up to 4 decimals.")],
    currency: Annotated[str, typer.Option(help="ISO 4217 code.")] = "USD",
    account: Annotated[
        int | None, typer.Option(help="Only for this account (default: every account).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Set the price of one check level in one country (per account, or the default for all)."""
    try:
        units = parse_amount(price, field="price")
    except NumgateError as exc:
        fail(str(exc))
    p = run(
        lambda core: core.ledger.set_price(
            country=country, level=level, price=units, currency=currency, account_id=account or 0
        )
    )
    data = {
        "country": p.country,
        "level": p.level,
        "price": str(to_decimal(p.price)),
        "currency": p.currency,
        "account_id": p.account_id or None,
    }
    emit(
        data,
        as_json,
        text=f"{p.country} level {p.level}: {data['price']} {p.currency}"
        + (f" (account {account})" if account else " (default)"),
    )


@price_cmd.command("list")
def price_list(
    account: Annotated[int | None, typer.Option(help="Prices that apply to this account.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List prices."""
    ps = run(lambda core: core.ledger.list_prices(account))
    rows = [
        {
            "country": p.country,
            "level": p.level,
            "price": str(to_decimal(p.price)),
            "currency": p.currency,
            "account_id": p.account_id or None,
            "app_id": p.app_id or None,
        }
        for p in ps
    ]
    t = Table("country", "level", "price", "currency", "account", "app")
    for r in rows:
        t.add_row(
            str(r["country"]),
            str(r["level"]),
            str(r["price"]),
            str(r["currency"]),
            str(r["account_id"] or "default"),
            str(r["app_id"] or ""),
        )
    emit(rows, as_json, t)


# deliveries -------------------------------------------------------------------------------------


@deliveries_cmd.command("list")
def deliveries_list(
    account: Annotated[int | None, typer.Option(help="Only this account's callbacks.")] = None,
    status: Annotated[str | None, typer.Option(help="pending, delivered or failed.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Callbacks with their attempts, status, latency and last error."""
    from numgate.delivery.log import list_deliveries

    rows = run(lambda core: list_deliveries(core, account_id=account, status=status, limit=limit))
    t = Table("delivery id", "status", "attempts", "last HTTP", "ms", "url", "last error")
    for r in rows:
        t.add_row(
            r["delivery_id"],
            r["status"],
            str(r["attempts"]),
            str(r["last_status"] or ""),
            str(r["last_latency_ms"] if r["last_latency_ms"] is not None else ""),
            r["url"],
            (r["last_error"] or "")[:60],
        )
    emit(rows, as_json, t)


@deliveries_cmd.command("show")
def deliveries_show(delivery_id: str, as_json: JsonOpt = False) -> None:
    """One callback: its log and the exact body sent."""
    from numgate.delivery.log import get_delivery

    row = run(lambda core: get_delivery(core, delivery_id))
    emit(row, as_json, text="\n".join(f"{k:16} {v}" for k, v in row.items()))


# the WhatsApp commands register themselves on ``admin`` and ``app``
from numgate import cli_whatsapp  # noqa: E402,F401


def main() -> None:
    app()
