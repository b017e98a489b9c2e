"""NXCloud header authentication (spec §1) through real HTTP requests."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from conftest import RunningServer, Tenant, load_vectors, make_tenant
from numgate.client import NxClient, headers_for
from numgate.clock import FixedClock
from numgate.dialects.nxcloud.signing import compute_sign

VECTORS = load_vectors()["nxcloud"]
CHECK = "/api/number/check"
QUERY = "/api/number/query"


def vector_id(v: dict[str, Any]) -> str:
    return f"{v['headers']['bizType']}-{v['headers']['action']}-{v['md5'][:6]}"


@pytest.mark.parametrize("vector", VECTORS, ids=vector_id)
def test_signature_vectors_pure(vector: dict[str, Any]) -> None:
    h = vector["headers"]
    body = vector["body"].encode()
    for algo in ("md5", "sha256"):
        got = compute_sign(
            h["accessKey"], h["bizType"], h["action"], h["ts"], body, vector["accessSecret"], algo
        )
        assert got == vector[algo]


@pytest.fixture
def vector_server(make_server: Any) -> RunningServer:
    """A server whose clock is pinned to the vectors' ts, holding the vectors' key pair."""
    ts = int(VECTORS[0]["headers"]["ts"])
    srv: RunningServer = make_server(clock=FixedClock(datetime.fromtimestamp(ts / 1000, UTC)))

    async def setup(core: Any) -> None:
        acct, _ = await core.tenancy.create_account("vendor example", integrator=True)
        await core.tenancy.import_key(acct.id, VECTORS[0]["headers"]["accessKey"], VECTORS[0]["accessSecret"])

    srv.call(setup)
    return srv


def _send_vector(
    srv: RunningServer, v: dict[str, Any], algo: str, path: str, sign: str | None = None
) -> dict[str, Any]:
    h = dict(v["headers"])
    h["sign"] = sign or v[algo]
    if algo != "md5":
        h["algorithm"] = algo
    h["Content-Type"] = "application/json"
    r = httpx.post(srv.base_url + path, content=v["body"].encode(), headers=h)
    assert r.status_code == 200
    return r.json()


@pytest.mark.parametrize("algo", ["md5", "sha256"])
@pytest.mark.parametrize("vector", [v for v in VECTORS if v["headers"]["bizType"] == "1"], ids=vector_id)
def test_signature_vectors_over_http(vector_server: RunningServer, vector: dict[str, Any], algo: str) -> None:
    """Every published signature is accepted on the wire; the same request with one byte changed is 1003."""
    reply = _send_vector(vector_server, vector, algo, CHECK)
    if vector["headers"]["action"] == "numbercheck":
        # past authentication: the example's appkey does not exist
        assert reply == {
            "msg": "Application not available or incorrect appkey",
            "code": 202,
            "data": {"messageId": "", "batchNo": ""},
        }
    else:  # signature accepted, but action "send" is not this endpoint's
        assert reply == {"msg": "Parameter error", "code": 1002, "data": None}
    bad = vector[algo][:-1] + ("0" if vector[algo][-1] != "0" else "1")
    assert _send_vector(vector_server, vector, algo, CHECK, sign=bad)["code"] == 1003


def test_reserialised_body_is_rejected(vector_server: RunningServer) -> None:
    """The signature covers the raw bytes: the vendor's 2nd serialisation with the 1st's sign fails."""
    v1, v2 = VECTORS[0], VECTORS[1]
    h = dict(v2["headers"], sign=v1["md5"], **{"Content-Type": "application/json"})
    r = httpx.post(vector_server.base_url + CHECK, content=v2["body"].encode(), headers=h).json()
    assert r["code"] == 1003


def post(srv: RunningServer, path: str, t: Tenant, body: bytes, **over: str | None) -> dict[str, Any]:
    h: dict[str, str | None] = dict(headers_for(t.access_key, t.access_secret, "1", "numbercheck", body))
    h.update(over)
    r = httpx.post(srv.base_url + path, content=body, headers={k: v for k, v in h.items() if v is not None})
    assert r.status_code == 200, r.text
    return r.json()


QBODY = b'{"page":1,"pageSize":10,"date":"2020-01-01","batchNo":"x"}'


@pytest.mark.parametrize("missing", ["accessKey", "ts", "bizType", "action", "sign"])
def test_1001_missing_header(server: RunningServer, tenant: Tenant, missing: str) -> None:
    assert post(server, QUERY, tenant, QBODY, **{missing: None}) == {
        "msg": "Missing parameters",
        "code": 1001,
        "data": None,
    }


@pytest.mark.parametrize("ts", ["abc", "1655710885", "-5", "12.5"])
def test_1004_bad_timestamp(server: RunningServer, tenant: Tenant, ts: str) -> None:
    body = QBODY
    sign = compute_sign(tenant.access_key, "1", "numbercheck", ts, body, tenant.access_secret)
    assert post(server, QUERY, tenant, body, ts=ts, sign=sign)["code"] == 1004


def test_1004_window_is_60000_ms_both_ways(make_server: Any) -> None:
    clock = FixedClock()
    srv = make_server(clock=clock)
    t = make_tenant(srv)
    now = clock.time_ms()
    q = {"page": 1, "pageSize": 10, "date": clock.now().date().isoformat(), "batchNo": "x"}
    with NxClient(srv.base_url, t.access_key, t.access_secret) as nx:
        for offset, code in ((60_000, 0), (-60_000, 0), (60_001, 1004), (-60_001, 1004)):
            assert nx.post(QUERY, q, ts=now + offset)["code"] == code, offset


def test_1005_unknown_and_disabled_key(server: RunningServer, tenant: Tenant) -> None:
    assert post(server, QUERY, tenant, QBODY, accessKey="nosuchkey")["code"] == 1005
    server.call(lambda core: core.tenancy.set_key_enabled(tenant.access_key, False))
    assert post(server, QUERY, tenant, QBODY)["code"] == 1005
    server.call(lambda core: core.tenancy.set_key_enabled(tenant.access_key, True))
    assert post(server, QUERY, tenant, QBODY)["code"] != 1005
    # a disabled account's keys are refused too, on every door, until it is enabled again
    server.call(lambda core: core.tenancy.set_account_enabled(tenant.account_id, False))
    assert post(server, QUERY, tenant, QBODY)["code"] == 1005
    server.call(lambda core: core.tenancy.set_account_enabled(tenant.account_id, True))
    assert post(server, QUERY, tenant, QBODY)["code"] != 1005


def test_1005_is_checked_before_1003(server: RunningServer, tenant: Tenant) -> None:
    assert post(server, QUERY, tenant, QBODY, accessKey="nosuchkey", sign="00")["code"] == 1005


def test_1003_wrong_secret_changed_body_wrong_content_type(server: RunningServer, tenant: Tenant) -> None:
    wrong = compute_sign(tenant.access_key, "1", "numbercheck", str(server.clock.time_ms()), QBODY, "nope")
    assert post(server, QUERY, tenant, QBODY, sign=wrong, ts=str(server.clock.time_ms()))["code"] == 1003
    h = headers_for(tenant.access_key, tenant.access_secret, "1", "numbercheck", QBODY)
    r = httpx.post(server.base_url + QUERY, content=QBODY + b" ", headers=h).json()
    assert r["code"] == 1003
    r = httpx.post(server.base_url + QUERY, content=QBODY, headers=h | {"Content-Type": "text/plain"})
    assert r.json()["code"] == 1003
    assert "Content-Type" in r.headers["x-numgate-error-detail"]


def test_1002_wrong_action_bad_json_unknown_algorithm(server: RunningServer, tenant: Tenant) -> None:
    body = QBODY
    h = headers_for(tenant.access_key, tenant.access_secret, "2", "numbercheck", body)
    assert httpx.post(server.base_url + QUERY, content=body, headers=h).json()["code"] == 1002
    bad = b'{"page": 1,'
    assert post(server, QUERY, tenant, bad)["code"] == 1002
    arr = b"[1,2]"
    assert post(server, QUERY, tenant, arr)["code"] == 1002
    assert post(server, QUERY, tenant, body, algorithm="sha1")["code"] == 1002


def test_1005_business_not_enabled(server: RunningServer) -> None:
    t = make_tenant(server, name="wa-only", number_check=False)
    assert post(server, QUERY, t, QBODY)["code"] == 1005


def test_header_names_are_case_insensitive_and_sha256_works(server: RunningServer, tenant: Tenant) -> None:
    h = headers_for(tenant.access_key, tenant.access_secret, "1", "numbercheck", QBODY, algorithm="sha256")
    lower = {k.lower(): v for k, v in h.items()}
    assert httpx.post(server.base_url + QUERY, content=QBODY, headers=lower).json()["code"] == 88


def test_replay_returns_first_reply_and_does_not_execute_twice(server: RunningServer, tenant: Tenant) -> None:
    body = json.dumps({"phone": "2348031234567", "appkey": tenant.appkey}).encode()
    h = headers_for(tenant.access_key, tenant.access_secret, "1", "numbercheck", body)
    replies: list[bytes] = []

    def send() -> None:
        replies.append(httpx.post(server.base_url + CHECK, content=body, headers=h).content)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    replies.append(httpx.post(server.base_url + CHECK, content=body, headers=h).content)
    assert len(set(replies)) == 1 and json.loads(replies[0])["code"] == 0

    async def batches(core: Any) -> int:
        from sqlalchemy import func, select

        from numgate.db.tables import batches as t

        async with core.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(t))).scalar_one())

    assert server.call(batches) == 1


def test_unknown_path_is_json_404(server: RunningServer) -> None:
    r = httpx.post(server.base_url + "/api/nope", content=b"{}")
    assert r.status_code == 404
    assert r.json()["code"] == 404
    r = httpx.get(server.base_url + CHECK)
    assert r.status_code == 405 and r.json()["code"] == 405


def test_healthz(server: RunningServer) -> None:
    r = httpx.get(server.base_url + "/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_access_log_has_account_code_latency_and_no_secrets(
    make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    srv = make_server(access_log=True)
    t = make_tenant(srv)
    phones = "2348031234567,2348059876543"
    with (
        caplog.at_level(logging.INFO, logger="numgate.access"),
        NxClient(srv.base_url, t.access_key, t.access_secret) as nx,
    ):
        reply = nx.post(CHECK, {"phone": phones, "appkey": t.appkey})
        nx.post(CHECK, {"phone": phones, "appkey": t.appkey}, ts=1)
        # the line is written once the response has gone out: give the server thread a moment
        for _ in range(200):
            records = [r for r in caplog.records if r.name == "numgate.access"]
            if len(records) >= 2:
                break
            time.sleep(0.01)
    fields = [r.fields for r in records]  # type: ignore[attr-defined]
    assert fields[0]["account"] == t.account_id and fields[0]["code"] == 0 and fields[0]["ms"] > 0
    assert fields[1]["code"] == 1004
    text = " ".join(str(f) for f in fields) + caplog.text
    for secret in (t.access_secret, "2348031234567", reply["data"]["messageId"]):
        assert secret not in text


def test_async_client_signs_like_the_sync_one(server: RunningServer, tenant: Tenant) -> None:
    import asyncio

    from numgate.client import AsyncNxClient, NxError

    async def main() -> None:
        async with AsyncNxClient(server.base_url, tenant.access_key, tenant.access_secret, "sha256") as nx:
            data = await nx.number_check("2348031234567", appkey=tenant.appkey, batch_no="async-1")
            assert data["batchNo"] == "async-1" and len(data["messageId"]) == 32
            with pytest.raises(NxError) as err:
                await nx.number_check("2348031234567", appkey="nope")
            assert err.value.code == 202

    asyncio.run(main())


def test_1001_in_the_integrator_envelope(server: RunningServer, tenant: Tenant) -> None:
    path = "/api/wa/integrator/embedded/register/phoneList"
    r = httpx.post(
        server.base_url + path, content=b'{"appkey":"x"}', headers={"Content-Type": "application/json"}
    )
    assert r.content == b'{"code":1001,"data":null,"message":"Missing parameters"}'


def test_an_empty_body_is_accepted_however_clients_sign_it(server: RunningServer) -> None:
    """An empty body, ``{}`` and ``[]`` carry no parameters; clients sign them with the body left
    out, with ``&body=`` and nothing after it, or with ``&body={}`` / ``&body=[]``. Every one of
    those signatures opens ``login`` with every one of those bodies (docs/nxcloud.md)."""
    import hashlib

    t = make_tenant(server, name="emptybody")
    path = "/api/wa/integrator/embedded/register/login"

    def sign_over(body_part: bytes | None, ts: str) -> str:
        head = f"accessKey={t.access_key}&action=login&bizType=2&ts={ts}".encode()
        tail = f"&accessSecret={t.access_secret}".encode()
        middle = b"" if body_part is None else b"&body=" + body_part
        return hashlib.md5(head + middle + tail).hexdigest()

    for sent in (b"", b"{}", b"[]"):
        for signed_as in (None, b"", b"{}", b"[]"):
            ts = str(server.clock.time_ms())
            headers = {
                "accessKey": t.access_key,
                "ts": ts,
                "bizType": "2",
                "action": "login",
                "sign": sign_over(signed_as, ts),
                "Content-Type": "application/json",
            }
            r = httpx.post(server.base_url + path, content=sent, headers=headers).json()
            assert r["code"] == 0 and r["data"]["token"], (sent, signed_as, r)
    # a body with parameters is signed over its raw bytes only
    ts = str(server.clock.time_ms())
    body = b'{"appkey":"x"}'
    headers = {
        "accessKey": t.access_key,
        "ts": ts,
        "bizType": "2",
        "action": "login",
        "Content-Type": "application/json",
    }
    r = httpx.post(
        server.base_url + path, content=body, headers=headers | {"sign": sign_over(b"{}", ts)}
    ).json()
    assert r["code"] == 1003
