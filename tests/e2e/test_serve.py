"""``numgate serve`` and ``numgate worker`` as processes: every startup failure is one line and exit
code 2 with nothing said about listening; SIGTERM drains within its budget even with callbacks
stuck on a receiver that never answers; helper processes never outlive a killed server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from clitools import clean_env, free_port, js, numgate, one_line_error
from conftest import PG_URL, SECRET_KEY


def test_configuration_mistakes_are_one_line_and_exit_2(tmp_path: Path) -> None:
    base = clean_env(NUMGATE_DATA_DIR=str(tmp_path / "var"))
    numgate(base, "migrate")
    cases = {
        "NUMGATE_SECRET_KEY": ("not-a-key", "NUMGATE_SECRET_KEY is not a Fernet key"),
        "NUMGATE_LOG_LEVEL": ("loud", "NUMGATE_LOG_LEVEL must be one of debug, info"),
        "NUMGATE_WABA_UPSTREAM": ("meta", "NUMGATE_WABA_UPSTREAM=meta needs NUMGATE_META_TOKEN"),
        "NUMGATE_PORT": ("99999", "NUMGATE_PORT must be at most 65535"),
        "NUMGATE_CALLBACK_TIMEOUT": ("soon", "NUMGATE_CALLBACK_TIMEOUT must be a number"),
        "NUMGATE_DATABASE_URL": ("mysql://x/y", "numgate runs on SQLite or PostgreSQL"),
    }
    for name, (value, expected) in cases.items():
        for args in (("serve", "--port", str(free_port())), ("admin", "account", "list")):
            line = one_line_error(numgate(base | {name: value}, *args, ok=False))
            assert expected in line, (name, line)
    # the master key file went missing while the database holds secrets encrypted with it
    (tmp_path / "var" / "secret.key").unlink()
    line = one_line_error(numgate(base, "serve", "--port", str(free_port()), ok=False))
    assert "secret.key is missing" in line and "Restore that file" in line


def test_database_problems_are_one_line_and_exit_2(tmp_path: Path) -> None:
    closed = free_port()
    unreachable = clean_env(NUMGATE_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{closed}/numgate")
    line = one_line_error(numgate(unreachable, "serve", "--port", str(free_port()), ok=False))
    assert "unavailable" in line and f"127.0.0.1:{closed}" in line and "NUMGATE_DATABASE_URL" in line
    if PG_URL:
        server = PG_URL.rsplit("/", 1)[0]
        missing = clean_env(NUMGATE_DATABASE_URL=f"{server}/numgate_no_such_database")
        line = one_line_error(numgate(missing, "admin", "account", "list", ok=False))
        assert "does not exist" in line and "NUMGATE_DATABASE_URL" in line
    fresh = clean_env(NUMGATE_DATABASE_URL=f"sqlite:///{tmp_path}/empty.db")
    (tmp_path / "empty.db").touch()
    line = one_line_error(
        numgate(fresh | {"NUMGATE_SECRET_KEY": SECRET_KEY}, "serve", "--port", "1", ok=False)
    )
    assert "Run `numgate migrate` first" in line


def test_a_port_in_use_is_one_line_and_exit_2(env: dict[str, str]) -> None:
    numgate(env, "migrate")
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        line = one_line_error(numgate(env, "serve", "--port", str(holder.getsockname()[1]), ok=False))
    finally:
        holder.close()
    assert "Address already in use" in line and "--port" in line


def test_worker_options_are_validated(env: dict[str, str]) -> None:
    numgate(env, "migrate")
    line = one_line_error(numgate(env, "worker", "--only", "foo", "--drain", ok=False))
    assert "foo" in line and "checks, deliveries" in line
    out = json.loads(numgate(env, "worker", "--only", "checks,deliveries", "--drain", "--json").stdout)
    assert out == {"checked": 0, "callbacks_attempted": 0}


def test_serve_says_listening_in_json_and_shuts_down_on_sigterm(serving: Any) -> None:
    s = serving("--json")
    s.proc.send_signal(signal.SIGTERM)
    stdout, stderr = s.proc.communicate(timeout=30)
    assert s.proc.returncode in (0, -signal.SIGTERM), stderr
    first = json.loads(stdout.splitlines()[0])
    assert first == {
        "event": "listening",
        "url": s.url,
        "version": first["version"],
        "sandbox": True,
        # which upstream serves which level: the simulator everywhere in sandbox mode
        "upstreams": {"hlr": {"*": ["simulator"]}, "call": {"*": ["simulator"]}, "waba": "simulator"},
    }
    assert "numgate stopped" in stderr
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(x.get("path") == "/healthz" and x.get("status") == 200 for x in lines)
    assert not [x for x in lines if x["level"] == "error"]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_helpers_exit_when_the_server_is_killed(serving: Any) -> None:
    s = serving(extra={"NUMGATE_CHECK_PROCESSES": "1", "NUMGATE_CALLBACK_PROCESSES": "1"})
    deadline = time.monotonic() + 20
    helpers: list[int] = []
    while time.monotonic() < deadline:  # the spawn helpers start with the workers
        helpers = [p for c in _children(s.proc.pid) for p in [c, *_children(c)]]
        if len(helpers) >= 2:
            break
        time.sleep(0.2)
    assert len(helpers) >= 2, helpers
    os.kill(s.proc.pid, signal.SIGKILL)
    s.proc.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in helpers):
        time.sleep(0.2)
    assert not [p for p in helpers if _alive(p)]


def _submit(env: dict[str, str], base_url: str, numbers: list[str], dr_url: str) -> None:
    """A new account with money and a Basic price submits ``numbers``, called back at ``dr_url``."""
    from numgate.client import NxClient

    acct = js(env, "admin", "account", "create", "t")
    app = js(env, "admin", "app", "create", str(acct["account_id"]), "a")
    js(env, "admin", "balance", "topup", str(acct["account_id"]), "10")
    js(env, "admin", "price", "set", "--country", "NG", "--level", "1", "--price", "0.001")
    with NxClient(base_url, acct["access_key"], acct["access_secret"]) as nx:
        nx.number_check(numbers, appkey=app["appkey"], dr_url=dr_url)


def test_sigterm_drains_in_time_with_callbacks_stuck_on_a_silent_receiver(
    serving: Any, env: dict[str, str]
) -> None:
    """Callbacks in flight to a receiver that accepts connections and never answers: SIGTERM stops
    numgate within the drain (10 s) plus a little, and the callbacks are pending for the next
    start, not lost and not marked failed."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(512)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    try:
        s = serving(
            extra={
                "NUMGATE_CALLBACK_ALLOW": "loopback",
                "NUMGATE_CALLBACK_TIMEOUT": "60",
                "NUMGATE_CALLBACK_PROCESSES": "1",
            }
        )
        _submit(
            env,
            s.url,
            [f"2348031{n:06d}" for n in range(50)],
            f"http://127.0.0.1:{silent.getsockname()[1]}/cb",
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(held) < 2:
            time.sleep(0.1)
        time.sleep(0.5)
        # callbacks are in flight, their receiver silent: it gets its first two connections only
        assert len(held) == 2
        start = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        s.proc.communicate(timeout=30)
        took = time.monotonic() - start
    finally:
        stop.set()
        silent.close()
        for c in held:
            c.close()
    assert took < 15, f"stopping took {took:.1f} s"
    pending = [d for d in js(env, "deliveries", "list", "--limit", "100") if d["status"] == "pending"]
    assert len(pending) == 50  # given back for the next start: none lost, none failed


def _sender_processes(pid: int) -> set[int]:
    """The live callback sender processes under ``numgate serve`` (their name in /proc)."""
    found = set()
    for c in _children(pid):
        for p in (c, *_children(c)):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{p}/comm").read_text().strip() == "numgate-sender" and _alive(p):
                    found.add(p)
    return found


def test_a_sender_process_killed_mid_delivery_loses_no_callback(serving: Any, env: dict[str, str]) -> None:
    """The callback sender process is killed while callbacks are in flight: a new one takes
    over, and every number is still called back (at least once, with its one delivery id), none
    marked failed."""
    from aiohttp import web

    from clitools import js
    from conftest import aiohttp_server

    seen: dict[str, set[str]] = {}
    lock = threading.Lock()

    async def slow(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        await asyncio.sleep(0.05)  # so that callbacks are in flight when the sender dies
        with lock:
            seen.setdefault(body["phone"], set()).add(request.headers["X-Numgate-Delivery-Id"])
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/cb", slow)
    numbers = [f"2348031{n:06d}" for n in range(400)]
    with aiohttp_server(app) as url:
        s = serving(
            extra={
                "NUMGATE_CALLBACK_ALLOW": "loopback",
                "NUMGATE_CALLBACK_PROCESSES": "1",
                "NUMGATE_CALLBACK_RETRY_INTERVAL": "1",
            }
        )
        _submit(env, s.url, numbers, f"{url}/cb")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(seen) < 20:
            time.sleep(0.02)
        first = _sender_processes(s.proc.pid)
        assert len(first) == 1 and 20 <= len(seen) < len(numbers), (first, len(seen))
        os.kill(first.pop(), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(seen) < len(numbers):
            time.sleep(0.1)
        with lock:
            got = dict(seen)
        assert sorted(got) == numbers  # every number called back
        assert all(len(ids) == 1 for ids in got.values())  # a retry keeps its delivery id
        assert len(_sender_processes(s.proc.pid)) == 1  # a new one took over
        listed = js(env, "deliveries", "list", "--limit", "1000")
        assert len(listed) == len(numbers)
        assert {d["status"] for d in listed} == {"delivered"}
