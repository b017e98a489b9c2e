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
  envelope, by ``Dispatch.oversize_response``) as soon as its headers are parsed, and its
  connection closed: the body is never read and the application never sees it;
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
#: collect young objects every this many allocations (CPython's default: 700)
GC_THRESHOLDS = (10_000, 20, 100)


def tune_gc() -> None:
    """Freeze what is loaded now (it lives as long as the process) and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class GuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with header/body deadlines and a connection cap (see the module doc)."""

    header_timeout_s = 10.0
    body_timeout_s = 30.0
    max_connections = 10_000
    max_body = 1024 * 1024
    #: the full 413 answer for a path (``Dispatch.oversize_response``), cached per path
    oversize: Callable[[str], bytes] | None = None
    _oversize_cache: dict[str, bytes]
    #: connections of this server waiting for request headers, oldest first (shared by class)
    waiting: OrderedDict[GuardedProtocol, None]
    #: every open connection of this server
    open_connections: set[GuardedProtocol]

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        open_now = type(self).open_connections
        if len(open_now) >= self.max_connections and not self._evict_one():
            transport.abort()  # every connection is busy in a request: refuse this one
            return
        super().connection_made(transport)
        open_now.add(self)
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():  # type: ignore[has-type]
            return  # refused (413) or cut off: what the client still sends is not parsed
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._clear_deadline()
        type(self).waiting.pop(self, None)
        type(self).open_connections.discard(self)
        if self.transport is not None:  # type: ignore[has-type]
            super().connection_lost(exc)

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
        self.flow.pause_reading()
        self.transport.write(reply)
        self.transport.close()

    def on_body(self, body: bytes) -> None:
        if self.cycle is None or self.transport.is_closing():
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
        "oversize": staticmethod(oversize) if oversize is not None else None,
        "_oversize_cache": {},
        "waiting": OrderedDict(),
        "open_connections": set(),
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
    ) -> None:
        super().__init__(config)
        self._on_listening = on_listening
        self._on_shutdown = on_shutdown

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            tune_gc()
            if self._on_listening is not None:
                self._on_listening()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._on_shutdown is not None:
            self._on_shutdown()
        await super().shutdown(sockets)
