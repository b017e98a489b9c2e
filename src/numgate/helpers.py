"""Helper processes: CPU-bound work a worker hands to other cores (Python runs one thread at a
time per process). The Basic checks' classifier processes are a :class:`HelperPool` (a call
in, its answer out); the callbacks' sender processes are long-lived and talk over a pipe
(``delivery/outbound.py``). Both are spawned (never forked from a process with a running event
loop), left out of Ctrl-C (the parent stops them), waited for when they stop, killed if they do
not, and exit by themselves when their parent is gone (:func:`watch_parent`). A classifier that
dies is replaced on the next call; the call that was under way raises ``BrokenProcessPool`` and
its caller decides what that call meant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

log = logging.getLogger("numgate.helpers")
T = TypeVar("T")


def watch_parent(parent: int) -> None:
    """In a helper: exit when the parent is gone (killed with SIGKILL, it cannot stop its helpers
    itself), checked every second from a thread."""

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def name_process(name: str) -> None:
    """Show the helper as ``numgate-<name>`` in ps and top (Linux; elsewhere nothing)."""
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as f:
        f.write(f"numgate-{name}"[:15])


def _start(parent: int, name: str, initializer: Callable[..., None], args: tuple[Any, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops its helpers
    name_process(name)
    watch_parent(parent)
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
                initargs=(os.getpid(), self.name, *self._init),
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
            log.warning("a numgate-%s helper process died; starting a new one", self.name)
            await self.close()
            raise

    async def close(self, grace_s: float = 2.0) -> None:
        """Stop the processes: they finish the call under way within ``grace_s``, else they are
        killed (a sender stuck on a receiver that never answers must not hold up a shutdown)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list(getattr(pool, "_processes", {}).values())
        with contextlib.suppress(Exception):
            pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + grace_s
        for p in processes:
            await asyncio.to_thread(p.join, max(deadline - time.monotonic(), 0.0))
            if p.is_alive():
                log.warning(
                    "a numgate-%s helper process did not stop within %.0f s: killing it", self.name, grace_s
                )
                p.kill()
                await asyncio.to_thread(p.join, 5.0)
