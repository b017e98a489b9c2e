"""Where callback POSTs are made: in the delivery worker's own event loop, or in sender processes
(``NUMGATE_CALLBACK_PROCESSES``, one by default on a machine with two or more CPUs).

A POST through aiohttp costs tens of microseconds of CPU (request building, the HTTP parser,
HMAC signing); at thousands of callbacks a second that is the largest single cost of Number
Check, so by default it runs on another core. Either way the same :class:`Scheduler` decides
what is sent when (per-receiver queues and pacing); the delivery worker hands it callbacks with
``send`` and collects what happened to each with ``outcomes``.

A sender process is a pure executor: it never touches the database — the delivery worker
records every attempt — so one that dies loses nothing: what it had not answered is reported as
a failed attempt (retried on schedule, with the same delivery id) and a new one takes its place.
Receivers are spread over several sender processes by a hash of their name, so that each
receiver's pace is kept in one place. The sender talks to the worker over a pipe: batches of
callbacks in, batches of outcomes (every few milliseconds) and its receivers' state out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import zlib
from collections.abc import Sequence
from multiprocessing.reduction import ForkingPickler
from typing import Any

from numgate.delivery.guard import Network
from numgate.delivery.scheduler import Scheduler
from numgate.delivery.sender import CallbackSender, Outcome, Outgoing
from numgate.helpers import stop_processes

log = logging.getLogger("numgate.delivery")

Done = list[tuple[str, Outcome]]
#: how often a sender process sends its outcomes back (and its receivers' state, every 20th time)
FLUSH_S = 0.005


# The pipe carries batches column by column: a tuple per field, each element a string, bytes or
# number that pickle writes in C, where a list of named tuples makes pickle call the class's
# Python __getnewargs__ (or __new__, unpickling) once per callback. Measured on 500-callback
# batches: 1.80 -> 0.61 µs a callback to pickle them in the delivery worker (timeit).


def _columns(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return list(zip(*rows, strict=True))


def _items(columns: list[tuple[Any, ...]]) -> list[Outgoing]:
    return list(map(Outgoing._make, zip(*columns, strict=True)))


def _done(uids: list[str], columns: list[tuple[Any, ...]]) -> Done:
    return list(zip(uids, map(Outcome._make, zip(*columns, strict=True)), strict=True))


class _Collector:
    """Outcomes waiting for the delivery worker, and a way to wait for them."""

    def __init__(self) -> None:
        self._done: Done = []
        self._event = asyncio.Event()

    def add(self, done: Done) -> None:
        self._done += done
        self._event.set()

    async def take(self, timeout: float) -> Done:
        if not self._done:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()
        done, self._done = self._done, []
        return done


class InProcessOutbound:
    """The scheduler and the POSTs in the delivery worker's own event loop."""

    def __init__(
        self,
        *,
        allow: Sequence[Network],
        timeout_s: float,
        concurrency: int,
        response_max: int,
        pause_max_s: float,
    ) -> None:
        self._sender = CallbackSender(allow=allow, timeout_s=timeout_s, response_max=response_max)
        self._collector = _Collector()
        self._concurrency = concurrency
        self._pause_max_s = pause_max_s
        self._scheduler: Scheduler | None = None

    async def __aenter__(self) -> InProcessOutbound:
        await self._sender.__aenter__()
        self._scheduler = Scheduler(
            self._sender,
            max_per_receiver=self._concurrency,
            on_outcomes=self._collector.add,
            pause_max_s=self._pause_max_s,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._scheduler is not None:
            await self._scheduler.close()
        await self._sender.__aexit__(*exc)

    def send(self, items: Sequence[Outgoing]) -> None:
        assert self._scheduler is not None
        self._scheduler.add(items)

    async def outcomes(self, timeout: float = 1.0) -> Done:
        return await self._collector.take(timeout)

    def receivers(self) -> dict[str, dict[str, Any]]:
        assert self._scheduler is not None
        return self._scheduler.snapshot()

    def receiver(self, name: str) -> dict[str, Any] | None:
        assert self._scheduler is not None
        return self._scheduler.state_of(name)


# a sender process ----------------------------------------------------------------------------------


def _sender_main(
    conn: Any,
    parent: int,
    allow: tuple[Network, ...],
    timeout_s: float,
    concurrency: int,
    response_max: int,
    pause_max_s: float,
) -> None:
    """A sender process: receives callbacks on ``conn``, sends back outcomes and state."""
    from numgate.helpers import name_process, watch_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops its senders
    name_process("sender")
    watch_parent(parent)
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvicorn[standard] installs uvloop
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(_serve_pipe(conn, allow, timeout_s, concurrency, response_max, pause_max_s))


async def _serve_pipe(
    conn: Any,
    allow: tuple[Network, ...],
    timeout_s: float,
    concurrency: int,
    response_max: int,
    pause_max_s: float,
) -> None:
    loop = asyncio.get_running_loop()
    done: Done = []
    closing = asyncio.Event()
    async with CallbackSender(allow=allow, timeout_s=timeout_s, response_max=response_max) as sender:
        scheduler = Scheduler(
            sender, max_per_receiver=concurrency, on_outcomes=done.extend, pause_max_s=pause_max_s
        )

        def read() -> None:  # a thread: blocking reads of the pipe
            try:
                while True:
                    kind, payload = conn.recv()
                    if kind == "send":
                        loop.call_soon_threadsafe(scheduler.add, _items(payload))
                    else:
                        break
            except (EOFError, OSError):
                pass
            loop.call_soon_threadsafe(closing.set)

        threading.Thread(target=read, daemon=True, name="sender-pipe").start()
        rounds = 0
        while not closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), FLUSH_S)
            rounds += 1
            state = scheduler.snapshot() if rounds % 20 == 0 else None
            if done or state is not None:
                uids = [uid for uid, _ in done]
                outcomes = _columns([o for _, o in done])
                done.clear()
                try:
                    conn.send(("done", uids, outcomes, state))
                except (BrokenPipeError, OSError):
                    break
        await scheduler.close()


