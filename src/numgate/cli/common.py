"""What every command shares: settings, running against the core, errors as one line, output.

Exit codes: 0 done; 1 the operation was refused (no such account, a bad value…); 2 numgate could
not start or run — a setting, the database, Redis — or the command line itself is wrong. Every
failure is one line on stderr saying what is wrong and what to do; never a traceback.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from numgate.core import Core
from numgate.errors import ConfigurationError, NoRoute, NumgateError, SchemaOutOfDate, Unavailable
from numgate.gateway import open_gateway
from numgate.ledger.money import to_decimal
from numgate.settings import Settings

T = TypeVar("T")

EXIT_REFUSED = 1
EXIT_SETUP = 2

out = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead.")]


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings() -> Settings:
    try:
        return Settings.from_env()
    except NumgateError as exc:
        fail(str(exc), EXIT_SETUP)


def redacted_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(an unreadable URL)"


def explain(exc: NumgateError) -> tuple[str, int]:
    """The line to print for an error, and the exit code."""
    if isinstance(exc, Unavailable):
        if exc.dependency == "database":
            where = redacted_url(Settings.from_env().resolved_database_url)
            return f"{exc} — is the database server running, and is {where} right? (NUMGATE_DATABASE_URL)", 2
        return f"{exc} — is Redis running, and is NUMGATE_REDIS_URL right?", EXIT_SETUP
    if isinstance(exc, ConfigurationError | SchemaOutOfDate | NoRoute):
        return str(exc), EXIT_SETUP
    return str(exc), EXIT_REFUSED


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (uvicorn[standard] brings it), as ``serve`` has."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency of uvicorn[standard]
        return None
    return uvloop.new_event_loop


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(coro)
    except NumgateError as exc:
        message, code = explain(exc)
        fail(message, code)
    except KeyboardInterrupt:
        fail("interrupted", 130)


def run(fn: Callable[[Core], Awaitable[T]], *, create: bool = False) -> T:
    """Open the core (the database must exist and be migrated), run ``fn``, close."""
    s = settings()

    async def main() -> T:
        core = await open_gateway(s, create=create)
        try:
            return await fn(core)
        finally:
            await core.close()

    return run_async(main())


def when(ms: int | None) -> str:
    """An epoch-milliseconds time as ISO-8601 in the local time zone ('' for none)."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000).astimezone().isoformat(timespec="seconds")


def money(units: int) -> str:
    return str(to_decimal(units))


def yes_no(v: bool) -> str:
    return "yes" if v else "no"


def whole_writes() -> None:
    """Make every write to stdout and stderr complete. Run unbuffered (``PYTHONUNBUFFERED=1`` or
    ``-u``, as many container images are), Python writes them straight to the file descriptor
    and drops whatever a short ``write()`` leaves over; and once uvloop's event loop has run
    (libuv, which uses io_uring), a blocking write to a full pipe was seen to return after 64 KiB
    (strace: no signal, the descriptor blocking). Together they cut a long ``--json`` list read by
    a slow pipe at 64 KiB, exit code 0.
    Line-buffered streams over a ``BufferedWriter`` (which writes the rest) keep the output as
    prompt and make it whole. Streams already buffered, or replaced (tests), are left alone."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        raw = getattr(stream, "buffer", None)
        if isinstance(stream, io.TextIOWrapper) and isinstance(raw, io.FileIO):
            # the original stays alive as sys.__stdout__ / sys.__stderr__: it is never closed
            setattr(
                sys,
                name,
                io.TextIOWrapper(
                    io.BufferedWriter(raw),
                    encoding=stream.encoding,
                    errors=stream.errors,
                    line_buffering=True,
                ),
            )


def print_table(table: Table) -> None:
    """A table at its natural width: ids, URLs and codes are printed whole, never cut to the
    terminal's 80 columns (lines may wrap in a narrow terminal; piped output stays intact)."""
    natural = out.measure(table, options=out.options.update_width(1_000_000)).maximum
    width = max(natural, out.width)
    Console(width=width, file=sys.stdout, highlight=False).print(table)


def emit(data: Any, as_json: bool, table: Table | None = None, text: str | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    elif table is not None:
        print_table(table)
    elif text is not None:
        out.print(text, highlight=False, soft_wrap=True)


def split_values(values: list[str] | None) -> list[str]:
    """Values of an option given repeated and/or comma-separated."""
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]
