"""numgate under abuse: what hostile clients and an outage cost it (issue 10's figures).

    .venv/bin/python bench/abuse.py [--repeat N] [--postgres URL] [--slow 10000] [--outage-s 30]

1. **One 100 MB unauthenticated POST**: the CPU seconds numgate spends on it (all its processes),
   with a Content-Length header and chunked; the bytes it let the client send before closing.
2. **Latency under attack**: p50/p99 of signed ``check/get`` calls (100 a second), idle, then while
   4 clients send 100 MB bodies over and over and ``--slow`` connections that never finish their
   headers are held open (re-opened as numgate closes them).
3. **A database outage** (PostgreSQL, through a TCP proxy the bench cuts): for ``--outage-s``
   seconds every packet to the database goes nowhere (a silent partition); the share of requests
   answered within NUMGATE_DB_TIMEOUT + 1 s, and how long after the end until numgate answers
   again. Needs ``--postgres``.

The load generator runs on the same machine (and cores) as numgate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
from _support import free_port, numgate_env, process_cpu, with_descendants

from numgate.client.nxcloud import headers_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tcpproxy import BLACKHOLE, PASS, TcpProxy

NUMGATE = [sys.executable, "-m", "numgate"]
CHECK_GET = "/api/number/check/get"
MB = 1024 * 1024


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its descendants (the helpers)."""
    total = 0.0
    for p in with_descendants([pid]):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += process_cpu(p)
    return total


