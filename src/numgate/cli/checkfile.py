"""``numgate check FILE``: check a phone list offline, no server needed."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, TextIO

import typer

from numgate.cli.admin import CheckLevel
from numgate.cli.common import JsonOpt, err, fail, run_async, settings
from numgate.errors import NumgateError


def check(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="A CSV file, or one number per line.")
    ],
    level: Annotated[
        CheckLevel, typer.Option(help="1 Basic (offline), 4 Call, 5 HLR (through the providers).")
    ] = CheckLevel.basic,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="OUT.csv or OUT.jsonl (default: stdout).")
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(
            metavar="ISO2",
            help="Read numbers without a country code in this region's national format (e.g. US, GB).",
        ),
    ] = None,
    keep_columns: Annotated[
        bool,
        typer.Option("--keep-columns/--no-keep-columns", help="Copy every input column into the output."),
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Check every number of a file and write one row per input row (bounded memory, progress on
    stderr). Numbers may carry punctuation ("(415) 555-0123"), a 00 or + international prefix, or,
    with --region, no country code. A cell that cannot be a number (empty, letters, spreadsheet
    scientific notation) gets a row saying why; a row that is not UTF-8 or not valid CSV is
    skipped and listed, with its row number, in the summary. The output file appears only when
    the check is complete.

    No server is needed: Basic runs libphonenumber offline. Call and HLR come from the simulator in
    sandbox mode (no database needed either); outside it, from the operator's routes (the
    database's; upstreams that answer by webhook are passed over) — a country with no route stops
    the command with exit code 2, and no output file. With --json the rows go to stdout as
    JSON lines (or to -o) and the summary is one JSON object (stderr, or stdout with -o)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from numgate.numbers.classify import parse_region
    from numgate.numbers.filecheck import Summary, check_file, count_rows
    from numgate.numbers.results import Level

    s = settings()  # a bad setting is reported before any work
    try:
        region = parse_region(region, "--region") if region else None
    except NumgateError as exc:
        fail(str(exc), 2)
    if output is not None and output.suffix not in (".csv", ".jsonl"):
        fail("-o must end in .csv or .jsonl", 2)
    fmt = (
        "jsonl"
        if (output is not None and output.suffix == ".jsonl") or (output is None and as_json)
        else "csv"
    )
    total = count_rows(file)
    columns = [
        TextColumn("checking"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8.0f}/s"),
        TimeRemainingColumn(),
    ]
    sink: TextIO
    partial: Path | None = None
    if output is not None:  # written beside the target and renamed at the end: never a partial file
        fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent or ".")
        partial = Path(name)
        sink = os.fdopen(fd, "w", newline="", encoding="utf-8")
    else:
        sink = sys.stdout
    try:
        with Progress(*columns, console=err, transient=output is None, disable=not err.is_terminal) as bar:
            task = bar.add_task("check", total=total, rate=0.0)

            def advance(n: int) -> None:
                bar.advance(task, n)
                t = bar.tasks[0]
                bar.update(task, rate=(t.completed / t.elapsed) if t.elapsed else 0.0)

            async def main() -> Summary:
                lvl = Level(int(level.value))
                if lvl is Level.BASIC or s.sandbox:
                    from numgate.numbers.live import simulated

                    return await check_file(
                        file,
                        sink,
                        fmt,
                        lvl,
                        simulated,
                        region=region,
                        keep_columns=keep_columns,
                        progress=advance,
                    )
                from numgate.gateway import open_gateway
                from numgate.numbers.live import RouteAnswers

                core = await open_gateway(s)
                try:
                    return await check_file(
                        file,
                        sink,
                        fmt,
                        lvl,
                        RouteAnswers(core),
                        region=region,
                        keep_columns=keep_columns,
                        progress=advance,
                    )
                finally:
                    await core.close()

            summary = run_async(main())
        if output is not None:
            sink.close()
            assert partial is not None
            partial.replace(output)
            partial = None
    except KeyboardInterrupt:
        fail("interrupted: no output file was written", 130)
    finally:
        if partial is not None:
            sink.close()
            partial.unlink(missing_ok=True)
    data = summary.to_json()
    if as_json:
        stream = sys.stdout if output is not None else sys.stderr
        stream.write(json.dumps(data) + "\n")
        return
    outcomes = ", ".join(f"{n} {k}" for k, n in data["outcomes"].items()) or "none"
    err.print(f"checked {data['rows']} row(s): {outcomes}", highlight=False)
    if data["skipped_total"]:
        listed = "; ".join(f"row {s['row']}: {s['reason']}" for s in data["skipped"])
        more = data["skipped_total"] - len(data["skipped"])
        err.print(
            f"skipped {data['skipped_total']} unreadable row(s): {listed}"
            + (f"; and {more} more" if more else ""),
            highlight=False,
        )
