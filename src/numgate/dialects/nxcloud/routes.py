"""The NXCloud endpoint table (spec §5): each path, its headers, its envelope and the core
operations it performs; mounted on the vendor dispatch (``web/wire.py``)."""

from __future__ import annotations

from collections.abc import Callable

from numgate.core import Core
from numgate.dialects.nxcloud import codes, integrator, numbercheck
from numgate.dialects.nxcloud.codes import Family
from numgate.dialects.nxcloud.door import Endpoint, serve_endpoint
from numgate.web.wire import Dispatch, Handler, Incoming, Refuse, Reply

INTEGRATOR_BASE = "/api/wa/integrator/embedded/register/"

#: integrator endpoint → the core operation it performs
INTEGRATOR_OPERATIONS = {
    "login": "whatsapp:signup",
    "createApp": "whatsapp:createApp",
    "phoneList": "whatsapp:listNumbers",
    "getCode": "whatsapp:requestCode",
    "checkCode": "whatsapp:verifyCode",
    "createClient": "whatsapp:register",
}


def endpoints() -> list[Endpoint]:
    nc = "numbercheck"
    eps = [
        Endpoint("/api/number/check", "1", nc, Family.SUBMIT, numbercheck.submit, ("numbercheck:submit",)),
        Endpoint(
            "/api/number/check/get", "1", nc, Family.CHECK_GET, numbercheck.check_get, ("numbercheck:check",)
        ),
        Endpoint("/api/number/query", "1", nc, Family.QUERY, numbercheck.query, ("numbercheck:query",)),
        # numgate's own (no NXCloud counterpart): every result after a cursor
        Endpoint("/api/number/results", "1", nc, Family.FEED, numbercheck.results, ("numbercheck:results",)),
    ]
    eps += [
        Endpoint(
            INTEGRATOR_BASE + name,
            "2",
            name,
            Family.INTEGRATOR,
            handler,
            (INTEGRATOR_OPERATIONS[name],),
            integrators_only=True,
        )
        for name, handler in integrator.HANDLERS.items()
    ]
    return eps


def refusal(family: Family) -> Refuse:
    """A refusal before authentication (a body too large): 1002 in the family's envelope."""

    def refuse(status: int, detail: str) -> Reply:
        code, text = codes.PARAMETER_ERROR
        body = codes.render(family, code, text, codes.FAILURE_DATA[family])
        return Reply(status, body, headers={"X-Numgate-Error-Detail": detail})

    return refuse


def add_nxcloud_routes(dispatch: Dispatch, core: Callable[[], Core]) -> None:
    def make(ep: Endpoint) -> Handler:
        async def endpoint(request: Incoming) -> Reply:
            return await serve_endpoint(core(), ep, request)

        return endpoint

    for ep in endpoints():
        dispatch.add(ep.path, ("POST",), make(ep), refusal(ep.family), "nxcloud")
