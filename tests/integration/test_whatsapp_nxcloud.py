"""The NXCloud integrator endpoints (spec nxcloud.md §3) through NxClient, the sign-up page, and a
number verified through one door reading as verified through the other."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from alibabacloud_cams20200606 import models as m

from conftest import RunningServer, Tenant, add_number, cams_client, make_tenant, outbox_code
from numgate.client import NxClient
from numgate.client.nxcloud import NxError
from numgate.clock import FixedClock
from numgate.core import Core
from numgate.db.tables import waba_numbers

PHONE = "447700900123"


@pytest.fixture
def nx(server: RunningServer, tenant: Tenant) -> Iterator[NxClient]:
    with NxClient(server.base_url, tenant.access_key, tenant.access_secret) as client:
        yield client


def nx_error(nx: NxClient, name: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    with pytest.raises(NxError) as info:
        nx.integrator(name, body)
    return info.value.reply


def row_for(rows: list[dict[str, Any]], phone: str) -> dict[str, Any]:
    digits = [r for r in rows if re.sub(r"\D", "", r["display_phone_number"]) == phone]
    assert len(digits) == 1, rows
    return digits[0]


def test_lifecycle_through_nxclient_and_the_other_door(
    server: RunningServer, tenant: Tenant, nx: NxClient
) -> None:
    app = nx.integrator("createApp", {"app_name": "Shop", "webhook": "https://shop.example/wa"})
    assert set(app) == {"app_id", "app_name", "app_key"} and app["app_name"] == "Shop"
    add_number(server, app["app_key"], PHONE, "Shop Support")

    [row] = nx.integrator("phoneList", {"appkey": app["app_key"]})
    assert row == {
        "display_phone_number": "+44 7700 900123",
        "quality_rating": "UNKNOW",
        "verified_name": "Shop Support",
        "name_status": "PENDING_REVIEW",
        "code_verification_status": "NOT_VERIFIED",
        "current_limit": "TIER_250",
        "register_status": 3,
        "status": "PENDING",
        "waba_id": row["waba_id"],
        "waba_name": "Shop",
    }
    assert nx.integrator("getCode", {"phone_number": "+" + PHONE, "method": "voice"}) == {}
    code = outbox_code(server, PHONE)
    assert nx.integrator("checkCode", {"phone_number": PHONE, "code": code}) is None
    assert nx.integrator("createClient", {"phone_number": PHONE}) is None
    row = row_for(nx.integrator("phoneList", {"appkey": app["app_key"]}), PHONE)
    assert (
        row["register_status"],
        row["status"],
        row["code_verification_status"],
        row["quality_rating"],
    ) == (
        5,
        "CONNECTED",
        "VERIFIED",
        "GREEN",
    )

    # the same app is a CAMS space; the same access key opens the CAMS door
    sdk = cams_client(server, tenant.access_key, tenant.access_secret)
    r = sdk.get_phone_number_verification_status(
        m.GetPhoneNumberVerificationStatusRequest(cust_space_id=app["app_key"], phone_number=PHONE)
    )
    assert r.body.data.code_verification_status == "VERIFIED"
    sdk.chatapp_phone_number_deregister(
        m.ChatappPhoneNumberDeregisterRequest(cust_space_id=app["app_key"], phone_number=PHONE)
    )
    row = row_for(nx.integrator("phoneList", {"appkey": app["app_key"]}), PHONE)
    assert (row["register_status"], row["status"]) == (4, "DISCONNECTED")


def test_verified_through_cams_reads_verified_through_nxcloud(
    server: RunningServer, tenant: Tenant, nx: NxClient
) -> None:
    add_number(server, tenant.appkey, PHONE)
    sdk = cams_client(server, tenant.access_key, tenant.access_secret)
    sdk.get_chatapp_verify_code(
        m.GetChatappVerifyCodeRequest(
            cust_space_id=tenant.appkey, phone_number=PHONE, method="sms", locale="en_GB"
        )
    )
    sdk.chatapp_verify_and_register(
        m.ChatappVerifyAndRegisterRequest(
            cust_space_id=tenant.appkey, phone_number=PHONE, verify_code=outbox_code(server, PHONE)
        )
    )
    row = row_for(nx.integrator("phoneList", {"appkey": tenant.appkey}), PHONE)
    assert (row["code_verification_status"], row["register_status"]) == ("VERIFIED", 5)


def test_integrator_codes(server: RunningServer, tenant: Tenant, nx: NxClient) -> None:
    r = nx_error(nx, "getCode", {"method": "sms"})
    assert r["code"] == 9000 and "phone_number" in r["message"] and r["data"] is None
    r = nx_error(nx, "createApp", {"app_name": "x"})
    assert r["code"] == 9000 and "webhook" in r["message"]
    assert nx_error(nx, "phoneList", {"appkey": "nosuchappkey"})["code"] == 9008
    other = make_tenant(server, name="other")
    assert nx_error(nx, "phoneList", {"appkey": other.appkey})["code"] == 9010
    r = nx_error(nx, "getCode", {"phone_number": "4915100000000", "method": "sms"})
    assert r["code"] == -1 and "not on any of your apps" in r["message"]
    # another tenant's number reads exactly like one that does not exist
    add_number(server, other.appkey, "4915100000001")
    theirs = nx_error(nx, "getCode", {"phone_number": "4915100000001", "method": "sms"})
    assert theirs == {**r, "message": r["message"].replace("4915100000000", "4915100000001")}
    add_number(server, tenant.appkey, PHONE)
    r = nx_error(nx, "getCode", {"phone_number": PHONE, "method": "pigeon"})
    assert r["code"] == -1 and "'sms' or 'voice'" in r["message"]
    r = nx_error(nx, "checkCode", {"phone_number": PHONE, "code": "123456"})
    assert r["code"] == -1 and "request a code first" in r["message"]
    nx.integrator("getCode", {"phone_number": PHONE, "method": "sms"})
    code = outbox_code(server, PHONE)
    r = nx_error(nx, "checkCode", {"phone_number": PHONE, "code": "999999" if code != "999999" else "111111"})
    assert r["code"] == -1 and "wrong" in r["message"]
    r = nx_error(nx, "createClient", {"phone_number": PHONE})
    assert r["code"] == -1 and "not verified" in r["message"]
    add_number(server, tenant.appkey, "447700909902")  # simulator: upstream refuses to send a code
    r = nx_error(nx, "getCode", {"phone_number": "447700909902", "method": "sms"})
    assert r["code"] == 9001 and "136024" in r["message"]

    direct = make_tenant(server, name="direct", integrator=False)
    with NxClient(server.base_url, direct.access_key, direct.access_secret) as d:
        assert nx_error(d, "login")["code"] == 9007
    reply = nx.post("/api/wa/integrator/embedded/register/login", {}, biz_type="2", action="phoneList")
    assert reply["code"] == 1002 and set(reply) == {"code", "data", "message"}


def test_register_status_on_failures(server: RunningServer, tenant: Tenant, nx: NxClient) -> None:
    for phone, status in (("447700909904", 1), ("447700909905", 2)):
        add_number(server, tenant.appkey, phone)
        nx.integrator("getCode", {"phone_number": phone, "method": "sms"})
        nx.integrator("checkCode", {"phone_number": phone, "code": outbox_code(server, phone)})
        r = nx_error(nx, "createClient", {"phone_number": phone})
        assert r["code"] == 9001
        assert (
            row_for(nx.integrator("phoneList", {"appkey": tenant.appkey}), phone)["register_status"] == status
        )


def test_create_app_limit_is_9009(server: RunningServer, tenant: Tenant, nx: NxClient) -> None:
    async def fill(core: Core) -> None:
        for i in range(999):  # the tenant already has one
            await core.tenancy.create_app(tenant.account_id, f"app {i}")

    server.call(fill, timeout=300)
    assert (
        nx_error(nx, "createApp", {"app_name": "one too many", "webhook": "https://x.example"})["code"]
        == 9009
    )


def test_signup_page_attaches_a_number(make_server: Any) -> None:
    clock = FixedClock()
    srv = make_server(clock=clock)
    t = make_tenant(srv)
    with NxClient(srv.base_url, t.access_key, t.access_secret, now_ms=clock.time_ms) as nx:
        token = nx.integrator("login")["token"]
        signup_flow(srv, t, nx, token)
    clock.advance(minutes=31)
    expired = httpx.get(f"{srv.base_url}/signup", params={"token": token})
    assert expired.status_code == 400 and "expired" in expired.text


def signup_flow(srv: RunningServer, t: Tenant, nx: NxClient, token: str) -> None:
    page = httpx.get(f"{srv.base_url}/signup", params={"token": token})
    assert page.status_code == 200 and t.appkey in page.text and "<form" in page.text
    bad = httpx.post(
        f"{srv.base_url}/signup",
        data={"token": token, "appkey": t.appkey, "phone_number": "12", "verified_name": "Shop"},
    )
    assert bad.status_code == 400 and "digits with country code" in bad.text
    done = httpx.post(
        f"{srv.base_url}/signup",
        data={"token": token, "appkey": t.appkey, "phone_number": "+44 7700 900123", "verified_name": "Shop"},
    )
    assert done.status_code == 200 and "is attached" in done.text
    assert row_for(nx.integrator("phoneList", {"appkey": t.appkey}), PHONE)["verified_name"] == "Shop"
    other = make_tenant(srv, name="other")
    stolen = httpx.post(
        f"{srv.base_url}/signup",
        data={"token": token, "appkey": other.appkey, "phone_number": "447700900124", "verified_name": "X"},
    )
    assert stolen.status_code == 400 and "another customer" in stolen.text
    assert httpx.get(f"{srv.base_url}/signup", params={"token": token + "x"}).status_code == 400


def test_concurrent_requests_for_one_number(server: RunningServer, tenant: Tenant) -> None:
    add_number(server, tenant.appkey, PHONE)

    def call(name: str, body: dict[str, Any], i: int) -> int:
        # each request its own ts: two identical signed requests are one request and its replay
        ts = server.clock.time_ms() + i
        with NxClient(server.base_url, tenant.access_key, tenant.access_secret) as c:
            return int(c.post(f"/api/wa/integrator/embedded/register/{name}", body, ts=ts)["code"])

    with ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(lambda i: call("getCode", {"phone_number": PHONE, "method": "sms"}, i), range(8))
        )
    assert sorted(codes) == [-1] * 7 + [0]
    code = outbox_code(server, PHONE)
    with NxClient(server.base_url, tenant.access_key, tenant.access_secret) as c:
        c.integrator("checkCode", {"phone_number": PHONE, "code": code})
    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(lambda i: call("createClient", {"phone_number": PHONE}, i), range(6)))
    assert codes.count(0) == 1 and codes.count(-1) == 5

    async def state(core: Core) -> tuple[Any, ...]:
        from sqlalchemy import func, select

        from numgate.db.tables import waba_register_events

        async with core.engine.connect() as conn:
            reg = (await conn.execute(select(waba_numbers.c.registration))).scalar_one()
            events = (await conn.execute(select(func.count()).select_from(waba_register_events))).scalar_one()
            pin = (await conn.execute(select(waba_numbers.c.pin_enc))).scalar_one()
        return reg, events, core.vault.decrypt(pin)

    reg, events, pin = server.call(state)
    assert (reg, events) == ("registered", 1)
    assert len(pin) == 6 and pin.isdigit()
