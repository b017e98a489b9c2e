"""Shared fixtures: a real numgate server over HTTP, a real callback receiver, both databases.

PostgreSQL runs when NUMGATE_TEST_POSTGRES_URL names a scratch database (``.ci/run`` creates and
drops one); without it every PostgreSQL case is skipped and the summary says so loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from cryptography.fernet import Fernet
from sqlalchemy import text

from numgate.app import NumgateApp
from numgate.clock import Clock, SystemClock
from numgate.core import Core
from numgate.db.engine import create_engine
from numgate.db.migrate import upgrade
from numgate.db.tables import metadata
from numgate.settings import Settings, parse_allowlist
from numgate.web.server import NumgateServer, uvicorn_config

T = TypeVar("T")
DATA = Path(__file__).parent / "data"
PG_URL = os.environ.get("NUMGATE_TEST_POSTGRES_URL", "")
REDIS_URL = os.environ.get("NUMGATE_TEST_REDIS_URL", "")
SECRET_KEY = Fernet.generate_key().decode()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not PG_URL:
        terminalreporter.write_sep(
            "!",
            "PostgreSQL half NOT run: set NUMGATE_TEST_POSTGRES_URL (bash .ci/run does)",
            red=True,
            bold=True,
        )
    if not REDIS_URL:
        terminalreporter.write_sep(
            "!",
            "Redis cases NOT run: set NUMGATE_TEST_REDIS_URL (bash .ci/run does)",
            red=True,
            bold=True,
        )
    if not (
        os.environ.get("NUMGATE_TEST_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    ):
        terminalreporter.write_sep(
            "!",
            "console browser tests NOT run: no chromium (apt-get install chromium; bash .ci/run does)",
            red=True,
            bold=True,
        )


def load_vectors() -> dict[str, Any]:
    """The published NXCloud signing vectors and the CAMS SDK captures (``tests/data/vectors.json``)."""
    return json.loads((DATA / "vectors.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def run_sync(coro: Awaitable[T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    # this thread runs a loop already (Playwright's sync API in the browser tests): use another
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()  # type: ignore[arg-type]


# databases ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tmpl") / "numgate.db"

    async def main() -> None:
        engine = create_engine(f"sqlite:///{path}")
        await upgrade(engine)
        await engine.dispose()

    run_sync(main())
    return path


@pytest.fixture(scope="session")
def pg_migrated() -> str:
    async def main() -> None:
        engine = create_engine(PG_URL)
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
        await upgrade(engine)
        await engine.dispose()

    run_sync(main())
    return PG_URL


def truncate_all(url: str) -> None:
    async def main() -> None:
        engine = create_engine(url)
        names = ", ".join(t.name for t in metadata.sorted_tables)
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        await engine.dispose()

    run_sync(main())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        db = tmp_path / "numgate.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), db)
        return f"sqlite:///{db}"
    if not PG_URL:
        pytest.skip("NUMGATE_TEST_POSTGRES_URL is not set: PostgreSQL case NOT run")
    url: str = request.getfixturevalue("pg_migrated")
    truncate_all(url)
    return url


@pytest.fixture
def redis_url() -> Iterator[tuple[str, str]]:
    """(URL, key prefix) of the machine's Redis (NUMGATE_TEST_REDIS_URL), under a prefix of this
    test's own; the keys under it are deleted afterwards, and nothing else is touched."""
    if not REDIS_URL:
        pytest.skip("NUMGATE_TEST_REDIS_URL is not set: Redis case NOT run")
    import redis

    prefix = f"numgate-test:{uuid.uuid4().hex[:12]}:"
    yield REDIS_URL, prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        secret_key=SECRET_KEY,
        callback_allow=parse_allowlist("loopback"),
        callback_retry_interval_s=0.3,
        callback_retry_window_s=3.0,
        callback_timeout_s=2.0,
        worker_poll_s=0.05,
        access_log=False,
        rate_limit_per_second=0,  # lifted; the limit tests turn it on
    )


