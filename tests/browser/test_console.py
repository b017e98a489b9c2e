"""The console in a real Chromium (Debian's package, driven by Playwright through
``executable_path``), against a real numgate on SQLite and PostgreSQL. Each test saves a
screenshot of its last page under the run's output folder (``NUMGATE_TEST_OUTPUT``, default
``test-output/`` at the repository's root)."""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Receiver, RunningServer, Tenant, make_tenant
from numgate.client import NxClient
from numgate.core import Core

CHROMIUM = (
    os.environ.get("NUMGATE_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
)
OUTPUT = Path(os.environ.get("NUMGATE_TEST_OUTPUT") or Path(__file__).resolve().parents[2] / "test-output")
PASSWORD = "correct horse battery"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium): browser tests NOT run"
)


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as _expect

    return _expect(locator)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    yield pg
    OUTPUT.mkdir(parents=True, exist_ok=True)
    name = request.node.name.replace("[", "-").replace("]", "")
    pg.screenshot(path=str(OUTPUT / f"console-{name}.png"), full_page=True)
    context.close()


def add_user(srv: RunningServer, email: str, account_id: int | None) -> None:
    srv.call(lambda core: core.users.create(email, PASSWORD, account_id=account_id))


def sign_in(page: Any, srv: RunningServer, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{srv.base_url}/console/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def submit(srv: RunningServer, t: Tenant, phones: list[str], **body: Any) -> str:
    with NxClient(srv.base_url, t.access_key, t.access_secret) as c:
        r = c.post("/api/number/check", {"appkey": t.appkey, "phone": ",".join(phones), **body})
    assert r["code"] == 0, r
    return str(r["data"]["messageId"])


@pytest.fixture
def console(make_server: Callable[..., RunningServer]) -> tuple[RunningServer, Tenant]:
    srv = make_server()
    t = make_tenant(srv)
    add_user(srv, "ops@example.com", None)
    add_user(srv, "ann@acme.example", t.account_id)
    return srv, t


def test_sign_in_and_sign_out(page: Any, console: tuple[RunningServer, Tenant]) -> None:
    srv, _ = console
    sign_in(page, srv, "ann@acme.example", "wrong password!")
    assert "Wrong email or password" in page.locator("[role=alert]").inner_text()
    sign_in(page, srv, "ann@acme.example")
    page.wait_for_url("**/console/")
    assert page.get_by_role("heading", name="Overview").is_visible()
    assert "ann@acme.example" in page.locator("header").inner_text()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/login")
    page.goto(f"{srv.base_url}/console/batches")
    assert "/console/login" in page.url  # the session is gone


def test_batch_progress_reaches_100_percent_without_a_reload(
    page: Any, make_server: Callable[..., RunningServer]
) -> None:
    srv = make_server(inprocess_workers=False)  # the numbers wait until a worker is started below
    t = make_tenant(srv)
    add_user(srv, "ann@acme.example", t.account_id)
    mid = submit(srv, t, [f"234803123{i:04d}" for i in range(300)], batchNo="spring-list")
    sign_in(page, srv, "ann@acme.example")
    page.goto(f"{srv.base_url}/console/batches")
    row = page.locator(f'tr[data-mid="{mid}"]')
    assert row.locator(".percent").inner_text() == "0"
    page.evaluate("window.loadedOnce = true")  # gone if the page reloads

    async def start_worker(core: Core) -> None:
        from numgate.jobs.runner import WorkerSet

        core.extras["workers"] = WorkerSet(core)
        await core.extras["workers"].start()

    srv.call(start_worker)
    expect(row.locator(".percent")).to_have_text("100", timeout=30_000)
    assert page.evaluate("window.loadedOnce") is True
    assert row.locator(".done").inner_text() == "300"
    page.get_by_role("link", name="spring-list").click()
    assert page.locator("#progress .percent").inner_text() == "100"

    async def stop_worker(core: Core) -> None:
        await core.extras["workers"].stop(timeout=5)

    srv.call(stop_worker)


def test_filtering_and_csv_download(page: Any, console: tuple[RunningServer, Tenant]) -> None:
    srv, t = console
    phones = ["2348031234567", "23480", "234abc", "2348031230002", "2341234567890"]
    mid = submit(srv, t, phones)
    sign_in(page, srv, "ann@acme.example")
    page.goto(f"{srv.base_url}/console/batches/{mid}")
    expect(page.locator("#progress .percent")).to_have_text("100", timeout=30_000)
    page.reload()
    assert page.locator("#numbers tbody tr").count() == 5
    page.get_by_label("Result").select_option("invalid_format")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**outcome=invalid_format**")
    cells = page.locator("#numbers tbody td.outcome").all_inner_texts()
    assert cells == ["invalid_format", "invalid_format"]
    with page.expect_download() as dl:
        page.get_by_role("link", name="CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
    assert sorted(r["phone"] for r in rows) == ["23480", "234abc"]
    assert {r["outcome"] for r in rows} == {"invalid_format"}


def test_a_failed_delivery_sent_again_is_delivered(
    page: Any, console: tuple[RunningServer, Tenant], receiver: Receiver
) -> None:
    srv, t = console
    receiver.plan["/cb"] = [500]  # the receiver is broken for the whole retry window (3 s here)
    submit(srv, t, ["2348031234567"], drUrl=receiver.url("/cb"))
    sign_in(page, srv, "ann@acme.example")
    end = time.monotonic() + 30
    while time.monotonic() < end:
        page.goto(f"{srv.base_url}/console/deliveries?status=failed")
        if page.locator("#deliveries td.status").all_inner_texts() == ["failed"]:
            break
        time.sleep(0.5)
    assert page.locator("#deliveries td.status").all_inner_texts() == ["failed"]
    receiver.plan["/cb"] = [200]  # fixed
    page.get_by_role("button", name="Send again").click()
    assert "queued to be sent again" in page.locator("[role=status]").inner_text()
    end = time.monotonic() + 30
    while time.monotonic() < end:
        page.goto(f"{srv.base_url}/console/deliveries")
        if page.locator("#deliveries td.status").all_inner_texts() == ["delivered"]:
            break
        time.sleep(0.3)
    assert page.locator("#deliveries td.status").all_inner_texts() == ["delivered"]


def test_a_key_created_in_the_console_signs_api_requests(
    page: Any, console: tuple[RunningServer, Tenant]
) -> None:
    srv, t = console
    sign_in(page, srv, "ann@acme.example")
    page.goto(f"{srv.base_url}/console/keys")
    page.get_by_role("button", name="Create an access key").click()
    secret = page.locator("#secret").inner_text()
    access_key = page.locator("#new-secret strong").inner_text()
    assert secret and access_key
    with NxClient(srv.base_url, access_key, secret) as c:
        r = c.post("/api/number/check", {"appkey": t.appkey, "phone": "2348031234567"})
    assert r["code"] == 0
    page.goto(f"{srv.base_url}/console/keys")  # shown once: gone on the next visit
    assert page.locator("#secret").count() == 0
    assert access_key in page.locator("#keys").inner_text()


def test_another_tenants_batch_is_not_found(page: Any, console: tuple[RunningServer, Tenant]) -> None:
    srv, _ = console
    other = make_tenant(srv, name="rival")
    theirs = submit(srv, other, ["2348031234567"])
    sign_in(page, srv, "ann@acme.example")
    resp = page.goto(f"{srv.base_url}/console/batches/{theirs}")
    assert resp.status == 404
    assert page.get_by_role("heading", name="Not found").is_visible()
    resp = page.goto(f"{srv.base_url}/console/batches/{theirs}/numbers.csv")
    assert resp.status == 404


def test_a_form_posted_without_its_csrf_token_is_refused(
    page: Any, console: tuple[RunningServer, Tenant]
) -> None:
    srv, t = console
    sign_in(page, srv, "ann@acme.example")
    page.goto(f"{srv.base_url}/console/keys")
    before = page.locator("#keys tbody tr").count()
    r = page.request.post(f"{srv.base_url}/console/keys", form={"account": str(t.account_id)})
    assert r.status == 403
    page.reload()
    assert page.locator("#keys tbody tr").count() == before  # nothing was created
    page.set_content(r.text())  # what the refusal says, for the screenshot


def test_operator_sees_every_tenant_and_works_on_a_phone(
    browser: Any, console: tuple[RunningServer, Tenant], request: pytest.FixtureRequest
) -> None:
    srv, t = console
    other = make_tenant(srv, name="rival")
    submit(srv, t, ["2348031234567"], batchNo="acme-batch")
    submit(srv, other, ["2348031234568"], batchNo="rival-batch")
    context = browser.new_context(viewport={"width": 390, "height": 844})  # a phone
    pg = context.new_page()
    sign_in(pg, srv, "ops@example.com")
    pg.goto(f"{srv.base_url}/console/batches")
    text = pg.locator("#batches").inner_text()
    assert "acme-batch" in text and "rival-batch" in text
    pg.goto(f"{srv.base_url}/console/batches?account={other.account_id}")
    text = pg.locator("#batches").inner_text()
    assert "rival-batch" in text and "acme-batch" not in text
    pg.goto(f"{srv.base_url}/console/accounts")
    assert pg.locator("#accounts tbody tr").count() == 2
    width = pg.evaluate("document.documentElement.scrollWidth")
    assert width <= 390 + 1  # no sideways scrolling of the page (tables scroll in their box)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    pg.screenshot(
        path=str(OUTPUT / f"console-{request.node.name.replace('[', '-').replace(']', '')}.png"),
        full_page=True,
    )
    context.close()


def test_the_demo_users_see_the_demo_tenant(
    page: Any, env: dict[str, str], serving: Callable[..., Any]
) -> None:
    """What ``make run`` prints: the demo tenant's keys and its console sign-ins."""
    import json as _json

    from clitools import numgate

    info = _json.loads(numgate(env, "demo", "--no-serve", "--json").stdout)
    again = _json.loads(numgate(env, "demo", "--no-serve", "--json").stdout)
    assert again["console"] == info["console"]  # created once, printed every time
    srv = serving(extra={"NUMGATE_CALLBACK_ALLOW": "loopback"})
    with NxClient(srv.url, info["access_key"], info["access_secret"]) as nx:
        r = nx.post(
            "/api/number/check", {"appkey": info["appkey"], "phone": "2348031234567", "batchNo": "demo-1"}
        )
    assert r["code"] == 0
    tenant = next(u for u in info["console"] if u["role"] == "tenant")
    page.goto(f"{srv.url}/console/")
    page.get_by_label("Email").fill(tenant["email"])
    page.get_by_label("Password").fill(tenant["password"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/")
    assert (
        "100.0000 USD" in page.locator(".cards").inner_text() or "99.9" in page.locator(".cards").inner_text()
    )
    page.goto(f"{srv.url}/console/batches")
    assert "demo-1" in page.locator("#batches").inner_text()


def test_every_page_renders_for_a_tenant_with_data(
    page: Any, console: tuple[RunningServer, Tenant], receiver: Receiver, request: pytest.FixtureRequest
) -> None:
    """A tour of the pages with data on them (their screenshots illustrate docs/console.md)."""
    srv, t = console
    srv.call(lambda core: core.waba.add_number(None, t.appkey, "8613800001234", "Acme Support"))
    phones = [f"234803123{i:04d}" for i in range(40)] + ["23480", "2341234567890"]
    mid = submit(srv, t, phones, checkLevel=5, batchNo="march-hlr", drUrl=receiver.url("/cb"))
    submit(srv, t, [f"1415555{i:04d}" for i in range(12)], batchNo="us-basic")
    sign_in(page, srv, "ann@acme.example")
    shots = OUTPUT / "pages"
    shots.mkdir(parents=True, exist_ok=True)
    suffix = request.node.name.rsplit("[", 1)[-1].rstrip("]")
    page.goto(f"{srv.base_url}/console/batches/{mid}")
    expect(page.locator("#progress .percent")).to_have_text("100", timeout=30_000)
    checks = {
        "/console/": ("Overview", "svg.chart"),
        "/console/batches": ("Batches", "#batches"),
        f"/console/batches/{mid}": ("Batch march-hlr", "#numbers"),
        "/console/deliveries": ("Callback deliveries", "#deliveries"),
        "/console/whatsapp": ("WhatsApp numbers", "#waba"),
        "/console/money": ("Money · account", "#statement"),
        "/console/keys": ("Keys and apps", "#keys"),
        "/console/prices": ("Prices", "#prices"),
    }
    for path, (heading, selector) in checks.items():
        page.goto(f"{srv.base_url}{path}")
        assert heading in page.locator("h1").inner_text(), path
        assert page.locator(selector).count() >= 1, path
        name = path.strip("/").replace("/", "-").replace(mid, "batch") or "console"
        page.screenshot(path=str(shots / f"{name}-{suffix}.png"), full_page=True)
    page.goto(f"{srv.base_url}/console/whatsapp")
    assert "+8613800001234" in page.locator("#waba").inner_text()
    page.goto(f"{srv.base_url}/console/")
    assert page.locator("#today").inner_text() == "54"
