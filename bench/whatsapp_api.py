"""WhatsApp API throughput: signed requests per second and p50/p99 latency for NXCloud
``checkCode`` (each one a real verification: code checked, number marked verified) and CAMS
``GetPhoneNumberVerificationStatus``, next to bare signed echo endpoints on the same web stack
(Starlette + uvicorn, one process each, access log off), measured in the same run. Each line
also gives the server's CPU per request, how busy the whole machine was, and with ``--postgres``
the PostgreSQL server's CPU per request (its processes serving the run's database).

    .venv/bin/python bench/whatsapp_api.py [--numbers 3000] [--requests 10000] [--postgres URL] [--repeat N]

With ``--postgres`` the database is analysed (``ANALYZE``) after the setup has loaded its
numbers and codes, as autovacuum would within a minute: measured seconds after a bulk load, the
planner's statistics still describe the empty tables and it plans sequential scans where an
index lookup per row is right. ``--cold-statistics`` skips that, to measure that first minute.

The call limits are lifted for the run (NUMGATE_RATE_LIMIT=0); the load generator (aiohttp,
64 concurrent requests) runs on the same machine as the servers. ``BENCH_PROFILE=out.raw``
records a py-spy profile (collapsed stacks) of numgate during the CAMS run, or the checkCode run
with ``BENCH_PROFILE_PHASE=nx`` (py-spy on PATH).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
from _support import (
    analyze,
    free_port,
    numgate_env,
    process_cpu,
    scratch_database,
    server_cpu,
    start_profile,
    stop_profile,
)

from numgate.client.nxcloud import headers_for
from numgate.dialects.cams import signing

NUMGATE = [sys.executable, "-m", "numgate"]
INTEGRATOR = "/api/wa/integrator/embedded/register/"


# the reference: bare signed echo endpoints on the same stack -----------------------------------------


def echo_server(port: int, key: str, secret: str) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from numgate.dialects.nxcloud.signing import compute_sign

    async def nx_echo(request: Request) -> Response:
        h = request.headers
        raw = await request.body()
        sign = compute_sign(h["accessKey"], h["bizType"], h["action"], h["ts"], raw, secret, "md5")
        if sign != h["sign"]:
            return Response(b'{"code":1003}', media_type="application/json")
        return Response(
            orjson.dumps({"code": 0, "data": orjson.loads(raw), "message": "ok"}),
            media_type="application/json",
        )

    async def cams_echo(request: Request) -> Response:
        h = request.headers
        auth = signing.parse_authorization(h["authorization"])
        query = request.scope["query_string"].decode()
        values = {n: h.getlist(n) for n in auth.signed_headers}
        sts = signing.acs3_string_to_sign(
            "POST", query, values, auth.signed_headers, h["x-acs-content-sha256"]
        )
        ok = signing.acs3_signature(secret, sts) == auth.signature
        return Response(
            orjson.dumps({"Code": "OK" if ok else "SignatureDoesNotMatch", "Echo": query}),
            media_type="application/json",
        )

    app = Starlette(
        routes=[
            Route(INTEGRATOR + "{name}", nx_echo, methods=["POST"]),
            Route("/", cams_echo, methods=["POST"]),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# load ------------------------------------------------------------------------------------------------


async def load(
    url_and_request: Callable[[int], tuple[str, dict[str, str], bytes]],
    n: int,
    concurrency: int = 64,
    check: Callable[[dict[str, Any]], bool] = lambda r: True,
) -> tuple[float, float, float, int, int]:
    """(requests/s, p50 ms, p99 ms, failures, requests)."""
    latencies: list[float] = []
    failures = 0
    todo = iter(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            nonlocal failures
            for i in todo:
                url, headers, body = url_and_request(i)
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    reply = orjson.loads(await resp.read())
                latencies.append((time.perf_counter() - t0) * 1000)
                if not check(reply):
                    failures += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return n / elapsed, statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1], failures, n


def nx_request(
    base: str, key: str, secret: str, name: str, body: dict[str, Any]
) -> tuple[str, dict[str, str], bytes]:
    raw = orjson.dumps(body)
    return base + INTEGRATOR + name, headers_for(key, secret, "2", name, raw), raw


def cams_request(
    base: str, key: str, secret: str, action: str, params: dict[str, str]
) -> tuple[str, dict[str, str], bytes]:
    query = urlencode(sorted(params.items()))
    host = base.split("://", 1)[1]
    h = {
        "host": host,
        "x-acs-version": "2020-06-06",
        "x-acs-action": action,
        "x-acs-date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "x-acs-signature-nonce": uuid.uuid4().hex,
        "accept": "application/json",
        "x-acs-content-sha256": signing.EMPTY_SHA256,
    }
    names = sorted(h)
    sts = signing.acs3_string_to_sign("POST", query, {k: [h[k]] for k in names}, names, signing.EMPTY_SHA256)
    h["Authorization"] = (
        f"ACS3-HMAC-SHA256 Credential={key},SignedHeaders={';'.join(names)},"
        f"Signature={signing.acs3_signature(secret, sts)}"
    )
    return f"{base}/?{query}", h, b""


# setup -------------------------------------------------------------------------------------------------


async def setup(env: dict[str, str], n: int) -> tuple[str, str, str, list[str]]:
    """An integrator account with one space holding ``n`` numbers (not yet verified)."""
    from numgate.gateway import open_gateway
    from numgate.settings import Settings

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        core = await open_gateway(Settings.from_env())
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        acct, creds = await core.tenancy.create_account("bench", integrator=True)
        app = await core.tenancy.create_app(acct.id, "bench", appkey="cams-bench00000")
        from numgate.waba.simulator import MAGIC

        # UK drama-range numbers, skipping the simulator's magic endings (they force failures)
        candidates = (f"447700{i:06d}" for i in range(10**6))
        phones = [p for p in candidates if p[-4:] not in MAGIC][:n]
        for i in range(0, len(phones), 64):  # 64 at a time, as a busy integrator would
            await asyncio.gather(
                *(core.waba.add_number(acct.id, app.appkey, p, "Bench") for p in phones[i : i + 64])
            )
    finally:
        await core.close()
    return creds.access_key, creds.access_secret, app.appkey, phones


async def outbox_codes(env: dict[str, str]) -> dict[str, str]:
    from numgate.db.direct import open_database
    from numgate.db.engine import create_engine
    from numgate.settings import Settings
    from numgate.waba.simulator import code_in, read_outbox

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        engine = create_engine(Settings.from_env().resolved_database_url)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    db = open_database(engine)
    messages = await read_outbox(db, None, 10**7)
    await db.close()
    await engine.dispose()
    return {m.phone: code_in(m) for m in reversed(messages)}


def wait_up(base: str) -> None:
    import httpx

    for _ in range(200):
        try:
            httpx.get(base + "/healthz", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{base} did not start")


@dataclass(frozen=True)
class Measured:
    rate: float
    p50_ms: float
    p99_ms: float
    failures: int
    #: the server process's CPU time per request (user + system)
    cpu_us: float
    #: the share of the machine's CPU time busy during the run (all processes: the load
    #: generator, the server, PostgreSQL): near 100 % the machine, not the server, is the limit
    busy: float
    #: the PostgreSQL server's CPU time per request (its processes serving the run's database)
    db_us: float = 0.0


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far (/proc/stat)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def measured(
    pid: int,
    run: Callable[[], Coroutine[Any, Any, tuple[float, float, float, int, int]]],
    database_url: str | None = None,
) -> Measured:
    """Run a load against the server ``pid`` and note the CPU time it (and PostgreSQL, serving
    ``database_url``) spent per request."""
    c0, d0, (b0, t0) = process_cpu(pid), server_cpu(database_url), machine_ticks()
    rate, p50, p99, failures, n = asyncio.run(run())
    b1, t1 = machine_ticks()
    return Measured(
        rate,
        p50,
        p99,
        failures,
        (process_cpu(pid) - c0) / n * 1e6,
        (b1 - b0) / max(1, t1 - t0),
        (server_cpu(database_url) - d0) / n * 1e6,
    )


def report(name: str, r: Measured) -> None:
    print(
        f"  {name:44} {r.rate:8.0f} req/s   p50 {r.p50_ms:6.1f} ms   p99 {r.p99_ms:6.1f} ms   failures {r.failures}"
        f"   server CPU {r.cpu_us:5.0f} us/req   machine busy {r.busy:4.0%}"
        + (f"   PostgreSQL CPU {r.db_us:5.0f} us/req" if r.db_us else "")
    )


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--echo-server":
        echo_server(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--numbers", type=int, default=10_000, help="numbers verified by checkCode (one call each)"
    )
    ap.add_argument("--requests", type=int, default=10_000, help="requests for the status and echo runs")
    ap.add_argument(
        "--postgres",
        metavar="URL",
        help="a PostgreSQL server (each run makes and drops its own database there)",
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs, each with a fresh numgate; then the medians")
    ap.add_argument(
        "--cold-statistics",
        action="store_true",
        help="(PostgreSQL) skip the ANALYZE after the setup: measure with the planner's statistics"
        " of the empty tables, as in the first minute after a bulk load",
    )
    args = ap.parse_args()
    ratios: list[tuple[float, float]] = []
    for i in range(args.repeat):
        if args.repeat > 1:
            print(f"run {i + 1} of {args.repeat}")
        with scratch_database(args.postgres) as url:
            ratios.append(one_run(args, url))
    if len(ratios) > 1:
        nx = sorted(r[0] for r in ratios)
        cams = sorted(r[1] for r in ratios)
        print(f"over {len(ratios)} runs")
        print(
            f"  checkCode / echo                        median {statistics.median(nx):.2f} (min {nx[0]:.2f}, max {nx[-1]:.2f})"
        )
        print(
            f"  GetPhoneNumberVerificationStatus / echo median {statistics.median(cams):.2f}"
            f" (min {cams[0]:.2f}, max {cams[-1]:.2f})"
        )


def one_run(args: argparse.Namespace, database_url: str | None) -> tuple[float, float]:
    """A fresh numgate and echo server, the loads; (checkCode ratio, status ratio)."""
    env = numgate_env("numgate-wa-bench-", database_url)
    subprocess.run([*NUMGATE, "migrate"], env=env, check=True, capture_output=True)
    key, secret, space, phones = asyncio.run(setup(env, args.numbers))

    port, echo_port = free_port(), free_port()
    procs = [
        subprocess.Popen([*NUMGATE, "serve", "--port", str(port)], env=env),
        subprocess.Popen([sys.executable, __file__, "--echo-server", str(echo_port), key, secret]),
    ]
    base, echo = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{echo_port}"
    try:
        wait_up(base)
        time.sleep(0.5)
        print(
            f"numgate {'PostgreSQL' if database_url else 'SQLite'}; {args.numbers} numbers, {args.requests} requests; 64 concurrent"
        )

        def ok(r: dict[str, Any]) -> bool:
            return r.get("code") == 0

        setup_run = measured(
            procs[0].pid,
            lambda: load(
                lambda i: nx_request(
                    base, key, secret, "getCode", {"phone_number": phones[i], "method": "sms"}
                ),
                len(phones),
                check=ok,
            ),
            database_url,
        )
        report("NXCloud getCode (setup: a code per number)", setup_run)
        codes = asyncio.run(outbox_codes(env))
        if not args.cold_statistics:
            analyze(database_url)
        numgate_pid, echo_pid = procs[0].pid, procs[1].pid
        n = len(phones)

        def echo_nx() -> Measured:
            return measured(
                echo_pid,
                lambda: load(
                    lambda i: nx_request(
                        echo, key, secret, "checkCode", {"phone_number": phones[i % n], "code": "123456"}
                    ),
                    args.requests,
                    check=ok,
                ),
            )

        nx_before = echo_nx()
        spy = start_profile(numgate_pid, "nx", "cams")
        nx_run = measured(
            numgate_pid,
            lambda: load(
                lambda i: nx_request(
                    base, key, secret, "checkCode", {"phone_number": phones[i], "code": codes[phones[i]]}
                ),
                n,
                check=ok,
            ),
            database_url,
        )
        stop_profile(spy)
        nx_after = echo_nx()
        params = lambda i: {"CustSpaceId": space, "PhoneNumber": phones[i % n]}  # noqa: E731

        def cams_ok(r: dict[str, Any]) -> bool:
            return r.get("Code") == "OK"

        def cams(url: str, pid: int, db: str | None = None) -> Measured:
            return measured(
                pid,
                lambda: load(
                    lambda i: cams_request(url, key, secret, "GetPhoneNumberVerificationStatus", params(i)),
                    args.requests,
                    check=cams_ok,
                ),
                db,
            )

        cams_before = cams(echo, echo_pid)
        spy = start_profile(numgate_pid, "cams", "cams")
        cams_run = cams(base, numgate_pid, database_url)
        stop_profile(spy)
        cams_after = cams(echo, echo_pid)
        print(
            "reference: bare signed echo on Starlette + uvicorn, measured before and after each numgate run"
        )
        report("echo, NXCloud-signed (before)", nx_before)
        report("echo, NXCloud-signed (after)", nx_after)
        report("echo, ACS3-signed (before)", cams_before)
        report("echo, ACS3-signed (after)", cams_after)
        print("numgate")
        report("NXCloud checkCode (each verifies a number)", nx_run)
        report("CAMS GetPhoneNumberVerificationStatus", cams_run)
        nx_ref = (nx_before.rate + nx_after.rate) / 2
        cams_ref = (cams_before.rate + cams_after.rate) / 2
        print(f"ratio checkCode / echo:                        {nx_run.rate / nx_ref:.2f}  (target >= 0.4)")
        print(
            f"ratio GetPhoneNumberVerificationStatus / echo: {cams_run.rate / cams_ref:.2f}  (target >= 0.7)"
        )
        return nx_run.rate / nx_ref, cams_run.rate / cams_ref
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        shutil.rmtree(env["NUMGATE_DATA_DIR"], ignore_errors=True)


if __name__ == "__main__":
    main()
