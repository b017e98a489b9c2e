"""What numgate's metrics cost a request: the counting a ``checkCode`` does (its request counted
and timed, its upstream call counted and timed), per request, with numgate's values
(:class:`numgate.metrics.WriteBehind`, the labelled series kept) next to prometheus-client's
own multiprocess values looked up per call (``MultiProcessValue``, ``labels()`` each time: the
reference), measured in the same run, each in its own process.

    .venv/bin/python bench/metrics_cost.py [--requests 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import time
import timeit
from pathlib import Path


def measure(kind: str, requests: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    from prometheus_client import values

    directory = Path(tempfile.mkdtemp(prefix="numgate-bench-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    from numgate.metrics import Metrics, WriteBehind

    if kind == "numgate":
        values.ValueClass = WriteBehind(directory).value_class
    else:
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    m = Metrics()

    def numgate_request() -> None:
        start = time.perf_counter()
        with m.upstream_call("waba", "simulator", "verify_code"):
            pass
        m.answered(
            "nxcloud", "/api/wa/integrator/embedded/register/checkCode", "0", time.perf_counter() - start
        )

    def library_request() -> None:
        start = time.perf_counter()
        up = time.perf_counter()
        m.upstream_seconds.labels("waba", "simulator", "verify_code").observe(time.perf_counter() - up)
        m.upstream_calls.labels("waba", "simulator", "verify_code", "ok").inc()
        endpoint = "/api/wa/integrator/embedded/register/checkCode"
        m.request_seconds.labels("nxcloud", endpoint).observe(time.perf_counter() - start)
        m.requests.labels("nxcloud", endpoint, "0").inc()

    fn = numgate_request if kind == "numgate" else library_request
    try:
        out.put(min(timeit.repeat(fn, number=requests, repeat=3)) / requests * 1e6)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def once(kind: str, requests: int) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=measure, args=(kind, requests, q))
    p.start()
    us = float(q.get())
    p.join()
    return us


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    lib: list[float] = []
    ours: list[float] = []
    for _ in range(a.repeat):  # alternating, so drift hits both alike
        lib.append(once("library", a.requests))
        ours.append(once("numgate", a.requests))
    print(f"metrics work per checkCode-like request, median of {a.repeat} (runs alternating)")
    print(f"  prometheus-client multiprocess values, labels() per call  {statistics.median(lib):6.2f} us")
    print(f"  numgate (write-behind values, labelled series kept)      {statistics.median(ours):6.2f} us")
    print(
        f"  saved                                                     {statistics.median(lib) - statistics.median(ours):6.2f} us per request"
    )


if __name__ == "__main__":
    main()
