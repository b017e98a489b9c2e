"""HLR (level 5) end to end through a live upstream: numbers/s from the first submit to the last
callback, with ``numgate serve`` outside sandbox mode routing Nigeria to an ``hlrlookup`` upstream
that is the fake hlrlookup.com server of the tests (tests/fakes/hlrlookup.py) in its own process,
taking 80 numbers a call (the vendor's limit) and ``--vendor-ms`` per call.

Two phases per run, each ``--numbers`` numbers in 1,000-number batches:

- **live**: every number looked up (no ``maxAge``);
- **50 % cached**: half of the numbers were looked up in the first phase, submitted with
  ``maxAge`` = 1 hour: they are answered from the cache, the other half from the fake.

Prints, per phase, numbers/s, the fake's calls and numbers looked up (the cached phase must look up
exactly half), and with ``--repeat N`` the medians.

    .venv/bin/python bench/upstreams.py [--numbers 20000] [--vendor-ms 0] [--postgres URL] [--repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _support import counting_receiver_main, free_port, numgate_env, scratch_database, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the fake vendor the tests use

NUMGATE = [sys.executable, "-m", "numgate"]
BATCH = 1000


def fake_main(port: int, delay_s: float, calls: Any, looked_up: Any, ready: Any) -> None:
    from aiohttp import web

    from fakes.hlrlookup import FakeHlrLookup

    fake = FakeHlrLookup(delay_s=delay_s)
    inner = fake._hlr

    async def counted(request: web.Request) -> web.Response:
        resp = await inner(request)
        with calls.get_lock():
            calls.value = len(fake.calls)
            looked_up.value = sum(len(c) for c in fake.calls)
        return resp

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/apiv2/hlr", counted)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def cli(env: dict[str, str], *args: str) -> Any:
    p = subprocess.run([*NUMGATE, *args, "--json"], env=env, capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


#: the fake's endings whose answers are worth caching (a definite answer: LIVE, ABSENT, DEAD,
#: ported); the others (NO_COVERAGE, INCONCLUSIVE, errors) are asked again every time
CACHEABLE = "012689"


def phones(start: int, n: int) -> list[str]:
    return [f"2348031{i:05d}{CACHEABLE[i % len(CACHEABLE)]}" for i in range(start, start + n)]


async def submit(
    base: str, key: str, secret: str, appkey: str, dr: str, items: list[str], **extra: Any
) -> None:
    from numgate.client import AsyncNxClient

    sem = asyncio.Semaphore(4)
    async with AsyncNxClient(base, key, secret) as nx:

        async def one(b: list[str]) -> None:
            async with sem:
                body = {"phone": ",".join(b), "appkey": appkey, "checkLevel": 5, "drUrl": dr, **extra}
                reply = await nx.post("/api/number/check", body)
                if reply["code"] != 0:
                    raise RuntimeError(f"submit failed: {reply}")

        await asyncio.gather(*(one(items[i : i + BATCH]) for i in range(0, len(items), BATCH)))


def one_run(args: argparse.Namespace) -> dict[str, float]:
    with scratch_database(args.postgres) as url:
        return _one_run(args, url)


def _one_run(args: argparse.Namespace, postgres: str | None) -> dict[str, float]:
    ctx = mp.get_context("fork")
    calls, looked_up, counter = ctx.Value("q", 0), ctx.Value("q", 0), ctx.Value("q", 0)
    fake_ready, rec_ready = ctx.Event(), ctx.Event()
    fake_port, rec_port, port = free_port(), free_port(), free_port()
    helpers = [
        ctx.Process(target=fake_main, args=(fake_port, args.vendor_ms / 1000, calls, looked_up, fake_ready)),
        ctx.Process(target=counting_receiver_main, args=(rec_port, counter, rec_ready)),
    ]
    for p in helpers:
        p.daemon = True
        p.start()
    fake_ready.wait(10)
    rec_ready.wait(10)
    env = numgate_env(
        "numgate-upstreams-bench-",
        postgres,
        NUMGATE_SANDBOX="false",
        NUMGATE_WABA_UPSTREAM="simulator",
        NUMGATE_CALLBACK_ALLOW="loopback",
    )
    out: dict[str, float] = {}
    proc = None
    try:
        subprocess.run([*NUMGATE, "migrate"], env=env, check=True, capture_output=True)
        fake_url = f"http://127.0.0.1:{fake_port}"
        cli(env, "admin", "upstream", "add", "hlr", "--kind", "hlrlookup", "--base-url", fake_url,
            "--key", "hk-test", "--secret", "hs-test", "--unit-cost", "0.004")  # fmt: skip
        cli(env, "admin", "route", "set", "--level", "5", "--country", "NG", "hlr")
        acct = cli(env, "admin", "account", "create", "bench")
        aid = str(acct["account_id"])
        app = cli(env, "admin", "app", "create", aid, "bench")
        cli(env, "admin", "balance", "topup", aid, "1000000")
        cli(env, "admin", "price", "set", "--country", "NG", "--level", "5", "--price", "0.005",
            "--cached-price", "0.001", "--account", aid)  # fmt: skip
        proc = subprocess.Popen([*NUMGATE, "serve", "--port", str(port)], env=env)
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base)
        n = args.numbers
        dr = f"http://127.0.0.1:{rec_port}/cb"
        creds = (base, acct["access_key"], acct["access_secret"], app["appkey"], dr)
        for phase, items, extra in (
            ("live", phones(0, n), {}),
            ("50% cached", phones(n // 2, n), {"maxAge": 3600}),
        ):
            before_calls, before_numbers, before_cb = calls.value, looked_up.value, counter.value
            start = time.perf_counter()
            asyncio.run(submit(*creds, items, **extra))
            while counter.value - before_cb < n:
                if time.perf_counter() - start > 1800:
                    raise SystemExit(f"timed out: {counter.value - before_cb} of {n} callbacks")
                time.sleep(0.01)
            took = time.perf_counter() - start
            rate = n / took
            print(
                f"  {phase:>10}: {n:,} numbers in {took:.2f} s = {rate:,.0f} numbers/s;"
                f" vendor: {calls.value - before_calls} calls, {looked_up.value - before_numbers:,} numbers"
                f" looked up",
                flush=True,
            )
            out[f"{phase} numbers/s"] = rate
            out[f"{phase} looked up"] = looked_up.value - before_numbers
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        for p in helpers:
            p.terminate()
        shutil.rmtree(env["NUMGATE_DATA_DIR"], ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--numbers", type=int, default=20_000)
    ap.add_argument("--vendor-ms", type=float, default=0.0, help="milliseconds each vendor call takes")
    ap.add_argument("--postgres", metavar="URL", help="a PostgreSQL server (a scratch database per run)")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    runs = []
    for i in range(args.repeat):
        print(f"run {i + 1} of {args.repeat} ({'PostgreSQL' if args.postgres else 'SQLite'})", flush=True)
        runs.append(one_run(args))
    if args.repeat > 1:
        print("medians:")
        for key in runs[0]:
            print(f"  {key}: {statistics.median(r[key] for r in runs):,.1f}")


if __name__ == "__main__":
    main()
