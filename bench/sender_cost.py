"""What numgate's callback sender costs per POST, against a bare aiohttp loop in the same run.

Both post the same callback body to the same local receiver (aiohttp, its own process) at
concurrency 64 on one uvloop event loop in this process, in alternate rounds of 1,000 POSTs, and
their CPU time (this process) per POST is printed: the bare loop (``session.post(url,
data=body)``, the floor aiohttp sets) and ``CallbackSender.send`` (what numgate's sender process
runs per callback: URL guard, HMAC signature, its headers, the bounded read of the answer, the
outcome). Each of ``--repeat`` runs (default 5) prints both, then the medians: the difference is
numgate's own work per callback, free of the machine-speed drift that moves both alike.

    .venv/bin/python bench/sender_cost.py [--repeat 5] [--posts 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp
from _support import counting_receiver_main, free_port

from numgate.delivery.sender import CallbackSender, Outgoing
from numgate.settings import parse_allowlist

CONCURRENCY = 64
BODY = json.dumps({"messageId": "x" * 32, "code": 0, "msg": "success", "phone": "2348031234567"}).encode()
#: POSTs of one kind before the other kind's turn (the two alternate, so drift moves both alike)
ROUND = 1000

Post = Callable[[int], Awaitable[None]]


async def cpu_of(n: int, post: Post) -> float:
    """CPU seconds of this process for ``n`` POSTs, ``CONCURRENCY`` at a time."""

    async def lane(k: int) -> None:
        for i in range(k, n, CONCURRENCY):
            await post(i)

    cpu = time.process_time()
    await asyncio.gather(*(lane(k) for k in range(CONCURRENCY)))
    return time.process_time() - cpu


async def one_run(url: str, n: int) -> tuple[float, float]:
    """(bare aiohttp, numgate's sender) CPU µs per POST, ``n`` POSTs each, in alternate rounds."""
    receiver = url.rsplit("/", 1)[0]
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as s,
        CallbackSender(allow=parse_allowlist("loopback"), timeout_s=10) as sender,
    ):

        async def bare(_: int) -> None:
            async with s.post(url, data=BODY, headers={"Content-Type": "application/json"}) as r:
                await r.read()

        async def ours(i: int) -> None:
            out = await sender.send([Outgoing(f"{i:032x}", receiver, url, BODY, "app-secret", 1)])
            assert out.ok, out.error

        await cpu_of(ROUND, bare)  # connections opened, code warm
        await cpu_of(ROUND, ours)
        a = b = 0.0
        for _ in range(max(n // ROUND, 1)):
            a += await cpu_of(ROUND, bare)
            b += await cpu_of(ROUND, ours)
        rounds = max(n // ROUND, 1) * ROUND
        return a / rounds * 1e6, b / rounds * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--posts", type=int, default=20_000)
    args = ap.parse_args()
    import uvloop

    ctx = mp.get_context("spawn")
    counter, ready, port = ctx.Value("q", 0), ctx.Event(), free_port()
    proc = ctx.Process(target=counting_receiver_main, args=(port, counter, ready), daemon=True)
    proc.start()
    ready.wait(30)
    url = f"http://127.0.0.1:{port}/cb"
    try:
        floors, ours = [], []
        for i in range(args.repeat):
            f, o = uvloop.run(one_run(url, args.posts))
            floors.append(f)
            ours.append(o)
            print(f"  run {i + 1}: bare aiohttp {f:6.1f} us, numgate sender {o:6.1f} us per POST")
    finally:
        proc.kill()
    f, o = statistics.median(floors), statistics.median(ours)
    extra = statistics.median(b - a for a, b in zip(floors, ours, strict=True))
    print(
        f"callback sender CPU per POST ({args.posts:,} POSTs, concurrency {CONCURRENCY}, medians of {args.repeat})"
    )
    print(f"  bare aiohttp loop        {f:6.1f} us")
    print(
        f"  numgate CallbackSender   {o:6.1f} us  ({o / f:.2f}x; numgate's own work {extra:.1f} us, median of the pairs)"
    )


if __name__ == "__main__":
    main()
