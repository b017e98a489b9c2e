"""The HTTP server numgate runs under: uvicorn, with its connection handling bounded.

uvicorn's protocol keeps a connection open for as long as its client keeps it: one that never
finishes its request headers, or trickles its body, holds a descriptor forever, and enough of
them (12,000 in a probe) exhaust the process's descriptors so that real clients are refused.
:class:`GuardedProtocol` adds what it lacks, per connection:

- its request headers must arrive within ``NUMGATE_HEADER_TIMEOUT`` seconds (10) of the
  connection opening or of the request's first byte, and its body within
  ``NUMGATE_BODY_TIMEOUT`` seconds (30) of the headers; else the connection is closed. Each
  deadline is drawn between the setting and half as much again, so that thousands of slow
  connections opened together are not all closed (and re-opened by their attacker) in the same
  instant;
- a request that declares a body over ``NUMGATE_MAX_BODY`` is answered 413 (in its door's
  envelope, by ``Dispatch.oversize_response``) as soon as its headers are parsed: the body is
  never read and the application never sees it. The connection is closed in stages (RFC 9112
  §9.6): the answer and a FIN go out at once, and the socket is dropped ``NUMGATE_LINGER``
  seconds (2) later. Closed at once, with the client's body still arriving, the kernel answers
  with a reset that can destroy the 413 before the client reads it; and a client that re-sends
  as soon as it is cut off (4 such clients were ~2,500 connections a second, each accepted,
  parsed and refused) waits out the linger with its sends blocked, at no cost to numgate;
- at most ``NUMGATE_MAX_CONNECTIONS`` connections are open (by default the descriptor limit less
  a reserve); at the cap a new connection first evicts the connection that has waited longest
  for its headers, and is refused only when every open connection is in a request.

A body sent without a declared length is bounded where bodies are read (``wire.py``).

Once it listens, the server also moves everything it loaded at start (libraries, metadata) out
of the garbage collector's sight and makes young collections rarer (:func:`tune_gc`): with
thousands of connections open, a full collection that walked every object stopped the event
loop for 70–160 ms at a time, which was most of the latency slow clients added.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import httptools  # type: ignore[import-untyped]
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from numgate.settings import Settings

log = logging.getLogger("numgate.web")
#: a deadline's spread (module-level so that a test can pin it)
_jitter = random.random
#: request-header bytes held before uvicorn's parser takes over, whether or not they are complete
HEAD_BUFFER = 16 * 1024
#: collect young objects every this many allocations (CPython's default: 700)
GC_THRESHOLDS = (10_000, 20, 100)


def tune_gc() -> None:
    """Freeze what is loaded now (it lives as long as the process) and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def pace_gc(young_every_s: float = 0.1, middle_every: int = 20, full_every: int = 600) -> None:
    """Collect on a clock: the young generation every ``young_every_s``, the middle one every
    ``middle_every`` of those (2 s), everything every ``full_every`` (60 s).

    CPython collects the young generation when allocations outrun deallocations by a threshold;
    when connections open as fast as others close (an attacker re-opening what numgate cuts
    off), they cancel out, and the young generation grew to 110,000 live objects before it was
    collected, in one 35-60 ms stop. Collected every 100 ms it holds 100 ms of new objects; what
    survives moves on and is walked again only by the rarer collections. The automatic
    thresholds stay as a backstop."""
    ticks = 0
    while True:
        await asyncio.sleep(young_every_s)
        ticks += 1
        gc.collect(2 if ticks % full_every == 0 else 1 if ticks % middle_every == 0 else 0)


class GuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with header/body deadlines and a connection cap (see the module doc)."""

    header_timeout_s = 10.0
    body_timeout_s = 30.0
    max_connections = 10_000
    max_body = 1024 * 1024
    linger_s = 2.0
    #: the full 413 answer for a path (``Dispatch.oversize_response``), cached per path
    oversize: Callable[[str], bytes] | None = None
    _oversize_cache: dict[str, bytes]
    #: connections of this server waiting for request headers, oldest first (shared by class)
    waiting: OrderedDict[GuardedProtocol, None]
    #: every open connection of this server
    open_connections: set[GuardedProtocol]

    _deadline: asyncio.TimerHandle | None = None
    #: answered 413: nothing more of this connection is parsed
    _refused = False
    #: uvicorn's own per-connection state is built (see :meth:`_start`)
    _ready = False
    #: the server is shutting down: a connection made now is closed at once
    stopping = False
    #: what uvicorn gives each connection of this server (set by the first one)
    _uvicorn_args: tuple[uvicorn.Config, Any, dict[str, Any], asyncio.AbstractEventLoop | None] | None = None

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        # uvicorn's state — parser, flow control, addresses, queues: some 20 objects that the
        # garbage collector walks while they live — is built when the first request's headers
        # are complete (:meth:`_start`); until then a connection is this object, its transport
        # and its deadline. 10,000 connections that never finish their headers were 240,000
        # young objects, and collecting them stopped the event loop for 15-60 ms at a time.
        if self._uvicorn_args is None:  # the same for every connection of this server
            type(self)._uvicorn_args = (config, server_state, app_state, _loop)
        self.loop = _loop or asyncio.get_event_loop()
        self.transport = None  # type: ignore[assignment]
        self.cycle = None  # type: ignore[assignment]
        self._head = bytearray()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if self.stopping:  # accepted just before the listener closed: the loop is about to close
            transport.abort()
            return
        open_now = type(self).open_connections
        if len(open_now) >= self.max_connections and not self._evict_one():
            transport.abort()  # every connection is busy in a request: refuse this one
            return
        self.transport = transport
        open_now.add(self)
        self._await_headers()

    def _start(self) -> None:
        """Build uvicorn's state and tell it the connection is made."""
        transport = self.transport
        assert self._uvicorn_args is not None
        super().__init__(*self._uvicorn_args)
        self._ready = True
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport is None or self.transport.is_closing():
            return  # refused (413) or cut off: what the client still sends is not parsed
        if not self._ready:
            head = self._head
            seen = max(len(head) - 2, 0)
            head += data
            if head.find(b"\n\r\n", seen) < 0 and head.find(b"\n\n", seen) < 0 and len(head) < HEAD_BUFFER:
                return  # the headers are not complete yet
            data, self._head = bytes(head), bytearray()
            self._start()
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._clear_deadline()
        type(self).waiting.pop(self, None)
        type(self).open_connections.discard(self)
        if self._ready:
            super().connection_lost(exc)

    @classmethod
    def drop_unstarted(cls) -> None:
        """Shutting down: close the connections that have not sent a whole request yet (uvicorn,
        which does not know them, closes the others), and any accepted from now on. A connection
        is accepted in one turn of the event loop and made in the next, so one can arrive after
        this: a browser's speculative connection that then sat idle was left open when the loop
        closed (``OSError: [Errno 16]`` from uvloop's ``close``)."""
        cls.stopping = True
        for conn in list(cls.open_connections):
            if not conn._ready:
                conn.transport.abort()

    @classmethod
    def abort_remaining(cls) -> int:
        """Stopped: cut whatever is still open (uvicorn gave up waiting on it after
        ``NUMGATE_DRAIN``; a 413 lingering; a close waiting to flush to a client that does not
        read), so that nothing outlives the event loop; how many there were."""
        left = list(cls.open_connections)
        for conn in left:
            conn.transport.abort()
        return len(left)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._await_headers()  # a request on a kept-alive connection gets the same deadline

    def on_headers_complete(self) -> None:
        type(self).waiting.pop(self, None)
        if self.oversize is not None and self._declared_length() > self.max_body:
            self._refuse_oversize()
            return
        self._set_deadline(self.body_timeout_s, "its request body")
        super().on_headers_complete()

    def _declared_length(self) -> int:
        for name, value in self.headers:
            if name == b"content-length":
                return int(value) if value.isdigit() else 0
        return 0

    def _refuse_oversize(self) -> None:
        self._clear_deadline()
        path = httptools.parse_url(self.url).path.decode("latin-1")
        cache = type(self)._oversize_cache
        reply = cache.get(path)
        if reply is None:
            assert self.oversize is not None
            reply = self.oversize(path)
            if len(cache) < 256:
                cache[path] = reply
        self._refused = True
        self.flow.pause_reading()
        self.transport.write(reply)
        if self.linger_s <= 0 or not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()  # the answer, then FIN; the client's body stays unread
        self._deadline = self.loop.call_later(self.linger_s, self.transport.abort)
        type(self).waiting[self] = None  # at the connection cap, it makes room first

    def on_body(self, body: bytes) -> None:
        if self._refused or self.cycle is None or self.transport.is_closing():
            return  # the rest of a refused body, already in the buffer being parsed: dropped
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._clear_deadline()
        if self.cycle is None:
            return  # a refused request (413): nothing was started for it
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            # idle between requests: uvicorn's keep-alive timeout closes it; for eviction it
            # counts as waiting for headers
            type(self).waiting[self] = None

    # -- deadlines -------------------------------------------------------------------------

    def _await_headers(self) -> None:
        waiting = type(self).waiting
        waiting.pop(self, None)
        waiting[self] = None
        self._set_deadline(self.header_timeout_s, "its request headers")

    def _set_deadline(self, seconds: float, what: str) -> None:
        self._clear_deadline()
        self._deadline = self.loop.call_later(seconds * (1.0 + 0.5 * _jitter()), self._expire, what)

    def _clear_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, what: str) -> None:
        self._deadline = None
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            return  # the answer is under way: the request was read
        log.debug("closing a connection that did not send %s in time", what)
        self.transport.abort()

    def _evict_one(self) -> bool:
        waiting = type(self).waiting
        while waiting:
            oldest, _ = waiting.popitem(last=False)
            if not oldest.transport.is_closing():
                oldest._clear_deadline()
                oldest.transport.abort()
                return True
        return False


