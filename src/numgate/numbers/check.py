"""The Basic check (offline classification) and what it decides for the live levels (the
upstreams themselves are ``numbers/live.py``).

Classification is CPU work in pure Python (libphonenumber). A check worker runs it in
:class:`BasicChecks`: in separate processes (``NUMGATE_CHECK_PROCESSES``, one by default on a
machine with two or more CPUs, so that the worker's own process keeps its core for the database
and the callbacks), or in a thread of the worker's process when that is 0.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from numgate.helpers import HelperPool
from numgate.numbers.classify import Basic, NumberKind, classify, warm_up
from numgate.numbers.results import CheckResult, Outcome

log = logging.getLogger("numgate.numbers")

_INVALID = CheckResult(Outcome.INVALID_FORMAT)


def check_basic(item: str) -> CheckResult:
    basic = classify(item)
    if basic is None:
        return _INVALID
    return CheckResult(Outcome.OK, basic)


def check_basic_many(items: Sequence[str]) -> list[CheckResult]:
    return [check_basic(i) for i in items]


def _classify_rows(items: Sequence[str]) -> list[tuple[Any, ...] | None]:
    """Runs in a classifier process: plain tuples cross the process boundary cheaply."""
    out: list[tuple[Any, ...] | None] = []
    for item in items:
        b = classify(item)
        out.append(None if b is None else b.row())
    return out


def _from_row(row: tuple[Any, ...] | None) -> CheckResult:
    if row is None:
        return _INVALID
    return CheckResult(Outcome.OK, Basic.of_row(row))


class BasicChecks:
    """Basic checks off the event loop: in ``processes`` classifier processes (each loads
    libphonenumber's metadata once, at start), or in a thread when ``processes`` is 0."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._helpers = HelperPool("check", processes, warm_up) if processes else None

    async def start(self) -> None:
        """Load the metadata now, so that the first batch does not wait for it."""
        if self._helpers is not None:
            await self._helpers.start()
        else:
            await asyncio.to_thread(warm_up)

    async def run(self, items: Sequence[str]) -> list[CheckResult]:
        if self._helpers is None:
            return await asyncio.to_thread(check_basic_many, items)
        try:
            rows = await self._helpers.call(_classify_rows, items)
        except BrokenProcessPool:  # killed, out of memory: a new one takes the chunk, once
            rows = await self._helpers.call(_classify_rows, items)
        return [_from_row(r) for r in rows]

    async def close(self) -> None:
        if self._helpers is not None:
            await self._helpers.close()


def check_live_rules(first: CheckResult) -> CheckResult | None:
    """What the Basic result already decides for a live level: an invalid number stays 114, one
    that is not mobile is 120; None when an upstream must answer."""
    if first.outcome is not Outcome.OK or first.basic is None:
        return first
    if first.basic.kind is not NumberKind.MOBILE:
        return CheckResult(Outcome.NON_MOBILE, first.basic)
    return None
