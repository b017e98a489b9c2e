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
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool

from numgate.delivery.guard import Network
from numgate.delivery.sender import CallbackSender, Outcome, Outgoing
from numgate.helpers import HelperPool


class InProcessOutbound:
    """POSTs from the delivery worker's own event loop."""

    def __init__(
        self, *, allow: Sequence[Network], timeout_s: float, concurrency: int, response_max: int
    ) -> None:
        self._sender = CallbackSender(
            allow=allow, timeout_s=timeout_s, concurrency=concurrency, response_max=response_max
        )

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


def _start_sender(allow: tuple[Network, ...], timeout_s: float, concurrency: int, response_max: int) -> None:
    global _loop, _sender
    try:
        import uvloop

        _loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvicorn[standard] installs uvloop
        _loop = asyncio.new_event_loop()
    asyncio.set_event_loop(_loop)
    _sender = CallbackSender(
        allow=allow, timeout_s=timeout_s, concurrency=concurrency, response_max=response_max
    )
    _loop.run_until_complete(_sender.__aenter__())


def _send_batch(items: list[Outgoing]) -> list[Outcome]:
    assert _loop is not None and _sender is not None
    return _loop.run_until_complete(_sender.send_all(items))


# the delivery worker's side --------------------------------------------------------------------


class ProcessOutbound:
    """POSTs made by sender processes; batches are handed over whole and answered whole."""

    def __init__(
        self,
        processes: int,
        *,
        allow: Sequence[Network],
        timeout_s: float,
        concurrency: int,
        response_max: int,
    ) -> None:
        self._helpers = HelperPool(
            "callback sender", processes, _start_sender, (tuple(allow), timeout_s, concurrency, response_max)
        )

    async def __aenter__(self) -> ProcessOutbound:
        await self._helpers.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._helpers.close()

    async def send_all(self, items: Sequence[Outgoing]) -> list[Outcome]:
        try:
            return await self._helpers.call(_send_batch, list(items))
        except BrokenProcessPool:
            # the sender died mid-batch: some of these may have been delivered, so report every
            # one as failed (a retry carries the same delivery id); a new sender takes the next
            return [Outcome(False, None, 0, "the sender process stopped during the attempt")] * len(items)


Outbound = InProcessOutbound | ProcessOutbound


def open_outbound(
    processes: int, *, allow: Sequence[Network], timeout_s: float, concurrency: int, response_max: int
) -> Outbound:
    kw = {"allow": allow, "timeout_s": timeout_s, "concurrency": concurrency, "response_max": response_max}
    if processes > 0:
        return ProcessOutbound(processes, **kw)  # type: ignore[arg-type]
    return InProcessOutbound(**kw)  # type: ignore[arg-type]
