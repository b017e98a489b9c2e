"""Dependencies that go down: the database (down, partitioned, an administrator ending numgate's
sessions, SQLite locked) and Redis. Every door answers its documented "try again" — NXCloud 299
(integrator 9001), CAMS 503 ServiceUnavailable — with a fixed text, within NUMGATE_DB_TIMEOUT;
/healthz answers 503 naming the dependency; an outage is one warning in the log, not one per
request; and numgate recovers by itself when the dependency is back."""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from alibabacloud_cams20200606 import models as m
from alibabacloud_tea_openapi.exceptions import ServerException

from conftest import PG_URL, RunningServer, Tenant, add_number, cams_client, make_tenant
from numgate.client import NxClient, headers_for
from tcpproxy import BLACKHOLE, PASS, REFUSE, TcpProxy

PHONE = "8613800001234"


def postgres_only(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL server to cut off (the SQLite case: the lock test below)")
    return database_url


def nx_query(srv: RunningServer, t: Tenant) -> tuple[dict[str, Any], httpx.Headers]:
    body = b'{"page":1,"pageSize":10,"date":"2026-11-22","batchNo":"x"}'
    headers = headers_for(t.access_key, t.access_secret, "1", "numbercheck", body)
    r = httpx.post(srv.base_url + "/api/number/query", content=body, headers=headers, timeout=30)
    return r.json(), r.headers


def submit(srv: RunningServer, t: Tenant) -> dict[str, Any]:
    with NxClient(srv.base_url, t.access_key, t.access_secret) as nx:
        return nx.post("/api/number/check", {"phone": "2348031234567", "appkey": t.appkey})


def integrator(srv: RunningServer, t: Tenant) -> dict[str, Any]:
    with NxClient(srv.base_url, t.access_key, t.access_secret) as nx:
        return nx.post("/api/wa/integrator/embedded/register/phoneList", {"appkey": t.appkey})


def cams_status(srv: RunningServer, t: Tenant) -> Any:
    sdk = cams_client(srv, t.access_key, t.access_secret)
    req = m.GetPhoneNumberVerificationStatusRequest(cust_space_id=t.appkey, phone_number=PHONE)
    try:
        return sdk.get_phone_number_verification_status(req)
    except ServerException as exc:
        return exc


def healthz(srv: RunningServer) -> tuple[int, dict[str, Any]]:
    r = httpx.get(srv.base_url + "/healthz", timeout=30)
    return r.status_code, r.json()


def assert_try_again(srv: RunningServer, t: Tenant, dependency: str) -> None:
    """Every door's "try again", with its fixed text and nothing of the driver's."""
    r = submit(srv, t)
    assert (r["code"], r["msg"], r["data"]) == (299, "System error", {"messageId": "", "batchNo": ""}), r
    body, headers = nx_query(srv, t)
    assert (body["code"], body["msg"]) == (299, "System error")
    assert dependency in headers["X-Numgate-Error-Detail"]
    r = integrator(srv, t)
    assert (r["code"], r["message"]) == (9001, "System business error")
    exc = cams_status(srv, t)
    assert isinstance(exc, ServerException), exc
    assert (exc.status_code, exc.code) == (503, "ServiceUnavailable")
    assert "refused" not in str(exc.data) and "Errno" not in str(exc.data)
    status, health = healthz(srv)
    assert status == 503 and health["dependencies"][dependency]["status"] == "down"


def outage_lines(caplog: pytest.LogCaptureFixture, dependency: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "numgate.outages" and r.getMessage().startswith(f"{dependency} unavailable")
    ]


def test_database_down_partitioned_and_back(
    make_server: Any, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    parts = urlsplit(postgres_only(database_url))
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        url = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
        srv = make_server(database_url=url, db_timeout_s=1.0)
        t = make_tenant(srv)
        add_number(srv, t.appkey, PHONE)
        assert submit(srv, t)["code"] == 0
        caplog.set_level(logging.WARNING, logger="numgate")

        proxy.set(REFUSE)  # the server is down
        assert_try_again(srv, t, "database")
        assert len(outage_lines(caplog, "database")) == 1  # one line for the outage, not per request
        assert "Traceback" not in caplog.text

        proxy.set(BLACKHOLE)  # a silent partition: every answer within the timeout (1 s) + 1 s
        for call in (lambda: submit(srv, t), lambda: nx_query(srv, t), lambda: cams_status(srv, t)):
            start = time.monotonic()
            call()
            assert time.monotonic() - start < 2.5

        proxy.set(PASS)  # back: numgate recovers by itself
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and submit(srv, t)["code"] != 0:
            time.sleep(0.2)
        assert submit(srv, t)["code"] == 0
        assert healthz(srv)[0] == 200
        assert any("database available again" in r.getMessage() for r in caplog.records)


def test_an_administrator_ending_the_sessions_is_an_outage_not_a_bug(
    server: RunningServer, database_url: str
) -> None:
    postgres_only(database_url)
    import asyncio

    import asyncpg  # type: ignore[import-untyped]

    t = make_tenant(server)
    assert submit(server, t)["code"] == 0

    async def terminate() -> None:
        admin = await asyncpg.connect(PG_URL)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()

    asyncio.run(terminate())
    codes = {submit(server, t)["code"] for _ in range(5)}
    assert codes <= {0, 299}, codes  # the dead connections fail once, as an outage; then all is well
    assert submit(server, t)["code"] == 0


def test_sqlite_locked_past_the_timeout_is_an_outage(
    make_server: Any, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("an SQLite lock")
    srv = make_server(db_timeout_s=0.5)
    t = make_tenant(srv)
    caplog.set_level(logging.WARNING, logger="numgate")
    holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the database
    try:
        start = time.monotonic()
        r = submit(srv, t)
        assert (r["code"], r["msg"]) == (299, "System error") and time.monotonic() - start < 3
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert len(outage_lines(caplog, "database")) == 1
    assert submit(srv, t)["code"] == 0


def test_redis_down_is_try_again_and_healthz_says_so(make_server: Any, redis_url: tuple[str, str]) -> None:
    url, prefix = redis_url
    parts = urlsplit(url)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
        srv = make_server(
            redis_url=urlunsplit(parts._replace(netloc=f"127.0.0.1:{proxy.port}")),
            redis_prefix=prefix,
            rate_limit_per_second=100,
            db_timeout_s=1.0,
        )
        t = make_tenant(srv)
        add_number(srv, t.appkey, PHONE)
        assert submit(srv, t)["code"] == 0
        proxy.set(REFUSE)
        assert_try_again(srv, t, "redis")
        assert healthz(srv)[1]["dependencies"]["database"]["status"] == "ok"
        proxy.set(PASS)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and submit(srv, t)["code"] != 0:
            time.sleep(0.2)
        assert submit(srv, t)["code"] == 0 and healthz(srv)[0] == 200
