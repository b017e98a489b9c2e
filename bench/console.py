"""The console's batch page on a 100,000-number batch: server time of the first page and of a
filtered page, and the peak memory of the 100,000-row CSV download.

One batch of 100,000 Nigerian numbers (a 5,000-number API request is NXCloud's cap: the bench
lifts ``numgate.numbers.service.MAX_NUMBERS`` in its own process to build it; 1 % of the items are
not numbers) is submitted and checked (Basic) in a scratch database, then ``numgate serve`` is
started on it and a signed-in client asks for

- the first page of the batch (50 rows),
- a filtered page (``outcome=invalid_format``: 1 % of the rows match, a filter the database
  applies), the last page by its cursor, and a carrier filter that matches nothing (results are
  filtered as they are read: the page reads every row — the worst case),
- the whole batch as CSV (streamed), while the serve process's resident memory is sampled.

``--repeat N`` asks each page N times and prints the medians; the CSV line gives the serve
process's peak RSS (VmHWM) before and after the download.

    .venv/bin/python bench/console.py [--numbers 100000] [--postgres URL] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from _support import free_port, numgate_env, scratch_database, wait_healthy

NUMGATE = [sys.executable, "-m", "numgate"]
PASSWORD = "bench password 1"


def hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def build(env: dict[str, str], n: int) -> str:
    """The tenant, its console user and one checked batch of ``n`` numbers; the batch's id."""
    os.environ.update(env)
    import numgate.numbers.service as service
    from numgate.gateway import open_gateway
    from numgate.jobs.runner import WorkerSet
    from numgate.settings import Settings

    service.MAX_NUMBERS = n
    core = await open_gateway(Settings.from_env(env))
    try:
        acct, _ = await core.tenancy.create_account("bench")
        app = await core.tenancy.create_app(acct.id, "bench")
        await core.ledger.set_prices([("NG", 1, 1)], account_id=acct.id)
        await core.ledger.topup(acct.id, 10_000_000, "USD")
        await core.users.create("bench@example.com", PASSWORD, account_id=acct.id)
        phones = [f"2348031{i:06d}" if i % 100 else f"23480{i}x" for i in range(n)]
        sub = await core.numbers.submit(acct.id, appkey=app.appkey, phone=",".join(phones))
        workers = WorkerSet(core)
        await workers.start()
        progress = None
        while progress is None or not progress.complete:
            await asyncio.sleep(1)
            progress = await core.batches.get(sub.message_id)
            print(f"  checking: {progress.done:,} / {n:,}", end="\r", flush=True)
        print()
        await workers.stop(timeout=10)
        return str(sub.message_id)
    finally:
        await core.close()


def signed_in(base: str) -> httpx.Client:
    c = httpx.Client(base_url=base, timeout=600)
    token = re.search(r'name="csrf" value="([^"]+)"', c.get("/console/login").text)
    assert token is not None
    r = c.post(
        "/console/login", data={"email": "bench@example.com", "password": PASSWORD, "csrf": token.group(1)}
    )
    assert r.status_code == 303, r.text
    return c


def timed(c: httpx.Client, path: str, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = c.get(path)
        samples.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (path, r.status_code)
    return statistics.median(samples)


def run(args: argparse.Namespace, postgres: str | None) -> None:
    env = numgate_env("numgate-console-bench-", postgres)
    proc = None
    try:
        subprocess.run([*NUMGATE, "migrate"], env=env, check=True, capture_output=True)
        t0 = time.perf_counter()
        mid = asyncio.run(build(env, args.numbers))
        print(f"  built and checked a {args.numbers:,}-number batch in {time.perf_counter() - t0:.0f} s")
        port = free_port()
        proc = subprocess.Popen([*NUMGATE, "serve", "--port", str(port), "--no-workers"], env=env)
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base)
        c = signed_in(base)
        try:
            first = timed(c, f"/console/batches/{mid}", args.repeat)
            filtered = timed(c, f"/console/batches/{mid}?outcome=invalid_format", args.repeat)
            deep = timed(c, f"/console/batches/{mid}?after={args.numbers - 100}", args.repeat)
            scan = timed(c, f"/console/batches/{mid}?carrier=glo", args.repeat)
            before_hwm, before_rss = hwm_mb(proc.pid), rss_mb(proc.pid)
            peak = before_rss
            t0 = time.perf_counter()
            size = rows = 0
            with c.stream("GET", f"/console/batches/{mid}/numbers.csv") as r:
                for chunk in r.iter_bytes():
                    size += len(chunk)
                    rows += chunk.count(b"\n")
                    peak = max(peak, rss_mb(proc.pid))
            took = time.perf_counter() - t0
            after_hwm = hwm_mb(proc.pid)
        finally:
            c.close()
        print(f"  batch page, first 50 rows:            {first:8.1f} ms (median of {args.repeat})")
        print(f"  batch page, filtered (1 % match):     {filtered:8.1f} ms (median of {args.repeat})")
        print(f"  batch page, last page by cursor:      {deep:8.1f} ms (median of {args.repeat})")
        print(
            f"  batch page, carrier filter, no match: {scan:8.1f} ms (median of {args.repeat}; scans every row)"
        )
        print(
            f"  CSV download: {rows - 1:,} rows, {size / 1e6:.1f} MB in {took:.1f} s; serve RSS {before_rss:.0f} MB"
            f" before, {peak:.0f} MB at most during (peak RSS {before_hwm:.0f} → {after_hwm:.0f} MB)"
        )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(env["NUMGATE_DATA_DIR"], ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--numbers", type=int, default=100_000)
    ap.add_argument("--postgres", metavar="URL")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"console batch page ({'PostgreSQL' if args.postgres else 'SQLite'})")
    with scratch_database(args.postgres) as url:
        run(args, url)


if __name__ == "__main__":
    main()
