"""The set of background workers a process runs (in ``numgate serve`` or ``numgate worker``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from numgate.core import Core
from numgate.errors import Unavailable

log = logging.getLogger("numgate.jobs")

WorkerFactory = Callable[[Core, asyncio.Event], Awaitable[None]]

#: filled by the modules that define workers (numbers, delivery)
REGISTRY: list[tuple[str, WorkerFactory]] = []


async def wait_for_work(wake: asyncio.Event, stop: asyncio.Event, timeout: float) -> None:
    """Sleep until new work is announced, the worker is stopped, or ``timeout`` passes."""
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
    await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for w in waiters:
        w.cancel()


async def run_together(steps: list[Coroutine[Any, Any, None]]) -> None:
    """Run a worker's loops as tasks until they all end; the first to fail cancels the others
    (each waited for) and its error is raised."""
    tasks = [asyncio.create_task(step) for step in steps]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if (exc := t.exception()) is not None:
                raise exc
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def register(name: str) -> Callable[[WorkerFactory], WorkerFactory]:
    def deco(fn: WorkerFactory) -> WorkerFactory:
        REGISTRY.append((name, fn))
        return fn

    return deco


def _load() -> None:
    # importing registers the workers
    import numgate.delivery.worker
    import numgate.numbers.worker  # noqa: F401


class WorkerSet:
    def __init__(self, core: Core, only: set[str] | None = None) -> None:
        self.core = core
        self.only = only
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        _load()
        for name, factory in REGISTRY:
            if self.only is None or name in self.only:
                self._tasks.append(asyncio.create_task(self._guard(name, factory), name=f"worker:{name}"))

    async def _guard(self, name: str, factory: WorkerFactory) -> None:
        while not self._stop.is_set():
            try:
                await factory(self.core, self._stop)
            except asyncio.CancelledError:
                raise
            except Unavailable as exc:  # an outage (logged once, in outages.py): wait, go on
                log.debug("worker %s waits for its %s: %s", name, exc.dependency, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)
            except Exception:
                log.exception("worker %s crashed; restarting in 1 s", name)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)

    def signal_stop(self) -> None:
        """Ask every worker to finish its current step and take no more work."""
        self._stop.set()

    async def stop(self, timeout: float = 10.0) -> None:
        """Ask every worker to finish its current step, then, after ``timeout`` seconds, cancel
        what is left (leases it held are given back; helper processes that do not stop are
        killed)."""
        self._stop.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=timeout)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def wait(self) -> None:
        await asyncio.gather(*self._tasks)
