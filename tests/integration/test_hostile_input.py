"""Hostile and malformed input, through real HTTP: bodies over the limit refused before they are
read (413, in each door's envelope), slow clients cut off, receivers that answer too much,
values that used to reach the database — each answered the same way on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from conftest import Receiver, RunningServer, Tenant, aiohttp_server, make_tenant
from numgate.client import NxClient, headers_for
from numgate.settings import Settings
from numgate.web.server import protocol_for, uvicorn_config

CHECK = "/api/number/check"
QUERY = "/api/number/query"


def raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 5.0) -> tuple[bytes, float]:
    """Send ``head`` (and ``body``), read the answer until the server closes; (answer, seconds)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    start = time.monotonic()
    try:
        s.sendall(head + body)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks), time.monotonic() - start
    finally:
        s.close()


def test_a_huge_declared_body_is_refused_unread(server: RunningServer) -> None:
    """100 MB declared, a few bytes sent: 413 at once, in NXCloud's envelope, connection closed."""
    head = (
        b"POST /api/number/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000000\r\n\r\n"
    )
    answer, took = raw_request(server.port, head, b'{"phone":')
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 413 Request Entity Too Large", answer[:200]
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"connection: close" in headers.lower() and b"NUMGATE_MAX_BODY" in headers
    assert orjson.loads(body) == {
        "msg": "Parameter error",
        "code": 1002,
        "data": {"messageId": "", "batchNo": ""},
    }
    assert took < 2  # answered without waiting for (or reading) the 100 MB


def test_a_refused_client_still_sending_reads_its_413(make_server: Any) -> None:
    """RFC 9112 §9.6: the 413 and a FIN go out, the rest of the body is left unread, and the
    socket is dropped ``NUMGATE_LINGER`` seconds later — so a client still sending its body
    reads the answer instead of a reset, and then cannot hold the connection."""
    srv = make_server(linger_s=1.0)
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    s.sendall(
        b"POST /api/number/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000000\r\n\r\n" + b"x" * 65536
    )
    answer = b""
    while not answer.endswith(b"}"):
        chunk = s.recv(65536)
        assert chunk, answer
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert s.recv(1) == b""  # FIN: nothing more will come
    start, cut_off = time.monotonic(), False
    s.settimeout(0.2)
    while time.monotonic() - start < 5:  # numgate reads none of it: the buffers fill, then the reset
        try:
            s.send(b"x" * 65536)
        except TimeoutError:
            time.sleep(0.05)
        except (ConnectionResetError, BrokenPipeError):
            cut_off = True
            break
    s.close()
    assert cut_off and time.monotonic() - start > 0.5


def test_requests_trickled_byte_by_byte_and_kept_alive_are_served(server: RunningServer) -> None:
    """A connection's HTTP state is built once its first request's headers are complete: a
    request sent a byte at a time (the end of its headers split), then a second request on the
    same connection, and a third pipelined behind it, are all answered."""
    t = make_tenant(server)
    raw = orjson.dumps({"phone": "2348031234567", "appkey": t.appkey, "checkLevel": 1})

    def request() -> bytes:
        h = headers_for(t.access_key, t.access_secret, "1", "numbercheck", raw)
        lines = "".join(f"{k}: {v}\r\n" for k, v in h.items())
        return (
            f"POST /api/number/check/get HTTP/1.1\r\nHost: x\r\nContent-Length: {len(raw)}\r\n{lines}\r\n"
        ).encode() + raw

    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for byte in request():
        s.sendall(bytes([byte]))
    s.sendall(request() + request())
    answers, buf = 0, b""
    while answers < 3:
        chunk = s.recv(65536)
        assert chunk, buf
        buf += chunk
        answers = buf.count(b"HTTP/1.1 200 OK")
    s.close()
    assert buf.count(b'"code":0') == 3


