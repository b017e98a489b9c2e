"""Where callbacks wait for their POST: one queue per receiver, served in turn.

The scheduler runs where the POSTs are made (a sender process, or the delivery worker's own
event loop). It keeps a queue and a :class:`~numgate.delivery.pacing.Pacer` per receiver (scheme,
host and port) and starts attempts round-robin between the receivers that have room, so a
receiver that hangs or fails holds only its own callbacks and its own few connections: every
other receiver is served as if it were not there. For an app that opted into batched callbacks,
queued callbacks of the same app and URL leave together, up to its batch size, in one POST.

Each ended attempt is reported through ``on_outcomes`` as (delivery id, outcome) pairs; the
delivery worker records them.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

from numgate.delivery.pacing import Pacer
from numgate.delivery.sender import MAX_CONNECTIONS, CallbackSender, Outcome, Outgoing

#: a receiver's pacer is forgotten after this long with nothing to do
IDLE_FORGET_S = 600.0

OnOutcomes = Callable[[list[tuple[str, Outcome]]], None]


class _Receiver:
    __slots__ = ("last_used", "pacer", "queue")

    def __init__(self, pacer: Pacer, now: float) -> None:
        self.pacer = pacer
        self.queue: deque[Outgoing] = deque()
        self.last_used = now


class Scheduler:
    def __init__(
        self,
        sender: CallbackSender,
        *,
        max_per_receiver: int,
        on_outcomes: OnOutcomes,
        pause_max_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_in_flight: int = MAX_CONNECTIONS,
    ) -> None:
        self._sender = sender
        self._max_per_receiver = max_per_receiver
        self._pause_max_s = pause_max_s
        self._on_outcomes = on_outcomes
        self._clock = clock
        self._max_in_flight = max_in_flight
        self._receivers: OrderedDict[str, _Receiver] = OrderedDict()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._kicked = False
        self._wakeup: asyncio.TimerHandle | None = None

    # in ---------------------------------------------------------------------------------------

    def add(self, items: Iterable[Outgoing]) -> None:
        now = self._clock()
        for item in items:
            r = self._receivers.get(item.receiver)
            if r is None:
                pacer = Pacer(self._max_per_receiver, now, self._pause_max_s)
                r = self._receivers[item.receiver] = _Receiver(pacer, now)
            r.queue.append(item)
        self._kick()

    def _kick(self) -> None:
        if not self._kicked:
            self._kicked = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    # out --------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start what has room: one POST per receiver per round, round after round, until the
        receivers with callbacks have no room left or the global bound is reached."""
        self._kicked = False
        now = self._clock()
        next_wake: float | None = None
        waiting = [(k, r) for k, r in self._receivers.items() if r.queue]
        while waiting and self._in_flight < self._max_in_flight:
            still: list[tuple[str, _Receiver]] = []
            for key, r in waiting:
                if self._in_flight >= self._max_in_flight:
                    break
                if r.pacer.room(now) <= 0:
                    if r.pacer.paused(now):
                        next_wake = min(next_wake or r.pacer.paused_until, r.pacer.paused_until)
                    continue
                self._start(key, r, self._take(r), now)
                if r.queue:
                    still.append((key, r))
            waiting = still
        # serve receivers in a new order next time: the first ones now go to the end
        for key, r in list(self._receivers.items()):
            if not r.queue and not r.pacer.in_flight and now - r.last_used > IDLE_FORGET_S:
                del self._receivers[key]
        if next_wake is not None:
            self._wake_at(next_wake - now)

    @staticmethod
    def _take(r: _Receiver) -> list[Outgoing]:
        """The next POST's callbacks: one, or up to the app's batch size of the same app and URL."""
        first = r.queue.popleft()
        group = [first]
        if first.batch > 1:
            skipped: list[Outgoing] = []
            while r.queue and len(group) < first.batch:
                item = r.queue.popleft()
                if item.url == first.url and item.secret == first.secret and item.batch == first.batch:
                    group.append(item)
                else:
                    skipped.append(item)
                if len(skipped) > 1000:  # do not dig through a whole queue of other apps' callbacks
                    break
            r.queue.extendleft(reversed(skipped))
        return group

    def _start(self, key: str, r: _Receiver, group: list[Outgoing], now: float) -> None:
        level = r.pacer.started()
        r.last_used = now
        self._in_flight += 1
        self._receivers.move_to_end(key)
        task = asyncio.get_running_loop().create_task(self._post(r, group, level))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, r: _Receiver, group: list[Outgoing], level: int) -> None:
        try:
            outcome = await self._sender.send(group)
        finally:
            self._in_flight -= 1
        r.pacer.finished(outcome.result, outcome.latency_ms, self._clock(), level=level)
        outcomes = [(group[0].uid, outcome)]
        if len(group) > 1:
            rest = outcome._replace(lead=False)
            outcomes += [(item.uid, rest) for item in group[1:]]
        self._on_outcomes(outcomes)
        self._kick()

    def _wake_at(self, delay: float) -> None:
        if self._wakeup is not None:
            self._wakeup.cancel()
        self._wakeup = asyncio.get_running_loop().call_later(max(delay, 0.001), self._kick)

    # what it shows ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per receiver: its queue here, and its pacer's state."""
        now = self._clock()
        return {key: _shown(r, now) for key, r in self._receivers.items()}

    def state_of(self, key: str) -> dict[str, Any] | None:
        """One receiver's entry of :meth:`snapshot` (None: not seen here)."""
        r = self._receivers.get(key)
        return None if r is None else _shown(r, self._clock())

    async def close(self) -> None:
        """Cancel what is in flight (the delivery worker gives those callbacks back)."""
        if self._wakeup is not None:
            self._wakeup.cancel()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _shown(r: _Receiver, now: float) -> dict[str, Any]:
    """A receiver as :meth:`Scheduler.snapshot` shows it: its queue here, and its pacer's state."""
    return {"queued": len(r.queue), **r.pacer.state(now).to_json()}
