"""The HTTP server numgate runs under: uvicorn, with its connection handling bounded.

uvicorn's protocol keeps a connection open for as long as its client keeps it: one that never
finishes its request headers, or trickles its body, holds a descriptor forever, and enough of
them (12,000 in a probe) exhaust the process's descriptors so that real clients are refused.
:class:`GuardedProtocol` adds what it lacks, per connection:

- its request headers must arrive within ``NUMGATE_HEADER_TIMEOUT`` seconds (10) of the
  connection opening or of the request's first byte, and its body within
  ``NUMGATE_BODY_TIMEOUT`` seconds (30) of the headers; else the connection is closed;
- at most ``NUMGATE_MAX_CONNECTIONS`` connections are open (by default the descriptor limit less
  a reserve); at the cap a new connection first evicts the connection that has waited longest
  for its headers, and is refused only when every open connection is in a request.

Request body size is bounded where bodies are read (``wire.py``, ``NUMGATE_MAX_BODY``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from numgate.settings import Settings

log = logging.getLogger("numgate.web")


class GuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with header/body deadlines and a connection cap (see the module doc)."""

    header_timeout_s = 10.0
    body_timeout_s = 30.0
    max_connections = 10_000
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
        self._set_deadline(self.body_timeout_s, "its request body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._clear_deadline()
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
        self._deadline = self.loop.call_later(seconds, self._expire, what)

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


def protocol_for(settings: Settings) -> type[GuardedProtocol]:
    """A protocol class bound to one server's settings (uvicorn instantiates it per connection)."""
    attrs: dict[str, Any] = {
        "header_timeout_s": settings.header_timeout_s,
        "body_timeout_s": settings.body_timeout_s,
        "max_connections": settings.resolved_max_connections,
        "waiting": OrderedDict(),
        "open_connections": set(),
    }
    return type("NumgateProtocol", (GuardedProtocol,), attrs)


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration numgate serves with (``numgate serve`` and the tests alike)."""
    kw: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": protocol_for(settings),
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
        if self.started and self._on_listening is not None:
            self._on_listening()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._on_shutdown is not None:
            self._on_shutdown()
        await super().shutdown(sockets)
