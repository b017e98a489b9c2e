"""Database round trips per unit of work on each hot path, counted at the driver.

On PostgreSQL every statement, ``BEGIN`` and ``COMMIT`` is a round trip to the server (about
75 µs of asyncpg CPU each on the development machine, plus the server's time), so this count is
what decides a path's speed there. The script runs numgate in-process against the given database
(its own data directory; SQLite when no ``--postgres``), counts asyncpg's calls (each ``execute``,
``fetch*``, ``executemany``, ``copy_records_to_table`` — ``BEGIN`` and ``COMMIT`` are
``execute`` calls) while it does, one path at a time, through real HTTP:

- submit: one 100-number Number Check batch (per batch);
- check worker: finishing those numbers, per claimed chunk of ``NUMGATE_WORKER_CHUNK``;
- delivery: their callbacks to a local receiver, per callback (a worker claiming them);
- checkCode: NXCloud integrator ``checkCode`` with the right code (per call);
- status: CAMS ``GetPhoneNumberVerificationStatus`` (per call);

the last two also 64 at a time (threads): the statements concurrent requests share (the replay
memory's keys and replies, the number reads, the code checks: ``db/coalesce.py``) count once for
all the requests they carry.

    .venv/bin/python bench/roundtrips.py --postgres postgresql://postgres@127.0.0.1/scratch

It also prints the plans PostgreSQL used per unit of work, read from ``pg_prepared_statements``
on numgate's pooled connections before and after each path: a custom plan is made for its call
(planning a statement can cost more than running it), a generic one once per statement and
connection, so custom plans per call are planning work the path repeats.

The counts are exact and do not drift with the machine's speed; no ``--repeat`` needed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
from _support import free_port
from whatsapp_api import cams_request, nx_request

CALLS: collections.Counter[str] = collections.Counter()
#: the server, once started: its connections' plans are read around each path
SERVER: Any = None
#: asyncpg's own methods, uncounted (for the plan counts)
ORIGINAL: dict[str, Any] = {}
#: with --trace: each call's method and SQL, in order
TRACE: list[str] = []
TRACING = False


def count_driver_calls() -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = asyncpg.connection.Connection
    for name in ("execute", "fetch", "fetchrow", "fetchval", "executemany", "copy_records_to_table"):
        original = ORIGINAL[name] = getattr(conn, name)

        def wrapper(original: Any = original, name: str = name) -> Any:
            async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
                CALLS[name] += 1
                if TRACING:
                    sql = args[0] if args and isinstance(args[0], str) else repr(args[:1])
                    TRACE.append(f"{name}: {' '.join(sql.split())[:160]}")
                return await original(self, *args, **kwargs)

            return counted

        setattr(conn, name, wrapper())


_PLANS = (
    "SELECT coalesce(sum(custom_plans), 0), coalesce(sum(generic_plans), 0) FROM pg_prepared_statements"
    " WHERE statement NOT LIKE '%pg_prepared_statements%'"
)


async def _plans(core: Any) -> tuple[int, int]:
    """Custom and generic plans used so far by numgate's idle pooled connections (all of them,
    between paths): a custom plan is made for each call, a generic one once per statement."""
    custom = generic = 0
    for pool in core.db._pools.values():
        conns, pool._idle = pool._idle, []  # kept from the pool while they are asked
        try:
            for conn in conns:
                c, g = await ORIGINAL["fetchrow"](conn, _PLANS)
                custom, generic = custom + c, generic + g
        finally:
            pool._idle.extend(conns)
    return custom, generic


@contextmanager
def counting(label: str = "") -> Iterator[collections.Counter[str]]:
    CALLS.clear()
    TRACE.clear()
    seen: collections.Counter[str] = collections.Counter()
    before = SERVER.call(_plans)
    yield seen
    seen.update(CALLS)
    after = SERVER.call(_plans)
    seen["custom plans"] = after[0] - before[0]
    seen["generic plans"] = after[1] - before[1]
    if TRACING:
        print(f"--- {label}")
        for line in TRACE[:40]:
            print("   ", line)


class Server:
    def __init__(self, settings: Any) -> None:
        import socket

        import uvicorn

        from numgate.app import NumgateApp
        from numgate.web.server import uvicorn_config

        self.ready = threading.Event()
        self.app = NumgateApp(settings, on_core=self._on_core)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn_config(self.app, settings, host="127.0.0.1", port=0))
        threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True).start()
        if not self.ready.wait(30):
            raise RuntimeError("numgate did not start")
        while not self.server.started:
            time.sleep(0.01)

    def _on_core(self, core: Any) -> None:
        self.core = core
        self.loop = asyncio.get_running_loop()
        self.ready.set()

    def call(self, fn: Callable[[Any], Coroutine[Any, Any, Any]]) -> Any:
        return asyncio.run_coroutine_threadsafe(fn(self.core), self.loop).result(300)

    def stop(self) -> None:
        self.server.should_exit = True


def receiver() -> str:
    from aiohttp import web

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    port = free_port()

    def run() -> None:
        app = web.Application()
        app.router.add_post("/cb", ok)
        web.run_app(app, host="127.0.0.1", port=port, print=None, handle_signals=False)

    threading.Thread(target=run, daemon=True).start()
    time.sleep(0.5)
    return f"http://127.0.0.1:{port}/cb"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--postgres", metavar="URL", help="a scratch PostgreSQL database (its tables are reused)")
    ap.add_argument("--calls", type=int, default=200, help="checkCode and status calls")
    ap.add_argument("--trace", action="store_true", help="print the SQL of each call of one unit")
    args = ap.parse_args()
    global TRACING
    TRACING = args.trace
    if not args.postgres:
        sys.exit("round trips are counted at asyncpg: give --postgres URL")
    count_driver_calls()
    from numgate.db.engine import create_engine
    from numgate.db.migrate import upgrade
    from numgate.settings import Settings, parse_allowlist

    tmp = Path(tempfile.mkdtemp(prefix="numgate-rt-"))
    settings = Settings(
        data_dir=tmp,
        database_url=args.postgres,
        # one key for every run: the scratch database keeps the secrets of earlier runs
        secret_key=base64.urlsafe_b64encode(b"numgate bench: round trips key!!").decode(),
        callback_allow=parse_allowlist("loopback"),
        inprocess_workers=False,
        rate_limit_per_second=0,
        access_log=False,
        log_level="warning",
        check_processes=0,
        callback_processes=0,
    )

    async def migrate() -> None:
        engine = create_engine(settings.resolved_database_url)
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    global SERVER
    srv = SERVER = Server(settings)
    url = receiver()
    rows: list[tuple[str, str, float, dict[str, float], dict[str, float]]] = []

    def row(path: str, unit: str, n: int, seen: collections.Counter[str]) -> None:
        plans = {k: seen.pop(k) / n for k in ("custom plans", "generic plans")}
        rows.append((path, unit, sum(seen.values()) / n, {k: v / n for k, v in seen.items()}, plans))

    try:
        stamp = str(time.time_ns())[-8:]

        async def tenant(core: Any) -> tuple[Any, Any, Any]:
            acct, creds = await core.tenancy.create_account(f"rt{stamp}", integrator=True)
            app = await core.tenancy.create_app(acct.id, "rt", appkey=f"rt{stamp}")
            await core.ledger.topup(acct.id, 10**9)
            await core.ledger.set_price(country="NG", level=1, price=10)
            return acct, creds, app

        acct, creds, app = srv.call(tenant)
        from numgate.client import NxClient

        phones = [f"2348031{i:06d}" for i in range(100)]
        with NxClient(srv.url, creds.access_key, creds.access_secret) as nx:
            nx.number_check(phones[:1], appkey=app.appkey, dr_url=url)  # statements prepared
            with counting("submit") as seen:
                for _ in range(10):
                    nx.number_check(phones, appkey=app.appkey, dr_url=url)
            row("submit (100 numbers)", "batch", 10, seen)

        from numgate.numbers.check import BasicChecks
        from numgate.numbers.worker import CheckWorker

        async def check_all(core: Any) -> int:
            worker = CheckWorker(core, BasicChecks(0))
            chunks = 0
            while await worker.run_once():
                chunks += 1
            return chunks

        with counting("check worker") as seen:
            chunks = srv.call(check_all)
        row(f"check worker ({settings.worker_chunk} numbers)", "chunk", chunks, seen)

        from numgate.delivery.worker import drain

        with counting("delivery") as seen:
            n = srv.call(drain)
        row("delivery (a worker claims them)", "callback", n, seen)

        from numgate.waba.model import CodeMethod

        async def numbers(core: Any) -> list[str]:
            ps = [f"447700{i:06d}" for i in range(900000, 900000 + 2 * args.calls + 1)]
            for p in ps:
                await core.waba.add_number(acct.id, app.appkey, p, "Bench")
                await core.waba.request_code(acct.id, p, CodeMethod.SMS, "en")
            return ps

        ps = srv.call(numbers)

        async def codes(core: Any) -> dict[str, str]:
            from numgate.waba.simulator import code_in, read_outbox

            return {m.phone: code_in(m) for m in reversed(await read_outbox(core.db, None, 10**6))}

        code = srv.call(codes)
        with httpx.Client() as client:

            def integrator(name: str, body: dict[str, Any]) -> dict[str, Any]:
                u, h, raw = nx_request(srv.url, creds.access_key, creds.access_secret, name, body)
                return orjson.loads(client.post(u, headers=h, content=raw).content)

            def check(p: str) -> None:
                r = integrator("checkCode", {"phone_number": p, "code": code[p]})
                assert r["code"] == 0, r

            check(ps[0])
            one_by_one, at_once = ps[1 : args.calls + 1], ps[args.calls + 1 :]
            with counting("checkCode") as seen:
                for p in one_by_one:
                    check(p)
            row("checkCode", "call", len(one_by_one), seen)
            with counting("checkCode, 64 at once") as seen, ThreadPoolExecutor(64) as pool:
                list(pool.map(check, at_once))
            row("checkCode, 64 at a time", "call", len(at_once), seen)

            def status(p: str) -> None:
                params = {"CustSpaceId": app.appkey, "PhoneNumber": p}
                u, h, raw = cams_request(
                    srv.url, creds.access_key, creds.access_secret, "GetPhoneNumberVerificationStatus", params
                )
                r = orjson.loads(client.post(u, headers=h, content=raw).content)
                assert r["Code"] == "OK", r

            status(ps[0])
            with counting("status") as seen:
                for p in one_by_one:
                    status(p)
            row("GetPhoneNumberVerificationStatus", "call", len(one_by_one), seen)
            with counting("status, 64 at once") as seen, ThreadPoolExecutor(64) as pool:
                list(pool.map(status, one_by_one))
            row("GetPhoneNumberVerificationStatus, 64 at a time", "call", len(one_by_one), seen)
    finally:
        srv.stop()
    print(
        f"PostgreSQL round trips per unit of work (asyncpg calls; BEGIN and COMMIT included) — {args.postgres}"
    )
    for path, unit, total, parts, _ in rows:
        detail = ", ".join(f"{k} {v:.2f}" for k, v in sorted(parts.items()))
        print(f"  {path:40} {total:7.2f} per {unit:9} ({detail})")
    print(
        "PostgreSQL plans used per unit of work (each custom plan is made for its call; a generic one once)"
    )
    for path, unit, _, _, plans in rows:
        print(
            f"  {path:40} custom {plans['custom plans']:6.2f}, generic {plans['generic plans']:6.2f} per {unit}"
        )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
