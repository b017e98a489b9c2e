"""Number Check end to end: 100,000 numbers as 5,000-number batches to a running numgate.

Prints numbers/s from the first submit to the last acknowledged callback, submit p50/p99, the
peak RSS of numgate's processes (its classifier and sender processes included), and — measured in
the same run on the same machine, just before and just after numgate's run, averaged — the rate
of a bare ``phonenumbers`` classify loop and of a bare aiohttp POST loop to the same receiver,
with the ratio of numgate's rate to the combined reference 1 / (1/classify + 1/post).

    .venv/bin/python bench/numbercheck_e2e.py [--numbers 100000] [--postgres URL] [--workers N]

``--repeat N`` makes N runs, each with a fresh numgate and its own references, and prints the
medians (the machine's speed drifts: one run is one sample). ``--workers N`` runs ``numgate
serve --no-workers`` plus N ``numgate worker`` processes; ``--set NUMGATE_X=VALUE`` (repeatable)
passes a setting to them (the benchmark's own environment is not: a run measures the defaults
unless told otherwise). ``--compare-batch N`` follows each run with one whose app posts its
callbacks N to a request (``numgate admin app update --callback-batch N``) and prints the ratio
of the two rates. ``--numbers 1000000`` (200 batches) is the bounded-memory run: the peak RSS
line is the figure.

numgate's CPU per number is printed per process (serve, worker, numgate-check and
numgate-sender helpers); the POST reference also prints its own loop's CPU per POST, which is
what one aiohttp request costs on the machine at that moment, and numgate's CPU is printed as a
multiple of it too: a figure that moves much less than the µs when the machine's speed does.
With ``--postgres`` the CPU the PostgreSQL server spent per number is printed too (its processes
serving the run's database: measured only when the server runs on this machine), and so is the
receiver's.

The "CPU ceiling" line is the rate the run's work could reach if every core of the machine did
nothing else: cores / (numgate + PostgreSQL + receiver CPU per number). A run near its ceiling is
bound by CPU, not by waiting; a target above the ceiling (as a ratio, next to it) cannot be met on
this machine without spending less CPU per number.

``BENCH_PROFILE=out.raw`` (py-spy on PATH) records a py-spy profile, as collapsed stacks, of the
process that checks and delivers (``numgate serve``, or the first ``numgate worker``) during the
per-number run, or during the ``--compare-batch`` run with ``BENCH_PROFILE_PHASE=batched``;
``BENCH_PROFILE_ARGS`` adds py-spy options (``--gil``: only the thread holding the GIL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from _support import (
    counting_receiver_main,
    free_port,
    numgate_env,
    process_cpu,
    scratch_database,
    server_cpu,
    start_profile,
    stop_profile,
    with_descendants,
)

ROOT = Path(__file__).resolve().parents[1]
NUMGATE = [sys.executable, "-m", "numgate"]


# the receiver, in its own process ------------------------------------------------------------------


receiver_main = counting_receiver_main


# references -----------------------------------------------------------------------------------------


def numbers(n: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    return [f"2348{rnd.choice('01')}{rnd.randrange(10**8):08d}" for _ in range(n)]


def classify_rate(n: int = 20_000) -> float:
    import phonenumbers
    from phonenumbers import carrier

    items = numbers(n, seed=1)
    for i in items[:100]:  # metadata loaded once, as in numgate
        phonenumbers.parse("+" + i, None)
    start = time.perf_counter()
    for i in items:
        num = phonenumbers.parse("+" + i, None)
        phonenumbers.is_valid_number(num)
        phonenumbers.number_type(num)
        phonenumbers.region_code_for_number(num)
        carrier.name_for_number(num, "en")
    return n / (time.perf_counter() - start)


async def post_rate(url: str, counter: Any, n: int = 20_000, concurrency: int = 64) -> tuple[float, float]:
    """(POSTs per second, the loop's own CPU time per POST in µs)."""
    body = json.dumps({"messageId": "x" * 32, "code": 0, "msg": "success", "phone": "2348031234567"}).encode()
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:

        async def one() -> None:
            async with sem, s.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                await r.read()

        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one() for _ in range(n)))
        return n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1e6


def references(url: str, counter: Any) -> tuple[float, float, float]:
    """(classify rate, POST rate, the POST loop's CPU µs per POST), the counter left at zero."""
    c_rate = classify_rate()
    p_rate, p_cpu = asyncio.run(post_rate(url, counter))
    with counter.get_lock():
        counter.value = 0
    return c_rate, p_rate, p_cpu


