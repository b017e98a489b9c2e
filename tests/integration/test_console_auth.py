"""The console's authorisation over HTTP, page by page: signed out → the sign-in page; a tenant
user → their own account only (another's batch, download, key or app is 404; operator pages are
404); every form needs its CSRF token; sign-in attempts are limited; a disabled user's session
ends at once."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from conftest import RunningServer, Tenant, make_tenant
from numgate.client import NxClient

PASSWORD = "correct horse battery"
PAGES = [
    "/console/",
    "/console/batches",
    "/console/deliveries",
    "/console/whatsapp",
    "/console/money",
    "/console/keys",
    "/console/prices",
]
OPERATOR_PAGES = ["/console/accounts", "/console/upstreams"]


OPEN: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Any:
    yield
    while OPEN:
        OPEN.pop().close()


def signed_in(srv: RunningServer, email: str) -> httpx.Client:
    c = httpx.Client(base_url=srv.base_url, follow_redirects=False)
    OPEN.append(c)
    form = c.get("/console/login")
    pre = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert pre is not None
    r = c.post("/console/login", data={"email": email, "password": PASSWORD, "csrf": pre.group(1)})
    assert r.status_code == 303, r.text
    return c


def csrf_of(c: httpx.Client, path: str = "/console/keys") -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', c.get(path).text)
    assert m is not None
    return m.group(1)


@pytest.fixture
def two(server: RunningServer) -> tuple[RunningServer, Tenant, Tenant, str]:
    mine, theirs = make_tenant(server, name="acme"), make_tenant(server, name="rival")
    for email, acct in (("ann@acme.example", mine.account_id), ("ops@example.com", None)):
        server.call(lambda core, e=email, a=acct: core.users.create(e, PASSWORD, account_id=a))
    with NxClient(server.base_url, theirs.access_key, theirs.access_secret) as nx:
        mid = nx.post("/api/number/check", {"appkey": theirs.appkey, "phone": "2348031234567"})["data"][
            "messageId"
        ]
    return server, mine, theirs, str(mid)


def test_signed_out_every_page_sends_to_sign_in(two: Any) -> None:
    srv, _, _, mid = two
    with httpx.Client(base_url=srv.base_url) as c:
        for path in [
            *PAGES,
            *OPERATOR_PAGES,
            f"/console/batches/{mid}",
            f"/console/batches/{mid}/numbers.csv",
        ]:
            r = c.get(path, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"].startswith("/console/login"), path
        assert c.get("/console/batches.json").status_code == 401
        r = c.post("/console/keys", data={"csrf": "x"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/console/login"


def test_a_tenant_sees_only_their_account(two: Any) -> None:
    srv, mine, theirs, mid = two
    c = signed_in(srv, "ann@acme.example")
    for path in PAGES:
        r = c.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-security-policy"].startswith("default-src 'self'")
    for path in OPERATOR_PAGES:
        assert c.get(path).status_code == 404, path
    # another tenant's batch, its downloads and its progress: 404, whatever the URL says
    assert c.get(f"/console/batches/{mid}").status_code == 404
    assert c.get(f"/console/batches/{mid}/numbers.ndjson").status_code == 404
    assert c.get(f"/console/batches.json?mid={mid}").status_code == 404
    # ?account= is ignored for a tenant
    assert mid not in c.get(f"/console/batches?account={theirs.account_id}").text
    assert theirs.appkey not in c.get(f"/console/keys?account={theirs.account_id}").text
    # another tenant's key and app cannot be touched
    csrf = csrf_of(c)
    assert c.post(f"/console/keys/{theirs.access_key}/disable", data={"csrf": csrf}).status_code == 404
    r = c.post(f"/console/apps/{theirs.appkey}/secret", data={"csrf": csrf})
    assert r.status_code == 404
    # operator actions: 404 for a tenant, even with the right token
    assert (
        c.post(
            "/console/prices", data={"csrf": csrf, "country": "NG", "level": "1", "price": "0"}
        ).status_code
        == 404
    )
    assert (
        c.post(
            f"/console/accounts/{mine.account_id}/topup", data={"csrf": csrf, "amount": "1000"}
        ).status_code
        == 404
    )
    r = c.post("/console/keys", data={"csrf": csrf, "account": str(theirs.account_id)})
    assert r.status_code == 200 and str(mine.account_id) in r.text  # made in the tenant's own account

    async def accounts_of_keys(core: Any) -> set[int]:
        return {k.account_id for k in await core.tenancy.list_keys(theirs.account_id)}

    assert srv.call(accounts_of_keys) == {theirs.account_id}
    c.close()


def test_an_operator_sees_every_account(two: Any) -> None:
    srv, mine, _, mid = two
    c = signed_in(srv, "ops@example.com")
    for path in [*PAGES, *OPERATOR_PAGES]:
        assert c.get(path).status_code == 200, path
    assert c.get(f"/console/batches/{mid}").status_code == 200
    assert mid in c.get("/console/batches").text
    assert mid not in c.get(f"/console/batches?account={mine.account_id}").text
    csrf = csrf_of(c, "/console/prices")
    data = {
        "csrf": csrf,
        "country": "ng",
        "level": "5",
        "price": "0.07",
        "cached_price": "0.01",
        "account": str(mine.account_id),
    }
    assert c.post("/console/prices", data=data).status_code == 303
    page = c.get(f"/console/prices?account={mine.account_id}").text
    assert "0.0700" in page and "0.0100" in page
    # businesses switched off from the console: the tenant's API key is refused at once
    csrf = csrf_of(c, "/console/accounts")
    r = c.post(f"/console/accounts/{mine.account_id}/businesses", data={"csrf": csrf, "whatsapp": "on"})
    assert r.status_code == 303
    with NxClient(srv.base_url, mine.access_key, mine.access_secret) as nx:
        assert nx.post("/api/number/check", {"appkey": mine.appkey, "phone": "2348031234567"})["code"] != 0
    bad = c.post("/console/prices", data=data | {"cached_price": "0.5"}, follow_redirects=True)
    assert "cache" in bad.text.lower() and bad.status_code == 200  # refused with the reason, shown
    c.close()


def test_every_form_needs_its_csrf_token(two: Any) -> None:
    srv, mine, _, _ = two
    c = signed_in(srv, "ops@example.com")
    for path, data in [
        ("/console/keys", {"account": str(mine.account_id)}),
        ("/console/apps", {"account": str(mine.account_id), "name": "x"}),
        (f"/console/keys/{mine.access_key}/disable", {}),
        (f"/console/apps/{mine.appkey}/callback", {"callback_url": "https://x.example/cb"}),
        (f"/console/apps/{mine.appkey}/secret", {}),
        ("/console/deliveries/retry", {"batch": "x"}),
        ("/console/accounts", {"name": "sneaky"}),
        (f"/console/accounts/{mine.account_id}/topup", {"amount": "5"}),
        (f"/console/accounts/{mine.account_id}/businesses", {"whatsapp": "on"}),
        ("/console/prices", {"country": "NG", "level": "1", "price": "0.5"}),
        ("/console/logout", {}),
    ]:
        for csrf in (None, "forged"):
            body = data | ({"csrf": csrf} if csrf else {})
            assert c.post(path, data=body).status_code == 403, (path, csrf)
    assert c.get("/console/").status_code == 200  # still signed in: logout without a token did nothing
    # the sign-in form has its own token
    fresh = httpx.Client(base_url=srv.base_url)
    OPEN.append(fresh)
    fresh.get("/console/login")
    r = fresh.post(
        "/console/login", data={"email": "ops@example.com", "password": PASSWORD, "csrf": "forged"}
    )
    assert r.status_code == 403


def test_sign_in_attempts_are_limited_and_disabled_users_are_out(two: Any) -> None:
    srv, _, _, _ = two
    c = signed_in(srv, "ann@acme.example")
    assert c.get("/console/").status_code == 200
    srv.call(lambda core: core.users.set_enabled("ann@acme.example", False))
    assert c.get("/console/", follow_redirects=False).status_code == 303  # the session ended
    guess = httpx.Client(base_url=srv.base_url)
    OPEN.append(guess)
    statuses = []
    for i in range(12):
        pre = re.search(r'name="csrf" value="([^"]+)"', guess.get("/console/login").text)
        assert pre is not None
        r = guess.post(
            "/console/login",
            data={"email": "ops@example.com", "password": f"guess {i}", "csrf": pre.group(1)},
        )
        statuses.append(r.status_code)
    # ten attempts a minute from one address (ann's sign-in above was the first), then 429
    assert statuses[:9] == [401] * 9 and statuses[9:] == [429, 429, 429]
    guess.close()
    c.close()
