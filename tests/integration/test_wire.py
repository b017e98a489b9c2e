"""The vendor doors' own HTTP path (web/wire.py): bodies in several chunks, methods a path does
not take, and a bug in a handler — each answered in JSON, never with a traceback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import orjson

from conftest import RunningServer, make_tenant
from numgate.client.nxcloud import headers_for
from numgate.web.wire import Dispatch, Incoming, Reply

CHECK = "/api/number/check"


def test_a_body_sent_in_chunks_is_read_whole(server: RunningServer) -> None:
    t = make_tenant(server)
    raw = orjson.dumps({"phone": ",".join(f"2348031{n:06d}" for n in range(300)), "appkey": t.appkey})
    headers = headers_for(t.access_key, t.access_secret, "1", "numbercheck", raw, ts=server.clock.time_ms())

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(raw), 1000):
            yield raw[i : i + 1000]

    r = httpx.post(server.base_url + CHECK, content=chunks(), headers=headers)  # chunked encoding
    assert r.status_code == 200 and r.json()["code"] == 0, r.text


def test_a_method_the_path_does_not_take_is_405_with_allow(server: RunningServer) -> None:
    r = httpx.put(server.base_url + CHECK, content=b"{}")
    assert r.status_code == 405 and r.json()["code"] == 405
    assert r.headers["allow"] == "POST"
    r = httpx.delete(server.base_url + "/")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"


def test_a_handler_bug_is_a_json_500_without_a_traceback() -> None:
    async def broken(request: Incoming) -> Reply:
        raise KeyError("a bug")

    async def fallback(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
        raise AssertionError("the path is the dispatcher's")

    def refuse(status: int, detail: str) -> Reply:  # pragma: no cover - the body is small
        raise AssertionError(detail)

    dispatch = Dispatch(fallback)
    dispatch.add("/x", ("POST",), broken, refuse, "test")
    sent: list[dict[str, Any]] = []
    messages = [
        {"type": "http.request", "body": b"{", "more_body": True},
        {"type": "http.request", "body": b"}", "more_body": False},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [], "query_string": b""}
    asyncio.run(dispatch(scope, receive, send))
    assert sent[0]["status"] == 500
    body = orjson.loads(sent[1]["body"])
    assert body == {"code": 500, "message": "Internal server error", "data": None}
