"""``numgate check FILE``: check every number of a list, in bounded memory.

The file is a CSV (the column named phone/number/msisdn/mobile/…, else the first) or one number per
line. It is read line by line as bytes, so that one bad row costs that row only: a row that is
not UTF-8 or not valid CSV is reported with its row number and skipped, and the summary at the
end lists them. Every other row gives one output row, in order — an empty phone cell or a cell
that cannot be a number too, with its reason — and by default carries the input's columns
before the results (``keep_columns``).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from numgate.numbers.items import read_cell
from numgate.numbers.results import CheckResult, Level

RESULT_COLUMNS = [
    "outcome",
    "reason",
    "valid",
    "region",
    "country_code",
    "national_number",
    "e164",
    "number_type",
    "carrier",
    "validity",
    "reachable",
    "roaming",
    "ported",
    "network",
    "mcc",
    "mnc",
    "early",
    "answered",
    "response",
    "source",
]
PHONE_HEADERS = ("phone", "number", "msisdn", "mobile", "phone_number", "phonenumber", "tel", "telephone")
CHUNK = 2000


@dataclass
class Skipped:
    row: int
    why: str


@dataclass
class Summary:
    counts: Counter[str] = field(default_factory=Counter)
    skipped: list[Skipped] = field(default_factory=list)
    #: skipped rows beyond the first ones listed (a file full of bad rows)
    more_skipped: int = 0

    def skip(self, row: int, why: str) -> None:
        if len(self.skipped) < 20:
            self.skipped.append(Skipped(row, why))
        else:
            self.more_skipped += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": sum(self.counts.values()),
            "outcomes": dict(sorted(self.counts.items())),
            "skipped": [{"row": s.row, "reason": s.why} for s in self.skipped],
            "skipped_total": len(self.skipped) + self.more_skipped,
        }


def count_rows(path: Path) -> int:
    """Lines that are not blank (the progress bar's total; a header counts, close enough)."""
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


@dataclass
class InputRow:
    number: int  # 1-based line number in the file
    cells: list[str]
    phone: str


class ListReader:
    """Rows of a phone list: ``header`` (the input's column names) and ``rows()``."""

    def __init__(self, path: Path, summary: Summary) -> None:
        self.path = path
        self.summary = summary
        self.header: list[str] = []
        self.column = 0
        self._dialect: Any = None

    def _lines(self) -> Iterator[tuple[int, str]]:
        with self.path.open("rb") as fh:
            for n, raw in enumerate(fh, 1):
                if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    self.summary.skip(
                        n, f"not UTF-8 (byte {exc.start + 1}: {raw[exc.start : exc.start + 1]!r})"
                    )
                    continue
                if line.strip():
                    yield n, line

    def rows(self) -> Iterator[InputRow]:
        lines = self._lines()
        first = next(lines, None)
        if first is None:
            return
        n, text = first
        sample = text.rstrip("\r\n")
        delimited = any(d in sample for d in (",", ";", "\t"))
        if delimited:
            self._dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
        cells = self._split(sample)
        names = [c.strip().lower().replace(" ", "_") for c in cells]
        found = [i for i, name in enumerate(names) if name in PHONE_HEADERS]
        is_header = bool(found) or not any(ch.isdigit() for ch in (cells[0] if cells else ""))
        if is_header:
            self.header = [c.strip() for c in cells]
            self.column = found[0] if found else 0
        else:
            self.header = [f"column_{i + 1}" for i in range(len(cells))] if delimited else ["input"]
            yield InputRow(n, cells, cells[0] if cells else "")
        for n, text in lines:
            try:
                cells = self._split(text.rstrip("\r\n"))
            except csv.Error as exc:
                self.summary.skip(n, f"not valid CSV: {exc}")
                continue
            yield InputRow(n, cells, cells[self.column] if len(cells) > self.column else "")

    def _split(self, text: str) -> list[str]:
        if self._dialect is None:
            return [text]
        return next(csv.reader(io.StringIO(text), self._dialect), [])


def result_cells(r: CheckResult | None, reason: str) -> dict[str, Any]:
    if r is None:
        return {"outcome": "skipped", "reason": reason}
    b, lv, d = r.basic, r.live, r.dial
    return {
        "outcome": r.outcome.name.lower(),
        "reason": reason,
        "valid": (b.valid if b else ""),
        "region": b.region if b else "",
        "country_code": b.country_code if b else "",
        "national_number": b.national_number if b else "",
        "e164": b.e164 if b else "",
        "number_type": b.kind.value if b else "",
        "carrier": b.carrier if b else "",
        "validity": lv.validity.value if lv else "",
        "reachable": lv.reachable.value if lv else "",
        "roaming": lv.roaming.value if lv else "",
        "ported": lv.ported.value if lv else "",
        "network": lv.network if lv else "",
        "mcc": lv.mcc if lv else "",
        "mnc": lv.mnc if lv else "",
        "early": d.early.value if d else "",
        "answered": d.answered.value if d else "",
        "response": d.response.value if d else "",
        "source": r.source or "",
    }


class RowWriter:
    def __init__(self, out: TextIO, fmt: str, input_columns: list[str]) -> None:
        self._out = out
        self._fmt = fmt
        taken = {c.lower() for c in input_columns}
        #: result columns renamed where an input column has the same name
        self._names = {c: (f"check_{c}" if c.lower() in taken else c) for c in RESULT_COLUMNS}
        self._inputs = input_columns
        if fmt == "csv":
            self._csv = csv.writer(out)
            self._csv.writerow([*input_columns, *self._names.values()])

    def write(self, rows: list[tuple[list[str], dict[str, Any]]]) -> None:
        if self._fmt == "csv":
            self._csv.writerows(
                [*cells, *(result.get(c, "") for c in RESULT_COLUMNS)] for cells, result in rows
            )
            return
        lines = []
        for cells, result in rows:
            obj: dict[str, Any] = dict(zip(self._inputs, cells, strict=False))
            obj.update({self._names[k]: v for k, v in result.items()})
            lines.append(orjson.dumps(obj).decode())
        self._out.write("\n".join(lines) + "\n")


#: answers the live levels for a chunk of Basic results (in order)
LiveAnswers = Callable[[Level, list[CheckResult]], Awaitable[list[CheckResult]]]


async def check_file(
    path: Path,
    out: TextIO,
    fmt: str,
    level: Level,
    live: LiveAnswers,
    *,
    region: str | None = None,
    keep_columns: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Summary:
    """Stream ``path`` through the checks in chunks, writing one row per input row; ``live``
    answers the HLR and Call levels (the simulator, or the operator's routes)."""
    from numgate.numbers.check import BasicChecks

    summary = Summary()
    reader = ListReader(path, summary)
    rows = reader.rows()
    first = next(rows, None)
    columns = reader.header if keep_columns else ["input"]
    writer = RowWriter(out, fmt, columns)
    basic = BasicChecks(0)  # a thread: the file is read and written in order, one chunk at a time
    chunk: list[InputRow] = []

    async def flush() -> None:
        items = [read_cell(r.phone, region) for r in chunk]
        todo = [i for i, item in enumerate(items) if item.digits is not None]
        results = await basic.run([items[i].digits or "" for i in todo])
        if level is not Level.BASIC:
            results = await live(level, results)
        by_row: dict[int, CheckResult] = dict(zip(todo, results, strict=True))
        written = []
        for i, (row, item) in enumerate(zip(chunk, items, strict=True)):
            result = by_row.get(i)
            cells = row.cells if keep_columns else [row.phone]
            written.append((cells, result_cells(result, item.reason)))
            summary.counts[result.outcome.name.lower() if result else "skipped"] += 1
        writer.write(written)
        if progress is not None:
            progress(len(chunk))
        chunk.clear()

    if first is not None:
        chunk.append(first)
    for row in rows:
        chunk.append(row)
        if len(chunk) >= CHUNK:
            await flush()
    if chunk:
        await flush()
    return summary