class _SenderProcess:
    """One sender process and its pipe, from the delivery worker's side."""

    def __init__(self, index: int, args: tuple[Any, ...], on_done: Any, on_lost: Any) -> None:
        self.index = index
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=_sender_main, args=(child, os.getpid(), *args), name=f"numgate-sender-{index}", daemon=True
        )
        self.process.start()
        child.close()
        #: delivery ids sent and not answered yet (reported failed if the process dies)
        self.outstanding: set[str] = set()
        self.state: dict[str, dict[str, Any]] = {}
        self._loop = asyncio.get_running_loop()
        self._on_done = on_done
        self._on_lost = on_lost
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"sender-{index}-pipe")
        self._reader.start()
        #: messages for the pipe (pickled), written by a thread of their own: the pipe holds 64 KiB
        #: and a batch of callbacks is more, so writing in the event loop would stall the delivery
        #: and check work for as long as the sender process takes to read (measured: ~6 % of a
        #: Number Check run, up to 7 ms at a time)
        self._out: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write, daemon=True, name=f"sender-{index}-write")
        self._writer.start()

    def _write(self) -> None:
        while (message := self._out.get()) is not None:
            try:
                self.conn.send_bytes(message)
            except (OSError, ValueError):  # the process is gone (its reader reports it) or closed
                return

    def _post(self, message: tuple[str, Any]) -> None:
        self._out.put(bytes(ForkingPickler.dumps(message)))

    def _read(self) -> None:
        try:
            while True:
                _, uids, outcomes, state = self.conn.recv()
                self._loop.call_soon_threadsafe(self._received, _done(uids, outcomes), state)
        except (EOFError, OSError):
            pass
        self._out.put(None)  # the process is gone: its writer thread ends too
        self._loop.call_soon_threadsafe(self._on_lost, self)

    def _received(self, done: Done, state: dict[str, dict[str, Any]] | None) -> None:
        for uid, _ in done:
            self.outstanding.discard(uid)
        if state is not None:
            self.state = state
        self._on_done(done)

    def send(self, items: Sequence[Outgoing]) -> None:
        self.outstanding.update(i.uid for i in items)
        self._post(("send", _columns(items)))

    async def stop(self, grace_s: float) -> None:
        self._post(("stop", None))
        self._out.put(None)  # the writer ends once all before it is written
        await stop_processes([self.process], grace_s, "callback sender")
        # the process is gone, so the reader meets the pipe's end: wait for it to hand its last
        # call to the loop while the loop still runs (a loop closed right after this stop made
        # that call fail in the thread), and only then close the pipe it reads
        await asyncio.to_thread(self._reader.join, grace_s)
        with contextlib.suppress(OSError):
            self.conn.close()


class ProcessOutbound:
    """The scheduler and the POSTs in ``processes`` sender processes, receivers spread by hash."""

    def __init__(
        self,
        processes: int,
        *,
        allow: Sequence[Network],
        timeout_s: float,
        concurrency: int,
        response_max: int,
        pause_max_s: float,
    ) -> None:
        self._n = processes
        self._args = (tuple(allow), timeout_s, concurrency, response_max, pause_max_s)
        self._senders: list[_SenderProcess] = []
        self._collector = _Collector()
        self._closing = False

    async def __aenter__(self) -> ProcessOutbound:
        self._collector = _Collector()
        self._senders = [self._spawn(i) for i in range(self._n)]
        return self

    def _spawn(self, index: int) -> _SenderProcess:
        return _SenderProcess(index, self._args, self._collector.add, self._lost)

    def _lost(self, sender: _SenderProcess) -> None:
        """A sender process is gone: what it had not answered failed; a new one takes over."""
        if self._closing or self._senders[sender.index] is not sender:
            return
        if sender.outstanding:
            failed = Outcome(False, None, 0, "the sender process stopped during the attempt")
            self._collector.add([(uid, failed) for uid in sender.outstanding])
        log.warning("a callback sender process stopped; starting a new one")
        self._senders[sender.index] = self._spawn(sender.index)

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        await asyncio.gather(*(s.stop(2.0) for s in self._senders))

    def send(self, items: Sequence[Outgoing]) -> None:
        by_sender: dict[int, list[Outgoing]] = {}
        for item in items:
            by_sender.setdefault(zlib.crc32(item.receiver.encode()) % self._n, []).append(item)
        for index, group in by_sender.items():
            self._senders[index].send(group)

    async def outcomes(self, timeout: float = 1.0) -> Done:
        return await self._collector.take(timeout)

    def receivers(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for s in self._senders:
            out.update(s.state)
        return out

    def receiver(self, name: str) -> dict[str, Any] | None:
        """One receiver's entry of :meth:`receivers`, as its sender process last reported it."""
        for s in self._senders:
            state = s.state.get(name)
            if state is not None:
                return state
        return None


Outbound = InProcessOutbound | ProcessOutbound


def open_outbound(
    processes: int,
    *,
    allow: Sequence[Network],
    timeout_s: float,
    concurrency: int,
    response_max: int,
    pause_max_s: float = 60.0,
) -> Outbound:
    kw = {
        "allow": allow,
        "timeout_s": timeout_s,
        "concurrency": concurrency,
        "response_max": response_max,
        "pause_max_s": pause_max_s,
    }
    if processes > 0:
        return ProcessOutbound(processes, **kw)  # type: ignore[arg-type]
    return InProcessOutbound(**kw)  # type: ignore[arg-type]
