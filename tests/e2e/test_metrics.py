"""``GET /metrics`` of a real ``numgate serve`` while a separate ``numgate worker`` does the checks
and callbacks: the text parsed by prometheus_client's own parser, every series family present,
and what the worker process counted summed into the server's answer."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from clitools import Serving, js
from conftest import Receiver, Samples, scrape_metrics
from conftest import metric as value
from numgate.client import NxClient
from numgate.metrics import DB_EVERY_S


def scrape(s: Serving) -> Samples:
    return scrape_metrics(s.url)


def unsigned_cams_call(s: Serving) -> int:
    try:
        urllib.request.urlopen(s.url + "/?Action=Nothing", timeout=10)
    except urllib.error.HTTPError as e:
        return e.code
    raise AssertionError("an unsigned CAMS call was answered 2xx")


def test_metrics_of_serve_and_a_separate_worker(
    serving: Any, env: dict[str, str], receiver: Receiver
) -> None:
    s = serving("--no-workers", extra={"NUMGATE_CALLBACK_ALLOW": "loopback"})
    worker = subprocess.Popen(
        [sys.executable, "-m", "numgate", "worker"],
        env=env | {"NUMGATE_CALLBACK_ALLOW": "loopback", "NUMGATE_CALLBACK_PROCESSES": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        acct = js(env, "admin", "account", "create", "t")
        app = js(env, "admin", "app", "create", str(acct["account_id"]), "a")
        js(env, "admin", "balance", "topup", str(acct["account_id"]), "10")
        for level in ("1", "5"):
            js(env, "admin", "price", "set", "--country", "NG", "--level", level, "--price", "0.001")
        with NxClient(s.url, acct["access_key"], acct["access_secret"]) as nx:
            basic = [f"2348031{n:06d}" for n in range(20)] + ["12"]
            nx.number_check(basic, appkey=app["appkey"], dr_url=receiver.url())
            hlr = [f"2348031{n:06d}" for n in range(5)]
            nx.number_check(hlr, appkey=app["appkey"], level=5, dr_url=receiver.url())
            assert nx.post("/api/number/query", {"page": 0})["code"] == 88
        assert unsigned_cams_call(s) == 400
        receiver.wait_for(26, timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if value(scrape(s), "numgate_callback_attempts_total", outcome="delivered") >= 26:
                break
            time.sleep(0.2)
        time.sleep(DB_EVERY_S)  # what the database says is read again
        samples = scrape(s)
    finally:
        worker.terminate()
        worker.wait(timeout=30)

    # requests, by door, endpoint and the vendor's code
    assert (
        value(samples, "numgate_requests_total", door="nxcloud", endpoint="/api/number/check", code="0") == 2
    )
    assert (
        value(samples, "numgate_requests_total", door="nxcloud", endpoint="/api/number/query", code="88") == 1
    )
    cams = [k for k in samples if k[0] == "numgate_requests_total" and ("door", "cams") in k[1]]
    assert cams and all(dict(k[1])["endpoint"] == "unknown" for k in cams)
    assert (
        value(samples, "numgate_request_duration_seconds_count", door="nxcloud", endpoint="/api/number/check")
        == 2
    )
    assert (
        value(
            samples,
            "numgate_request_duration_seconds_bucket",
            door="nxcloud",
            endpoint="/api/number/check",
            le="+Inf",
        )
        == 2
    )
    # numbers: submitted (counted by serve), checked and charged (counted by the worker process)
    assert value(samples, "numgate_numbers_submitted_total", level="basic") == 21
    assert value(samples, "numgate_numbers_submitted_total", level="hlr") == 5
    assert value(samples, "numgate_numbers_checked_total", level="basic", outcome="ok") == 20
    assert value(samples, "numgate_numbers_checked_total", level="basic", outcome="invalid_format") == 1
    assert value(samples, "numgate_numbers_charged_total", level="basic") == 20
    hlr_ok = value(samples, "numgate_numbers_checked_total", level="hlr", outcome="ok")
    assert value(samples, "numgate_numbers_charged_total", level="hlr") == hlr_ok > 0
    # callbacks and upstreams
    assert value(samples, "numgate_callback_attempts_total", outcome="delivered") == 26
    assert value(samples, "numgate_callback_duration_seconds_count") == 26
    upstream = sum(
        v
        for (name, labels), v in samples.items()
        if name == "numgate_upstream_calls_total" and dict(labels)["upstream"] == "hlr"
    )
    assert upstream == 1  # one simulator call for the batch's five numbers (upstreams take batches)
    # from the database: queues and the ledger
    assert value(samples, "numgate_checks", state="pending") == 0
    assert value(samples, "numgate_callbacks", state="pending") == 0
    assert value(samples, "numgate_callbacks", state="failed") == 0
    assert value(samples, "numgate_ledger_amount", kind="topup", currency="USD") == 10
    charged = value(samples, "numgate_ledger_amount", kind="charge", currency="USD")
    assert abs(charged - 0.001 * (20 + hlr_ok)) < 1e-9
    assert abs(value(samples, "numgate_ledger_available", currency="USD") - (10 - charged)) < 1e-9
