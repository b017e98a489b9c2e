"""Authentication (spec nxcloud.md §1) and dispatch for every NXCloud endpoint."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from numgate.core import Core
from numgate.dialects.nxcloud import codes
from numgate.dialects.nxcloud.codes import Family
from numgate.dialects.nxcloud.signing import ALGORITHMS, accepted_signs
from numgate.errors import NotIntegrator, NumgateError, Unavailable
from numgate.replay import Done, ReplayMismatch
from numgate.tenancy.service import KeyGrant
from numgate.web.wire import Incoming
from numgate.web.wire import Reply as HttpReply

log = logging.getLogger("numgate.nxcloud")

WINDOW_MS = 60_000
#: a ts of more digits than this is no millisecond time (and would be a huge integer)
TS_DIGITS = 16
REQUIRED_HEADERS = ("accesskey", "ts", "biztype", "action", "sign")
#: what the X-Numgate-Error-Detail header says when a dependency is down (never a driver's text)
UNAVAILABLE_DETAIL = "numgate cannot reach its {dependency} right now; retry in a few seconds"


@dataclass(frozen=True)
class Reply:
    code: int
    message: str
    data: Any


Handler = Callable[[Core, KeyGrant, dict[str, Any]], Awaitable[Reply]]


@dataclass(frozen=True)
class Endpoint:
    path: str
    biz_type: str
    action: str
    family: Family
    handler: Handler
    #: the core operations it performs (tenancy/operations.py): the business switch, the key's
    #: allow-list and the rate limit apply to them
    operations: tuple[str, ...]
    #: only integrator accounts may call it (NXCloud 9007 otherwise)
    integrators_only: bool = False


def _json(body: bytes, detail: str | None = None) -> HttpReply:
    return HttpReply(200, body, headers={"X-Numgate-Error-Detail": detail} if detail else None)


def _auth_failure(ep: Endpoint, code: tuple[int, str], detail: str, state: dict[str, Any]) -> HttpReply:
    state["code"] = code[0]
    return _json(codes.render(ep.family, code[0], code[1], None), detail)


def _unavailable(ep: Endpoint, exc: Unavailable, state: dict[str, Any]) -> HttpReply:
    c = codes.code_for(ep.family, exc)
    state["code"] = c.code
    return _json(
        codes.render(ep.family, c.code, c.text, codes.FAILURE_DATA[ep.family]),
        UNAVAILABLE_DETAIL.format(dependency=exc.dependency),
    )


async def serve_endpoint(core: Core, ep: Endpoint, request: Incoming) -> HttpReply:
    """Authenticate in the spec's order (1001, 1004, 1005, 1003, 1002, 1005), then run once. A
    dependency that is down (database, Redis) is the family's "system error", whatever the step."""
    try:
        return await _serve(core, ep, request)
    except Unavailable as exc:
        return _unavailable(ep, exc, request.state)


async def _serve(core: Core, ep: Endpoint, request: Incoming) -> HttpReply:
    headers = request.headers
    raw = request.body
    state = request.state

    values = {name: headers.get(name, "").strip() for name in REQUIRED_HEADERS}
    missing = [n for n in ("accessKey", "ts", "bizType", "action", "sign") if not values[n.lower()]]
    if missing:
        return _auth_failure(ep, codes.MISSING_PARAMETERS, f"missing header(s): {', '.join(missing)}", state)

    ts = values["ts"]
    now_ms = core.clock.time_ms()
    if not (ts.isascii() and ts.isdigit() and len(ts) <= TS_DIGITS):
        return _auth_failure(
            ep, codes.TIMESTAMP_EXPIRED, "ts must be the client time in milliseconds (ASCII digits)", state
        )
    if abs(now_ms - int(ts)) > WINDOW_MS:
        what = f"ts differs from server time by {abs(now_ms - int(ts))} ms (allowed: {WINDOW_MS})"
        return _auth_failure(ep, codes.TIMESTAMP_EXPIRED, what, state)

    access_key = values["accesskey"]
    grant = await core.tenancy.grant(access_key)
    if grant is None or grant.refusal is not None:
        why = "unknown access key" if grant is None else grant.refusal
        return _auth_failure(ep, codes.INSUFFICIENT_PERMISSIONS, why or "", state)
    state["account"] = grant.account.id

    algorithm = headers.get("algorithm", "md5").strip().lower() or "md5"
    if algorithm not in ALGORITHMS:
        return _auth_failure(
            ep, codes.PARAMETER_ERROR, f"unknown algorithm {algorithm!r}: use md5 or sha256", state
        )
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    sign = values["sign"].lower()
    expected = accepted_signs(
        access_key, values["biztype"], values["action"], ts, raw, grant.secret, algorithm
    )
    if not any(hmac.compare_digest(e.encode(), sign.encode()) for e in expected):
        return _auth_failure(ep, codes.INVALID_SIGNATURE, "the signature does not match this request", state)
    if content_type != "application/json":
        return _auth_failure(ep, codes.INVALID_SIGNATURE, "Content-Type must be application/json", state)

    if values["biztype"] != ep.biz_type or values["action"] != ep.action:
        return _auth_failure(
            ep, codes.PARAMETER_ERROR, f"{ep.path} takes bizType {ep.biz_type} and action {ep.action}", state
        )
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        return _auth_failure(ep, codes.PARAMETER_ERROR, "the body is not valid JSON", state)
    if body == []:  # an empty array: no parameters, like an empty body (docs/nxcloud.md)
        body = {}
    if not isinstance(body, dict):
        return _auth_failure(ep, codes.PARAMETER_ERROR, "the body must be a JSON object", state)

    state["code"] = "replayed"

    async def run() -> Done:
        reply, executed = await _execute(core, ep, grant, body)
        state["code"] = reply.code
        return Done(codes.render(ep.family, reply.code, reply.message, reply.data), remember=executed)

    # a replay inside the window gets the first reply (the work is never done twice); the same
    # signature sent to another endpoint is refused
    try:
        reply_bytes = await core.replay.once(
            f"nx:{access_key}:{sign}", 2 * WINDOW_MS / 1000, f"{request.method} {request.path}", run
        )
    except ReplayMismatch:
        return _auth_failure(
            ep, codes.INVALID_SIGNATURE, "this signature was already used for another endpoint", state
        )
    return _json(reply_bytes)


async def _execute(core: Core, ep: Endpoint, grant: KeyGrant, body: dict[str, Any]) -> tuple[Reply, bool]:
    """The reply, and whether it is remembered for replays (refusals before the work are not)."""
    try:
        await core.admission.admit(grant, *ep.operations)
        if ep.integrators_only and not grant.account.integrator:
            raise NotIntegrator("only integrator accounts may call the integrator endpoints")
    except Unavailable:
        raise
    except NumgateError as exc:
        return _failure(ep, exc), False
    try:
        return await ep.handler(core, grant, body), True
    except Unavailable:
        raise
    except NumgateError as exc:
        return _failure(ep, exc), True
    except Exception as exc:  # a bug: log it, answer in the envelope, never a traceback
        log.exception("unhandled error on %s", ep.path)
        c = codes.code_for(ep.family, exc)
        return Reply(c.code, c.text, codes.FAILURE_DATA[ep.family]), True


def _failure(ep: Endpoint, exc: NumgateError) -> Reply:
    c = codes.code_for(ep.family, exc)
    return Reply(c.code, c.message(exc), codes.FAILURE_DATA[ep.family])