# numgate --------------------------------------------------------------------------------------------


def cpu_by_process(pids: list[int]) -> dict[int, tuple[str, float]]:
    """pid → (what it is, user + system CPU seconds so far) for the processes and everything
    they started."""
    out: dict[int, tuple[str, float]] = {}
    for pid in with_descendants(pids):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            cpu = process_cpu(pid)
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            words = [w.decode(errors="replace") for w in cmd]
            kind = next((w for w in ("serve", "worker") if w in words), "")
            if not kind:  # a helper: numgate-check, numgate-sender (or multiprocessing's own)
                kind = Path(f"/proc/{pid}/comm").read_text().strip()
            out[pid] = (kind, cpu)
    return out


def rss_peak_mb(pids: list[int]) -> float:
    """The sum of each process's peak resident set (VmHWM)."""
    total = 0
    for pid in with_descendants(pids):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total / 1024


def cli(env: dict[str, str], *args: str) -> Any:
    p = subprocess.run([*NUMGATE, *args, "--json"], env=env, capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


async def submit_all(
    base: str, key: str, secret: str, appkey: str, dr_url: str, total: int, batch: int, parallel: int
) -> list[float]:
    from numgate.client import AsyncNxClient

    latencies: list[float] = []
    items = numbers(total)
    batches = [items[i : i + batch] for i in range(0, total, batch)]
    sem = asyncio.Semaphore(parallel)
    async with AsyncNxClient(base, key, secret) as nx:

        async def one(b: list[str]) -> None:
            async with sem:
                t0 = time.perf_counter()
                reply = await nx.post(
                    "/api/number/check",
                    {"phone": ",".join(b), "appkey": appkey, "checkLevel": 1, "drUrl": dr_url},
                )
                latencies.append(time.perf_counter() - t0)
                if reply["code"] != 0:
                    raise RuntimeError(f"submit failed: {reply}")

        await asyncio.gather(*(one(b) for b in batches))
    return latencies


@dataclass(frozen=True)
class Run:
    rate: float
    elapsed: float
    submitted: float
    p50_ms: float
    p99_ms: float
    rss_mb: float
    #: numgate's CPU time (all its processes) per number
    cpu_us: float
    before: tuple[float, float, float]
    after: tuple[float, float, float]
    #: CPU per number of each process (serve, worker, each helper)
    cpu_parts: dict[str, float]
    #: the PostgreSQL server's CPU per number (its processes serving the run's database; 0: SQLite)
    server_us: float = 0.0
    #: the callback receiver's CPU per number
    receiver_us: float = 0.0

    @property
    def ceiling(self) -> float:
        """Numbers/s if every core did only this run's work at its CPU cost per number."""
        return (os.cpu_count() or 1) / ((self.cpu_us + self.server_us + self.receiver_us) / 1e6)

    @property
    def classify(self) -> float:
        return (self.before[0] + self.after[0]) / 2

    @property
    def post(self) -> float:
        return (self.before[1] + self.after[1]) / 2

    @property
    def post_cpu(self) -> float:
        """The bare POST loop's own CPU µs per POST (the machine's speed, measured in the run)."""
        return (self.before[2] + self.after[2]) / 2

    @property
    def reference(self) -> float:
        return 1 / (1 / self.classify + 1 / self.post)

    @property
    def ratio(self) -> float:
        return self.rate / self.reference


def one_run(
    args: argparse.Namespace,
    receiver: tuple[str, int],
    counter: Any,
    master_key: str,
    callback_batch: int = 1,
) -> Run:
    """A fresh numgate (its own data directory; on PostgreSQL its own database), the load, and the
    references around it; ``receiver`` is the callback receiver's (URL, pid)."""
    with scratch_database(args.postgres) as url:
        return _one_run(args, url, receiver, counter, master_key, callback_batch)


def _one_run(
    args: argparse.Namespace,
    database_url: str | None,
    receiver: tuple[str, int],
    counter: Any,
    master_key: str,
    callback_batch: int,
) -> Run:
    rurl, receiver_pid = receiver
    env = numgate_env(
        "numgate-bench-", database_url, NUMGATE_SECRET_KEY=master_key, NUMGATE_CALLBACK_ALLOW="loopback"
    )
    for item in args.set:
        name, _, value = item.partition("=")
        env[name] = value
    # this machine's speed drifts by tens of percent over minutes: the reference is the mean of
    # runs just before and just after numgate's
    before = references(rurl, counter)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run([*NUMGATE, "migrate"], env=env, check=True, capture_output=True)
        acct = cli(env, "admin", "account", "create", "bench")
        aid = str(acct["account_id"])
        app = cli(env, "admin", "app", "create", aid, "bench")
        if callback_batch > 1:
            cli(env, "admin", "app", "update", app["appkey"], "--callback-batch", str(callback_batch))
        cli(env, "admin", "balance", "topup", aid, "1000000")
        price = ["--country", "NG", "--level", "1", "--price", "0.001", "--account", aid]
        cli(env, "admin", "price", "set", *price)

        port = free_port()
        serve = [*NUMGATE, "serve", "--port", str(port)] + (["--no-workers"] if args.workers else [])
        procs.append(subprocess.Popen(serve, env=env))
        for _ in range(args.workers):
            procs.append(subprocess.Popen([*NUMGATE, "worker"], env=env))
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                import urllib.request

                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)

        cpu0 = cpu_by_process([p.pid for p in procs])
        server0, receiver0 = server_cpu(database_url), process_cpu(receiver_pid)
        # BENCH_PROFILE (the module's docstring): the process that checks and delivers
        phase = "batched" if callback_batch > 1 else "per-number"
        spy = start_profile(procs[1 if args.workers else 0].pid, phase, "per-number")
        start = time.perf_counter()
        lat = asyncio.run(
            submit_all(
                base,
                acct["access_key"],
                acct["access_secret"],
                app["appkey"],
                rurl,
                args.numbers,
                args.batch,
                args.parallel,
            )
        )
        submitted = time.perf_counter() - start
        while counter.value < args.numbers:
            if time.perf_counter() - start > 900:
                raise SystemExit(f"timed out: {counter.value} callbacks of {args.numbers}")
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
        stop_profile(spy)
        rss = rss_peak_mb([p.pid for p in procs])
        cpu1 = cpu_by_process([p.pid for p in procs])
        server = server_cpu(database_url) - server0
        received = process_cpu(receiver_pid) - receiver0
        parts: dict[str, float] = {}
        for pid, (kind, c) in sorted(cpu1.items()):
            name = kind if kind in ("serve", "worker") else f"{kind} {pid}"
            parts[name] = parts.get(name, 0.0) + c - cpu0.get(pid, (kind, 0.0))[1]
        cpu = sum(parts.values())
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        shutil.rmtree(env["NUMGATE_DATA_DIR"], ignore_errors=True)
    with counter.get_lock():
        counter.value = 0
    lat_ms = sorted(x * 1000 for x in lat)
    p99 = lat_ms[min(len(lat_ms) - 1, round(0.99 * (len(lat_ms) - 1)))]
    after = references(rurl, counter)
    return Run(
        args.numbers / elapsed,
        elapsed,
        submitted,
        statistics.median(lat_ms),
        p99,
        rss,
        cpu / args.numbers * 1e6,
        before,
        after,
        {k: v / args.numbers * 1e6 for k, v in parts.items()},
        server / args.numbers * 1e6,
        received / args.numbers * 1e6,
    )


