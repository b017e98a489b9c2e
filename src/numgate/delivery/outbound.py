"""Where callback POSTs are made: in the delivery worker's own event loop, or in a sender
process (``NUMGATE_CALLBACK_PROCESSES``, one by default on a machine with two or more CPUs).

A POST through aiohttp costs tens of microseconds of CPU (request building, the HTTP parser,
HMAC signing); at thousands of callbacks a second that is the largest single cost of Number
Check, so by default it runs on another core. The sender process is a pure executor: it is given
a batch of :class:`Outgoing` items and returns one :class:`Outcome` each. It never touches the
database — the delivery worker records every attempt — so a sender that dies loses nothing: the
batch's callbacks stay leased, their lease runs out and they are sent again with the same
delivery id. The URL guard runs where the connection is made (in the sender).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from numgate.delivery.guard import Network
from numgate.delivery.sender import CallbackSender, Outcome, Outgoing

log = logging.getLogger("numgate.delivery")


class InProcessOutbound:
    """POSTs from the delivery worker's own event loop."""

    def __init__(self, *, allow: Sequence[Network], timeout_s: float, concurrency: int) -> None:
        self._sender = CallbackSender(allow=allow, timeout_s=timeout_s, concurrency=concurrency)

    async def __aenter__(self) -> InProcessOutbound:
        await self._sender.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._sender.__aexit__(*exc)

    async def send_all(self, items: Sequence[Outgoing]) -> list[Outcome]:
        return await self._sender.send_all(items)


# the sender process's side ---------------------------------------------------------------------

_loop: asyncio.AbstractEventLoop | None = None
_sender: CallbackSender | None = None


def _start_sender(allow: tuple[Network, ...], timeout_s: float, concurrency: int) -> None:
    global _loop, _sender
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops its helpers
    try:
        import uvloop

        _loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvicorn[standard] installs uvloop
        _loop = asyncio.new_event_loop()
    asyncio.set_event_loop(_loop)
    _sender = CallbackSender(allow=allow, timeout_s=timeout_s, concurrency=concurrency)
    _loop.run_until_complete(_sender.__aenter__())


def _send_batch(items: list[Outgoing]) -> list[Outcome]:
    assert _loop is not None and _sender is not None
    return _loop.run_until_complete(_sender.send_all(items))


def _ready() -> bool:
    return True


# the delivery worker's side --------------------------------------------------------------------


class ProcessOutbound:
    """POSTs made by a sender process; batches are handed over whole and answered whole."""

    def __init__(
        self, processes: int, *, allow: Sequence[Network], timeout_s: float, concurrency: int
    ) -> None:
        self.processes = processes
        self._args: tuple[Any, ...] = (tuple(allow), timeout_s, concurrency)
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_sender,
                initargs=self._args,
            )
        return self._pool

    async def __aenter__(self) -> ProcessOutbound:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._executor(), _ready) for _ in range(self.processes)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the sender processes and wait for them to exit."""
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    async def send_all(self, items: Sequence[Outgoing]) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor(), _send_batch, list(items))
        except BrokenProcessPool:
            # the sender died mid-batch: some of these may have been delivered, so report every
            # one as failed (a retry carries the same delivery id) and start a new sender
            log.warning("the callback sender process died; starting a new one")
            await self.close()
            return [Outcome(False, None, 0, "the sender process stopped during the attempt")] * len(items)


Outbound = InProcessOutbound | ProcessOutbound


def open_outbound(
    processes: int, *, allow: Sequence[Network], timeout_s: float, concurrency: int
) -> Outbound:
    if processes > 0:
        return ProcessOutbound(processes, allow=allow, timeout_s=timeout_s, concurrency=concurrency)
    return InProcessOutbound(allow=allow, timeout_s=timeout_s, concurrency=concurrency)
