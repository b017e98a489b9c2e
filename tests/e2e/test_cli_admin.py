"""The admin CLI as an operator uses it, as subprocesses: every command takes --json, ids and times
are printed whole, options are validated, and the everyday commands exist."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import typer

from clitools import js, numgate
from conftest import RunningServer, make_tenant
from numgate.cli import app as cli_app
from numgate.client import NxClient


def leaf_commands() -> list[tuple[str, Any]]:
    group = typer.main.get_command(cli_app)
    out: list[tuple[str, Any]] = []

    def walk(prefix: str, cmd: Any) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(f"{prefix} {name}".strip(), sub)
        else:
            out.append((prefix, cmd))

    walk("", group)
    return out


def test_every_command_takes_json_and_help_shows_no_bool_metavar() -> None:
    commands = leaf_commands()
    assert len(commands) > 30
    for name, cmd in commands:
        assert any("--json" in p.opts for p in cmd.params), f"`numgate {name}` has no --json"
    p = subprocess.run(
        [sys.executable, "-m", "numgate", "admin", "account", "list", "--help"],
        capture_output=True,
        text=True,
    )
    assert "--json" in p.stdout and "<bool>" not in p.stdout
    v = subprocess.run([sys.executable, "-m", "numgate", "--version"], capture_output=True, text=True)
    assert re.fullmatch(r"numgate \d+\.\d+\.\d+\n", v.stdout)


def test_admin_lifecycle(env: dict[str, str]) -> None:
    assert js(env, "migrate")["revisions"]
    acct = js(env, "admin", "account", "create", "Acme Ltd", "--integrator")
    assert acct["integrator"] is True and acct["access_key"] and len(acct["access_secret"]) == 32
    aid = str(acct["account_id"])

    # keys: --allow repeated and comma-separated, in core names or the doors' aliases
    key2 = js(
        env,
        "admin",
        "key",
        "create",
        aid,
        "--allow",
        "cams:GetPhoneNumberVerificationStatus",
        "--allow",
        "wa:phoneList,whatsapp:requestCode",
    )
    assert key2["allowed"] == ["whatsapp:listNumbers", "whatsapp:readNumber", "whatsapp:requestCode"]
    bad = numgate(env, "admin", "key", "create", aid, "--allow", "cams:NoSuchAction", ok=False)
    assert bad.returncode == 1 and "cams:NoSuchAction" in bad.stderr and "numbercheck:submit" in bad.stderr
    ops = js(env, "admin", "key", "operations")
    assert {"numbercheck:submit", "whatsapp:requestCode"} <= {o["operation"] for o in ops}
    keys = js(env, "admin", "key", "list", aid)
    assert [k["access_key"] for k in keys] == [acct["access_key"], key2["access_key"]]
    assert js(env, "admin", "key", "disable", key2["access_key"])["enabled"] is False
    assert js(env, "admin", "key", "enable", key2["access_key"])["enabled"] is True
    assert [k["enabled"] for k in js(env, "admin", "key", "list", aid)] == [True, True]

    # apps: the callback URL is checked in the CLI's own words
    app = js(env, "admin", "app", "create", aid, "shop", "--callback-url", "https://example.com/cb")
    assert app["appkey"] and app["callback_url"] == "https://example.com/cb"
    ftp = numgate(env, "admin", "app", "create", aid, "x", "--callback-url", "ftp://x", ok=False)
    assert "--callback-url must be an http(s) URL" in ftp.stderr and "drUrl" not in ftp.stderr
    upd = js(env, "admin", "app", "update", app["appkey"], "--callback-url", "https://example.com/v2")
    assert upd["callback_url"] == "https://example.com/v2"
    assert js(env, "admin", "app", "update", app["appkey"], "--no-callback-url")["callback_url"] is None
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
            "enabled": True,
            "integrator": True,
            "number_check": True,
            "whatsapp": True,
            "keys": 2,
            "apps": 1,
        }
    ]
    assert js(env, "admin", "account", "disable", aid)["enabled"] is False
    assert js(env, "admin", "account", "enable", aid)["enabled"] is True

    # money
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
    assert p == {
        "country": "NG",
        "level": 5,
        "price": "0.0123",
        "currency": "USD",
        "account_id": int(aid),
        "appkey": None,
        "cached_price": None,
    }
    cached = js(
        env,
        "admin",
        "price",
        "set",
        "--country",
        "NG",
        "--level",
        "5",
        "--price",
        "0.0123",
        "--cached-price",
        "0.002",
        "--account",
        aid,
    )
    assert cached["cached_price"] == "0.0020"
    bad = numgate(
        env,
        "admin",
        "price",
        "set",
        "--country",
        "NG",
        "--level",
        "1",
        "--price",
        "0.01",
        "--cached-price",
        "0.002",
        "--account",
        aid,
        ok=False,
    )
    assert bad.returncode != 0 and "cache price is for the live levels" in bad.stderr
    default = js(env, "admin", "price", "set", "--country", "NG", "--level", "1", "--price", "0.001")
    assert default["account_id"] is None
    per_app = js(
        env,
        "admin",
        "price",
        "set",
        "--country",
        "NG",
        "--level",
        "1",
        "--price",
        "0.0007",
        "--app",
        app["appkey"],
    )
    assert (per_app["account_id"], per_app["appkey"]) == (int(aid), app["appkey"])
    xx = numgate(env, "admin", "price", "set", "--country", "XX", "--level", "1", "--price", "1", ok=False)
    assert xx.returncode == 1 and "ISO 3166" in xx.stderr
    lvl = numgate(env, "admin", "price", "set", "--country", "NG", "--level", "3", "--price", "1", ok=False)
    assert lvl.returncode == 2 and "'3' is not one of" in lvl.stderr
    rows = js(env, "admin", "price", "list", "--country", "NG", "--level", "1")
    assert sorted((r["account_id"], r["appkey"], r["price"]) for r in rows if r["account_id"]) == [
        (int(aid), app["appkey"], "0.0007")
    ]
    assert len(js(env, "admin", "price", "list", "--limit", "1")) == 1

    # an app is deleted: its appkey stops working
    assert js(env, "admin", "app", "delete", app["appkey"])["deleted"] is True
    assert js(env, "admin", "app", "list", aid) == []


def test_errors_are_one_clean_line(env: dict[str, str]) -> None:
    numgate(env, "migrate")
    p = numgate(env, "admin", "balance", "topup", "999", "5", ok=False)
    assert p.returncode == 1 and "no account with id 999" in p.stderr and "Traceback" not in p.stderr
    p = numgate(env, "admin", "balance", "topup", "1", "0.00001", ok=False)
    assert "more than 4 decimal places" in p.stderr
    p = numgate(env, "deliveries", "list", "--status", "lost", ok=False)
    assert p.returncode == 2 and "pending, in-flight, delivered, failed" in p.stderr
    p = numgate(env, "deliveries", "list", "--limit", "0", ok=False)
    assert p.returncode == 2 and "--limit" in p.stderr


def test_statement_batches_and_deliveries(make_server: Any, env: dict[str, str], receiver: Any) -> None:
    """Batches and callbacks made through the API, read back through the CLI: ids whole (a delivery
    id from the table finds its delivery), times in ISO-8601, a failed callback sent again."""
    srv: RunningServer = make_server(callback_retry_window_s=0.5, callback_retry_interval_s=0.2)
    t = make_tenant(srv)
    receiver.plan["/down"] = [500]
    with NxClient(srv.base_url, t.access_key, t.access_secret) as nx:
        sub = nx.number_check(
            ["2348031234567", "2348031230002", "x"], appkey=t.appkey, dr_url=receiver.url("/down")
        )

    def failed() -> list[dict[str, Any]]:
        return [d for d in js(env, "deliveries", "list", "--status", "failed") if d["status"] == "failed"]

    for _ in range(50):
        if len(failed()) == 3:
            break
        time.sleep(0.2)
    assert len(failed()) == 3
    table = numgate(env, "deliveries", "list", "--status", "failed").stdout
    ids = re.findall(r"[0-9a-f]{32}", table)
    assert len(ids) == 3  # printed whole, even in 80 columns
    shown = js(env, "deliveries", "show", ids[0])
    assert shown["delivery_id"] == ids[0] and shown["body"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", shown["created"])
    assert js(env, "deliveries", "list", "--status", "in flight") == []  # every listed state is accepted

    batch = js(env, "batches", "show", sub["messageId"])
    assert (batch["total"], batch["done"], batch["complete"]) == (3, 3, True)
    assert batch["outcomes"] == {"ok": 2, "invalid_format": 1} and batch["callbacks"] == {"failed": 3}
    assert [b["message_id"] for b in js(env, "batches", "list")] == [sub["messageId"]]
    receiver.plan["/down"] = [200]  # the receiver is back
    assert js(env, "deliveries", "retry", "--batch", sub["messageId"])["queued"] == 3
    for _ in range(50):
        if js(env, "batches", "show", sub["messageId"])["callbacks"] == {"delivered": 3}:
            break
        time.sleep(0.2)
    assert js(env, "batches", "show", sub["messageId"])["callbacks"] == {"delivered": 3}

    lines = js(env, "admin", "balance", "statement", str(t.account_id))
    assert [ln["kind"] for ln in lines[:2]] == ["topup", "reserve"]
    assert [ln["balance"] for ln in lines[:2]] == ["100.0000", "99.9700"]
    # then the batch settled as its numbers were checked: in one chunk, or in more when the
    # worker's two claiming loops each took part of it (PostgreSQL's SKIP LOCKED) — each number
    # charged or released once, so a line per chunk and kind, never more than 3
    settled = lines[2:]
    assert {ln["kind"] for ln in settled} == {"charge", "release"} and len(settled) <= 3
    assert {ln["batch"] for ln in lines[1:]} == {sub["messageId"]}
    total = {
        k: sum(Decimal(ln["amount"]) for ln in settled if ln["kind"] == k) for k in ("charge", "release")
    }
    assert total == {"charge": Decimal("0.02"), "release": Decimal("0.01")}
    assert lines[-1]["balance"] == "99.9800"
    text = numgate(env, "admin", "balance", "statement", str(t.account_id)).stdout
    assert sub["messageId"] in text


def test_read_only_commands_never_create_a_database(tmp_path: Path) -> None:
    from clitools import clean_env

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = clean_env()
    p = numgate(env, "admin", "account", "list", ok=False, cwd=elsewhere)
    assert p.returncode == 2 and str(elsewhere / "var" / "numgate.db") in p.stderr
    assert "NUMGATE_DATA_DIR" in p.stderr and "numgate migrate" in p.stderr
    assert list(elsewhere.iterdir()) == []  # no ./var, no database, no key
    # migrate makes one, readable by its owner only
    numgate(env, "migrate", cwd=elsewhere)
    var = elsewhere / "var"
    assert var.stat().st_mode & 0o777 == 0o700
    assert (var / "numgate.db").stat().st_mode & 0o777 == 0o600
    numgate(env, "admin", "account", "list", cwd=elsewhere)
    assert (var / "secret.key").stat().st_mode & 0o777 == 0o600


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
    refused = numgate(env, "admin", "app", "delete", space["cust_space_id"], ok=False)
    assert refused.returncode == 1 and "still has WhatsApp numbers" in refused.stderr
    assert js(env, "admin", "number", "delete", "8613800001234")["deleted"] is True
    assert js(env, "admin", "number", "list") == []
    assert js(env, "admin", "app", "delete", space["cust_space_id"])["deleted"] is True
    assert js(env, "sandbox", "outbox") == []
    usage = numgate(env, "admin", "space", "create", "--help").stdout
    assert "ACCOUNT_ID" in usage and "NAME" in usage and "CustSpaceId" in usage


def test_deleted_app_is_refused_on_the_wire(server: RunningServer, tenant: Any) -> None:
    server.call(lambda core: core.tenancy.delete_app(tenant.appkey, core.waba.app_has_numbers))
    with NxClient(server.base_url, tenant.access_key, tenant.access_secret) as nx:
        r = nx.post("/api/number/check", {"phone": "2348031234567", "appkey": tenant.appkey})
    assert r["code"] == 202
    assert httpx.get(server.base_url + "/healthz").status_code == 200


def test_a_long_output_reaches_a_slow_reader_whole(server: RunningServer, env: dict[str, str]) -> None:
    """Python run unbuffered (``PYTHONUNBUFFERED=1``, as many container images set it) and piped to
    a reader that is slow to start: a ``--json`` list of well over the pipe's 64 KiB arrives whole
    and parses (it used to stop at 64 KiB, exit code 0, nothing said)."""

    async def many(core: Any) -> None:
        for i in range(700):
            await core.tenancy.create_account(f"account {i:04d} of a long list")

    server.call(many)
    p = subprocess.Popen(
        [sys.executable, "-m", "numgate", "admin", "account", "list", "--json"],
        env=env | {"PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(2)  # the pipe fills before anything is read
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert len(out) > 100_000
    assert len(json.loads(out)) == 700
