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
from multiprocessing import connection
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar, cast

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
        # the pool's shutdown (its manager thread tells the processes to stop, joins them and
        # releases its queues) runs in a thread; the processes are watched here, and killed if
        # they outlast the grace period, which lets that shutdown end too
        shutdown = asyncio.ensure_future(asyncio.to_thread(pool.shutdown, True, cancel_futures=True))
        await stop_processes(processes, grace_s, f"numgate-{self.name} helper")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(shutdown), 5.0)


def _still_running(processes: list[BaseProcess], timeout: float) -> list[BaseProcess]:
    """Those of ``processes`` that have not exited within ``timeout`` seconds.

    Told by each process's sentinel (readable once it has exited), not by ``join``/``is_alive``:
    those ask ``waitpid``, and another thread may reap the same child first — the pool's own
    manager thread joins its processes as it shuts down — in which case ``is_alive`` still says
    True for a process that is gone (``waitpid`` fails, the exit code is not recorded yet)."""
    deadline = time.monotonic() + timeout
    running: dict[int, BaseProcess] = {}
    for p in processes:
        with contextlib.suppress(ValueError):  # a closed process object: it was joined
            running[p.sentinel] = p
    while running:
        ready = connection.wait(list(running), max(deadline - time.monotonic(), 0.0))
        if not ready:
            break
        for sentinel in ready:
            del running[cast(int, sentinel)]
    return list(running.values())


async def stop_processes(processes: list[BaseProcess], grace_s: float, what: str) -> int:
    """Wait up to ``grace_s`` for ``processes`` (already told to stop) to exit; kill those that
    have not, with a warning naming ``what`` they are. Returns how many were killed."""
    stuck = await asyncio.to_thread(_still_running, processes, grace_s)
    for p in stuck:
        log.warning("a %s process did not stop within %.0f s: killing it", what, grace_s)
        with contextlib.suppress(OSError):
            p.kill()
    if stuck:
        await asyncio.to_thread(_still_running, stuck, 5.0)
    for p in processes:  # reap it here if nothing else has (no zombie left behind)
        with contextlib.suppress(OSError, ValueError):
            p.join(0)
    return len(stuck)