class QuietBadRequests(logging.Filter):
    """uvicorn logs "Invalid HTTP request received." once per malformed request: under a flood
    that is thousands of lines a second, each costing more than refusing the request. One line
    every :attr:`every_s` seconds says how many there were."""

    every_s = 10.0

    def __init__(self) -> None:
        super().__init__()
        self._suppressed = 0
        self._shown_at: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "Invalid HTTP request received.":
            return True
        now = time.monotonic()
        if self._shown_at is not None and now - self._shown_at < self.every_s:
            self._suppressed += 1
            return False
        if self._suppressed:
            record.msg = (
                f"Invalid HTTP request received ({self._suppressed} more in the last "
                f"{now - (self._shown_at or now):.0f} s)."
            )
        self._suppressed, self._shown_at = 0, now
        return True


def quiet_bad_requests() -> None:
    err = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, QuietBadRequests) for f in err.filters):
        err.addFilter(QuietBadRequests())


def protocol_for(settings: Settings, oversize: Callable[[str], bytes] | None = None) -> type[GuardedProtocol]:
    """A protocol class bound to one server's settings (uvicorn instantiates it per connection)."""
    attrs: dict[str, Any] = {
        "header_timeout_s": settings.header_timeout_s,
        "body_timeout_s": settings.body_timeout_s,
        "max_connections": settings.resolved_max_connections,
        "max_body": settings.max_body,
        "linger_s": settings.linger_s,
        "oversize": staticmethod(oversize) if oversize is not None else None,
        "_oversize_cache": {},
        "_uvicorn_args": None,
        "waiting": OrderedDict(),
        "open_connections": set(),
        "stopping": False,
    }
    return type("NumgateProtocol", (GuardedProtocol,), attrs)


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration numgate serves with (``numgate serve`` and the tests alike)."""
    quiet_bad_requests()
    kw: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": protocol_for(settings, getattr(app, "oversize_response", None)),
        "lifespan": "on",
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": int(settings.drain_s),
        "server_header": False,
        "backlog": 2048,
    }
    kw.update(overrides)
    return uvicorn.Config(app, **kw)


class NumgateServer(uvicorn.Server):
    """uvicorn's Server, telling numgate when it listens and when it begins to stop."""

    def __init__(
        self,
        config: uvicorn.Config,
        on_listening: Callable[[], None] | None = None,
        on_shutdown: Callable[[], None] | None = None,
        *,
        gc_tuning: bool = True,
    ) -> None:
        super().__init__(config)
        self._on_listening = on_listening
        self._on_shutdown = on_shutdown
        #: :func:`tune_gc` and :func:`pace_gc` act on the whole process: off where the process
        #: hosts more than this server (the tests)
        self._gc_tuning = gc_tuning
        self._gc_pacer: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        if self._gc_tuning:
            tune_gc()
            self._gc_pacer = asyncio.get_running_loop().create_task(pace_gc())
        if self._on_listening is not None:
            self._on_listening()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._on_shutdown is not None:
            self._on_shutdown()
        http = self.config.http
        guarded = http if isinstance(http, type) and issubclass(http, GuardedProtocol) else None
        if guarded is not None:
            guarded.drop_unstarted()
        if self._gc_pacer is not None:
            self._gc_pacer.cancel()
        await super().shutdown(sockets)
        if guarded is not None and guarded.abort_remaining():
            await asyncio.sleep(0)  # their handles close on the next turn, before the loop does
