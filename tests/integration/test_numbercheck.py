"""Number Check (spec §2) end to end: real HTTP in, real callbacks out, ledger checked after each."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from conftest import Receiver, RunningServer, Tenant, make_tenant
from numgate.client import NxClient
from numgate.clock import FixedClock
from numgate.core import Core
from numgate.db.tables import checks, deliveries
from numgate.delivery.signing import verify_body

NG = "2348031234567"  # a valid Nigerian mobile (MTN)


def nx(srv: RunningServer, t: Tenant) -> NxClient:
    return NxClient(srv.base_url, t.access_key, t.access_secret)


def submit(srv: RunningServer, t: Tenant, **body: Any) -> dict[str, Any]:
    body.setdefault("appkey", t.appkey)
    with nx(srv, t) as c:
        return c.post("/api/number/check", body, ts=srv.clock.time_ms())


def ledger_identity(srv: RunningServer, account_id: int) -> Any:
    """balance = top-ups − charges − open reservations, from entries; returns the USD balance."""

    async def main(core: Core) -> Any:
        (bal,) = await core.ledger.balances(account_id)
        assert bal.balance == bal.topups - bal.charges - bal.open_reservations
        assert bal.open_reservations >= 0
        assert bal.available == bal.balance  # the projection the hot paths read agrees
        return bal

    return srv.call(main)


def wait_done(srv: RunningServer, n: int, timeout: float = 30) -> None:
    async def done(core: Core) -> int:
        async with core.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).where(checks.c.status == 2))).scalar_one())

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if srv.call(done) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"only {srv.call(done)} of {n} numbers finished")


def test_submit_basic_and_exact_callback(server: RunningServer, tenant: Tenant, receiver: Receiver) -> None:
    r = submit(server, tenant, phone=f" +{NG} ", batchNo="b-1", checkLevel=1, drUrl=receiver.url())
    assert r["code"] == 0 and r["msg"] == "success"
    mid = r["data"]["messageId"]
    assert len(mid) == 32 and r["data"]["batchNo"] == "b-1"
    (cb,) = receiver.wait_for(1)
    assert json.loads(cb.body) == {
        "messageId": mid,
        "code": 0,
        "msg": "success",
        "batchNo": "b-1",
        "phone": f"+{NG}",
        "data": {
            "basic": {
                "preCheck": "YES",
                "regionCode": "NG",
                "countryCode": "234",
                "nationalNumber": "8031234567",
                "standNumber": f"+{NG}",
                "numberType": 2,
                "carrier": "MTN",
            }
        },
        "cost": {"price": 0.01, "currency": "USD"},
    }
    secret = server.call(lambda core: core.tenancy.app_secret(tenant.app_id))
    assert verify_body(secret, cb.body, cb.headers["X-Numgate-Signature"])
    assert cb.headers["X-Numgate-Attempt"] == "1" and len(cb.headers["X-Numgate-Delivery-Id"]) == 32
    assert cb.headers["Accept-Encoding"] == "identity"  # only the status counts: uncompressed
    wait_done(server, 1)
    bal = ledger_identity(server, tenant.account_id)
    assert bal.charges == 100 and bal.open_reservations == 0 and bal.balance == 100 * 10_000 - 100


def test_batch_message_ids_failures_and_refunds(
    server: RunningServer, tenant: Tenant, receiver: Receiver
) -> None:
    phones = [NG, "23480", "234abc1234567", "2341234567890", "2348031230000"]
    r = submit(server, tenant, phone=",".join(phones), checkLevel=5, drUrl=receiver.url())
    mid = r["data"]["messageId"]
    got = {json.loads(c.body)["messageId"]: json.loads(c.body) for c in receiver.wait_for(5)}
    assert set(got) == {f"{mid}-{i:06d}" for i in range(1, 6)}
    first = got[f"{mid}-000001"]
    assert first["code"] == 0 and set(first["data"]) == {"basic", "live"} and first["cost"]["price"] == 0.05
    # NXCloud v1's three, then v2's ``ported`` (mcc, mnc and network only where the upstream said)
    assert {"validity", "reachable", "roaming", "ported"} <= set(first["data"]["live"])
    assert set(first["data"]["live"]) <= {
        "validity",
        "reachable",
        "roaming",
        "ported",
        "mcc",
        "mnc",
        "network",
    }
    assert first["numgate"]["source"] == "simulator" and first["numgate"]["observedAt"].endswith("Z")
    assert got[f"{mid}-000002"] == {
        "messageId": f"{mid}-000002",
        "code": 114,
        "msg": "Invalid number format",
        "batchNo": r["data"]["batchNo"],
        "phone": "23480",
    }
    assert got[f"{mid}-000003"]["code"] == 114
    fixed = got[f"{mid}-000004"]  # not a mobile number (or not valid): HLR refused, not charged
    assert fixed["code"] == 120 and "cost" not in fixed and "data" not in fixed
    assert got[f"{mid}-000005"]["code"] == 112  # simulator magic ending 0000: upstream failure
    wait_done(server, 5)
    bal = ledger_identity(server, tenant.account_id)
    assert bal.charges == 500 and bal.open_reservations == 0


@pytest.mark.parametrize(
    ("level", "ending", "code", "part", "expected"),
    [
        (5, "0001", 122, None, None),
        (5, "0002", 0, "live", {"validity": "YES", "reachable": "NO", "roaming": "NO", "ported": "NO"}),
        (
            5,
            "0003",
            0,
            "live",
            {
                "validity": "YES",
                "reachable": "YES",
                "roaming": "YES",
                "ported": "NO",
                "network": "Simulated Roaming Partner",
            },
        ),
        (
            5,
            "0004",
            0,
            "live",
            {
                "validity": "YES",
                "reachable": "YES",
                "roaming": "NO",
                "ported": "YES",
                "network": "Simulated Ported Network",
            },
        ),
        (4, "0003", 0, "dial", {"early": "YES", "answered": "NO", "response": "busy"}),
        (4, "0004", 0, "dial", {"early": "YES", "answered": "YES", "response": "voicemail"}),
        (4, "0000", 112, None, None),
    ],
)
def test_simulator_magic_endings(
    server: RunningServer,
    tenant: Tenant,
    receiver: Receiver,
    level: int,
    ending: str,
    code: int,
    part: str | None,
    expected: dict[str, str] | None,
) -> None:
    submit(server, tenant, phone="234803123" + ending, checkLevel=level, drUrl=receiver.url())
    (cb,) = receiver.wait_for(1)
    body = json.loads(cb.body)
    assert body["code"] == code
    if part is not None:
        assert body["data"][part] == expected
        assert body["cost"]["price"] == (0.05 if level == 5 else 0.15)


def test_simulator_is_deterministic(server: RunningServer, tenant: Tenant, receiver: Receiver) -> None:
    phones = [f"23480312{n:05d}" for n in range(10, 60)]
    submit(server, tenant, phone=",".join(phones), checkLevel=4, drUrl=receiver.url("/a"))
    submit(server, tenant, phone=",".join(phones), checkLevel=4, drUrl=receiver.url("/b"))
    a = {json.loads(c.body)["phone"]: json.loads(c.body)["data"] for c in receiver.wait_for(50, "/a")}
    b = {json.loads(c.body)["phone"]: json.loads(c.body)["data"] for c in receiver.wait_for(50, "/b")}
    assert a == b
    assert len({d["dial"]["response"] for d in a.values()}) >= 3  # a realistic mix, not one answer


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        ({"phone": ""}, 201, "phone is empty"),
        ({"phone": ",".join(["2348031234567"] * 5001)}, 201, "5001 numbers"),
        ({"phone": "2348031234567,14155550100"}, 201, "+1, +234"),
        ({"phone": "abc,12"}, 203, None),
        ({"phone": NG, "checkLevel": 3}, 207, None),
        ({"phone": NG, "checkLevel": "x"}, 207, None),
        ({"phone": NG, "batchNo": "x" * 65}, 212, None),
        ({"phone": NG, "appkey": "nope"}, 202, None),
        ({"phone": NG, "appkey": ""}, 201, "appkey is required"),
        ({"phone": "8613800138000"}, 205, None),
        ({"phone": NG, "drUrl": "ftp://x"}, 201, "drUrl"),
    ],
)
def test_submit_errors(
    server: RunningServer, tenant: Tenant, body: dict[str, Any], code: int, needle: str | None
) -> None:
    if body.get("phone", "").startswith("86"):
        server.call(lambda core: core.ledger.set_price(country="CN", level=1, price=1, account_id=0))
        body["phone"] = "97317001234"  # Bahrain: priced nowhere
    r = submit(server, tenant, **body)
    assert r["code"] == code, r
    assert r["data"] == {"messageId": "", "batchNo": ""}
    if needle:
        assert needle in r["msg"]
    bal = ledger_identity(server, tenant.account_id)
    assert bal.open_reservations == 0 and bal.charges == 0


def test_210_appkey_of_another_customer(server: RunningServer, tenant: Tenant) -> None:
    other = make_tenant(server, name="other")
    r = submit(server, tenant, phone=NG, appkey=other.appkey)
    assert r["code"] == 210


def test_211_insufficient_balance_reserves_nothing(server: RunningServer) -> None:
    t = make_tenant(server, name="poor", balance=250)
    r = submit(server, t, phone=",".join([NG] * 3))  # 3 × 100 > 250
    assert r["code"] == 211 and r["msg"] == "Insufficient customer balance"
    assert submit(server, t, phone=",".join([NG] * 2))["code"] == 0
    assert ledger_identity(server, t.account_id).balance == 50


def test_no_callback_url_means_no_callback_but_queryable(server: RunningServer, tenant: Tenant) -> None:
    r = submit(server, tenant, phone=NG, batchNo="quiet")
    wait_done(server, 1)
    assert server.call(_count_deliveries) == 0
    with nx(server, tenant) as c:
        q = c.post(
            "/api/number/query",
            {
                "page": 1,
                "pageSize": 10,
                "date": server.clock.now().date().isoformat(),
                "messageId": r["data"]["messageId"],
            },
        )
    assert q["code"] == 0 and q["msg"] == "Request successful"
    (row,) = q["data"]["result"]
    assert (
        row["preCheck"] == "YES" and row["price"] == 0.01 and row["validity"] == "" and row["response"] == ""
    )


async def _count_deliveries(core: Core) -> int:
    async with core.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(deliveries))).scalar_one())


def test_app_callback_url_is_the_default(server: RunningServer, receiver: Receiver) -> None:
    t = make_tenant(server, name="withcb", callback_url=receiver.url("/app"))
    submit(server, t, phone=NG)
    assert len(receiver.wait_for(1, "/app")) == 1


def test_query_paging_filters_and_errors(server: RunningServer, tenant: Tenant) -> None:
    phones = [f"23480312{n:05d}" for n in range(10, 35)]
    r = submit(server, tenant, phone=",".join(phones), batchNo="pg", checkLevel=5)
    wait_done(server, 25)
    today = server.clock.now().date()
    with nx(server, tenant) as c:

        def q(**b: Any) -> dict[str, Any]:
            return c.post("/api/number/query", {"page": 1, "pageSize": 10, "date": today.isoformat(), **b})

        p3 = q(batchNo="pg", page=3)["data"]
        assert (p3["totalSize"], p3["totalPage"], len(p3["result"])) == (25, 3, 5)
        assert p3["result"][0]["messageId"] == f"{r['data']['messageId']}-000021"
        assert q(batchNo="pg", phone=phones[3])["data"]["totalSize"] == 1
        one = q(messageId=f"{r['data']['messageId']}-000002")["data"]["result"][0]
        assert one["checkLevel"] == 5 and one["validity"] in ("YES", "NO") and one["early"] == ""
        assert q(batchNo="pg", appkey=tenant.appkey)["data"]["totalSize"] == 25
        assert q(batchNo="pg", appkey="nope")["code"] == 202
        assert q(batchNo="pg", date="2026/11/22") == {
            "msg": "Incorrect date format [yyyy-MM-dd]",
            "code": 88,
            "data": None,
        }
        old = (today - timedelta(days=14)).isoformat()
        assert "last 14 days" in q(batchNo="pg", date=old)["msg"]
        assert q(batchNo="pg", date=(today - timedelta(days=13)).isoformat())["code"] == 0
        assert "messageId or batchNo" in q()["msg"]
        assert q(batchNo="pg", pageSize=101)["code"] == 88
        assert q(batchNo="pg", page=0)["code"] == 88


def test_sync_check_get(server: RunningServer, tenant: Tenant) -> None:
    with nx(server, tenant) as c:
        r = c.post(
            "/api/number/check/get", {"phone": NG, "batchNo": "s1", "checkLevel": 1, "appkey": tenant.appkey}
        )
        assert r["code"] == 0 and r["message"] == "Success"
        d = r["data"]
        assert d["basic"] == {
            "phone": NG,
            "country": "NG",
            "numberType": "mobile",
            "operator": "MTN",
            "failReason": "",
        }
        assert d["cost"] == {"price": 0.01, "currency": "USD"} and d["batchNo"] == "s1"
        bad = c.post("/api/number/check/get", {"phone": "12", "appkey": tenant.appkey})["data"]
        assert bad["basic"]["numberType"] == "invalid" and bad["cost"]["price"] == 0
        assert (
            c.post("/api/number/check/get", {"phone": NG, "checkLevel": 5, "appkey": tenant.appkey})["code"]
            == 207
        )
    bal = ledger_identity(server, tenant.account_id)
    assert bal.charges == 100 and bal.open_reservations == 0


def test_receiver_fails_then_recovers(server: RunningServer, tenant: Tenant, receiver: Receiver) -> None:
    receiver.plan["/flaky"] = [500, 503, 200]
    submit(server, tenant, phone=NG, drUrl=receiver.url("/flaky"))
    got = receiver.wait_for(3, "/flaky")
    time.sleep(1.0)  # nothing more arrives once acknowledged
    got = receiver.accepted("/flaky")
    assert [g.headers["X-Numgate-Attempt"] for g in got] == ["1", "2", "3"]
    assert len({g.headers["X-Numgate-Delivery-Id"] for g in got}) == 1 and len({g.body for g in got}) == 1
    (row,) = server.call(lambda core: _deliveries(core))
    assert row["status"] == "delivered" and row["attempts"] == 3 and row["last_status"] == 200


async def _deliveries(core: Core) -> list[dict[str, Any]]:
    return [d.to_json() for d in await core.deliveries.recent(limit=100)]


def test_callback_marked_failed_after_the_window(
    server: RunningServer, tenant: Tenant, receiver: Receiver
) -> None:
    receiver.plan["/down"] = [500]
    submit(server, tenant, phone=NG, drUrl=receiver.url("/down"))
    end = time.monotonic() + 20
    while time.monotonic() < end:
        rows = server.call(_deliveries)
        if rows and rows[0]["status"] == "failed":
            break
        time.sleep(0.1)
    (row,) = server.call(_deliveries)
    assert row["status"] == "failed" and row["last_error"] == "receiver answered HTTP 500"
    # retried every 0.3 s for a 3 s window: 1 try + about 10 retries
    assert 3 <= row["attempts"] == len(receiver.accepted("/down")) <= 12


def test_refused_connection_and_timeouts_are_retried(
    server: RunningServer, tenant: Tenant, receiver: Receiver
) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    submit(server, tenant, phone=NG, drUrl=f"http://127.0.0.1:{port}/cb")
    end = time.monotonic() + 10
    while time.monotonic() < end:
        rows = server.call(_deliveries)
        if rows and rows[0]["attempts"] >= 2:
            break
        time.sleep(0.1)
    row = server.call(_deliveries)[0]
    assert row["attempts"] >= 2 and row["status"] in ("pending", "in flight", "failed")
    assert "Connect" in (row["last_error"] or "")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://10.1.2.3/cb", "a private address"),
        ("http://169.254.169.254/latest", "a link-local (cloud metadata) address"),
        ("http://[::1]:9/x", "a loopback address"),
        ("http://localhost:9/x", "a loopback address"),
        ("http://2130706433/x", "a loopback address"),  # 127.0.0.1 written as one number
        ("http://127.1:8080/x", "a loopback address"),
        ("http://0x7f.1/x", "a loopback address"),
    ],
)
def test_internal_callback_targets_are_refused_at_submit(make_server: Any, url: str, why: str) -> None:
    """An address the outbound guard refuses is refused when it is given (201), in any form
    inet_aton reads, instead of failing for the whole retry window."""
    srv = make_server(callback_allow=())
    t = make_tenant(srv)
    r = submit(srv, t, phone=NG, drUrl=url)
    assert r["code"] == 201 and why in r["msg"] and "NUMGATE_CALLBACK_ALLOW" in r["msg"], r
    assert srv.call(_count_deliveries) == 0
    assert ledger_identity(srv, t.account_id).open_reservations == 0


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://user:pw@example.com/cb", "must not carry credentials"),
        ("https://example.com:99999/cb", "invalid port"),
        ("http://example.com:0/cb", "port 0"),
        ("ftp://example.com/cb", "must be an http(s) URL"),
        ("http://example.com/" + "a" * 2100, "the limit is 2048"),
        ("http://exa mple.com/", "spaces or control characters"),
    ],
)
def test_unusable_callback_urls_are_refused_at_submit(
    server: RunningServer, tenant: Tenant, url: str, why: str
) -> None:
    r = submit(server, tenant, phone=NG, drUrl=url)
    assert r["code"] == 201 and r["msg"].startswith("drUrl ") and why in r["msg"], r


def test_canonical_address_is_stored(make_server: Any, receiver: Receiver) -> None:
    """``127.1`` is 127.0.0.1: allowed here (loopback is), stored and called in its canonical form."""
    srv = make_server()
    t = make_tenant(srv)
    port = receiver.base_url.rsplit(":", 1)[1]
    assert submit(srv, t, phone=NG, drUrl=f"http://127.1:{port}/canon")["code"] == 0
    receiver.wait_for(1, "/canon")
    (row,) = srv.call(_deliveries)
    assert row["url"] == f"http://127.0.0.1:{port}/canon"


def test_url_guard_refuses_a_stored_internal_target_when_sending(make_server: Any) -> None:
    """A URL that passed an older numgate's checks (stored before them) is still refused by the
    guard when the callback is sent, once, for good."""
    srv = make_server(callback_allow=())
    t = make_tenant(srv)

    async def store_old_url(core: Core) -> None:
        from sqlalchemy import update

        from numgate.db.tables import apps

        async with core.db.write() as tx:
            await tx.run(update(apps).where(apps.c.id == t.app_id).values(callback_url="http://10.1.2.3/cb"))

    srv.call(store_old_url)
    assert submit(srv, t, phone=NG)["code"] == 0
    end = time.monotonic() + 10
    while time.monotonic() < end:
        rows = srv.call(_deliveries)
        if rows and rows[0]["status"] == "failed":
            break
        time.sleep(0.05)
    (row,) = srv.call(_deliveries)
    assert row["status"] == "failed" and "refused by the URL guard" in row["last_error"]
    assert row["attempts"] == 1  # permanent: not retried for an hour


def test_fair_between_tenants(make_server: Any, receiver: Receiver) -> None:
    """A small batch submitted after a big one of another tenant finishes long before the big one."""
    srv = make_server(worker_chunk=100)
    big, small = make_tenant(srv, name="big"), make_tenant(srv, name="small")
    submit(srv, big, phone=",".join(f"2348031{n:06d}" for n in range(3000)), drUrl=receiver.url("/big"))
    submit(srv, small, phone=NG, drUrl=receiver.url("/small"))
    receiver.wait_for(1, "/small")
    assert len(receiver.accepted("/big")) < 2500


def test_killed_worker_loses_nothing_and_charges_once(
    make_server: Any, receiver: Receiver, settings: Any
) -> None:
    """Numbers leased by a worker that died are checked again after the lease; each is charged once."""
    clock = FixedClock()
    srv = make_server(clock=clock, inprocess_workers=False, worker_lease_s=30)
    t = make_tenant(srv)
    submit(srv, t, phone=",".join(f"2348031{n:06d}" for n in range(40)), drUrl=receiver.url())

    async def crash_mid_batch(core: Core) -> None:
        from numgate.jobs import claims
        from numgate.numbers.check import BasicChecks
        from numgate.numbers.worker import CheckWorker

        w = CheckWorker(core, BasicChecks(0))
        rows = await w.claim_leased(claims.new_lease_token())  # leased … and the worker "dies" here
        assert len(rows) == 40

    srv.call(crash_mid_batch)
    assert ledger_identity(srv, t.account_id).open_reservations == 40 * 100

    async def drain(core: Core) -> tuple[int, int]:
        from numgate.delivery.worker import drain as drain_deliveries
        from numgate.numbers.worker import drain as drain_checks

        return await drain_checks(core), await drain_deliveries(core)

    assert srv.call(drain) == (0, 0)  # still leased: nobody takes them yet
    clock.advance(seconds=31)  # the lease ran out: a new worker's first step sweeps it back
    n, m = srv.call(drain)
    assert (n, m) == (40, 40)
    assert len(receiver.accepted()) == 40
    bal = ledger_identity(srv, t.account_id)
    assert bal.charges + bal.released == 40 * 100 and bal.open_reservations == 0


def test_a_worker_whose_leases_ran_out_finishes_only_the_numbers_it_still_holds(
    make_server: Any, receiver: Receiver
) -> None:
    """A slow worker's chunk: ten of its leases run out and another worker checks those ten; when
    the slow one finishes, it writes the thirty it still holds — each number finished, called
    back and charged once."""
    clock = FixedClock()
    srv = make_server(clock=clock, inprocess_workers=False, worker_lease_s=30)
    t = make_tenant(srv)
    submit(srv, t, phone=",".join(f"2348031{n:06d}" for n in range(40)), drUrl=receiver.url())

    async def overtaken(core: Core) -> tuple[int, int, int]:
        from sqlalchemy import update

        from numgate.delivery.worker import drain as drain_deliveries
        from numgate.jobs import claims
        from numgate.numbers.check import BasicChecks
        from numgate.numbers.worker import CheckWorker
        from numgate.numbers.worker import drain as drain_checks

        slow = CheckWorker(core, BasicChecks(0))
        token = claims.new_lease_token()
        rows = await slow.claim_leased(token)
        assert len(rows) == 40
        async with core.db.write() as tx:  # ten of its leases run out (it stalled past them)
            await tx.run(
                update(checks).where(checks.c.id.in_([r["id"] for r in rows[:10]])).values(lease_until_ms=0)
            )
        other = await CheckWorker(core, BasicChecks(0)).run_once()  # sweeps those ten back, checks them

        await slow._check_leased(token, rows)  # finishes the chunk it claimed: 30 of its 40 are still its own
        return other, await drain_checks(core), await drain_deliveries(core)

    assert srv.call(overtaken) == (10, 0, 40)  # nothing left for anyone: the slow worker wrote its 30
    phones = sorted(json.loads(r.body)["phone"] for r in receiver.accepted())
    assert phones == [f"2348031{n:06d}" for n in range(40)]
    bal = ledger_identity(srv, t.account_id)
    assert bal.charges + bal.released == 40 * 100 and bal.open_reservations == 0


def test_one_chunk_of_basic_and_hlr_numbers(make_server: Any, receiver: Receiver) -> None:
    """One chunk holding an account's Basic and HLR numbers: the Basic ones are finished in the
    claiming transaction (on PostgreSQL, under row locks), the HLR ones leased and checked after
    it; one worker cycle finishes all of them, each called back and charged once."""
    from numgate.numbers import worker as check_worker

    srv = make_server(inprocess_workers=False)
    t = make_tenant(srv)
    basic = [f"2348031{n:06d}" for n in range(10)]
    hlr = [f"2348032{n:06d}" for n in range(1, 11)]
    submit(srv, t, phone=",".join(basic), checkLevel=1, drUrl=receiver.url("/basic"))
    submit(srv, t, phone=",".join(hlr), checkLevel=5, drUrl=receiver.url("/hlr"))

    async def one_cycle(core: Core) -> tuple[int, int, int]:
        from numgate.delivery.worker import drain as drain_deliveries

        worker = check_worker.CheckWorker(core, check_worker.BasicChecks(0))
        return await worker.run_once(), await check_worker.drain(core), await drain_deliveries(core)

    assert srv.call(one_cycle) == (20, 0, 20)
    got = {p: [json.loads(r.body) for r in receiver.accepted(p)] for p in ("/basic", "/hlr")}
    assert sorted(c["phone"] for c in got["/basic"]) == basic
    assert sorted(c["phone"] for c in got["/hlr"]) == hlr
    assert all(set(c["data"]) == {"basic"} for c in got["/basic"])
    assert all(c["code"] != 0 or "live" in c["data"] for c in got["/hlr"])
    charged = sum(c["code"] == 0 for c in got["/basic"]) * 100 + sum(
        round(c["cost"]["price"] * 10_000) for c in got["/hlr"] if c["code"] == 0
    )
    bal = ledger_identity(srv, t.account_id)
    assert bal.charges == charged and bal.open_reservations == 0


def test_a_worker_stopped_mid_chunk_gives_its_numbers_back_at_once(
    make_server: Any, receiver: Receiver
) -> None:
    """A check worker stopped (cancelled) while its chunk is being classified gives the numbers
    back at once — on PostgreSQL by rolling back the transaction that holds them locked, on
    SQLite by releasing their lease — not a lease later; the next worker checks each once and
    charges it once."""
    from numgate.numbers import worker as check_worker

    clock = FixedClock()  # never advanced: no lease runs out here
    srv = make_server(clock=clock, inprocess_workers=False, worker_lease_s=30)
    t = make_tenant(srv)
    submit(srv, t, phone=",".join(f"2348031{n:06d}" for n in range(40)), drUrl=receiver.url())

    class StuckChecks(check_worker.BasicChecks):
        def __init__(self) -> None:
            super().__init__(0)
            self.started = asyncio.Event()

        async def run(self, items: Any) -> Any:
            self.started.set()
            await asyncio.Event().wait()  # until cancelled

    async def stop_mid_chunk(core: Core) -> tuple[list[Any], int, int]:
        from numgate.delivery.worker import drain as drain_deliveries

        stuck = StuckChecks()
        task = asyncio.create_task(check_worker.CheckWorker(core, stuck).run_once())
        await stuck.started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with core.db.read() as tx:
            rows = await tx.all(select(checks.c.status, checks.c.lease_token, checks.c.attempts))
        return list(rows), await check_worker.drain(core), await drain_deliveries(core)

    rows, checked, called_back = srv.call(stop_mid_chunk)
    assert sorted((r[0], r[1], r[2]) for r in rows) == [(0, None, 1)] * 40  # pending, one try counted
    assert (checked, called_back) == (40, 40)
    phones = sorted(json.loads(r.body)["phone"] for r in receiver.accepted())
    assert phones == [f"2348031{n:06d}" for n in range(40)]
    bal = ledger_identity(srv, t.account_id)
    assert bal.charges + bal.released == 40 * 100 and bal.open_reservations == 0


def test_a_chunk_whose_check_keeps_failing_ends_as_internal_errors(
    make_server: Any, receiver: Receiver
) -> None:
    """A chunk whose check fails every time (here the classifier raises) is given back and tried
    again, MAX_ATTEMPTS times in all; then its numbers are finished as internal errors (103),
    refunded and called back once each, without checking them again. On PostgreSQL the chunk is
    claimed under row locks (no row version written for the claim): the tries are counted after
    each rollback instead; on SQLite it is leased, and each claim counts."""
    from numgate.numbers import worker as check_worker

    srv = make_server(inprocess_workers=False)
    t = make_tenant(srv)
    submit(srv, t, phone=",".join(f"2348031{n:06d}" for n in range(20)), drUrl=receiver.url())
    tries: list[int] = []

    class FailingChecks(check_worker.BasicChecks):
        async def run(self, items: Any) -> Any:
            tries.append(len(items))
            raise RuntimeError("the classifier failed")

    async def keep_failing(core: Core) -> tuple[int, int]:
        from numgate.delivery.worker import drain as drain_deliveries

        worker = check_worker.CheckWorker(core, FailingChecks(0))
        for _ in range(check_worker.MAX_ATTEMPTS):
            with pytest.raises(RuntimeError):
                await worker.run_once()
        return await worker.run_once(), await drain_deliveries(core)

    assert srv.call(keep_failing) == (20, 20)
    assert tries == [20] * check_worker.MAX_ATTEMPTS
    codes = sorted(json.loads(r.body)["code"] for r in receiver.accepted())
    assert codes == [103] * 20
    bal = ledger_identity(srv, t.account_id)
    assert bal.charges == 0 and bal.released == 20 * 100 and bal.open_reservations == 0


@pytest.mark.parametrize("in_flight", [1, 2])
def test_a_check_worker_claims_a_chunk_while_another_is_classified(
    make_server: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, in_flight: int
) -> None:
    """NUMGATE_WORKER_CHUNKS_IN_FLIGHT chunks are under way at once in one check worker (here
    the classifier is slowed down, as a busy helper process or a slow vendor would be); every
    number is still checked, called back and charged once."""
    from numgate.numbers import worker as check_worker
    from numgate.numbers.check import BasicChecks

    under_way = {"now": 0, "most": 0}

    class SlowBasicChecks(BasicChecks):
        async def run(self, items: Any) -> Any:
            under_way["now"] += 1
            under_way["most"] = max(under_way["most"], under_way["now"])
            try:
                await asyncio.sleep(0.05)
                return await super().run(items)
            finally:
                under_way["now"] -= 1

    monkeypatch.setattr(check_worker, "BasicChecks", SlowBasicChecks)
    srv = make_server(inprocess_workers=False, worker_chunk=25, worker_chunks_in_flight=in_flight)
    t = make_tenant(srv)
    submit(srv, t, phone=",".join(f"2348031{n:06d}" for n in range(100)), drUrl=receiver.url())
    stop: dict[str, Any] = {}

    async def start(core: Core) -> None:
        stop["event"] = asyncio.Event()
        stop["task"] = asyncio.create_task(check_worker.run_check_worker(core, stop["event"]))

    async def finish(core: Core) -> int:
        from numgate.delivery.worker import drain as drain_deliveries

        stop["event"].set()
        await stop["task"]
        return await drain_deliveries(core)

    srv.call(start)
    wait_done(srv, 100)
    assert srv.call(finish) == 100
    assert under_way["most"] == in_flight
    got = receiver.accepted()
    assert sorted(json.loads(r.body)["phone"] for r in got) == [f"2348031{n:06d}" for n in range(100)]
    bal = ledger_identity(srv, t.account_id)
    assert bal.charges + bal.released == 100 * 100 and bal.open_reservations == 0


def test_callbacks_handed_over_in_memory_survive_a_crash(
    make_server: Any, receiver: Receiver, settings: Any
) -> None:
    """A check worker hands fresh callbacks to its process's delivery worker in memory, stored
    already leased; if the process dies before sending them, they go out once the lease ends."""
    clock = FixedClock()
    srv = make_server(clock=clock, inprocess_workers=False)
    t = make_tenant(srv)
    submit(srv, t, phone=",".join(f"2348031{n:06d}" for n in range(30)), drUrl=receiver.url())

    class DyingWorker:
        """A delivery worker that takes the hand-over and dies before sending it."""

        def __init__(self) -> None:
            self.taken: list[Any] = []

        def room(self, receiver_id: int) -> int:
            return 1000

        def room_while_keeping_up(self, receiver_id: int) -> int | None:
            return None  # it never answered

        def take(self, leased: Any) -> None:
            self.taken.append(leased)

    async def check_then_die(core: Core) -> int:
        from numgate.numbers.check import BasicChecks
        from numgate.numbers.worker import CheckWorker

        handoff = DyingWorker()
        core.outbox.handoff = handoff
        try:
            done = await CheckWorker(core, BasicChecks(0)).run_once()
        finally:
            core.outbox.handoff = None
        (leased,) = handoff.taken
        assert len(leased.rows) == 30
        core.outbox.held.discard(leased.token)  # the process "dies": nobody renews the lease
        return done

    async def drain_deliveries(core: Core) -> int:
        from numgate.delivery.worker import drain

        return await drain(core)

    assert srv.call(check_then_die) == 30
    bal = ledger_identity(srv, t.account_id)
    assert bal.charges == 30 * 100 and bal.open_reservations == 0
    assert srv.call(drain_deliveries) == 0  # leased to the dead process: not yet
    rows = srv.call(_deliveries)  # the log shows them in flight while their lease runs …
    assert {r["status"] for r in rows} == {"in-flight"}
    lease = settings.worker_lease_s
    clock.advance(seconds=lease - 5)
    assert srv.call(drain_deliveries) == 0  # the lease is NUMGATE_WORKER_LEASE, no more
    clock.advance(seconds=6)  # the lease ran out: nobody renewed it
    assert {r["status"] for r in srv.call(_deliveries)} == {"pending"}  # … and pending after
    assert srv.call(drain_deliveries) == 30
    got = receiver.accepted()
    assert len({json.loads(r.body)["messageId"] for r in got}) == len(got) == 30
    assert srv.call(drain_deliveries) == 0  # each was delivered once


def test_concurrent_submits_never_overspend(server: RunningServer) -> None:
    """Parallel submits on one account: no deadlock, no error, and never more reserved than paid in."""
    import threading

    t = make_tenant(server, name="busy", balance=100 * 25)  # room for 25 numbers at 100 each
    replies: list[dict[str, Any]] = []

    def one(i: int) -> None:
        phones = ",".join(f"2348031{i:02d}{n:04d}" for n in range(5))
        with nx(server, t) as c:
            replies.append(c.post("/api/number/check", {"phone": phones, "appkey": t.appkey}))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    codes = sorted(r["code"] for r in replies)
    assert codes == [0] * 5 + [211] * 3, replies
    wait_done(server, 25)
    bal = ledger_identity(server, t.account_id)
    assert bal.balance >= 0 and bal.charges + bal.released == 25 * 100
