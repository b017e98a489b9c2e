"""Helper processes: CPU-bound work a worker hands to other cores (Python runs one thread at a
time per process). The Basic checks' classifier processes and the callbacks' sender processes
are both a :class:`HelperPool`: spawned (never forked from a process with a running event loop),
started by an initializer that loads what they need once, left out of Ctrl-C (the parent stops
them), and waited for when they stop. A helper that dies is replaced on the next call; the call
that was under way raises ``BrokenProcessPool`` and its caller decides what that call meant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

log = logging.getLogger("numgate.helpers")
T = TypeVar("T")


def _start(initializer: Callable[..., None], args: tuple[Any, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops its helpers
    initializer(*args)


def _ready() -> bool:
    return True


class HelperPool:
    def __init__(
        self, name: str, processes: int, initializer: Callable[..., None], initargs: tuple[Any, ...] = ()
    ) -> None:
        self.name = name
        self.processes = processes
        self._init = (initializer, initargs)
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start,
                initargs=self._init,
            )
        return self._pool

    async def start(self) -> None:
        """Start every process now (and run its initializer), so the first call does not wait."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._executor(), _ready) for _ in range(self.processes)))

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a helper process."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor(), fn, *args)
        except BrokenProcessPool:
            log.warning("a %s process died; starting a new one", self.name)
            await self.close()
            raise

    async def close(self) -> None:
        """Stop the processes and wait for them to exit."""
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
