"""The console's pages: server-rendered HTML (Jinja2 templates shipped in the package), reading
and changing everything through the core's services — the same rules as the API and the CLI.

A tenant user sees their account only: every page and action passes their account to the
service, which refuses (404) anything of another account, whatever URL is typed. An operator sees
every account, with an optional ``?account=ID`` filter on the lists.
"""

from __future__ import annotations

import csv
import io
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from numgate.console.auth import Session, Sessions, SignInLimiter, csrf_ok
from numgate.console.charts import bars, mix_bars
from numgate.core import Core
from numgate.errors import InvalidParameter, InvalidRequest, NotFound, NumgateError, PermissionDenied
from numgate.ledger.money import parse_amount, to_decimal
from numgate.numbers.batches import BatchNumbers, NumberFilter, NumberRow, overview
from numgate.numbers.filecheck import result_cells
from numgate.numbers.results import Outcome
from numgate.tenancy.users import User

log = logging.getLogger("numgate.console")

PRE_COOKIE = "numgate_console_pre"
PAGE = 50

ENV = Environment(loader=PackageLoader("numgate.console", "templates"), autoescape=select_autoescape())


def _iso(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


ENV.filters["iso"] = _iso
ENV.filters["money"] = lambda v: str(to_decimal(int(v or 0)))


class Console:
    def __init__(self, core: Callable[[], Core]) -> None:
        self._core = core
        self._sessions: Sessions | None = None
        self.limiter = SignInLimiter()

    @property
    def core(self) -> Core:
        return self._core()

    @property
    def sessions(self) -> Sessions:
        if self._sessions is None:
            self._sessions = Sessions(self.core.vault.derive("console-session"))
        return self._sessions

    # plumbing ----------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        page = self._page
        action = self._action
        return [
            Mount(
                "/console",
                routes=[
                    Route("/", page(self.overview)),
                    Route("/login", self.login_form, methods=["GET"]),
                    Route("/login", self.login, methods=["POST"]),
                    Route("/logout", action(self.logout), methods=["POST"]),
                    Route("/batches", page(self.batches)),
                    Route("/batches.json", page(self.batches_json)),
                    Route("/batches/{mid}", page(self.batch)),
                    Route("/batches/{mid}/numbers.{fmt:str}", page(self.download)),
                    Route("/deliveries", page(self.deliveries)),
                    Route("/deliveries/retry", action(self.retry), methods=["POST"]),
                    Route("/money", page(self.money)),
                    Route("/keys", page(self.keys)),
                    Route("/keys", action(self.create_key), methods=["POST"]),
                    Route("/keys/{ak}/{verb:str}", action(self.key_enabled), methods=["POST"]),
                    Route("/apps", action(self.create_app), methods=["POST"]),
                    Route("/apps/{appkey}/callback", action(self.set_callback), methods=["POST"]),
                    Route("/apps/{appkey}/secret", action(self.rotate_secret), methods=["POST"]),
                    Route("/whatsapp", page(self.whatsapp)),
                    Route("/accounts", page(self.accounts, operator=True)),
                    Route("/accounts", action(self.create_account, operator=True), methods=["POST"]),
                    Route("/accounts/{aid:int}/topup", action(self.topup, operator=True), methods=["POST"]),
                    Route(
                        "/accounts/{aid:int}/businesses",
                        action(self.businesses, operator=True),
                        methods=["POST"],
                    ),
                    Route("/prices", page(self.prices)),
                    Route("/prices", action(self.set_price, operator=True), methods=["POST"]),
                    Route("/upstreams", page(self.upstreams, operator=True)),
                    Mount("/static", StaticFiles(packages=[("numgate.console", "static")]), name="static"),
                ],
            )
        ]

    async def _user(self, request: Request) -> tuple[User, Session] | None:
        session = self.sessions.read(request)
        if session is None:
            return None
        try:
            user = await self.core.users.get(session.user_id)
        except NotFound:
            return None
        return (user, session) if user.enabled else None

    def _page(
        self, handler: Callable[..., Awaitable[Response]], operator: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            who = await self._user(request)
            if who is None:
                if request.url.path.endswith(".json"):
                    return JSONResponse({"error": "signed out"}, status_code=401)
                return RedirectResponse(f"/console/login?{urlencode({'next': request.url.path})}", 303)
            user, session = who
            if operator and not user.is_operator:
                return self._error(request, user, session, 404, "Not found")
            try:
                return await handler(request, user, session)
            except (NotFound, PermissionDenied) as exc:
                return self._error(request, user, session, 404, str(exc))
            except InvalidRequest as exc:
                return self._error(request, user, session, 400, str(exc))

        return endpoint

    def _action(
        self, handler: Callable[..., Awaitable[Response]], operator: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            who = await self._user(request)
            if who is None:
                return RedirectResponse("/console/login", 303)
            user, session = who
            form = await request.form()
            if not csrf_ok(session, str(form.get("csrf") or "")):
                return self._error(
                    request,
                    user,
                    session,
                    403,
                    "This form has expired or did not come from the console: reload the page and try again",
                )
            if operator and not user.is_operator:
                return self._error(request, user, session, 404, "Not found")
            try:
                return await handler(request, user, session, form)
            except (NotFound, PermissionDenied) as exc:  # another account's: as if it did not exist
                return self._error(request, user, session, 404, str(exc))
            except NumgateError as exc:
                return _back(request, error=str(exc))

        return endpoint

    def render(
        self,
        name: str,
        request: Request,
        user: User | None,
        session: Session | None,
        status: int = 200,
        **ctx: Any,
    ) -> HTMLResponse:
        html = ENV.get_template(name).render(
            user=user,
            csrf=session.csrf if session else "",
            path=request.url.path,
            query=request.query_params,
            sandbox=self.core.settings.sandbox,
            msg=request.query_params.get("msg"),
            error=request.query_params.get("error"),
            **ctx,
        )
        return HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)

    def _error(
        self, request: Request, user: User, session: Session, status: int, message: str
    ) -> HTMLResponse:
        return self.render(
            "error.html", request, user, session, status=status, status_code=status, message=message
        )

    @staticmethod
    def scope(request: Request, user: User) -> int | None:
        """The account a page shows: a tenant's own; an operator's ``?account=`` (None: all)."""
        if not user.is_operator:
            return user.account_id
        raw = request.query_params.get("account", "")
        return int(raw) if raw.isdigit() else None

    # sign-in -----------------------------------------------------------------------------------

    async def login_form(self, request: Request, error: str | None = None, status: int = 200) -> Response:
        token = secrets.token_urlsafe(24)
        resp = self.render(
            "login.html", request, None, None, status=status, pre=token, login_error=error,
            next=request.query_params.get("next", "/console/"),
        )  # fmt: skip
        resp.set_cookie(PRE_COOKIE, token, max_age=3600, path="/console", httponly=True, samesite="lax")
        return resp

    async def login(self, request: Request) -> Response:
        form = await request.form()
        pre = request.cookies.get(PRE_COOKIE, "")
        if not pre or not secrets.compare_digest(pre, str(form.get("csrf") or "")):
            return await self.login_form(request, "The sign-in form expired: please try again", 403)
        email, password = str(form.get("email") or ""), str(form.get("password") or "")
        address = request.client.host if request.client else "?"
        if not self.limiter.allow(address, email):
            return await self.login_form(
                request, "Too many sign-in attempts: wait a minute and try again", 429
            )
        user = await self.core.users.authenticate(email, password)
        if user is None:
            return await self.login_form(request, "Wrong email or password, or the user is disabled", 401)
        target = str(form.get("next") or "/console/")
        if not target.startswith("/console/") or target.startswith("//"):
            target = "/console/"
        resp = RedirectResponse(target, 303)
        self.sessions.start(resp, request, user)
        resp.delete_cookie(PRE_COOKIE, path="/console")
        return resp

    async def logout(self, request: Request, user: User, session: Session, form: Any) -> Response:
        resp = RedirectResponse("/console/login", 303)
        self.sessions.end(resp)
        return resp

    # tenant pages ------------------------------------------------------------------------------

    async def overview(self, request: Request, user: User, session: Session) -> Response:
        core = self.core
        account = self.scope(request, user)
        now = core.clock.time_ms()
        ov = await overview(core.db, account, now)
        today = now // 86_400_000
        per_day = [(day, ov.per_day.get(day, 0)) for day in range(today - 29, today + 1)]
        cb = ov.callbacks
        sent = cb.get("delivered", 0) + cb.get("failed", 0)
        balances = await core.ledger.balances(account) if account is not None else []
        return self.render(
            "overview.html",
            request,
            user,
            session,
            account=account,
            today=ov.per_day.get(today, 0),
            month=sum(ov.per_day.values()),
            chart=bars([(datetime.fromtimestamp(d * 86400, UTC).strftime("%m-%d"), n) for d, n in per_day]),
            mix=mix_bars(ov.outcomes),
            validity=mix_bars(ov.validity, label="valid and invalid numbers"),
            reachable=mix_bars(ov.reachable, label="HLR reachability"),
            types=mix_bars(ov.number_type, label="number types"),
            sampled=ov.sampled,
            by_country_type=sorted(ov.by_country_type.items(), key=lambda kv: -sum(kv[1].values())),
            type_names=[
                *[
                    k
                    for k in ("valid", "invalid", "reachable", "unreachable")
                    if k in ov.validity or k in ov.reachable
                ],
                *sorted(ov.number_type, key=lambda k: -ov.number_type[k]),
            ],
            by_country=sorted(ov.by_country.items(), key=lambda kv: -sum(kv[1].values())),
            callbacks=cb,
            success=(100 * cb.get("delivered", 0) / sent) if sent else None,
            waiting=cb.get("pending", 0) + cb.get("in-flight", 0),
            failed=cb.get("failed", 0),
            balances=balances,
        )

    async def batches(self, request: Request, user: User, session: Session) -> Response:
        account = self.scope(request, user)
        rows = await self.core.batches.recent(account, limit=100)
        return self.render(
            "batches.html",
            request,
            user,
            session,
            account=account,
            batches=[_progress(b, self.core.clock.time_ms()) for b in rows],
        )

    async def batches_json(self, request: Request, user: User, session: Session) -> Response:
        account = self.scope(request, user)
        mid = request.query_params.get("mid")
        if mid:
            rows = [await self.core.batches.get(mid, None if user.is_operator else user.account_id)]
        else:
            rows = await self.core.batches.recent(account, limit=100)
        now = self.core.clock.time_ms()
        return JSONResponse([_progress(b, now) for b in rows], headers={"Cache-Control": "no-store"})

    def _filter(self, request: Request) -> NumberFilter:
        q = request.query_params

        def pick(name: str, allowed: set[str]) -> str | None:
            v = q.get(name, "")
            return v if v in allowed else None

        outcome = q.get("outcome", "")
        return NumberFilter(
            outcome=Outcome[outcome.upper()] if outcome.upper() in Outcome.__members__ else None,
            validity=pick("validity", {"YES", "NO", "UNKNOWN"}),
            reachable=pick("reachable", {"YES", "NO", "UNKNOWN"}),
            number_type=q.get("type") or None,
            carrier=q.get("carrier") or None,
        )

    async def batch(self, request: Request, user: User, session: Session) -> Response:
        mid = request.path_params["mid"]
        tenant = None if user.is_operator else user.account_id
        progress = await self.core.batches.get(mid, tenant)
        reader = BatchNumbers(self.core.db)
        bid = await reader.batch_id(mid, tenant)
        f = self._filter(request)
        after = request.query_params.get("after", "0")
        rows, next_after = await reader.page(bid, f, after=int(after) if after.isdigit() else 0, limit=PAGE)
        params = {k: v for k, v in request.query_params.items() if k != "after" and v}
        return self.render(
            "batch.html",
            request,
            user,
            session,
            b=_progress(progress, self.core.clock.time_ms()),
            rows=[_number(r) for r in rows],
            next_url=f"?{urlencode(params | {'after': next_after})}" if next_after else None,
            filter_query=urlencode(params),
            outcomes=[o.name.lower() for o in Outcome],
        )

    async def download(self, request: Request, user: User, session: Session) -> Response:
        mid, fmt = request.path_params["mid"], request.path_params["fmt"]
        if fmt not in ("csv", "ndjson"):
            raise NotFound(f"no download format {fmt!r}: csv or ndjson")
        tenant = None if user.is_operator else user.account_id
        reader = BatchNumbers(self.core.db)
        bid = await reader.batch_id(mid, tenant)
        rows = reader.scan(bid, self._filter(request))
        if fmt == "csv":
            body: AsyncIterator[bytes] = _csv(rows)
            media = "text/csv; charset=utf-8"
        else:
            body = _ndjson(rows)
            media = "application/x-ndjson"
        return StreamingResponse(
            body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{mid}.{fmt}"'}
        )

    async def deliveries(self, request: Request, user: User, session: Session) -> Response:
        account = self.scope(request, user)
        status = request.query_params.get("status") or None
        rows = await self.core.deliveries.recent(
            account_id=account, status=status, batch=request.query_params.get("batch") or None, limit=200
        )
        return self.render(
            "deliveries.html", request, user, session, rows=rows, filter_status=status or "", account=account
        )

    async def retry(self, request: Request, user: User, session: Session, form: Any) -> Response:
        account = None if user.is_operator else user.account_id
        uid, batch = str(form.get("delivery") or ""), str(form.get("batch") or "")
        n = await self.core.deliveries.retry([uid] if uid else None, batch=batch or None, account_id=account)
        return _back(request, msg=f"{n} callback(s) queued to be sent again")

    async def money(self, request: Request, user: User, session: Session) -> Response:
        account = self.scope(request, user)
        if account is None:
            return await self._pick_account(request, user, session, "the statement")
        lines = await self.core.ledger.statement(account, limit=1000)
        balances = await self.core.ledger.balances(account)
        return self.render(
            "money.html",
            request,
            user,
            session,
            lines=list(reversed(lines)),
            balances=balances,
            account=account,
        )

    async def keys(
        self, request: Request, user: User, session: Session, created: Any = None, secret: str | None = None
    ) -> Response:
        account = self.scope(request, user)
        if account is None:
            return await self._pick_account(request, user, session, "keys and apps")
        keys = await self.core.tenancy.list_keys(account)
        apps = await self.core.tenancy.list_apps(account)
        return self.render(
            "keys.html",
            request,
            user,
            session,
            keys=keys,
            apps=apps,
            account=account,
            created=created,
            secret=secret,
        )

    def _owned_account(self, user: User, form: Any) -> int:
        if not user.is_operator:
            assert user.account_id is not None
            return user.account_id
        raw = str(form.get("account") or "")
        if not raw.isdigit():
            raise NotFound("choose an account")
        return int(raw)

    async def create_key(self, request: Request, user: User, session: Session, form: Any) -> Response:
        account = self._owned_account(user, form)
        creds = await self.core.tenancy.create_key(account)
        # the secret is shown once, on this page, never again
        return await self.keys(
            _with_account(request, account, user),
            user,
            session,
            created=creds.access_key,
            secret=creds.access_secret,
        )

    async def key_enabled(self, request: Request, user: User, session: Session, form: Any) -> Response:
        ak, verb = request.path_params["ak"], request.path_params["verb"]
        if verb not in ("enable", "disable"):
            raise NotFound("no such action")
        keys = await self.core.tenancy.list_keys(None if user.is_operator else user.account_id)
        if not any(k.access_key == ak for k in keys):
            raise NotFound(f"no access key {ak}")
        await self.core.tenancy.set_key_enabled(ak, verb == "enable")
        return _back(request, msg=f"{ak} {verb}d")

    async def create_app(self, request: Request, user: User, session: Session, form: Any) -> Response:
        account = self._owned_account(user, form)
        name = str(form.get("name") or "").strip()
        url = str(form.get("callback_url") or "").strip() or None
        app = await self.core.tenancy.create_app(account, name, url)
        return _back(request, msg=f"app {app.name} created: appkey {app.appkey}")

    async def _app(self, user: User, appkey: str) -> Any:
        if user.is_operator:
            app = await self.core.tenancy.find_app(appkey)
            if app is None:
                raise NotFound(f"no app {appkey}")
            return app
        assert user.account_id is not None
        return await self.core.tenancy.app_of(user.account_id, appkey)

    async def set_callback(self, request: Request, user: User, session: Session, form: Any) -> Response:
        app = await self._app(user, request.path_params["appkey"])
        url = str(form.get("callback_url") or "").strip() or None
        await self.core.tenancy.set_callback_url(app.appkey, url)
        return _back(request, msg=f"callback URL of {app.name} set")

    async def rotate_secret(self, request: Request, user: User, session: Session, form: Any) -> Response:
        app = await self._app(user, request.path_params["appkey"])
        secret = await self.core.tenancy.rotate_app_secret(app.appkey)
        return await self.keys(
            _with_account(request, app.account_id, user),
            user,
            session,
            created=f"callback secret of {app.name}",
            secret=secret,
        )

    async def whatsapp(self, request: Request, user: User, session: Session) -> Response:
        from numgate.waba.simulator import read_outbox

        account = self.scope(request, user)
        numbers = await self.core.waba.list_numbers(account)
        outbox = []
        if self.core.settings.sandbox:
            mine = {n.phone for n in numbers}
            outbox = [
                m
                for m in await read_outbox(self.core.db, None, 200)
                if (user.is_operator and account is None) or m.phone in mine
            ]
        return self.render("whatsapp.html", request, user, session, numbers=numbers, outbox=outbox)

    async def prices(self, request: Request, user: User, session: Session) -> Response:
        account = self.scope(request, user)
        rows = (
            await self.core.ledger.list_prices(account_id=account)
            if account is not None or user.is_operator
            else []
        )
        return self.render("prices.html", request, user, session, prices=rows, account=account)

    # operator pages ----------------------------------------------------------------------------

    async def set_price(self, request: Request, user: User, session: Session, form: Any) -> Response:
        account = str(form.get("account") or "").strip()
        cached = str(form.get("cached_price") or "").strip()
        level = str(form.get("level") or "")
        if not level.isdigit():
            raise InvalidParameter("level", "the level is 1, 4 or 5")
        price = await self.core.ledger.set_price(
            country=str(form.get("country") or "").strip().upper(),
            level=int(level),
            price=parse_amount(str(form.get("price") or ""), field="price"),
            currency=str(form.get("currency") or "USD"),
            account_id=int(account) if account.isdigit() else 0,
            cached_price=parse_amount(cached, field="cached price") if cached else None,
        )
        return _back(request, msg=f"price set: {price.country} level {price.level}")

    async def _pick_account(self, request: Request, user: User, session: Session, what: str) -> Response:
        """An operator's page that shows one account's data, asked without ``?account=``."""
        accounts = await self.core.tenancy.list_accounts()
        return self.render("pick_account.html", request, user, session, accounts=accounts, what=what)

    async def accounts(
        self,
        request: Request,
        user: User,
        session: Session,
        created: str | None = None,
        secret: str | None = None,
    ) -> Response:
        rows = []
        for acct, keys, apps in await self.core.tenancy.list_accounts():
            rows.append((acct, keys, apps, await self.core.ledger.balances(acct.id)))
        return self.render(
            "accounts.html", request, user, session, accounts=rows, created=created, secret=secret
        )

    async def create_account(self, request: Request, user: User, session: Session, form: Any) -> Response:
        _, creds = await self.core.tenancy.create_account(
            str(form.get("name") or ""),
            integrator=bool(form.get("integrator")),
            number_check=bool(form.get("number_check")),
            whatsapp=bool(form.get("whatsapp")),
        )
        # its first key's secret is shown once, here
        return await self.accounts(
            request, user, session, created=creds.access_key, secret=creds.access_secret
        )

    async def topup(self, request: Request, user: User, session: Session, form: Any) -> Response:
        aid = int(request.path_params["aid"])
        amount = parse_amount(str(form.get("amount") or ""))
        await self.core.ledger.topup(aid, amount, str(form.get("currency") or "USD"))
        return _back(request, msg=f"account {aid} topped up")

    async def businesses(self, request: Request, user: User, session: Session, form: Any) -> Response:
        aid = int(request.path_params["aid"])
        a = await self.core.tenancy.set_businesses(
            aid,
            integrator=bool(form.get("integrator")),
            number_check=bool(form.get("number_check")),
            whatsapp=bool(form.get("whatsapp")),
        )
        return _back(request, msg=f"account {a.id}'s businesses saved")

    async def upstreams(self, request: Request, user: User, session: Session) -> Response:
        ups = await self.core.upstreams.accounts()
        serving = await self.core.upstreams.serving()  # the routes, with the sandbox's fallback
        return self.render("upstreams.html", request, user, session, upstreams=ups, serving=serving)


_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _back(request: Request, **flash: str) -> Response:
    ref = request.headers.get("referer", "")
    path = "/console/"
    if ref:
        parts = urlsplit(ref)
        if parts.path.startswith("/console/") and parts.netloc == request.url.netloc:
            keep = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("msg", "error")]
            return RedirectResponse(f"{parts.path}?{urlencode(keep + list(flash.items()))}", 303)
    return RedirectResponse(f"{path}?{urlencode(flash)}", 303)


def _with_account(request: Request, account: int, user: User) -> Request:
    if not user.is_operator:
        return request
    scope = dict(request.scope)
    scope["query_string"] = urlencode({"account": account}).encode()
    return Request(scope)


def _progress(b: Any, now_ms: int) -> dict[str, Any]:
    out = b.to_json()
    elapsed = ((b.finished_ms or now_ms) - b.created_ms) / 1000
    rate = b.done / elapsed if elapsed > 0 else 0.0
    out["percent"] = int(100 * b.done / b.total) if b.total else 100
    out["rate"] = round(rate, 1)
    out["eta_ms"] = None if b.complete or rate <= 0 else int(now_ms + (b.total - b.done) / rate * 1000)
    out["created"] = _iso(b.created_ms)
    out["finished"] = _iso(b.finished_ms)
    out["eta"] = _iso(out["eta_ms"])
    return out


COLUMNS = ["message_id", "phone", "outcome", "valid", "region", "e164", "number_type", "carrier",
           "validity", "reachable", "roaming", "ported", "network", "early", "answered", "response",
           "source", "cost", "done_at"]  # fmt: skip


def _number(r: NumberRow) -> dict[str, Any]:
    """A batch row: ``numgate check FILE``'s result cells, plus what a stored number adds."""
    cells = result_cells(r.result, "")
    basic = r.result.basic if r.result else None
    row = {c: cells.get(c, "") for c in COLUMNS}
    row.update(
        message_id=r.message_id,
        phone=r.phone,
        outcome=r.outcome.name.lower() if r.outcome is not None else "pending",
        valid="" if basic is None else ("yes" if basic.valid else "no"),
        cost=str(to_decimal(r.cost)) if r.cost is not None else "",
        done_at=_iso(r.done_ms),
    )
    return row


async def _csv(rows: AsyncIterator[NumberRow]) -> AsyncIterator[bytes]:
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS)
    w.writeheader()
    n = 0
    async for r in rows:
        w.writerow(_number(r))
        n += 1
        if n % 1000 == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()


async def _ndjson(rows: AsyncIterator[NumberRow]) -> AsyncIterator[bytes]:
    chunk: list[bytes] = []
    async for r in rows:
        chunk.append(orjson.dumps(_number(r)) + b"\n")
        if len(chunk) >= 1000:
            yield b"".join(chunk)
            chunk = []
    yield b"".join(chunk)
