"""The real CLI, as subprocesses: migrate, the admin commands with --json, demo, the schema guard."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import SECRET_KEY


def numgate(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        [sys.executable, "-m", "numgate", *args], env=env, capture_output=True, text=True, timeout=120
    )
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def js(env: dict[str, str], *args: str) -> Any:
    return json.loads(numgate(env, *args, "--json").stdout)


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("NUMGATE_")}
    e.update(NUMGATE_DATABASE_URL=database_url, NUMGATE_DATA_DIR=str(tmp_path), NUMGATE_SECRET_KEY=SECRET_KEY)
    return e


def test_admin_lifecycle(env: dict[str, str]) -> None:
    numgate(env, "migrate")
    acct = js(env, "admin", "account", "create", "Acme Ltd", "--integrator")
    assert acct["integrator"] is True and acct["access_key"] and len(acct["access_secret"]) == 32
    aid = str(acct["account_id"])
    key2 = js(env, "admin", "key", "create", aid)
    assert key2["access_key"] != acct["access_key"]
    assert js(env, "admin", "key", "disable", key2["access_key"])["enabled"] is False
    app = js(env, "admin", "app", "create", aid, "shop", "--callback-url", "https://example.com/cb")
    assert app["appkey"] and app["callback_url"] == "https://example.com/cb"
    assert [a["appkey"] for a in js(env, "admin", "app", "list", aid)] == [app["appkey"]]
    secret = js(env, "admin", "app", "secret", app["appkey"])["secret"]
    assert (
        len(secret) == 32 and numgate(env, "admin", "app", "secret", app["appkey"]).stdout.strip() == secret
    )
    assert "no app" in numgate(env, "admin", "app", "secret", "nope", ok=False).stderr
    listed = js(env, "admin", "account", "list")
    assert listed == [
        {
            "account_id": int(aid),
            "name": "Acme Ltd",
            "integrator": True,
            "number_check": True,
            "whatsapp": True,
            "keys": 1,
            "apps": 1,
        }
    ]
    top = js(env, "admin", "balance", "topup", aid, "12.5")
    assert top["balance"] == "12.5000"
    assert js(env, "admin", "balance", "show", aid) == [
        {
            "currency": "USD",
            "balance": "12.5000",
            "topups": "12.5000",
            "charges": "0.0000",
            "open_reservations": "0.0000",
        }
    ]
    p = js(
        env, "admin", "price", "set", "--country", "ng", "--level", "5", "--price", "0.0123", "--account", aid
    )
    assert p == {"country": "NG", "level": 5, "price": "0.0123", "currency": "USD", "account_id": int(aid)}
    assert (
        js(env, "admin", "price", "set", "--country", "NG", "--level", "1", "--price", "0.001")["account_id"]
        is None
    )


def test_errors_are_one_clean_line(env: dict[str, str]) -> None:
    numgate(env, "migrate")
    p = numgate(env, "admin", "balance", "topup", "999", "5", ok=False)
    assert p.returncode == 1 and "no account with id 999" in p.stderr and "Traceback" not in p.stderr
    p = numgate(env, "admin", "price", "set", "--country", "NG", "--level", "3", "--price", "1", ok=False)
    assert "level must be one of" in p.stderr or "level must be 1" in p.stderr
    p = numgate(env, "admin", "balance", "topup", "1", "0.00001", ok=False)
    assert "more than 4 decimal places" in p.stderr


def test_serve_refuses_an_out_of_date_schema(env: dict[str, str], database_url: str) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("a fresh schema-less database is only cheap to make on SQLite")
    env = env | {"NUMGATE_DATABASE_URL": "sqlite:///" + env["NUMGATE_DATA_DIR"] + "/empty.db"}
    p = numgate(env, "serve", "--port", "1", ok=False)
    assert p.returncode == 1 and "Run `numgate migrate` first" in p.stderr


def test_demo_creates_the_tenant_once(env: dict[str, str]) -> None:
    first = js(env, "demo", "--no-serve")
    again = js(env, "demo", "--no-serve")
    assert first == again
    assert js(env, "admin", "account", "list")[0]["integrator"] is True
    bal = js(env, "admin", "balance", "show", str(first["account_id"]))
    assert bal[0]["balance"] == "100.0000"
    text = numgate(env, "demo", "--no-serve").stdout
    assert first["access_secret"] in text and "md5sum" in text and "NxClient" in text


def test_help_texts() -> None:
    p = subprocess.run([sys.executable, "-m", "numgate", "admin", "--help"], capture_output=True, text=True)
    assert "account" in p.stdout and "balance" in p.stdout and "price" in p.stdout


def test_check_file_csv_and_jsonl(tmp_path: Path) -> None:
    src = tmp_path / "list.csv"
    src.write_text("name,msisdn\nA,2348031234567\nB,+14155550100\nC,12\nD,2348031230003\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMGATE_")}
    p = numgate(env, "check", str(src), "--level", "5")
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert [r["outcome"] for r in rows] == ["ok", "ok", "invalid_format", "ok"]
    assert rows[0]["carrier"] == "MTN" and rows[0]["region"] == "NG" and rows[3]["roaming"] == "YES"
    out = tmp_path / "out.jsonl"
    p = numgate(env, "check", str(src), "-o", str(out))
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 4 and lines[1]["e164"] == "+14155550100" and lines[1]["validity"] == ""
    assert "checked 4 number(s)" in p.stderr
    plain = tmp_path / "plain.txt"
    plain.write_text("2348031234567\n\n+447700900123\n")
    assert len(list(csv.DictReader(io.StringIO(numgate(env, "check", str(plain)).stdout)))) == 2
    assert numgate(env, "check", str(plain), "--level", "3", ok=False).returncode == 1


def test_serve_answers_then_shuts_down_gracefully_on_sigterm(env: dict[str, str], database_url: str) -> None:
    import signal
    import socket
    import time
    import urllib.request

    numgate(env, "migrate")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = subprocess.Popen(
        [sys.executable, "-m", "numgate", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    assert json.loads(r.read())["status"] == "ok"
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("numgate serve did not answer")
        p.send_signal(signal.SIGTERM)
        _, stderr = p.communicate(timeout=30)
    finally:
        p.kill()
    # uvicorn shuts down gracefully, then re-raises the signal it captured
    assert p.returncode in (0, -signal.SIGTERM), stderr
    assert "numgate stopped" in stderr
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(x.get("path") == "/healthz" and x.get("status") == 200 for x in lines)
    assert not [x for x in lines if x["level"] == "error"]


def test_whatsapp_commands(env: dict[str, str]) -> None:
    numgate(env, "migrate")
    aid = str(js(env, "admin", "account", "create", "Kei", "--integrator")["account_id"])
    space = js(env, "admin", "space", "create", aid, "kei shop")
    assert space["cust_space_id"].startswith("cams-") and space["appkey"] == space["cust_space_id"]
    assert "CustSpaceId cams-" in numgate(env, "admin", "space", "create", aid, "b").stdout
    n = js(env, "admin", "number", "add", space["cust_space_id"], "+86 138 0000 1234", "--name", "Kei Shop")
    assert (n["phone"], n["verified_name"], n["verification"], n["status"]) == (
        "8613800001234",
        "Kei Shop",
        "not_verified",
        "PENDING",
    )
    listed = js(env, "admin", "number", "list", space["cust_space_id"])
    assert [r["phone"] for r in listed] == ["8613800001234"]
    bad = numgate(env, "admin", "number", "add", space["cust_space_id"], "12", ok=False)
    assert bad.returncode == 1 and "digits with country code" in bad.stderr
    missing = numgate(env, "admin", "number", "add", "cams-none", "8613800001235", ok=False)
    assert "no app or space" in missing.stderr
    assert js(env, "sandbox", "outbox") == []
    usage = numgate(env, "admin", "space", "create", "--help").stdout
    assert "ACCOUNT_ID" in usage and "NAME" in usage and "CustSpaceId" in usage
