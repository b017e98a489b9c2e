"""The embedded sign-up page an integrator's ``login`` token opens: the customer picks one of the
integrator's apps and attaches a WhatsApp number with its display name.

In sandbox mode this stands in for Meta's embedded sign-up; with the Meta upstream it attaches
the number to the configured WhatsApp Business Account through the Graph API."""

from __future__ import annotations

import html
from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from numgate.core import Core
from numgate.errors import NumgateError

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>numgate — attach a WhatsApp number</title>
<style>body{{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem}}
label{{display:block;margin:.8rem 0 .2rem}}input,select{{width:100%;padding:.4rem}}
.err{{color:#a00}}.ok{{color:#070}}button{{margin-top:1rem;padding:.5rem 1.2rem}}</style></head>
<body><h1>Attach a WhatsApp number</h1>{body}</body></html>"""


def _page(body: str, status: int = 200) -> Response:
    return HTMLResponse(PAGE.format(body=body), status_code=status)


def _error(message: str, status: int = 400) -> Response:
    return _page(f'<p class="err">{html.escape(message)}</p>', status)


async def _form(core: Core, token: str, problem: str | None = None) -> Response:
    account_id = core.waba_signup.account_of(token)
    apps = await core.tenancy.list_apps(account_id)
    if not apps:
        return _error("Your integrator has no app yet: it must create one (createApp) first.", 409)
    options = "".join(
        f'<option value="{html.escape(a.appkey)}">{html.escape(a.name)} ({html.escape(a.appkey)})</option>'
        for a in apps
    )
    err = f'<p class="err">{html.escape(problem)}</p>' if problem else ""
    mode = "sandbox: no message is sent to Meta" if core.settings.sandbox else "live upstream"
    return _page(
        f"""{err}<form method="post" action="/signup">
<input type="hidden" name="token" value="{html.escape(token)}">
<label for="app">App</label><select id="app" name="appkey">{options}</select>
<label for="phone">Phone number, with country code</label>
<input id="phone" name="phone_number" placeholder="+86 138 0000 1234" required>
<label for="name">Display name (verified name)</label>
<input id="name" name="verified_name" required maxlength="200">
<button type="submit">Attach number</button></form><p><small>{mode}</small></p>""",
        400 if problem else 200,
    )


def signup_routes(core: Callable[[], Core]) -> list[Route]:
    async def show(request: Request) -> Response:
        token = request.query_params.get("token", "")
        if not token:
            return _error("This page needs the sign-up link your integrator gave you (it carries a token).")
        try:
            return await _form(core(), token)
        except NumgateError as exc:
            return _error(str(exc))

    async def submit(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        token = form.get("token", "")
        c = core()
        try:
            account_id = c.waba_signup.account_of(token)
        except NumgateError as exc:
            return _error(str(exc))
        try:
            number = await c.waba.add_number(
                account_id,
                form.get("appkey", ""),
                form.get("phone_number", ""),
                form.get("verified_name", ""),
            )
        except NumgateError as exc:
            return await _form(c, token, str(exc))
        done = f"+{number.phone} ({number.verified_name}) is attached to {number.app_name}."
        return _page(
            f'<p class="ok">{html.escape(done)}</p>'
            "<p>Your integrator can now request its verification code.</p>"
        )

    return [Route("/signup", show, methods=["GET"]), Route("/signup", submit, methods=["POST"])]
