"""The vendor doors' HTTP path: exact-path dispatch in front of Starlette.

Every NXCloud and CAMS call is a POST (CAMS: or a GET) to a fixed path, answered with one JSON
body. Going through Starlette's middleware stack, its router (a regular expression per route,
tried in order) and its Request and Response objects cost about 25 µs a call here, a tenth of a
whole checkCode; so those paths are dispatched from a dict to handlers that take an
:class:`Incoming` (the method, path, query, headers and body, read once) and give back a
:class:`Reply`. Everything else — the sign-up page, ``/healthz``, 404s — goes on to Starlette.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from numgate.metrics import metrics

log = logging.getLogger("numgate.web")


@dataclass(slots=True)
class Incoming:
    method: str
    path: str
    #: the raw query string (``a=1&b=2``), as sent
    query: str
    #: header names in lower case; a repeated header keeps its first value (see ``header_values``)
    headers: dict[str, str]
    body: bytes
    #: what the access log reports (vendor code, account)
    state: dict[str, Any]
    raw_headers: list[tuple[bytes, bytes]] = field(repr=False, default_factory=list)
    #: some header came more than once
    repeated: bool = False

    def header_values(self, name: str) -> list[str]:
        """Every value of a header, in order (a signature covers them all)."""
        name = name.lower()
        if not self.repeated:
            value = self.headers.get(name)
            return [] if value is None else [value]
        key = name.encode("latin-1")
        return [v.decode("latin-1") for k, v in self.raw_headers if k.lower() == key]


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    media_type: str = "application/json"
    headers: dict[str, str] | None = None


Handler = Callable[[Incoming], Awaitable[Reply]]
#: renders a refusal made before the handler runs (413: body too large) in the door's envelope
Refuse = Callable[[int, str], Reply]


def json_reply(status: int, data: Any) -> Reply:
    return Reply(status, orjson.dumps(data))


def error_body(code: int, message: str) -> dict[str, Any]:
    """numgate's own JSON error, for what no door answers (an unknown path or method, a bug)."""
    return {"code": code, "message": message, "data": None}


def not_allowed(method: str, path: str) -> dict[str, Any]:
    return error_body(405, f"Method {method} not allowed on {path}")


INTERNAL_ERROR = error_body(500, "Internal server error")


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Receive, limit: int, declared: int | None) -> bytes | None:
    """The request body, read in linear time; None if the client went away. Raises BodyTooLarge
    as soon as the declared length or the bytes received pass ``limit`` (the rest is not read)."""
    if declared is not None and declared > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _declared_length(scope: Scope) -> int | None:
    for k, v in scope["headers"]:
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


class Dispatch:
    """Exact-path routes ahead of a fallback ASGI app (Starlette). Bodies over ``max_body``
    bytes get 413 in the route's door's envelope, and the connection is closed unread."""

    def __init__(self, fallback: ASGIApp, max_body: int = 1024 * 1024) -> None:
        self._fallback = fallback
        self.max_body = max_body
        self._routes: dict[str, tuple[frozenset[str], Handler, Refuse, str]] = {}
        self._metrics = metrics()

    def add(self, path: str, methods: tuple[str, ...], handler: Handler, refuse: Refuse, door: str) -> None:
        """``door`` names the route's door in the metrics (``numgate_requests_total{door=…}``);
        a handler may set ``state["endpoint"]`` (CAMS: the action), else the path is the endpoint."""
        self._routes[path] = (frozenset(methods), handler, refuse, door)

    def _too_large(self, refuse: Refuse | None) -> Reply:
        detail = f"the request body is larger than {self.max_body} bytes (NUMGATE_MAX_BODY)"
        reply = refuse(413, detail) if refuse is not None else json_reply(413, error_body(413, detail))
        reply.headers = {**(reply.headers or {}), "Connection": "close"}
        return reply

    def oversize_response(self, path: str) -> bytes:
        """The whole HTTP/1.1 413 answer for a request to ``path`` whose declared body is over the
        limit, for the server to send before the request reaches the application (a flood of
        huge posts then costs a parse of their headers, not an application task each)."""
        route = self._routes.get(path)
        reply = self._too_large(route[2] if route is not None else None)
        head = [b"HTTP/1.1 413 Request Entity Too Large"]
        head.append(b"content-type: " + reply.media_type.encode("latin-1"))
        head.append(b"content-length: " + str(len(reply.body)).encode())
        head += [
            k.lower().encode("latin-1") + b": " + v.encode("latin-1")
            for k, v in (reply.headers or {}).items()
        ]
        return b"\r\n".join(head) + b"\r\n\r\n" + reply.body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self._fallback(scope, receive, send)
            return
        methods, handler, refuse, door = route
        method = scope["method"]
        if method not in methods:
            allowed = ", ".join(sorted(methods))
            reply = json_reply(405, not_allowed(method, scope["path"]))
            reply.headers = {"Allow": allowed}
            await _send(send, reply)
            return
        try:
            body = await read_body(receive, self.max_body, _declared_length(scope))
        except BodyTooLarge:
            scope.setdefault("state", {})["code"] = 413
            self._metrics.answered(door, scope["path"], "413", None)
            await _send(send, self._too_large(refuse))
            return
        if body is None:
            return  # the client went away: nothing to answer
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        headers: dict[str, str] = {}
        repeated = False
        for k, v in raw_headers:
            name = k.decode("latin-1").lower()
            if name in headers:
                repeated = True
            else:
                headers[name] = v.decode("latin-1")
        incoming = Incoming(
            method,
            scope["path"],
            scope.get("query_string", b"").decode("latin-1"),
            headers,
            body,
            scope.setdefault("state", {}),
            raw_headers,
            repeated,
        )
        start = time.perf_counter()
        try:
            reply = await handler(incoming)
        except Exception:  # a bug: answer like Starlette's error handler would, never a traceback
            log.exception("unhandled error on %s", scope["path"])
            reply = json_reply(500, INTERNAL_ERROR)
        state = incoming.state
        endpoint = state.get("endpoint") or scope["path"]
        self._metrics.answered(
            door, endpoint, str(state.get("code", reply.status)), time.perf_counter() - start
        )
        await _send(send, reply)


async def _send(send: Send, reply: Reply) -> None:
    headers = [
        (b"content-type", reply.media_type.encode("latin-1")),
        (b"content-length", str(len(reply.body)).encode("latin-1")),
    ]
    if reply.headers:
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})
