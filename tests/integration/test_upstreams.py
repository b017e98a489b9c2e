"""Live upstreams (HLR and Call levels) outside sandbox mode, over HTTP, against fake vendors
written from their contracts (tests/fakes/): the vendors' vocabularies mapped, failover
on throttling and failures, webhooks authenticated, numbers that wait surviving a restart, the
cache and its price, nothing charged without a route, and the margin report."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from conftest import Receiver, RunningServer, Tenant, aiohttp_server, make_tenant
from fakes.hlr_lookups import FakeHlrLookups
from fakes.hlrlookup import FakeHlrLookup
from fakes.infobip import FakeInfobip
from fakes.twilio_lookup import FakeTwilioLookup
from fakes.twilio_voice import FakeTwilioVoice, twilio_signature
from numgate.client import NxClient
from numgate.core import Core
from numgate.db.tables import checks, upstream_calls, upstream_jobs
from numgate.upstreams.margin import margin

PREFIX = "234803123"  # Nigerian mobile numbers: PREFIX + 4 digits; the last one drives the fakes


def num(n: int) -> str:
    return f"{PREFIX}{n:04d}"


def _fakes(cls: Any) -> Iterator[Callable[..., Any]]:
    """Starts fakes of ``cls`` (each its own server); stops them after the test."""
    servers: list[Any] = []

    def make(**kw: Any) -> Any:
        fake = cls(**kw)
        cm = aiohttp_server(fake.app())
        fake.base_url = cm.__enter__()
        servers.append(cm)
        return fake

    yield make
    for cm in servers:
        cm.__exit__(None, None, None)


@pytest.fixture
def fake_hlr() -> Iterator[Callable[..., FakeHlrLookup]]:
    yield from _fakes(FakeHlrLookup)


@pytest.fixture
def fake_twilio() -> Iterator[Callable[..., FakeTwilioVoice]]:
    yield from _fakes(FakeTwilioVoice)


def live_server(make_server: Callable[..., RunningServer], **kw: Any) -> RunningServer:
    kw.setdefault("upstream_timeout_s", 2.0)
    return make_server(sandbox=False, waba_upstream="simulator", public_url="auto", **kw)


def add_hlr(srv: RunningServer, name: str, fake: FakeHlrLookup, unit_cost: int = 40) -> None:
    srv.call(
        lambda core: core.upstreams.add(
            name,
            "hlrlookup",
            base_url=fake.base_url,
            key=fake.api_key,
            secret=fake.api_secret,
            unit_cost=unit_cost,
        )
    )


def add_twilio(srv: RunningServer, name: str, fake: FakeTwilioVoice, unit_cost: int = 130) -> None:
    public = srv.settings.public_url
    srv.call(
        lambda core: core.upstreams.add(
            name,
            "twilio-voice",
            base_url=fake.base_url,
            key=fake.account_sid,
            secret=fake.auth_token,
            from_number="+15005550006",
            unit_cost=unit_cost,
            public_url=public,
        )
    )


def route(srv: RunningServer, level: int, country: str, *names: str) -> None:
    srv.call(lambda core: core.upstreams.set_route(level, country, list(names)))


def submit(srv: RunningServer, t: Tenant, phones: list[str], level: int, **body: Any) -> dict[str, Any]:
    with NxClient(srv.base_url, t.access_key, t.access_secret) as c:
        return c.post(
            "/api/number/check",
            {"appkey": t.appkey, "phone": ",".join(phones), "checkLevel": level, **body},
            ts=srv.clock.time_ms(),
        )


def by_phone(receiver: Receiver, n: int, timeout: float = 30) -> dict[str, dict[str, Any]]:
    return {json.loads(c.body)["phone"]: json.loads(c.body) for c in receiver.wait_for(n, timeout=timeout)}


def charges(srv: RunningServer, account_id: int) -> int:
    async def main(core: Core) -> int:
        (bal,) = await core.ledger.balances(account_id)
        assert bal.balance == bal.topups - bal.charges - bal.open_reservations
        return int(bal.charges) if bal.open_reservations == 0 else -1

    return srv.call(main)


def calls(srv: RunningServer) -> list[dict[str, Any]]:
    async def main(core: Core) -> list[dict[str, Any]]:
        async with core.engine.connect() as conn:
            rows = await conn.execute(select(upstream_calls).order_by(upstream_calls.c.id))
            return [dict(r._mapping) for r in rows]

    return srv.call(main)


def claims_of(srv: RunningServer, phones: list[str]) -> int:
    """How many times the worker claimed these numbers (each claim counts an attempt)."""

    async def main(core: Core) -> int:
        async with core.engine.connect() as conn:
            rows = await conn.execute(select(checks.c.attempts).where(checks.c.phone.in_(phones)))
            return max(r[0] for r in rows)

    return srv.call(main)


def wait_charges(srv: RunningServer, account_id: int, expected: int, timeout: float = 15) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if charges(srv, account_id) == expected:
            return
        time.sleep(0.05)
    assert charges(srv, account_id) == expected


# HLR ---------------------------------------------------------------------------------------------


def test_hlrlookup_vocabulary_mapped_and_charged_only_for_answers(
    make_server: Any, fake_hlr: Any, receiver: Receiver
) -> None:
    fake = fake_hlr()
    srv = live_server(make_server)
    add_hlr(srv, "hlr-a", fake)
    route(srv, 5, "NG", "hlr-a")
    t = make_tenant(srv)
    phones = [num(i) for i in (10, 11, 12, 13, 14, 15, 16, 17)]
    r = submit(srv, t, phones, 5, drUrl=receiver.url())
    assert r["code"] == 0
    got = by_phone(receiver, len(phones))
    live = {p[-1]: got[p].get("data", {}).get("live") for p in phones}
    assert live["0"] == {
        "validity": "YES",
        "reachable": "YES",
        "roaming": "UNKNOWN",  # hlrlookup.com never reports roaming
        "ported": "NO",
        "network": "MTN Nigeria",
        "mcc": "621",
        "mnc": "30",
    }
    assert live["1"] is not None and (live["1"]["validity"], live["1"]["reachable"]) == ("YES", "NO")
    assert live["2"] is not None and (live["2"]["validity"], live["2"]["reachable"]) == ("NO", "NO")
    assert live["4"] is not None and (live["4"]["validity"], live["4"]["reachable"]) == ("UNKNOWN", "UNKNOWN")
    assert live["6"] is not None and live["6"]["ported"] == "YES" and live["6"]["network"] == "Airtel Nigeria"
    assert live["7"] is not None and live["7"]["validity"] == "UNKNOWN"  # the misspelt status
    assert got[num(13)]["code"] == 122 and "cost" not in got[num(13)]  # NO_COVERAGE: nothing known
    assert got[num(15)]["code"] == 112 and "cost" not in got[num(15)]  # per-result error
    assert got[num(10)]["numgate"]["source"] == "hlr-a"
    # one call (one per claim of the numbers: see the throttled test), digits without "+"
    claims = claims_of(srv, phones)
    assert len(fake.calls) == claims and sorted(fake.looked_up()) == sorted(phones * claims)
    wait_charges(srv, t.account_id, 6 * 500)  # six answers at 0.05; 122 and 112 are free
    rows = calls(srv)
    assert len(rows) == 8 and {r["upstream"] for r in rows} == {"hlr-a"}
    cost = {r["check_id"]: r["cost"] for r in rows}
    assert sorted(cost.values()) == [0, 0] + [40] * 6  # credits_spent × the unit cost


def test_throttled_upstream_fails_over_and_the_margin_adds_up(
    make_server: Any, fake_hlr: Any, receiver: Receiver
) -> None:
    busy, spare = fake_hlr(mode="throttle"), fake_hlr()
    srv = live_server(make_server)
    add_hlr(srv, "busy", busy, unit_cost=30)
    add_hlr(srv, "spare", spare, unit_cost=45)
    route(srv, 5, "*", "busy", "spare")
    t = make_tenant(srv)
    phones = [num(i) for i in (20, 30, 40)]
    submit(srv, t, phones, 5, drUrl=receiver.url())
    got = by_phone(receiver, 3)
    assert {g["numgate"]["source"] for g in got.values()} == {"spare"}
    # each time the worker claimed the numbers: one call for the three, tried four times (the
    # first try and three backed-off retries), then on. A claim given back unfinished (an outage,
    # a stopping worker) is claimed again and asks again: upstream calls are at least once.
    claims = claims_of(srv, phones)
    assert all(sorted(a) == phones for a in busy.asked), busy.asked
    assert busy.statuses == [429] * 4 * claims, (claims, busy.statuses)
    assert sorted(spare.looked_up()) == phones
    wait_charges(srv, t.account_id, 3 * 500)
    outcomes = sorted((r["upstream"], r["outcome"], r["cost"]) for r in calls(srv))
    assert outcomes == [("busy", "throttled", 0)] * 3 + [("spare", "ok", 45)] * 3
    rows = srv.call(lambda core: margin(core.db))
    (row,) = [r for r in rows if r.upstream == "spare"]
    assert (row.country, row.numbers, row.revenue, row.calls, row.cost) == ("NG", 3, 1500, 3, 135)
    assert row.margin == 1500 - 135
    (b,) = [r for r in rows if r.upstream == "busy"]
    assert (b.numbers, b.revenue, b.calls, b.cost) == (0, 0, 3, 0)


@pytest.mark.parametrize("mode", ["error", "hang", "malformed", "partial"])
def test_a_failing_upstream_fails_over_then_112_never_charged(
    make_server: Any, fake_hlr: Any, receiver: Receiver, mode: str
) -> None:
    bad = fake_hlr(mode=mode, hang_s=5)
    srv = live_server(make_server, upstream_timeout_s=0.5)
    add_hlr(srv, "bad", bad)
    route(srv, 5, "NG", "bad")
    t = make_tenant(srv)
    phones = [num(50), num(60)]
    submit(srv, t, phones, 5, drUrl=receiver.url())
    got = by_phone(receiver, 2)
    if mode == "partial":  # the number left out failed; the other was answered
        assert sorted(g["code"] for g in got.values()) == [0, 112]
        wait_charges(srv, t.account_id, 500)
    else:
        assert [g["code"] for g in got.values()] == [112, 112]
        assert all("cost" not in g for g in got.values())
        wait_charges(srv, t.account_id, 0)
    # with a second upstream on the route, every number is answered
    good = fake_hlr()
    add_hlr(srv, "good", good)
    route(srv, 5, "NG", "bad", "good")
    receiver.received.clear()
    submit(srv, t, phones, 5, drUrl=receiver.url())
    got = by_phone(receiver, 2)
    assert [g["code"] for g in got.values()] == [0, 0]


def test_outside_the_sandbox_no_route_is_206_and_nothing_is_reserved(make_server: Any) -> None:
    srv = live_server(make_server)
    t = make_tenant(srv)
    r = submit(srv, t, [num(10)], 5)
    assert r["code"] == 206 and "route" in r["msg"].lower()
    r = submit(srv, t, [num(10)], 4)
    assert r["code"] == 206
    assert charges(srv, t.account_id) == 0
    assert submit(srv, t, [num(10)], 1)["code"] == 0  # Basic needs no upstream
    # the simulator, named in a route on purpose, serves outside the sandbox too
    route(srv, 5, "*", "simulator")
    assert submit(srv, t, [num(10)], 5)["code"] == 0


def test_cache_answers_within_max_age_at_the_cached_price(
    make_server: Any, fake_hlr: Any, receiver: Receiver
) -> None:
    fake = fake_hlr()
    srv = live_server(make_server)
    add_hlr(srv, "hlr-a", fake)
    route(srv, 5, "NG", "hlr-a")
    t = make_tenant(srv)
    srv.call(
        lambda core: core.ledger.set_price(
            country="NG", level=5, price=500, account_id=t.account_id, cached_price=100
        )
    )
    first = [num(10), num(20)]
    submit(srv, t, first, 5, drUrl=receiver.url("/first"))
    fresh = {json.loads(c.body)["phone"]: json.loads(c.body) for c in receiver.wait_for(2, "/first")}
    wait_charges(srv, t.account_id, 1000)
    # asked again with maxAge: one number from the cache (cheaper), the other looked up
    submit(srv, t, [num(10), num(30)], 5, drUrl=receiver.url("/second"), maxAge=3600)
    second = {json.loads(c.body)["phone"]: json.loads(c.body) for c in receiver.wait_for(2, "/second")}
    assert second[num(10)]["numgate"]["source"] == "cache"
    assert second[num(10)]["data"]["live"] == fresh[num(10)]["data"]["live"]
    assert second[num(10)]["numgate"]["observedAt"] == fresh[num(10)]["numgate"]["observedAt"]
    assert second[num(10)]["cost"]["price"] == 0.01
    assert second[num(30)]["numgate"]["source"] == "hlr-a"
    assert sorted(fake.looked_up()) == [num(10), num(20), num(30)]
    wait_charges(srv, t.account_id, 1000 + 100 + 500)
    # without maxAge (and no app default) the upstream is asked again
    submit(srv, t, [num(10)], 5, drUrl=receiver.url("/third"))
    (third,) = receiver.wait_for(1, "/third")
    assert json.loads(third.body)["numgate"]["source"] == "hlr-a"
    assert fake.looked_up()[-1] == num(10)


# Call (webhooks) ---------------------------------------------------------------------------------


def test_twilio_test_calls_mapped_from_signed_status_callbacks(
    make_server: Any, fake_twilio: Any, receiver: Receiver
) -> None:
    fake = fake_twilio(mode="twice")  # every callback twice: one charge, one result each
    srv = live_server(make_server)
    add_twilio(srv, "calls", fake)
    route(srv, 4, "NG", "calls")
    t = make_tenant(srv)
    phones = [num(i) for i in (11, 12, 13, 14, 15, 16, 17, 19)]
    submit(srv, t, phones, 4, drUrl=receiver.url())
    got = by_phone(receiver, len(phones))
    dial = {p[-1]: got[p]["data"]["dial"] for p in phones}
    assert dial == {
        "1": {"early": "YES", "answered": "YES", "response": "bell"},
        "2": {"early": "YES", "answered": "NO", "response": "voicemail"},
        "3": {"early": "UNKNOWN", "answered": "NO", "response": "busy"},
        "4": {"early": "YES", "answered": "NO", "response": "bell"},
        "5": {"early": "NO", "answered": "NO", "response": "no_response"},
        "6": {"early": "NO", "answered": "NO", "response": "invalid_number"},
        "7": {"early": "NO", "answered": "NO", "response": "not_available"},
        "9": {"early": "NO", "answered": "NO", "response": "invalid_number"},  # REST 21217 at once
    }
    assert all(g["numgate"]["source"] == "calls" for g in got.values())
    assert {c["MachineDetection"] for c in fake.created} == {"Enable"}
    wait_charges(srv, t.account_id, 8 * 1500)
    time.sleep(0.3)  # the duplicates came and went: still one callback and one charge each
    assert len(receiver.accepted()) == 8 and charges(srv, t.account_id) == 8 * 1500


def test_forged_or_unknown_webhooks_change_nothing(
    make_server: Any, fake_twilio: Any, receiver: Receiver
) -> None:
    fake = fake_twilio(mode="hold")
    srv = live_server(make_server)
    add_twilio(srv, "calls", fake)
    route(srv, 4, "NG", "calls")
    t = make_tenant(srv)
    submit(srv, t, [num(11)], 4, drUrl=receiver.url())
    fake.wait_held(4)  # initiated, ringing, in-progress, completed
    assert fake.release(signature="bm90IHRoZSBzaWduYXR1cmU=") == [403] * 4  # not signed by the token
    # signed right, but for a job token that is not the call's, or for an upstream that does not exist
    params = [("CallSid", fake.created[0]["sid"]), ("CallStatus", "completed"), ("AnsweredBy", "human")]
    for url, expected in (
        (f"{srv.base_url}/upstreams/calls/events?job=nope", 403),
        (f"{srv.base_url}/upstreams/ghost/events?job=nope", 404),
    ):
        sig = twilio_signature(fake.auth_token, url, params)
        r = httpx.post(url, data=dict(params), headers={"X-Twilio-Signature": sig})
        assert r.status_code == expected, r.text
    time.sleep(0.3)
    assert receiver.accepted() == [] and charges(srv, t.account_id) == -1  # still waiting, reserved


def test_a_number_waiting_for_a_webhook_survives_a_restart(
    make_server: Any, fake_twilio: Any, receiver: Receiver
) -> None:
    fake = fake_twilio(mode="hold")
    srv = live_server(make_server)
    add_twilio(srv, "calls", fake)
    route(srv, 4, "NG", "calls")
    t = make_tenant(srv)
    submit(srv, t, [num(12)], 4, drUrl=receiver.url())
    fake.wait_held(4)
    port = srv.port
    srv.stop()  # numgate goes away while the call rings
    again = live_server(make_server, port=port)
    assert fake.release() == [200] * 4
    (cb,) = receiver.wait_for(1)
    body = json.loads(cb.body)
    assert body["data"]["dial"]["response"] == "voicemail"
    wait_charges(again, t.account_id, 1500)

    async def jobs(core: Core) -> int:
        async with core.engine.connect() as conn:
            return len((await conn.execute(select(upstream_jobs))).all())

    assert again.call(jobs) == 0


def test_no_webhook_by_the_deadline_moves_on_then_112_and_late_ones_change_nothing(
    make_server: Any, fake_twilio: Any, receiver: Receiver
) -> None:
    late, other = fake_twilio(mode="hold"), fake_twilio()
    srv = live_server(make_server, upstream_wait_s=1.0)
    add_twilio(srv, "late", late)
    add_twilio(srv, "other", other)
    route(srv, 4, "NG", "late", "other")
    t = make_tenant(srv)
    # "late" keeps its callbacks past the deadline: both numbers move on to "other", which answers
    # ending 1 and never calls back for ending 8 (then 112, not charged)
    submit(srv, t, [num(11), num(18)], 4, drUrl=receiver.url())
    got = by_phone(receiver, 2, timeout=30)
    assert got[num(11)]["data"]["dial"]["response"] == "bell" and got[num(11)]["numgate"]["source"] == "other"
    assert got[num(18)]["code"] == 112
    assert sorted(c["To"] for c in late.created) == sorted(c["To"] for c in other.created)
    wait_charges(srv, t.account_id, 1500)
    # now the first vendor's callbacks come, long after: acknowledged, and nothing changes
    assert set(late.release()) == {200}
    time.sleep(0.3)
    assert len(receiver.accepted()) == 2 and charges(srv, t.account_id) == 1500

    async def status(core: Core) -> list[int]:
        async with core.engine.connect() as conn:
            return [r[0] for r in await conn.execute(select(checks.c.status))]

    assert srv.call(status) == [2, 2]


# each HLR kind's vocabulary, over HTTP ----------------------------------------------------------

YN = ("validity", "reachable", "roaming", "ported")
KIND_CASES: dict[str, tuple[Any, Callable[[Any], dict[str, Any]], dict[str, tuple[str, ...] | int]]] = {
    # kind: (fake, how to add it, by last digit: (validity, reachable, roaming, ported) or a code)
    "hlr-lookups": (
        FakeHlrLookups,
        lambda f: {"base_url": f.base_url + "/api/v2", "key": f.api_key, "secret": f.api_secret},
        {
            "0": ("YES", "YES", "NO", "NO"),
            "1": ("YES", "NO", "UNKNOWN", "NO"),
            "2": ("NO", "NO", "UNKNOWN", "UNKNOWN"),
            "3": 122,
            "4": ("YES", "UNKNOWN", "UNKNOWN", "YES"),
            "6": ("YES", "YES", "YES", "YES"),
        },
    ),
    "infobip": (
        FakeInfobip,
        lambda f: {"base_url": f.base_url, "key": f.api_key},
        {
            "0": ("YES", "YES", "NO", "NO"),
            "1": ("YES", "NO", "NO", "NO"),
            "2": ("NO", "NO", "NO", "NO"),
            "3": 122,
            "6": ("YES", "YES", "YES", "YES"),
        },
    ),
    "twilio-lookup": (
        FakeTwilioLookup,
        lambda f: {"base_url": f.base_url, "key": f.account_sid, "secret": f.auth_token},
        {
            "0": ("YES", "YES", "UNKNOWN", "UNKNOWN"),
            "1": ("YES", "NO", "UNKNOWN", "UNKNOWN"),
            "2": ("NO", "NO", "UNKNOWN", "UNKNOWN"),
            "3": 122,
            "4": ("YES", "UNKNOWN", "UNKNOWN", "UNKNOWN"),
            "5": 112,
            "6": ("NO", "NO", "UNKNOWN", "UNKNOWN"),
        },
    ),
}


@pytest.mark.parametrize("kind", sorted(KIND_CASES))
def test_each_hlr_kind_speaks_its_vendor(make_server: Any, receiver: Receiver, kind: str) -> None:
    make_fake, creds, expected = KIND_CASES[kind]
    fake = make_fake()
    with aiohttp_server(fake.app()) as url:
        fake.base_url = url
        srv = live_server(make_server)
        srv.call(lambda core: core.upstreams.add("v", kind, unit_cost=25, **creds(fake)))
        # the same vendor with a wrong secret / key first: refused as the vendor refuses, then failover
        wrong = {k: v + "x" if k in ("key", "secret") else v for k, v in creds(fake).items()}
        srv.call(lambda core: core.upstreams.add("v-wrong", kind, **wrong))
        route(srv, 5, "NG", "v-wrong", "v")
        t = make_tenant(srv)
        phones = [num(10 + int(d)) for d in expected]
        submit(srv, t, phones, 5, drUrl=receiver.url())
        got = by_phone(receiver, len(phones))
    for p in phones:
        want = expected[p[-1]]
        if isinstance(want, int):
            assert got[p]["code"] == want, (p, got[p])
            continue
        live = got[p]["data"]["live"]
        assert tuple(live[k] for k in YN) == want, (p, live)
        assert got[p]["numgate"]["source"] == "v"
    # one lookup per number and claim of the numbers (see the throttled test), none repeated
    assert len(fake.asked) == len(phones) * claims_of(srv, phones)
    assert {(r["upstream"], r["outcome"]) for r in calls(srv) if r["upstream"] == "v-wrong"} == {
        ("v-wrong", "failed")
    }
    answered = sum(1 for w in expected.values() if not isinstance(w, int))
    wait_charges(srv, t.account_id, answered * 500)


def test_nxcloud_upstream_is_another_numgate(
    make_server: Any, receiver: Receiver, sqlite_template: Any, tmp_path: Any
) -> None:
    """NXCloud as the upstream: a second numgate (sandbox, its own SQLite) plays NXCloud — signed
    submit, callbacks to numgate's webhook with the job token, v1 fields plus ``ported``."""
    vendor_db = tmp_path / "vendor.db"
    shutil.copy(sqlite_template, vendor_db)
    vendor = make_server(database_url=f"sqlite:///{vendor_db}", data_dir=tmp_path / "vendor")
    seller = make_tenant(vendor, name="numgate-operator", prices={1: 10, 4: 900, 5: 300})
    srv = live_server(make_server)
    public = srv.settings.public_url
    srv.call(
        lambda core: core.upstreams.add(
            "nx",
            "nxcloud",
            base_url=vendor.base_url,
            key=seller.access_key,
            secret=seller.access_secret,
            appkey=seller.appkey,
            public_url=public,
        )
    )
    route(srv, 5, "NG", "nx")
    route(srv, 4, "NG", "nx")
    t = make_tenant(srv)
    # simulator endings: 0004 ported, 0001 no information (122), 0003 busy at level 4
    submit(srv, t, [num(4), num(1), num(2)], 5, drUrl=receiver.url("/hlr"))
    hlr = {json.loads(c.body)["phone"]: json.loads(c.body) for c in receiver.wait_for(3, "/hlr")}
    assert hlr[num(4)]["data"]["live"]["ported"] == "YES"
    assert hlr[num(4)]["data"]["live"]["network"] == "Simulated Ported Network"
    assert hlr[num(4)]["numgate"]["source"] == "nx"
    assert hlr[num(1)]["code"] == 122
    assert hlr[num(2)]["data"]["live"]["reachable"] == "NO"
    submit(srv, t, [num(3)], 4, drUrl=receiver.url("/call"))
    (call,) = receiver.wait_for(1, "/call")
    assert json.loads(call.body)["data"]["dial"] == {"early": "YES", "answered": "NO", "response": "busy"}
    wait_charges(srv, t.account_id, 2 * 500 + 1500)
    # the operator's cost is what the vendor charged: two HLR answers and a call (0.03, 0.09)
    wait_charges(vendor, seller.account_id, 2 * 300 + 900)
    costs = sorted((r["level"], r["outcome"], r["cost"]) for r in calls(srv))
    assert costs == [(4, "ok", 900), (5, "no_information", 0), (5, "ok", 300), (5, "ok", 300)]


def test_hlrlookup_may_answer_from_its_own_caches_when_max_age_allows(
    make_server: Any, fake_hlr: Any, receiver: Receiver
) -> None:
    fake = fake_hlr()
    fake.global_cache = {num(20)}  # someone else looked it up at hlrlookup.com lately
    srv = live_server(make_server)
    add_hlr(srv, "hlr-a", fake, unit_cost=40)
    route(srv, 5, "NG", "hlr-a")
    t = make_tenant(srv)
    submit(srv, t, [num(20), num(30)], 5, drUrl=receiver.url(), maxAge=2 * 86_400)
    got = by_phone(receiver, 2)
    assert {g["numgate"]["source"] for g in got.values()} == {"hlr-a"}  # numgate had no answer yet
    assert fake.cached == [(num(20), "global")]
    cost = sorted(r["cost"] for r in calls(srv))
    assert cost == [20, 40]  # half a credit for the global cache's answer, one for the live lookup
    # under a day: no cache days sent, the vendor looks it up live
    receiver.received.clear()
    submit(srv, t, [num(40)], 5, drUrl=receiver.url(), maxAge=3600)
    receiver.wait_for(1)
    assert fake.cached == [(num(20), "global")] and fake.looked_up()[-1] == num(40)