class Numgate:
    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([*NUMGATE, "serve", "--port", str(self.port)], env=env)
        for _ in range(300):
            try:
                import httpx

                httpx.get(self.base + "/healthz", timeout=1)
                return
            except Exception:
                time.sleep(0.05)
        raise RuntimeError("numgate did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


async def big_post(port: int, size: int, chunked: bool) -> int:
    """Send a ``size``-byte body to /api/number/check until numgate closes: the bytes it took."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    length = b"Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {size}\r\n".encode()
    writer.write(
        b"POST /api/number/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + length + b"\r\n"
    )
    sent, block = 0, b"x" * MB
    try:
        while sent < size:
            writer.write((b"100000\r\n" + block + b"\r\n") if chunked else block)
            await asyncio.wait_for(writer.drain(), 10)
            sent += MB
    except (ConnectionError, OSError, TimeoutError):
        pass
    finally:
        writer.transport.abort()
    return sent


def one_big_post(env: dict[str, str], chunked: bool, posts: int = 20) -> tuple[float, int, float]:
    """numgate's CPU seconds per 100 MB post (``posts`` of them, one after the other: the CPU
    clock ticks every 10 ms), the bytes it took of the last one, and the seconds a post took.
    A refused poster waits out ``NUMGATE_LINGER`` before it is cut off, so the posts take
    seconds: numgate's idle CPU over as long (its background tasks) is measured first and taken
    off."""
    ng = Numgate(env)
    try:
        time.sleep(1.0)
        c0, t0 = tree_cpu(ng.proc.pid), time.monotonic()
        for _ in range(posts):
            sent = asyncio.run(big_post(ng.port, 100 * MB, chunked))
        took = time.monotonic() - t0
        time.sleep(0.5)
        busy = tree_cpu(ng.proc.pid) - c0
        c1, t1 = tree_cpu(ng.proc.pid), time.monotonic()
        time.sleep(took + 0.5)
        idle = (tree_cpu(ng.proc.pid) - c1) / (time.monotonic() - t1) * (took + 0.5)
        return max(busy - idle, 0.0) / posts, sent, took / posts
    finally:
        ng.stop()


async def setup_tenant(env: dict[str, str]) -> tuple[str, str, str]:
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
        acct, creds = await core.tenancy.create_account("abuse")
        app = await core.tenancy.create_app(acct.id, "abuse")
        await core.ledger.set_price(country="NG", level=1, price=1)
        await core.ledger.topup(acct.id, 10**9)
        return creds.access_key, creds.access_secret, app.appkey
    finally:
        await core.close()


@dataclass
class Latency:
    n: int
    p50_ms: float
    p99_ms: float
    #: requests answered within the deadline (all of them when it is None)
    within: int
    errors: int


async def check_gets(
    base: str,
    key: str,
    secret: str,
    appkey: str,
    seconds: float,
    rate: float = 100.0,
    deadline_s: float = 60.0,
) -> Latency:
    """Signed check/get calls at a steady ``rate`` per second (an open loop: a slow answer does
    not slow the next request down), each timed from when it was due."""
    latencies: list[float] = []
    errors = 0
    timeout = aiohttp.ClientTimeout(total=deadline_s + 30)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=256)) as s:

        async def one(i: int, due: float) -> None:
            nonlocal errors
            raw = orjson.dumps({"phone": f"234803{i:07d}", "appkey": appkey, "checkLevel": 1})
            headers = headers_for(key, secret, "1", "numbercheck", raw)
            try:
                async with s.post(base + CHECK_GET, data=raw, headers=headers) as r:
                    body = orjson.loads(await r.read())
                if body.get("code") != 0:
                    errors += 1
            except Exception:
                errors += 1
            latencies.append((time.perf_counter() - due) * 1000)

        start = time.perf_counter()
        tasks = []
        for i in range(int(seconds * rate)):
            due = start + i / rate
            await asyncio.sleep(max(due - time.perf_counter(), 0))
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
    latencies.sort()
    within = sum(1 for x in latencies if x <= deadline_s * 1000)
    p99 = latencies[max(int(len(latencies) * 0.99) - 1, 0)]
    return Latency(len(latencies), statistics.median(latencies), p99, within, errors)


async def hold_slow_connections(port: int, n: int, stop: asyncio.Event, counter: list[int]) -> None:
    """Keep ``n`` connections open that never finish their request headers: each sends part of
    its headers and then a byte every 5 s; when numgate closes it, it connects again."""

    async def one() -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.5)
                continue
            writer.write(b"POST /api/number/check HTTP/1.1\r\nHost: x\r\n")
            counter[0] += 1
            try:
                while not stop.is_set():
                    try:
                        if not await asyncio.wait_for(reader.read(1), 5.0):
                            break  # numgate closed it
                    except TimeoutError:
                        writer.write(b"X")
            except (ConnectionError, OSError):
                pass
            finally:
                counter[0] -= 1
                writer.transport.abort()

    await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)


async def flood(port: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await big_post(port, 100 * MB, chunked=False)


def attack(port: int, slow: int, flooders: int, held: Any, stop: Any) -> None:
    """The attackers, in a process of their own (so that their work does not delay the
    measuring client's own event loop): ``slow`` slow connections and ``flooders`` 100 MB posters."""

    async def main() -> None:
        done = asyncio.Event()
        counter = [0]
        tasks = [asyncio.create_task(hold_slow_connections(port, slow, done, counter))]
        tasks += [asyncio.create_task(flood(port, done)) for _ in range(flooders)]
        while not stop.is_set():
            held.value = counter[0]
            await asyncio.sleep(0.2)
        done.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def under_attack(
    base: str, port: int, creds: tuple[str, str, str], slow: int, seconds: float, flooders: int = 4
) -> tuple[Latency, int]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    held, stop = ctx.Value("i", 0), ctx.Event()
    attacker = ctx.Process(target=attack, args=(port, slow, flooders, held, stop))
    attacker.start()
    try:
        deadline = time.monotonic() + 90
        while held.value < slow * 0.95 and time.monotonic() < deadline:
            time.sleep(0.2)
        open_at_start = held.value
        lat = asyncio.run(check_gets(base, *creds, seconds=seconds))
    finally:
        stop.set()
        attacker.join(30)
        if attacker.is_alive():
            attacker.kill()
    return lat, open_at_start


async def outage(
    base: str, creds: tuple[str, str, str], proxy: TcpProxy, seconds: float, timeout_s: float
) -> tuple[Latency, float]:
    proxy.set(BLACKHOLE)
    lat = await check_gets(base, *creds, seconds=seconds, rate=20, deadline_s=timeout_s + 1.0)
    proxy.set(PASS)
    end = time.monotonic()
    key, secret, appkey = creds
    async with aiohttp.ClientSession() as s:
        while time.monotonic() - end < 60:
            raw = orjson.dumps({"phone": "2348031234567", "appkey": appkey})
            try:
                async with s.post(
                    base + CHECK_GET, data=raw, headers=headers_for(key, secret, "1", "numbercheck", raw)
                ) as r:
                    if orjson.loads(await r.read()).get("code") == 0:
                        break
            except Exception:
                pass
            await asyncio.sleep(0.05)
    return lat, time.monotonic() - end


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=1, help="runs of each phase; medians are printed")
    ap.add_argument("--postgres", metavar="URL", help="a scratch PostgreSQL database (phase 3 needs it)")
    ap.add_argument("--slow", type=int, default=10_000, help="slow connections held open in phase 2")
    ap.add_argument("--seconds", type=float, default=20, help="length of each latency measurement")
    ap.add_argument("--outage-s", type=float, default=30, help="length of the database outage")
    ap.add_argument("--flooders", type=int, default=4, help="clients sending 100 MB bodies in phase 2")
    ap.add_argument("--only", choices=["1", "2", "3"], help="run one phase")
    args = ap.parse_args()

    env = numgate_env("numgate-abuse-", args.postgres)
    subprocess.run([*NUMGATE, "migrate"], env=env, check=True, capture_output=True)
    creds = asyncio.run(setup_tenant(env))

    def med(xs: list[float]) -> float:
        return statistics.median(xs)

    print(f"numgate on {'PostgreSQL' if args.postgres else 'SQLite'}, {args.repeat} run(s) per figure")
    cl, ch = [], []
    for _ in range(args.repeat if args.only in (None, "1") else 0):
        cpu, sent, secs = one_big_post(env, chunked=False)
        cl.append(cpu)
        cpu_c, sent_c, secs_c = one_big_post(env, chunked=True)
        ch.append(cpu_c)
        print(
            f"  100 MB POST (mean of 20, idle CPU taken off): {cpu:.4f} CPU-s (the client sent {sent // MB} MB "
            f"before it was cut off, {secs:.1f} s a post) · chunked {cpu_c:.4f} CPU-s (sent {sent_c // MB} MB, "
            f"{secs_c:.1f} s)"
        )
    if cl:
        print(
            "1. CPU-seconds for one 100 MB unauthenticated POST (target < 0.05): "
            f"median {med(cl):.4f} · chunked {med(ch):.4f}"
        )

    idle99, attack99 = [], []
    for _ in range(args.repeat if args.only in (None, "2") else 0):
        ng = Numgate(env)
        try:
            idle = asyncio.run(check_gets(ng.base, *creds, seconds=args.seconds))
            attacked, held = under_attack(ng.base, ng.port, creds, args.slow, args.seconds, args.flooders)
        finally:
            ng.stop()
        idle99.append(idle.p99_ms)
        attack99.append(attacked.p99_ms)
        print(
            f"  idle: {idle.n} calls, p50 {idle.p50_ms:.1f} ms, p99 {idle.p99_ms:.1f} ms, errors {idle.errors} · "
            f"attacked ({held} slow connections open, {args.flooders} × 100 MB floods): {attacked.n} calls, "
            f"p50 {attacked.p50_ms:.1f} ms, p99 {attacked.p99_ms:.1f} ms, errors {attacked.errors}"
        )
    if idle99:
        print(
            f"2. check/get p99 under attack / idle (target <= 2): median {med(attack99):.1f} / {med(idle99):.1f} ms "
            f"= {med(attack99) / med(idle99):.2f}"
        )

    if args.only not in (None, "3"):
        return
    if not args.postgres:
        print("3. database outage: needs --postgres (a server to cut off)")
        return
    parts = urlsplit(args.postgres)
    timeout_s = 5.0
    shares, recoveries = [], []
    for _ in range(args.repeat):
        with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
            url = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
            ng = Numgate(env | {"NUMGATE_DATABASE_URL": url, "NUMGATE_DB_TIMEOUT": str(timeout_s)})
            try:
                asyncio.run(check_gets(ng.base, *creds, seconds=2))  # warm
                lat, recovery = asyncio.run(outage(ng.base, creds, proxy, args.outage_s, timeout_s))
            finally:
                ng.stop()
        share = lat.within / lat.n if lat.n else 0.0
        shares.append(share)
        recoveries.append(recovery)
        print(
            f"  {args.outage_s:.0f} s partition: {lat.n} requests, {lat.within} answered within {timeout_s + 1:.0f} s "
            f"({share:.1%}), p99 {lat.p99_ms:.0f} ms; answering again {recovery:.2f} s after it ended"
        )
    print(
        f"3. database outage: share answered within NUMGATE_DB_TIMEOUT + 1 s (target 100 %): median {med(shares):.1%}; "
        f"recovery (target < 5 s): median {med(recoveries):.2f} s"
    )


if __name__ == "__main__":
    main()