def test_a_chunked_body_over_the_limit_is_refused(make_server: Any) -> None:
    srv = make_server(max_body=64 * 1024)

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 10_000

    r = httpx.post(srv.base_url + "/api/wa/integrator/embedded/register/login", content=chunks())
    assert r.status_code == 413 and r.json() == {"code": 1002, "data": None, "message": "Parameter error"}
    r = httpx.post(srv.base_url + "/", content=b"A=" + b"x" * 70_000)
    assert r.status_code == 413 and r.json()["Code"] == "RequestEntityTooLarge"  # CAMS: Alibaba's body
    t = make_tenant(srv)
    body = orjson.dumps({"phone": ",".join(f"2348031{n:06d}" for n in range(2000)), "appkey": t.appkey})
    assert len(body) < 64 * 1024
    with NxClient(srv.base_url, t.access_key, t.access_secret) as nx:
        assert nx.post(CHECK, body)["code"] == 0  # under the limit: served


def test_slow_clients_are_cut_off_and_others_served(make_server: Any) -> None:
    """Connections that never finish their headers (or body) are closed after the deadline; at the
    connection cap the one waiting longest makes room; normal requests are served throughout."""
    srv = make_server(header_timeout_s=1.0, body_timeout_s=1.0, max_connections=40)
    slow = []
    for i in range(60):  # more than the cap
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"POST /api/number/check HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"GE")
        slow.append(s)
    start = time.monotonic()
    for _ in range(20):
        assert httpx.get(srv.base_url + "/healthz", timeout=5).status_code == 200
    assert time.monotonic() - start < 5
    body_slow = socket.create_connection(("127.0.0.1", srv.port))
    body_slow.sendall(b"POST /api/number/check HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    slow.append(body_slow)
    time.sleep(2.5)
    closed = 0
    for s in slow:
        s.settimeout(0.5)
        try:
            closed += s.recv(1) == b""
        except (ConnectionResetError, TimeoutError, OSError):
            closed += 1
        s.close()
    assert closed == len(slow)


def test_a_receiver_that_answers_too_much_is_read_64_kib(make_server: Any, receiver: Receiver) -> None:
    sent = {"bytes": 0}
    done = threading.Event()

    async def flood(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(status=200)
        await resp.prepare(request)
        try:
            for _ in range(200):  # up to 200 MB
                await resp.write(b"x" * 1_000_000)
                sent["bytes"] += 1_000_000
        except (ConnectionError, RuntimeError):
            pass
        finally:
            done.set()
        return resp

    app = web.Application()
    app.router.add_post("/flood", flood)
    with aiohttp_server(app) as url:
        srv = make_server(callback_response_max=64 * 1024)
        t = make_tenant(srv)
        with NxClient(srv.base_url, t.access_key, t.access_secret) as nx:
            assert (
                nx.post(CHECK, {"phone": "2348031234567", "appkey": t.appkey, "drUrl": url + "/flood"})[
                    "code"
                ]
                == 0
            )
        assert done.wait(30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = srv.call(lambda core: core.deliveries.recent())
            if rows and rows[0].status == "delivered":
                break
            time.sleep(0.1)
    assert rows[0].status == "delivered"
    assert sent["bytes"] < 50_000_000  # the connection was closed long before the 200 MB


def post(
    srv: RunningServer, t: Tenant, path: str, body: dict[str, Any] | bytes, **headers: Any
) -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    h = headers_for(t.access_key, t.access_secret, "1", "numbercheck", raw, ts=srv.clock.time_ms())
    h.update(headers)
    return httpx.post(srv.base_url + path, content=raw, headers=h).json()  # type: ignore[no-any-return]


def test_malformed_values_are_refused_at_the_door(server: RunningServer, tenant: Tenant) -> None:
    """The same answers on both databases: nothing malformed reaches them."""
    r = post(
        server,
        tenant,
        QUERY,
        {"page": 1, "pageSize": 10, "date": "2026-11-22", "batchNo": "b"},
        ts="²".encode("latin-1"),
    )
    assert r["code"] == 1004  # superscript digits are not ASCII digits
    day = server.clock.now().date().isoformat()
    r = post(server, tenant, QUERY, {"page": 2**62, "pageSize": 10, "date": day, "batchNo": "b"})
    assert r["code"] == 88 and "page" in r["msg"]
    r = post(server, tenant, QUERY, {"page": 1, "pageSize": 10, "date": day, "messageId": "a\u0000b"})
    assert r["code"] == 88 and "control character" in r["msg"]
    r = post(server, tenant, CHECK, {"phone": "2348031234567", "appkey": tenant.appkey, "batchNo": "b\u0000"})
    assert r["code"] == 201 and "control character" in r["msg"]
    r = post(server, tenant, CHECK, {"phone": "2348031234567\u0000", "appkey": tenant.appkey})
    assert r["code"] == 201
    long_item = "2348031234567" + "9" * 90
    r = post(
        server,
        tenant,
        CHECK,
        {"phone": f"2348031234567,{long_item}", "appkey": tenant.appkey, "batchNo": "long"},
    )
    assert r["code"] == 0, r  # accepted: the long item fails alone

    deadline = time.monotonic() + 10
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        q = post(server, tenant, QUERY, {"page": 1, "pageSize": 10, "date": day, "batchNo": "long"})
        rows = q["data"]["result"]
        if all(row["code"] != "" for row in rows):
            break
        time.sleep(0.1)
    assert [(row["phone"], row["code"], row["msg"]) for row in rows] == [
        ("2348031234567", 0, "success"),
        (long_item, 114, "Invalid number format"),
    ]


@pytest.fixture
def query_server(make_server: Any) -> RunningServer:
    return make_server(inprocess_workers=False)  # numbers stay unchecked until drained


def test_query_rows_tell_pending_from_failed(query_server: RunningServer) -> None:
    srv = query_server
    t = make_tenant(srv)
    day = srv.clock.now().date().isoformat()
    assert post(srv, t, CHECK, {"phone": "2348031234567,12", "appkey": t.appkey, "batchNo": "q"})["code"] == 0
    rows = post(srv, t, QUERY, {"page": 1, "pageSize": 10, "date": day, "batchNo": "q"})["data"]["result"]
    assert [(r["code"], r["msg"]) for r in rows] == [("", "not checked yet")] * 2

    async def drain(core: Any) -> int:
        from numgate.numbers.worker import drain as drain_checks

        return await drain_checks(core)

    assert srv.call(drain) == 2
    rows = post(srv, t, QUERY, {"page": 1, "pageSize": 10, "date": day, "batchNo": "q"})["data"]["result"]
    assert [(r["code"], r["msg"]) for r in rows] == [(0, "success"), (114, "Invalid number format")]


def closed_by_server(s: socket.socket, timeout: float = 5.0) -> bool:
    s.settimeout(timeout)
    try:
        return s.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    finally:
        s.close()


def test_stopping_closes_every_connection(make_server: Any) -> None:
    """A stopping server closes the connections that never sent a request, that sent part of
    one, and that sit idle after one (kept alive): nothing outlives its event loop. (A browser's
    idle connection left open made uvloop's ``close`` fail with ``OSError: [Errno 16]``.)"""
    srv = make_server()
    idle = socket.create_connection(("127.0.0.1", srv.port))
    partial = socket.create_connection(("127.0.0.1", srv.port))
    partial.sendall(b"GET /heal")
    kept = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    kept.request("GET", "/healthz")
    answer = kept.getresponse()
    assert answer.status == 200 and answer.read() and not answer.will_close
    assert kept.sock is not None
    time.sleep(0.2)  # all three made on the server's side

    srv.stop()
    assert not srv.thread.is_alive()
    assert [closed_by_server(s) for s in (idle, partial, kept.sock)] == [True, True, True]


def test_a_connection_made_as_the_server_stops_is_closed(settings: Settings) -> None:
    """A connection is accepted in one turn of the event loop and made in the next: one accepted
    just before the listener closed is made after the shutdown has begun, and is closed at once
    (a real socket, on the event loop uvicorn runs numgate on)."""
    import uvloop
    from uvicorn.server import ServerState

    protocol = protocol_for(settings)
    config = uvicorn_config(None, settings)
    state = ServerState()

    async def made_while_stopping() -> tuple[bool, int, bytes]:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        protocol.drop_unstarted()  # the shutdown begins
        transport, _ = await loop.connect_accepted_socket(lambda: protocol(config, state, {}, loop), ours)
        await asyncio.sleep(0.05)
        try:
            seen = await asyncio.wait_for(loop.sock_recv(theirs, 1), 2)
        finally:
            theirs.close()
        return transport.is_closing(), len(protocol.open_connections), seen

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        closing, still_open, seen = runner.run(made_while_stopping())
    assert (closing, still_open, seen) == (True, 0, b"")
