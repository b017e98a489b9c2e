"""The NXCloud endpoint table (spec §5) mounted as Starlette routes."""

from __future__ import annotations

from collections.abc import Callable

from numgate.core import Core
from numgate.dialects.nxcloud import integrator, numbercheck
from numgate.dialects.nxcloud.codes import Family
from numgate.dialects.nxcloud.door import Endpoint, serve_endpoint
from numgate.web.wire import Dispatch, Handler, Incoming, Reply

INTEGRATOR_BASE = "/api/wa/integrator/embedded/register/"


def endpoints() -> list[Endpoint]:
    eps = [
        Endpoint(
            "/api/number/check", "1", "numbercheck", Family.SUBMIT, numbercheck.submit, "numbercheck:submit"
        ),
        Endpoint(
            "/api/number/check/get",
            "1",
            "numbercheck",
            Family.CHECK_GET,
            numbercheck.check_get,
            "numbercheck:get",
        ),
        Endpoint(
            "/api/number/query", "1", "numbercheck", Family.QUERY, numbercheck.query, "numbercheck:query"
        ),
    ]
    eps += [
        Endpoint(
            INTEGRATOR_BASE + name, "2", name, Family.INTEGRATOR, handler, f"wa:{name}", integrators_only=True
        )
        for name, handler in integrator.HANDLERS.items()
    ]
    return eps


def add_nxcloud_routes(dispatch: Dispatch, core: Callable[[], Core]) -> None:
    def make(ep: Endpoint) -> Handler:
        async def endpoint(request: Incoming) -> Reply:
            return await serve_endpoint(core(), ep, request)

        return endpoint

    for ep in endpoints():
        dispatch.add(ep.path, ("POST",), make(ep))
