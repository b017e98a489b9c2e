"""Shared by the benchmark scripts (run as ``python bench/<name>.py``, so this is importable)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def numgate_env(prefix: str, database_url: str | None = None, **settings: str) -> dict[str, str]:
    """The environment a benchmark runs numgate with: this one's without its NUMGATE_ settings (a
    run measures the defaults unless told otherwise), a fresh data directory, the access log off,
    the call limits lifted, warnings only; ``database_url`` and ``settings`` (NUMGATE_X="...")
    on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMGATE_")}
    env.update(
        NUMGATE_DATA_DIR=tempfile.mkdtemp(prefix=prefix),
        NUMGATE_ACCESS_LOG="false",
        NUMGATE_RATE_LIMIT="0",
        NUMGATE_LOG_LEVEL="warning",
        **settings,
    )
    if database_url:
        env["NUMGATE_DATABASE_URL"] = database_url
    return env


def process_cpu(pid: int) -> float:
    """User + system CPU seconds a process has spent so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_descendants(pids: list[int]) -> list[int]:
    """The processes and every process they started (numgate's classifier and sender processes)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found, todo = set(pids), list(pids)
    while todo:
        p = todo.pop()
        for child, ppid in parent.items():
            if ppid == p and child not in found:
                found.add(child)
                todo.append(child)
    return sorted(found)


def server_cpu(database_url: str | None) -> float:
    """User + system CPU seconds so far of the PostgreSQL server processes serving the run's own
    database (their titles name it; a server on another machine, or SQLite: 0). Backends that
    ended are not counted: numgate's pools keep theirs open for the run."""
    if not database_url:
        return 0.0
    name = database_url.rsplit("/", 1)[-1].encode()
    total = 0.0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
                title = (d / "cmdline").read_bytes()
                if title.startswith(b"postgres: ") and b" " + name + b" " in title:
                    total += process_cpu(int(d.name))
    return total


def execute(url: str, sql: str) -> None:
    """Run one SQL command on the PostgreSQL database at ``url`` (its own connection)."""
    import asyncio

    import asyncpg  # type: ignore[import-untyped]

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextmanager
def scratch_database(url: str | None) -> Iterator[str | None]:
    """A fresh PostgreSQL database next to ``url``'s (same server and user; named after it with a
    random suffix), dropped afterwards; ``None`` (SQLite) passes through. Each benchmark run then
    starts from empty tables, whatever earlier runs left."""
    if not url:
        yield None
        return
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    name = f"{parts.path.lstrip('/') or 'numgate'}_{uuid.uuid4().hex[:8]}"
    admin = urlunsplit(parts._replace(path="/postgres"))
    execute(admin, f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def analyze(database_url: str | None) -> None:
    """(PostgreSQL) Refresh the planner's statistics of the run's database, as autovacuum would
    within a minute or so of a bulk load: a benchmark that loads thousands of rows seconds before
    its measured run would otherwise measure plans made for the empty tables (sequential scans
    and hash joins where an index lookup per row is right)."""
    if database_url:
        execute(database_url, "ANALYZE")


def wait_healthy(base: str, tries: int = 300) -> None:
    """Until ``base``/healthz answers (a numgate serve just started)."""
    import time
    import urllib.request

    for _ in range(tries):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"numgate at {base} did not answer /healthz")


def counting_receiver_main(port: int, counter: object, ready: object) -> None:
    """A callback receiver (aiohttp, backlog 1,024) in its own process: counts the callbacks it
    gets (a batched POST counts its X-Numgate-Batch-Size) in the shared ``counter``."""
    import asyncio

    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        with counter.get_lock():  # type: ignore[attr-defined]
            counter.value += int(request.headers.get("X-Numgate-Batch-Size", "1"))  # type: ignore[attr-defined]
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        ready.set()  # type: ignore[attr-defined]
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def start_profile(pid: int, phase: str, default: str) -> subprocess.Popen[bytes] | None:
    """py-spy on process ``pid`` during one phase of a benchmark: only when BENCH_PROFILE names the
    output file (collapsed stacks) and BENCH_PROFILE_PHASE, or ``default``, names this phase;
    BENCH_PROFILE_ARGS adds py-spy options (``--gil``: only the thread holding the GIL)."""
    if not os.environ.get("BENCH_PROFILE") or os.environ.get("BENCH_PROFILE_PHASE", default) != phase:
        return None
    cmd = ["py-spy", "record", "-r", "200", "-f", "raw", "-o", os.environ["BENCH_PROFILE"], "--pid", str(pid)]
    cmd += os.environ.get("BENCH_PROFILE_ARGS", "").split()
    spy = subprocess.Popen(cmd)
    time.sleep(1)
    return spy


def stop_profile(spy: subprocess.Popen[bytes] | None) -> None:
    """Stop what :func:`start_profile` started; py-spy writes its file on Ctrl-C."""
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