# the server ---------------------------------------------------------------------------------------


class RunningServer:
    """numgate served by uvicorn on a free loopback port, in a thread with its own event loop."""

    def __init__(self, settings: Settings, clock: Clock | None = None, port: int = 0) -> None:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self.port = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        if settings.public_url == "auto":  # vendors' webhooks come back to this server
            settings = settings.with_overrides(public_url=self.base_url)
        self.settings = settings
        self.clock = clock or SystemClock()
        self._ready = threading.Event()
        self.core: Core | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.app = NumgateApp(settings, clock=self.clock, on_core=self._on_core)
        config = uvicorn_config(self.app, settings, host="127.0.0.1", port=self.port)
        # the server `numgate serve` runs (its shutdown closes every connection, even one made
        # as it stops), without the process-wide garbage-collector tuning
        self.server = NumgateServer(config, on_shutdown=self.app.begin_shutdown, gc_tuning=False)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def _on_core(self, core: Core) -> None:
        self.core = core
        self.loop = asyncio.get_running_loop()
        self._ready.set()

    def start(self) -> RunningServer:
        self.thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("numgate did not start")
        while not self.server.started:
            threading.Event().wait(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self._sock.close()

    def call(self, fn: Callable[[Core], Awaitable[T]], timeout: float = 60) -> T:
        """Run ``fn(core)`` on the server's loop (test setup, and reading state to assert on)."""
        assert self.loop is not None and self.core is not None
        core = self.core
        return asyncio.run_coroutine_threadsafe(fn(core), self.loop).result(timeout)  # type: ignore[arg-type]


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_metrics(base_url: str) -> Samples:
    """``GET /metrics`` parsed by prometheus_client's own parser: (name, sorted labels) → value."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=")
        text = r.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def metric(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def make_server(settings: Settings) -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def make(clock: Clock | None = None, port: int = 0, **overrides: Any) -> RunningServer:
        s = settings.with_overrides(**overrides) if overrides else settings
        srv = RunningServer(s, clock, port).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
    # a server still running would go on claiming from the next test's (truncated) database
    assert not any(srv.thread.is_alive() for srv in started), "numgate did not stop within 30 s of its test"


@pytest.fixture
def server(make_server: Callable[..., RunningServer]) -> RunningServer:
    return make_server()


@dataclass
class Tenant:
    account_id: int
    access_key: str
    access_secret: str
    appkey: str
    app_id: int


def make_tenant(
    srv: RunningServer,
    *,
    name: str = "acme",
    integrator: bool = True,
    number_check: bool = True,
    whatsapp: bool = True,
    balance: int = 100 * 10_000,
    prices: dict[int, int] | None = None,
    countries: tuple[str, ...] = ("NG", "US", "GB", "CN", "DE"),
    callback_url: str | None = None,
) -> Tenant:
    async def setup(core: Core) -> Tenant:
        acct, creds = await core.tenancy.create_account(
            name, integrator=integrator, number_check=number_check, whatsapp=whatsapp
        )
        app = await core.tenancy.create_app(acct.id, f"{name} app", callback_url)
        table = [(c, lvl, p) for c in countries for lvl, p in (prices or {1: 100, 4: 1500, 5: 500}).items()]
        await core.ledger.set_prices(table, account_id=acct.id)
        if balance:
            await core.ledger.topup(acct.id, balance, "USD")
        return Tenant(acct.id, creds.access_key, creds.access_secret, app.appkey, app.id)

    return srv.call(setup)


@pytest.fixture
def tenant(server: RunningServer) -> Tenant:
    return make_tenant(server)


# the callback receiver ----------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real HTTP server that records callbacks. ``plan`` maps a path to the statuses it answers
    with, in order (the last one repeats); unknown paths answer 200."""

    base_url: str = ""
    received: list[Received] = field(default_factory=list)
    plan: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/cb") -> str:
        return self.base_url + path

    def accepted(self, path: str | None = None) -> list[Received]:
        with self.lock:
            return [r for r in self.received if path is None or r.path == path]

    def wait_for(self, n: int, path: str | None = None, timeout: float = 30.0) -> list[Received]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = self.accepted(path)
            if len(got) >= n:
                return got
            time.sleep(0.02)
        raise AssertionError(
            f"expected {n} callbacks on {path or 'any path'}, got {len(self.accepted(path))}"
        )


@contextlib.contextmanager
def aiohttp_server(app: web.Application) -> Iterator[str]:
    """Serve an aiohttp app on a free loopback port in its own thread; yields its base URL."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        done = asyncio.Event()
        state.update(loop=loop, done=done, url=f"http://127.0.0.1:{port}")
        ready.set()
        loop.run_until_complete(done.wait())
        loop.run_until_complete(runner.cleanup())
        loop.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    ready.wait(10)
    try:
        yield str(state["url"])
    finally:
        state["loop"].call_soon_threadsafe(state["done"].set)
        t.join(10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    counters: dict[str, int] = {}

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        path = request.path
        with rec.lock:
            plan = rec.plan.get(path)
            i = counters.get(path, 0)
            counters[path] = i + 1
            status = plan[min(i, len(plan) - 1)] if plan else 200
            rec.received.append(Received(path, dict(request.headers), body))
        return web.Response(status=status, text="ok")

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", handle)
    with aiohttp_server(app) as url:
        rec.base_url = url
        yield rec


# WhatsApp ------------------------------------------------------------------------------------------


def cams_client(srv: RunningServer, access_key: str, secret: str) -> Any:
    """The official ``alibabacloud-cams20200606`` SDK, pointed at this numgate over plain HTTP."""
    from alibabacloud_cams20200606.client import Client
    from alibabacloud_tea_openapi import utils_models

    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(var, None)  # the SDK would send even loopback calls through a proxy
    config = utils_models.Config(
        access_key_id=access_key,
        access_key_secret=secret,
        endpoint=f"127.0.0.1:{srv.port}",
        protocol="http",
        read_timeout=30_000,
        connect_timeout=5_000,
    )
    return Client(config)


def outbox_code(srv: RunningServer, phone: str) -> str:
    """The code the sandbox upstream last "sent" to ``phone``."""
    from numgate.waba.simulator import code_in, read_outbox

    async def read(core: Core) -> str:
        messages = await read_outbox(core.db, phone, 1)
        assert messages, f"nothing in the sandbox outbox for {phone}"
        return code_in(messages[0])

    return srv.call(read)


def add_number(srv: RunningServer, appkey: str, phone: str, name: str = "Acme Support") -> None:
    srv.call(lambda core: core.waba.add_number(None, appkey, phone, name))


def new_space(srv: RunningServer, account_id: int, name: str = "space") -> str:
    from numgate import ids

    async def make(core: Core) -> str:
        return (await core.tenancy.create_app(account_id, name, appkey=ids.new_space_id())).appkey

    return srv.call(make)


# numgate's own processes (end-to-end tests) -------------------------------------------------------


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a numgate command run as a user runs it (``clitools.numgate``)."""
    from clitools import cli_env

    return cli_env(database_url, tmp_path)


@pytest.fixture
def serving(env: dict[str, str]) -> Iterator[Callable[..., Any]]:
    """Starts ``numgate serve`` processes (migrated first); kills what is left afterwards."""
    from clitools import Serving, numgate

    started: list[Serving] = []

    def start(*args: str, extra: dict[str, str] | None = None) -> Serving:
        s = Serving(env | (extra or {}), *args)
        started.append(s)
        s.wait_ready()
        return s

    numgate(env, "migrate")
    yield start
    for s in started:
        if s.proc.poll() is None:
            os.killpg(s.proc.pid, signal.SIGKILL)
        s.proc.communicate(timeout=10)  # reaps it and closes its pipes
