"""Replay protection that holds across restarts and endpoints: a signed request re-sent after
numgate restarted gets the first reply (one batch, one charge); a CAMS nonce stays used; a
signature re-sent to another path is refused (1003); a refused request (288) is not remembered,
so its retry runs. The same with the memory in Redis, shared by two servers."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx
import orjson
from sqlalchemy import select

from camssign import cams_request
from conftest import RunningServer, Tenant, make_tenant, run_sync
from numgate.client import headers_for
from numgate.clock import FixedClock
from numgate.db.direct import Statement, open_database
from numgate.db.engine import create_engine
from numgate.db.tables import replay_keys
from numgate.replay import DatabaseReplayGuard, _Claim, _Reply

CHECK = "/api/number/check"
CHECK_GET = "/api/number/check/get"


def signed(srv: RunningServer, t: Tenant, body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    raw = orjson.dumps(body)
    return raw, headers_for(t.access_key, t.access_secret, "1", "numbercheck", raw, ts=srv.clock.time_ms())


def send(srv: RunningServer, path: str, raw: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(srv.base_url + path, content=raw, headers=headers)


def list_numbers(srv: RunningServer, t: Tenant, when: datetime, nonce: str) -> httpx.Response:
    """A CAMS call with a chosen signature nonce (a read: it changes nothing)."""
    return cams_request(
        srv,
        "QueryChatappPhoneNumbers",
        {"CustSpaceId": t.appkey},
        key=t.access_key,
        secret=t.access_secret,
        when=when,
        nonce=nonce,
    )


async def _batches(core: Any) -> int:
    return len(await core.batches.recent())


def test_a_replay_after_a_restart_gets_the_first_reply(make_server: Any) -> None:
    first = make_server()
    t = make_tenant(first)
    raw, headers = signed(first, t, {"phone": "2348031234567", "appkey": t.appkey})
    reply = send(first, CHECK, raw, headers)
    assert reply.json()["code"] == 0
    first.stop()
    again = make_server()  # the same database, a new process's memory
    replayed = send(again, CHECK, raw, headers)
    assert replayed.content == reply.content
    assert again.call(_batches) == 1

    async def balance(core: Any) -> Any:
        return (await core.ledger.balances(t.account_id))[0]

    bal = again.call(balance)
    assert bal.charges + bal.open_reservations == 100  # one number, charged (or held) once


def test_a_cams_nonce_stays_used_after_a_restart(make_server: Any) -> None:
    first = make_server()
    t = make_tenant(first)
    when = first.clock.now()

    def call(srv: RunningServer) -> httpx.Response:
        return list_numbers(srv, t, when, "a-nonce-used-once")

    assert call(first).status_code == 200
    first.stop()
    r = call(make_server())
    assert (r.status_code, r.json()["Code"]) == (400, "SignatureNonceUsed")


def test_a_signature_replayed_to_another_path_is_refused(server: RunningServer, tenant: Tenant) -> None:
    raw, headers = signed(server, tenant, {"phone": "2348031234567", "appkey": tenant.appkey})
    ok = send(server, CHECK_GET, raw, headers)
    assert ok.json()["code"] == 0
    assert send(server, CHECK_GET, raw, headers).content == ok.content  # a replay: the same reply
    other = send(server, CHECK, raw, headers)
    assert other.json()["code"] == 1003 and "another endpoint" in other.headers["X-Numgate-Error-Detail"]
    assert server.call(_batches) == 1


def test_a_refused_request_is_not_remembered(make_server: Any) -> None:
    srv = make_server(rate_limit_per_second=1)
    t = make_tenant(srv)
    a = signed(srv, t, {"phone": "2348031234567", "appkey": t.appkey, "batchNo": "a"})
    b = signed(srv, t, {"phone": "2348031234567", "appkey": t.appkey, "batchNo": "b"})
    assert send(srv, CHECK, *a).json()["code"] == 0
    refused = send(srv, CHECK, *b).json()
    assert refused["code"] == 288 and "retry in a second" in refused["msg"]
    time.sleep(1.5)
    assert send(srv, CHECK, *b).json()["code"] == 0  # the same bytes, now executed
    assert srv.call(_batches) == 2


def test_the_memory_in_redis_is_shared_and_bound_to_the_path(
    make_server: Any, redis_url: tuple[str, str]
) -> None:
    url, prefix = redis_url
    a = make_server(redis_url=url, redis_prefix=prefix)
    b = make_server(redis_url=url, redis_prefix=prefix)
    t = make_tenant(a)
    raw, headers = signed(a, t, {"phone": "2348031234567", "appkey": t.appkey})
    first = send(a, CHECK, raw, headers)
    assert first.json()["code"] == 0
    assert send(b, CHECK, raw, headers).content == first.content
    assert send(b, CHECK_GET, raw, headers).json()["code"] == 1003
    assert a.call(_batches) == 1


def test_the_memory_in_the_database_is_shared_by_servers_on_it(make_server: Any) -> None:
    """A server answers before its reply is stored (the store follows the answer): a replay
    sent at once to another server on the same database still gets that reply, not a second
    run."""
    a, b = make_server(), make_server()
    t = make_tenant(a)
    for i in range(5):
        raw, headers = signed(a, t, {"phone": "2348031234567", "appkey": t.appkey, "batchNo": f"b{i}"})
        first = send(a, CHECK, raw, headers)
        assert first.json()["code"] == 0
        assert send(b, CHECK, raw, headers).content == first.content
    assert a.call(_batches) == 5


def test_a_reply_and_a_claim_of_its_key_in_one_batch(database_url: str) -> None:
    """Replies are stored in the statement that takes the next keys; a key whose reply is in
    that statement is claimed after it (a row may be changed once per statement): not taken."""
    clock = FixedClock()

    async def main() -> tuple[list[bool], Any, Any]:
        engine = create_engine(database_url)
        db = open_database(engine)
        guard = DatabaseReplayGuard(db, clock)
        later = clock.time_ms() + 60_000
        try:
            assert await guard.first_use("k", 60)
            taken = await guard._write_all(
                [_Reply("k", b"the reply"), _Claim("k", "", later), _Claim("j", "", later)]
            )
            return taken, await guard._stored("k", ""), await guard.first_use("j", 60)
        finally:
            await guard.close()
            await db.close()
            await engine.dispose()

    taken, stored, j_again = run_sync(main())
    assert taken == [False, False, True]
    assert stored == b"the reply"
    assert j_again is False


def test_expired_keys_are_swept_by_the_next_write(database_url: str) -> None:
    """The first write of a process (then one every ``SWEEP_EVERY_S``) deletes the keys whose
    memory has expired, and only those."""
    clock = FixedClock()

    async def main() -> set[str]:
        engine = create_engine(database_url)
        db = open_database(engine)
        try:
            first = DatabaseReplayGuard(db, clock)
            assert await first.first_use("old", 60)
            assert await first.first_use("kept", 600)
            await first.close()
            clock.advance(seconds=120)
            later = DatabaseReplayGuard(db, clock)  # a new process: its first write sweeps
            assert await later.first_use("new", 60)
            await later.close()
            async with db.read() as tx:
                return {r[0] for r in await tx.all(Statement(select(replay_keys.c.key)))}
        finally:
            await db.close()
            await engine.dispose()

    assert run_sync(main()) == {"kept", "new"}


def test_concurrent_requests_each_keep_their_own_reply(server: RunningServer, tenant: Tenant) -> None:
    """Keys and replies of concurrent requests are written together: each request still gets
    its own reply, and so does each replay of it."""
    requests = [
        signed(server, tenant, {"phone": f"23480312345{i:02d}", "appkey": tenant.appkey, "batchNo": f"b{i}"})
        for i in range(40)
    ]

    def at_once(calls: list[tuple[bytes, dict[str, str]]]) -> list[httpx.Response]:
        with ThreadPoolExecutor(len(calls)) as pool:
            return list(pool.map(lambda c: send(server, CHECK, *c), calls))

    first = at_once(requests)
    assert all(r.json()["code"] == 0 for r in first)
    assert len({r.json()["data"]["batchNo"] for r in first}) == 40  # its own reply each
    again = at_once(requests[::-1])
    assert [r.content for r in again] == [r.content for r in first[::-1]]
    assert server.call(_batches) == 40


def test_one_cams_nonce_sent_many_times_at_once_is_taken_once(server: RunningServer, tenant: Tenant) -> None:
    when = server.clock.now()

    def call(_: int) -> httpx.Response:
        return list_numbers(server, tenant, when, "sent-twenty-times-at-once")

    with ThreadPoolExecutor(20) as pool:
        codes = sorted(r.json()["Code"] for r in pool.map(call, range(20)))
    assert codes == ["OK"] + ["SignatureNonceUsed"] * 19


def test_a_nonce_is_free_again_once_its_memory_has_expired(make_server: Any) -> None:
    clock = FixedClock()
    srv = make_server(clock)
    t = make_tenant(srv)

    def call() -> str:
        return str(list_numbers(srv, t, clock.now(), "a-nonce-reused-a-day-later").json()["Code"])

    assert call() == "OK"
    assert call() == "SignatureNonceUsed"
    clock.advance(days=1)  # past its memory (twice the 15-minute window), not yet swept
    assert call() == "OK"
    assert call() == "SignatureNonceUsed"
