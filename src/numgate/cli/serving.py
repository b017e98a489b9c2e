"""``numgate serve``, ``worker``, ``migrate`` and ``demo``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from enum import StrEnum
from typing import Annotated, Any

import typer

from numgate import __version__, logs
from numgate.cli.common import EXIT_SETUP, JsonOpt, err, fail, redacted_url, run, run_async, settings
from numgate.core import Core
from numgate.metrics import share as share_metrics
from numgate.settings import Settings


class WorkerName(StrEnum):
    checks = "checks"
    deliveries = "deliveries"


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(worker)
    app.command()(migrate)
    app.command()(demo)


def serve(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default NUMGATE_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default NUMGATE_PORT or 8080).")
    ] = None,
    workers: Annotated[
        bool,
        typer.Option(
            "--workers/--no-workers",
            help="Run check and delivery workers in this process (with their classifier and sender "
            "helper processes: NUMGATE_CHECK_PROCESSES, NUMGATE_CALLBACK_PROCESSES).",
        ),
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Serve the NXCloud and CAMS doors over HTTP. Checks the configuration, the database (it must
    exist and be migrated) and the port first: a problem is one line and exit code 2, and nothing
    says "listening" until numgate listens. SIGTERM drains for NUMGATE_DRAIN seconds (10)."""
    s = settings()
    s = s.with_overrides(
        host=host or s.host, port=port or s.port, inprocess_workers=workers and s.inprocess_workers
    )
    start_server(s, as_json)


def _preflight(s: Settings) -> None:
    """Open the core once, as the server will (schema, master key, upstream settings), and close."""

    async def check(core: Core) -> None:
        return None

    run(check)


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        fail(
            f"cannot listen on {host}:{port}: {reason} — another program may hold the port; choose one "
            "with --port or NUMGATE_PORT, or the address with --host or NUMGATE_HOST",
            EXIT_SETUP,
        )
    sock.set_inheritable(True)
    return sock


def start_server(s: Settings, as_json: bool = False) -> None:
    from numgate.app import create_app, describe_serving
    from numgate.web.server import NumgateServer, uvicorn_config

    logs.configure(s.log_level)
    share_metrics(s.resolved_metrics_dir)
    _preflight(s)
    sock = _bind(s.host, s.port)
    url = f"http://{s.host}:{s.port}"

    def listening() -> None:
        if as_json:
            line = {
                "event": "listening",
                "url": url,
                "version": __version__,
                "sandbox": s.sandbox,
                "upstreams": app.serving,
            }
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
        else:
            err.print(f"numgate {__version__} listening on {url} (sandbox={s.sandbox})", highlight=False)
            err.print(f"upstreams — {describe_serving(app.serving)}", highlight=False)

    app = create_app(s)
    server = NumgateServer(uvicorn_config(app, s), on_listening=listening, on_shutdown=app.begin_shutdown)
    server.run(sockets=[sock])
    if not server.started:  # the application failed to start (its log line says why)
        raise typer.Exit(EXIT_SETUP)


def _worker_names(values: list[str] | None) -> set[str] | None:
    if not values:
        return None
    names = {v.strip() for value in values for v in value.split(",") if v.strip()}
    valid = {w.value for w in WorkerName}
    unknown = sorted(names - valid)
    if unknown:
        raise typer.BadParameter(f"{', '.join(unknown)}: choose from {', '.join(sorted(valid))}")
    return names


def worker(
    drain: Annotated[bool, typer.Option("--drain", help="Process what is due now, then exit.")] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            metavar="checks|deliveries",
            help="Run only these workers: checks, deliveries (repeat the option or separate with commas).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run check and delivery workers as a separate process (several may run against PostgreSQL).

    Each starts classifier and sender helpers (NUMGATE_CHECK_PROCESSES, NUMGATE_CALLBACK_PROCESSES).
    With several workers on a small machine, set both to 0."""
    try:
        names = _worker_names(only)
    except typer.BadParameter as exc:
        fail(f"--only: {exc}", EXIT_SETUP)
    s = settings()
    logs.configure(s.log_level)
    share_metrics(s.resolved_metrics_dir)

    async def main(core: Core) -> dict[str, Any]:
        if drain:
            from numgate.delivery.worker import drain as drain_deliveries
            from numgate.numbers.worker import drain as drain_checks

            n = await drain_checks(core) if names is None or "checks" in names else 0
            m = await drain_deliveries(core) if names is None or "deliveries" in names else 0
            return {"checked": n, "callbacks_attempted": m}
        from numgate.jobs.runner import WorkerSet

        ws = WorkerSet(core, names)
        await ws.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        running = sorted(names or {w.value for w in WorkerName})
        if as_json:
            sys.stdout.write(json.dumps({"event": "running", "workers": running}) + "\n")
            sys.stdout.flush()
        else:
            err.print(f"numgate worker running ({', '.join(running)}); Ctrl-C to stop")
        await stop.wait()
        await ws.stop(timeout=s.drain_s)
        return {"stopped": True}

    result = run(main)
    if drain:
        if as_json:
            sys.stdout.write(json.dumps(result) + "\n")
        else:
            n, m = result["checked"], result["callbacks_attempted"]
            err.print(f"checked {n} number(s), attempted {m} callback(s)")


def _tighten(s: Settings) -> None:
    """The data directory 0700 and its files 0600: secrets and customers' numbers live there."""
    from numgate.db.engine import sqlite_path

    path = sqlite_path(s.resolved_database_url)
    for p in (s.data_dir, path.parent if path is not None else None):
        if p is not None and p.is_dir() and p.stat().st_uid == os.getuid():
            p.chmod(0o700)
    names = ["secret.key"]
    for f in [s.data_dir / n for n in names] + (
        [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")] if path else []
    ):
        if f.is_file() and f.stat().st_uid == os.getuid():
            f.chmod(0o600)


def migrate(as_json: JsonOpt = False) -> None:
    """Apply database migrations; creates the database (SQLite: <NUMGATE_DATA_DIR>/numgate.db, a
    directory readable only by its owner) when there is none yet."""
    from numgate.db.engine import create_engine, prepare_sqlite_file, sqlite_path
    from numgate.db.migrate import current_revisions, upgrade

    s = settings()
    url = s.resolved_database_url
    path = sqlite_path(url)
    created = path is not None and not path.exists()
    if path is not None:
        prepare_sqlite_file(path)

    async def main() -> set[str]:
        engine = create_engine(url, timeout_s=s.db_timeout_s)
        try:
            await upgrade(engine)
            return await current_revisions(engine)
        finally:
            await engine.dispose()

    revs = run_async(main())
    _preflight(s)  # the master key: generated now, the first time, with its warning to back it up
    _tighten(s)
    data = {"database": redacted_url(url), "revisions": sorted(revs), "created": created}
    if as_json:
        sys.stdout.write(json.dumps(data) + "\n")
    else:
        made = "created; " if created else ""
        err.print(f"database {made}at {', '.join(sorted(revs))} ({data['database']})", highlight=False)


def demo(
    serve_after: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve after printing the keys.")
    ] = True,
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Migrate, create the demo tenant the first time, print its keys and an example, then serve."""
    from numgate.demo import ensure_demo, example_text

    migrate(as_json=False)
    s = settings()
    s = s.with_overrides(host=host or s.host, port=port or s.port)
    info = run(ensure_demo)
    if as_json:
        sys.stdout.write(json.dumps(info) + "\n")
    else:
        sys.stdout.write(example_text(info, f"http://{s.host}:{s.port}"))
    sys.stdout.flush()
    if serve_after:
        start_server(s, as_json)
