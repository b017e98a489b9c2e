"""Per-account, per-action call limits shared by both doors: exact under concurrency, and shared
by several servers through Redis."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from alibabacloud_cams20200606 import models as m
from alibabacloud_tea_openapi.exceptions import ClientException

from conftest import RunningServer, Tenant, add_number, cams_client, make_tenant
from numgate.client import NxClient

PHONE = "8613800001234"


def burst(servers: list[RunningServer], t: Tenant, n: int) -> tuple[list[str], float]:
    clients = [cams_client(servers[i % len(servers)], t.access_key, t.access_secret) for i in range(n)]
    req = m.GetPhoneNumberVerificationStatusRequest(cust_space_id=t.appkey, phone_number=PHONE)

    def one(client: Any) -> str:
        try:
            client.get_phone_number_verification_status(req)
            return "OK"
        except ClientException as exc:
            return str(exc.code)

    with ThreadPoolExecutor(n) as pool:
        start = time.monotonic()
        results = list(pool.map(one, clients))
        return results, time.monotonic() - start


def assert_ten_per_second(results: list[str], elapsed: float) -> None:
    assert set(results) <= {"OK", "System.LimitControl"}, results
    if elapsed < 1.0:  # all inside one moving second: exactly the limit
        assert results.count("OK") == 10, results
    else:  # a slow machine: never more than 10 per started second
        assert 10 <= results.count("OK") <= 10 * int(elapsed + 1), (results, elapsed)


def test_exactly_ten_per_second_under_concurrency(make_server: Any) -> None:
    srv = make_server(rate_limit_per_second=10)
    t = make_tenant(srv)
    add_number(srv, t.appkey, PHONE)
    assert_ten_per_second(*burst([srv], t, 30))
    # the NXCloud door counts its own actions, and says -1 with a reason
    with NxClient(srv.base_url, t.access_key, t.access_secret) as nx:
        codes = []
        for _ in range(12):
            r = nx.post("/api/wa/integrator/embedded/register/phoneList", {"appkey": t.appkey})
            codes.append((r["code"], r["message"]))
    assert codes.count((0, "Request successful")) <= 10
    limited = [msg for code, msg in codes if code == -1]
    assert limited and "calls per second" in limited[0]


def test_limit_is_shared_by_several_servers_through_redis(
    make_server: Any, redis_url: tuple[str, str]
) -> None:
    url, prefix = redis_url
    a = make_server(rate_limit_per_second=10, redis_url=url, redis_prefix=prefix)
    b = make_server(rate_limit_per_second=10, redis_url=url, redis_prefix=prefix)
    t = make_tenant(a)
    add_number(a, t.appkey, PHONE)
    assert_ten_per_second(*burst([a, b], t, 30))