def report(r: Run, target: float) -> None:
    print(
        f"  end to end          {r.rate:10,.0f} numbers/s  ({r.elapsed:.1f} s; all submits stored after {r.submitted:.1f} s)"
    )
    print(f"  submit latency      p50 {r.p50_ms:.0f} ms, p99 {r.p99_ms:.0f} ms")
    print(f"  numgate peak RSS    {r.rss_mb:10.0f} MB (sum over its processes, helpers included)")
    print(
        f"  numgate CPU         {r.cpu_us:10.0f} us per number (all its processes; target <= 150;"
        f" {r.cpu_us / r.post_cpu:.2f}x the bare POST loop's CPU per POST)"
    )
    print("                      " + ", ".join(f"{k} {v:.0f}" for k, v in r.cpu_parts.items()))
    if r.server_us:
        print(
            f"  PostgreSQL CPU      {r.server_us:10.0f} us per number (its processes serving this run's database)"
        )
    print(
        f"  reference classify  {r.classify:10,.0f} numbers/s (bare phonenumbers loop; before {r.before[0]:,.0f}, after {r.after[0]:,.0f})"
    )
    print(
        f"  reference POST      {r.post:10,.0f} posts/s   (bare aiohttp loop, concurrency 64, same receiver; before {r.before[1]:,.0f}, after {r.after[1]:,.0f};"
        f" the loop's own CPU {r.post_cpu:.0f} us per POST)"
    )
    print(f"  combined reference  {r.reference:10,.0f} numbers/s  1/(1/classify + 1/post)")
    print(f"  ratio               {r.ratio:10.2f}        (target >= {target})")
    print(f"  receiver CPU        {r.receiver_us:10.0f} us per number")
    print(
        f"  CPU ceiling         {r.ceiling:10,.0f} numbers/s  ({os.cpu_count()} cores / (numgate + PostgreSQL + receiver"
        f" CPU per number); as a ratio {r.ceiling / r.reference:.2f}, reached {r.rate / r.ceiling:.0%})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--numbers", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--parallel", type=int, default=2, help="concurrent submits")
    ap.add_argument(
        "--postgres",
        metavar="URL",
        help="a PostgreSQL server (each run makes and drops its own database there)",
    )
    ap.add_argument(
        "--workers", type=int, default=0, help="separate `numgate worker` processes (0: in-process)"
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NUMGATE_X=VALUE",
        help="a setting for numgate's processes (repeatable); others come from the defaults",
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs, each with a fresh numgate; then the medians")
    ap.add_argument(
        "--compare-batch",
        type=int,
        metavar="N",
        help="after each run, one more with the app's --callback-batch N; prints the rate ratio",
    )
    args = ap.parse_args()

    ctx = mp.get_context("fork")
    counter, ready = ctx.Value("q", 0), ctx.Event()
    rport = free_port()
    rec = ctx.Process(target=receiver_main, args=(rport, counter, ready), daemon=True)
    rec.start()
    ready.wait(10)
    assert rec.pid is not None
    receiver = (f"http://127.0.0.1:{rport}/cb", rec.pid)
    db = "postgresql" if args.postgres else "sqlite"
    mode = f"{args.workers} worker process(es)" if args.workers else "in-process workers"
    runs: list[Run] = []
    speedups: list[float] = []
    from cryptography.fernet import Fernet

    master_key = Fernet.generate_key().decode()
    try:
        for i in range(args.repeat):
            run = one_run(args, receiver, counter, master_key)
            runs.append(run)
            of = f" (run {i + 1} of {args.repeat})" if args.repeat > 1 else ""
            print(
                f"numgate Number Check e2e ({db}, {mode}, sandbox): {args.numbers} numbers in {args.numbers // args.batch} batches{of}"
            )
            report(run, 0.8 if args.postgres else 0.85)
            if args.compare_batch:
                batched = one_run(args, receiver, counter, master_key, args.compare_batch)
                print(f"  the same with --callback-batch {args.compare_batch}{of}")
                report(batched, 0.8 if args.postgres else 0.85)
                speedups.append(batched.rate / run.rate)
                print(
                    f"  batched / per-number rate: {speedups[-1]:.1f}x (target >= 5; the batched run's CPU"
                    f" ceiling is {batched.ceiling / run.rate:.1f}x the per-number rate)"
                )
    finally:
        rec.terminate()
    if len(runs) > 1:
        ratios = sorted(r.ratio for r in runs)
        p99s = [r.p99_ms for r in runs]
        print(f"over {len(runs)} runs")
        print(
            f"  ratio               median {statistics.median(ratios):.2f}, min {ratios[0]:.2f}, max {ratios[-1]:.2f}"
        )
        print(f"  end to end          median {statistics.median(r.rate for r in runs):,.0f} numbers/s")
        print(f"  submit p99          median {statistics.median(p99s):.0f} ms, worst {max(p99s):.0f} ms")
        print(f"  peak RSS            worst {max(r.rss_mb for r in runs):.0f} MB")
        print(
            f"  numgate CPU         median {statistics.median(r.cpu_us for r in runs):.0f} us per number,"
            f" {statistics.median(r.cpu_us / r.post_cpu for r in runs):.2f}x a bare POST's CPU"
        )
        ceilings = [r.ceiling / r.reference for r in runs]
        print(f"  CPU ceiling         median {statistics.median(ceilings):.2f} as a ratio")
        if args.postgres:
            print(
                f"  PostgreSQL CPU      median {statistics.median(r.server_us for r in runs):.0f} us per number"
            )
        if speedups:
            print(
                f"  batched / per-number median {statistics.median(speedups):.1f}x over {len(speedups)} pairs"
            )


if __name__ == "__main__":
    main()
