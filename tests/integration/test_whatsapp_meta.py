"""The Meta Graph API upstream, against a small fake Graph server written from the documented
contract (spec whatsapp-upstream.md): the lifecycle, error mapping and rate-limit retries."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from conftest import RunningServer, aiohttp_server, make_tenant
from numgate.client import NxClient

TOKEN = "EAAG-system-user-token"
WABA = "102290129340398"


@dataclass
class FakeGraph:
    """Meta's phone-number calls, in memory. ``fail[(phone_id, call)]`` is a list of Graph error
    codes answered, one per request, before the call succeeds."""

    base_url: str = ""
    numbers: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    page_size: int = 2
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> web.Application:
        async def error(code: int, message: str, status: int = 400) -> web.Response:
            body = {"error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "Az"}}
            return web.json_response(body, status=status)

        def info(pid: str, n: dict[str, Any]) -> dict[str, Any]:
            return {
                "id": pid,
                "verified_name": n["verified_name"],
                "display_phone_number": f"+{n['cc']} {n['phone_number']}",
                "code_verification_status": "VERIFIED" if n["verified"] else "NOT_VERIFIED",
                "quality_rating": n.get("quality", "GREEN"),
                "name_status": "APPROVED",
                "status": "CONNECTED" if n["registered"] else "PENDING",
                "messaging_limit_tier": "TIER_1K",
            }

        async def handle(request: web.Request) -> web.Response:
            if request.headers.get("Authorization") != f"Bearer {TOKEN}":
                return await error(190, "Invalid OAuth access token.", 401)
            parts = request.path.strip("/").split("/")[1:]  # drop the version
            body = await request.json() if request.can_read_body else {}
            with self.lock:
                if parts == [WABA, "phone_numbers"] and request.method == "GET":  # paged listing
                    self.calls.append((WABA, "list"))
                    ids = sorted(self.numbers)
                    start = ids.index(request.query["after"]) + 1 if "after" in request.query else 0
                    limit = min(int(request.query.get("limit", "25")), self.page_size)
                    page = ids[start : start + limit]
                    out: dict[str, Any] = {"data": [info(pid, self.numbers[pid]) for pid in page]}
                    if page:
                        out["paging"] = {"cursors": {"before": page[0], "after": page[-1]}}
                        if start + limit < len(ids):
                            out["paging"]["next"] = f"{self.base_url}/{WABA}/phone_numbers?after={page[-1]}"
                    return web.json_response(out)
                if parts == [WABA, "phone_numbers"] and request.method == "POST":
                    pid = str(100000000000000 + len(self.numbers))
                    self.numbers[pid] = {
                        **body,
                        "code": None,
                        "verified": False,
                        "pin": None,
                        "registered": False,
                    }
                    return web.json_response({"id": pid})
                pid, call = parts[0], parts[1] if len(parts) > 1 else "read"
                self.calls.append((pid, call))
                n = self.numbers.get(pid)
                if n is None:
                    return await error(100, "Unsupported get request.")
                queued = self.fail.get((pid, call))
                if queued:
                    code = queued.pop(0)
                    return await error(code, {130429: "Rate limit hit"}.get(code, f"error {code}"))
                if call == "request_code":
                    assert body["code_method"] in ("SMS", "VOICE") and body["language"]
                    n["code"] = "246810"
                elif call == "verify_code":
                    if body.get("code") != n["code"]:
                        return await error(136025, "Verify code error")
                    n["verified"] = True
                elif call == "register":
                    assert body["messaging_product"] == "whatsapp" and len(body["pin"]) == 6
                    if not n["verified"]:
                        return await error(133006, "Phone number re-verification needed")
                    if n["pin"] not in (None, body["pin"]):
                        return await error(133005, "Two step verification PIN Mismatch")
                    n["pin"], n["registered"] = body["pin"], True
                elif call == "deregister":
                    n["registered"] = False
                elif call == "read":
                    return web.json_response(info(pid, n))
                return web.json_response({"success": True})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app


@pytest.fixture
def graph() -> Iterator[FakeGraph]:
    fake = FakeGraph()
    with aiohttp_server(fake.app()) as url:
        fake.base_url = url + "/v21.0"
        yield fake


def meta_server(make_server: Any, graph: FakeGraph, token: str = TOKEN) -> RunningServer:
    return make_server(
        waba_upstream="meta",
        meta_base_url=graph.base_url,
        meta_token=token,
        meta_waba_id=WABA,
        meta_backoff_s=0.01,
    )


def integrator(srv: RunningServer) -> tuple[NxClient, str]:
    t = make_tenant(srv)
    return NxClient(srv.base_url, t.access_key, t.access_secret), t.appkey


def attach(srv: RunningServer, appkey: str, phone: str) -> str:
    n = srv.call(lambda core: core.waba.add_number(None, appkey, phone, "Meta Shop"))
    assert n.upstream_id is not None
    return n.upstream_id


def call(nx: NxClient, name: str, **body: Any) -> dict[str, Any]:
    return nx.post(f"/api/wa/integrator/embedded/register/{name}", body)


def test_lifecycle_against_graph(make_server: Any, graph: FakeGraph) -> None:
    srv = meta_server(make_server, graph)
    nx, appkey = integrator(srv)
    with nx:
        pid = attach(srv, appkey, "14155550123")
        assert graph.numbers[pid]["cc"] == "1" and graph.numbers[pid]["phone_number"] == "4155550123"
        graph.fail[(pid, "request_code")] = [130429, 130429]  # throttled twice, then accepted
        assert call(nx, "getCode", phone_number="14155550123", method="sms")["code"] == 0
        assert graph.calls.count((pid, "request_code")) == 3
        wrong = call(nx, "checkCode", phone_number="14155550123", code="000000")
        assert wrong["code"] == -1 and "wrong" in wrong["message"]
        assert call(nx, "checkCode", phone_number="14155550123", code="246810")["code"] == 0
        assert call(nx, "createClient", phone_number="14155550123")["code"] == 0
        [row] = call(nx, "phoneList", appkey=appkey)["data"]
        assert (row["status"], row["register_status"], row["waba_id"]) == ("CONNECTED", 5, WABA)
        assert graph.numbers[pid]["registered"] is True


def test_graph_errors_map_to_core_errors(make_server: Any, graph: FakeGraph) -> None:
    srv = meta_server(make_server, graph)
    nx, appkey = integrator(srv)
    with nx:
        pid = attach(srv, appkey, "14155550124")
        graph.fail[(pid, "request_code")] = [130429] * 4  # more than the adapter's 4 tries
        r = call(nx, "getCode", phone_number="14155550124", method="voice")
        assert r["code"] == 9001 and "rate limiting" in r["message"]
        graph.fail[(pid, "request_code")] = []
        # the failed request does not count for the cooldown
        assert call(nx, "getCode", phone_number="14155550124", method="voice")["code"] == 0
        call(nx, "checkCode", phone_number="14155550124", code="246810")
        graph.fail[(pid, "register")] = [133016]
        r = call(nx, "createClient", phone_number="14155550124")
        assert r["code"] == -1 and "72 hours" in r["message"]
        graph.fail[(pid, "register")] = [133005]
        r = call(nx, "createClient", phone_number="14155550124")
        assert r["code"] == 9001 and "PIN" in r["message"]
        [row] = call(nx, "phoneList", appkey=appkey)["data"]
        assert row["register_status"] == 2


def test_invalid_token_says_so(make_server: Any, graph: FakeGraph) -> None:
    srv = meta_server(make_server, graph, token="expired")
    t = make_tenant(srv)

    async def add(core: Any) -> str:
        try:
            await core.waba.add_number(None, t.appkey, "14155550125", "X")
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "added"

    assert srv.call(add).startswith("UpstreamError") and "NUMGATE_META_TOKEN" in srv.call(add)


def test_sync_pages_through_the_waba_listing(make_server: Any, graph: FakeGraph) -> None:
    from alibabacloud_cams20200606 import models as m

    from conftest import cams_client

    srv = meta_server(make_server, graph)
    t = make_tenant(srv)
    pids = [attach(srv, t.appkey, f"1415555020{i}") for i in range(5)]
    graph.numbers[pids[1]]["registered"] = True  # changed on Meta's side
    graph.numbers[pids[2]]["quality"] = "YELLOW"
    del graph.numbers[pids[4]]  # removed from the WABA
    sdk = cams_client(srv, t.access_key, t.access_secret)
    r = sdk.chatapp_sync_phone_number(m.ChatappSyncPhoneNumberRequest(cust_space_id=t.appkey))
    got = {p.phone_number: (p.status, p.quality_rating) for p in r.body.phone_numbers}
    assert got == {
        "14155550200": ("PENDING", "GREEN"),
        "14155550201": ("CONNECTED", "GREEN"),
        "14155550202": ("PENDING", "YELLOW"),
        "14155550203": ("PENDING", "GREEN"),
        "14155550204": ("DELETED", "UNKNOWN"),
    }
    assert graph.calls.count((WABA, "list")) == 2  # 4 numbers, pages of 2
