"""``numgate check FILE``: check a list of numbers from a file, in bounded memory."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import orjson

from numgate.numbers.providers import Providers
from numgate.numbers.results import CheckResult, Level

COLUMNS = [
    "phone",
    "outcome",
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
    "early",
    "answered",
    "response",
]
PHONE_HEADERS = {"phone", "number", "msisdn", "mobile", "phone_number", "tel"}
CHUNK = 2000


def count_items(path: Path) -> int:
    """How many numbers ``read_items`` will yield (a header line is not one)."""
    with path.open("rb") as fh:
        first = fh.readline()
        header = bool(first.strip()) and not any(chr(c).isdigit() for c in first.split(b",")[0])
        return sum(1 for line in fh if line.strip()) + (0 if header or not first.strip() else 1)


def read_items(path: Path) -> Iterator[str]:
    """One number per line, or a CSV whose column named phone/number/msisdn (else the first) holds it.
    A first line that is not a number is taken as a header."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        first = fh.readline()
        if not first:
            return
        is_csv = "," in first or ";" in first or "\t" in first
        if not is_csv:
            if any(ch.isdigit() for ch in first):
                yield first.strip()
            for line in fh:
                if line.strip():
                    yield line.strip()
            return
        dialect = csv.Sniffer().sniff(first, delimiters=",;\t")
        head = next(csv.reader(io.StringIO(first), dialect))
        col = 0
        names = [h.strip().lower() for h in head]
        if any(n in PHONE_HEADERS for n in names):
            col = next(i for i, n in enumerate(names) if n in PHONE_HEADERS)
        elif head and any(ch.isdigit() for ch in head[0]):
            yield head[0].strip()
        for row in csv.reader(fh, dialect):
            if len(row) > col and row[col].strip():
                yield row[col].strip()


def row_of(item: str, r: CheckResult) -> dict[str, Any]:
    b, lv, d = r.basic, r.live, r.dial
    return {
        "phone": item,
        "outcome": r.outcome.name.lower(),
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
        "ported": lv.ported if lv else "",
        "network": lv.network if lv else "",
        "early": d.early.value if d else "",
        "answered": d.answered.value if d else "",
        "response": d.response.value if d else "",
    }


class RowWriter:
    def __init__(self, out: TextIO, fmt: str) -> None:
        self._out = out
        self._fmt = fmt
        if fmt == "csv":
            self._csv = csv.DictWriter(out, COLUMNS)
            self._csv.writeheader()

    def write(self, rows: list[dict[str, Any]]) -> None:
        if self._fmt == "csv":
            self._csv.writerows(rows)
        else:
            self._out.write("".join(orjson.dumps(r).decode() + "\n" for r in rows))


async def check_file(
    path: Path, out: TextIO, fmt: str, level: Level, providers: Providers, progress: Any = None
) -> dict[str, int]:
    """Stream ``path`` through the checks in chunks; returns counts per outcome."""
    from numgate.numbers.check import BasicChecks, check_many

    basic = BasicChecks(0)  # a thread: the file is read and written in order, one chunk at a time
    writer = RowWriter(out, fmt)
    counts: dict[str, int] = {}
    chunk: list[str] = []

    async def flush() -> None:
        results = await check_many(chunk, level, providers, basic)
        rows = [row_of(i, r) for i, r in zip(chunk, results, strict=True)]
        writer.write(rows)
        for r in results:
            counts[r.outcome.name.lower()] = counts.get(r.outcome.name.lower(), 0) + 1
        if progress is not None:
            progress(len(chunk))
        chunk.clear()

    for item in read_items(path):
        chunk.append(item)
        if len(chunk) >= CHUNK:
            await flush()
    if chunk:
        await flush()
    return counts
