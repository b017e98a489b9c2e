"""Callback delivery with receivers that behave badly, through real HTTP: a receiver that hangs
delays nobody else; a small standard-library receiver is paced to what it takes; batched
callbacks (signature, ids, the whole array again after a 500); and the pull feed returns every
result, once, in order, after a receiver was down longer than the retry window."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import orjson
import pytest

from conftest import Receiver, RunningServer, Tenant, make_tenant, metric, scrape_metrics
from numgate.client import NxClient


def submit(srv: RunningServer, t: Tenant, phones: list[str], url: str) -> dict[str, Any]:
    with NxClient(srv.base_url, t.access_key, t.access_secret) as nx:
        return nx.number_check(phones, appkey=t.appkey, dr_url=url)


def ng(n: int, start: int = 0) -> list[str]:
    return [f"2348031{i:06d}" for i in range(start, start + n)]


@pytest.fixture
def silent_receiver() -> Iterator[tuple[str, list[socket.socket]]]:
    """Accepts every connection and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1024)
    srv.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}/cb", held
    stop.set()
    srv.close()
    for c in held:
        c.close()


def test_a_hanging_receiver_delays_no_other_tenant(
    make_server: Any, receiver: Receiver, silent_receiver: tuple[str, list[socket.socket]]
) -> None:
    url, held = silent_receiver
    srv = make_server(callback_timeout_s=30.0)
    a, b = make_tenant(srv, name="a"), make_tenant(srv, name="b")
    assert submit(srv, a, ng(3000), url)["messageId"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(held) < 2:
        time.sleep(0.05)
    for round_ in range(3):  # while A's receiver hangs, B's batches are called back at once
        start = time.monotonic()
        submit(srv, b, ng(10, 1000 * round_), receiver.url(f"/b{round_}"))
        receiver.wait_for(10, f"/b{round_}", timeout=10)
        assert time.monotonic() - start < 2.0
    assert len(held) == 2  # the hanging receiver got its first two connections, no more


class CountingHandler(http.server.BaseHTTPRequestHandler):
    """A webhook handler on the standard library: one connection at a time, listen backlog 5."""

    seen: ClassVar[list[tuple[str, str]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.headers["X-Numgate-Delivery-Id"], self.headers["X-Numgate-Attempt"]))
        json.loads(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_standard_library_receiver_is_paced_to_what_it_takes(make_server: Any) -> None:
    """http.server (listen backlog 5) dropped connections past a handful at once: 400 callbacks
    took ~39 s of time-outs and retries. Paced, every callback goes through the first time."""
    CountingHandler.seen = []
    httpd = http.server.HTTPServer(("127.0.0.1", 0), CountingHandler)  # request_queue_size = 5
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        srv = make_server(callback_timeout_s=10.0, callback_retry_interval_s=60.0)
        t = make_tenant(srv)
        start = time.monotonic()
        submit(srv, t, ng(1000), f"http://127.0.0.1:{httpd.server_address[1]}/cb")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(CountingHandler.seen) < 1000:
            time.sleep(0.05)
        took = time.monotonic() - start
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert len(CountingHandler.seen) == 1000
    assert {attempt for _, attempt in CountingHandler.seen} == {"1"}  # no retry, so no time-out
    assert took < 30


def test_batched_callbacks(make_server: Any, receiver: Receiver) -> None:
    srv = make_server(callback_retry_interval_s=0.3)
    t = make_tenant(srv)
    srv.call(lambda core: core.tenancy.set_callback_batch(t.appkey, 50))
    secret = srv.call(lambda core: core.tenancy.app_secret(t.app_id))
    receiver.plan["/batch"] = [500, 200]  # the first POST fails: its whole array comes again
    before = scrape_metrics(srv.base_url)  # this process's series are every test's
    submit(srv, t, [*ng(120), "12"], receiver.url("/batch"))
    deadline = time.monotonic() + 20
    got: list[Any] = []
    while time.monotonic() < deadline:
        got = receiver.accepted("/batch")
        if sum(int(g.headers.get("X-Numgate-Batch-Size", "1")) for g in got[1:]) >= 121:
            break
        time.sleep(0.05)
    first, rest = got[0], got[1:]
    elements: dict[str, dict[str, Any]] = {}
    for g in got:
        arr = orjson.loads(g.body)
        ids = (
            g.headers["X-Numgate-Delivery-Ids"].split(",") if "X-Numgate-Delivery-Ids" in g.headers else None
        )
        assert (isinstance(arr, list) and 1 <= len(arr) <= 50) or ids is None
        expect = "sha256=" + hmac.new(secret.encode(), g.body, hashlib.sha256).hexdigest()
        assert g.headers["X-Numgate-Signature"] == expect  # signed like a single callback
        if ids is None:  # a lone callback goes as NXCloud's body, not an array of one
            continue
        assert int(g.headers["X-Numgate-Batch-Size"]) == len(arr) == len(ids)
        for uid, element in zip(ids, arr, strict=True):
            assert set(element) >= {"messageId", "code", "msg", "batchNo", "phone"}  # each a v1 body
            elements.setdefault(uid, element)
    first_ids = set(first.headers["X-Numgate-Delivery-Ids"].split(","))
    again = [g for g in rest if first_ids & set(g.headers.get("X-Numgate-Delivery-Ids", "").split(","))]
    assert set().union(*(set(g.headers["X-Numgate-Delivery-Ids"].split(",")) for g in again)) == first_ids
    assert {g.headers["X-Numgate-Attempt"] for g in again} == {"2"}
    codes = sorted(e["code"] for e in elements.values())
    assert len(elements) == 121 and codes.count(114) == 1
    # metrics: each callback of a POST is an attempt; the answer time is counted once per POST

    def grown(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    deadline = time.monotonic() + 20
    while True:  # the worker records what the receiver answered a moment after it answered
        after = scrape_metrics(srv.base_url)
        if (
            grown("numgate_callback_attempts_total", outcome="delivered") >= 121
            or time.monotonic() > deadline
        ):
            break
        time.sleep(0.05)
    assert grown("numgate_callback_attempts_total", outcome="delivered") == 121
    assert grown("numgate_callback_attempts_total", outcome="error") == len(first_ids)  # the 500
    assert grown("numgate_callback_duration_seconds_count") == len(got)


def test_a_receiver_that_keeps_up_paces_its_accounts_checks_and_one_that_fails_does_not(
    make_server: Any,
) -> None:
    """While a receiver answers every callback, its account's numbers are checked about as fast
    as it takes their callbacks (not all at once, to wait in the table and be claimed back); once
    it fails, the rest are checked at once (their results wait for it, and in the pull feed)."""
    from aiohttp import web

    from conftest import aiohttp_server
    from numgate.db.tables import checks, count_in_states
    from numgate.delivery.worker import QUEUE_MIN
    from numgate.numbers.service import STATUS_LEASED, STATUS_PENDING

    state = {"status": 200, "answered": 0}

    async def slow_but_sure(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(0.02)
        state["answered"] += 1
        return web.Response(status=state["status"])

    async def unchecked(core: Any) -> int:
        async with core.db.read() as tx:
            return sum(
                int(n) for _, n in await tx.all(count_in_states(checks, [STATUS_PENDING, STATUS_LEASED]))
            )

    app = web.Application()
    app.router.add_post("/cb", slow_but_sure)
    total = 30_000
    with aiohttp_server(app) as base:
        srv = make_server(
            callback_timeout_s=10.0, callback_retry_interval_s=30.0, callback_retry_window_s=600.0
        )
        t = make_tenant(srv, balance=400 * 10_000)  # 30,000 numbers at 100 each
        for i in range(total // 5000):
            submit(srv, t, ng(5000, 5000 * i), base + "/cb")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and state["answered"] < 2000:
            time.sleep(0.02)
        checked = total - srv.call(unchecked)
        answered = state["answered"]
        # what is checked and not yet answered: the receiver's queue here, the chunks being
        # checked, and what was checked before its first answers showed it keeps up
        assert 2000 <= answered < checked <= answered + QUEUE_MIN + 5000, (answered, checked)

        state["status"] = 503  # it fails now: nothing holds the checks back
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and srv.call(unchecked):
            time.sleep(0.1)
        assert srv.call(unchecked) == 0


def test_callbacks_that_wait_for_room_go_out_as_room_frees_not_at_the_next_poll(
    make_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More callbacks than a receiver's queue here holds: the rest wait in the table. The
    delivery worker does not poll for them while it has no room; the answers that free room wake
    it, so with a 30 s poll they all go out within seconds of the receiver answering."""
    from aiohttp import web

    from conftest import aiohttp_server
    from numgate.db.tables import count_in_states, deliveries
    from numgate.delivery.outbox import IN_FLIGHT, PENDING
    from numgate.delivery.worker import QUEUE_MIN, DeliveryWorker

    rounds = {"n": 0}
    claim_round = DeliveryWorker.claim_round

    async def counted(self: DeliveryWorker) -> int:  # counts the claim rounds, changes nothing
        rounds["n"] += 1
        return await claim_round(self)

    monkeypatch.setattr(DeliveryWorker, "claim_round", counted)

    state: dict[str, Any] = {"open": False, "ids": set()}

    async def held_then_answered(request: web.Request) -> web.Response:
        await request.read()
        while not state["open"]:
            await asyncio.sleep(0.01)
        state["ids"].add(request.headers["X-Numgate-Delivery-Id"])
        return web.Response(status=200)

    async def stored(core: Any, states: list[int]) -> int:
        async with core.db.read() as tx:
            return sum(int(n) for _, n in await tx.all(count_in_states(deliveries, states)))

    async def waiting(core: Any) -> int:
        return await stored(core, [PENDING])

    async def enqueued(core: Any) -> int:
        return await stored(core, [PENDING, IN_FLIGHT])

    app = web.Application()
    app.router.add_post("/cb", held_then_answered)
    total = QUEUE_MIN + 2500  # the queue here takes a chunk more when two are enqueued at once
    with aiohttp_server(app) as base:
        srv = make_server(worker_poll_s=30.0, callback_timeout_s=60.0)
        t = make_tenant(srv)
        submit(srv, t, ng(total), base + "/cb")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and srv.call(enqueued) < total:
            time.sleep(0.05)
        assert srv.call(enqueued) == total
        assert srv.call(waiting) >= 500  # the queue here is full, the rest wait
        before = rounds["n"]
        time.sleep(1.0)
        assert rounds["n"] - before <= 2  # no claim round while there is no room

        state["open"] = True
        deadline = time.monotonic() + 15  # half the poll: only the wake-ups can make it
        while time.monotonic() < deadline and len(state["ids"]) < total:
            time.sleep(0.05)
        assert len(state["ids"]) == total
        assert srv.call(waiting) == 0


def test_the_pull_feed_after_a_receiver_outage_longer_than_the_retry_window(
    make_server: Any, receiver: Receiver
) -> None:
    srv = make_server(callback_retry_window_s=0.5, callback_retry_interval_s=0.2, db_timeout_s=0.5)
    t = make_tenant(srv)
    receiver.plan["/down"] = [503]
    subs = [submit(srv, t, ng(30, 100 * i), receiver.url("/down")) for i in range(3)]

    def failed() -> int:
        return len([d for d in srv.call(lambda core: core.deliveries.recent(status="failed", limit=1000))])

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and failed() < 90:
        time.sleep(0.2)
    assert failed() == 90  # every callback given up on
    time.sleep(1.2)  # the feed shows a result once it is 2 × NUMGATE_DB_TIMEOUT old
    results: list[dict[str, Any]] = []
    cursor = None
    with NxClient(srv.base_url, t.access_key, t.access_secret) as nx:
        while True:
            page = nx.number_results(cursor, limit=40)
            results += page["results"]
            assert page["cursor"]
            cursor = page["cursor"]
            if not page["more"]:
                break
        assert nx.number_results(cursor)["results"] == []  # nothing twice
        bad = nx.post("/api/number/results", {"cursor": "not-a-cursor"})
        assert bad["code"] == 88 and "cursor" in bad["msg"]
    ids = [r["messageId"] for r in results]
    assert len(ids) == len(set(ids)) == 90
    assert {i.rsplit("-", 1)[0] for i in ids} == {s["messageId"] for s in subs}
    bodies = {orjson.loads(r.body)["messageId"]: orjson.loads(r.body) for r in receiver.accepted("/down")}
    assert all(bodies[r["messageId"]] == r for r in results)  # exactly the callback's body


def test_concurrent_submits_with_a_new_callback_url_all_succeed(make_server: Any, receiver: Receiver) -> None:
    """Requests that see a callback URL for the first time at the same moment store it once; none
    of them fails (two parallel submits to a new URL once answered 299 on SQLite)."""
    import asyncio

    from numgate.client import AsyncNxClient

    srv = make_server()
    t = make_tenant(srv)

    async def main() -> list[dict[str, Any]]:
        async with AsyncNxClient(srv.base_url, t.access_key, t.access_secret) as nx:
            return await asyncio.gather(
                *(
                    nx.post(
                        "/api/number/check",
                        {
                            "phone": f"2348031{i:06d}",
                            "appkey": t.appkey,
                            "drUrl": receiver.url(f"/new{round_ % 3}"),
                        },
                    )
                    for round_ in range(4)
                    for i in range(round_ * 10, round_ * 10 + 6)
                )
            )

    replies = asyncio.run(main())
    assert [r["code"] for r in replies] == [0] * 24
    receiver.wait_for(24, timeout=30)

    async def stored(core: Any) -> list[Any]:
        from numgate.db.tables import callback_targets

        async with core.db.read() as tx:
            return await tx.all(callback_targets.select())

    assert len(srv.call(stored)) == 3  # each URL stored once
