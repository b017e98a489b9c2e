"""``GET /metrics``: Prometheus text, for a scraper numgate lets in.

With ``NUMGATE_METRICS_TOKEN`` set, a scrape must send ``Authorization: Bearer <token>``
(401 otherwise). Without a token, ``/metrics`` is served only while numgate listens on a
loopback address (the default, 127.0.0.1); on any other bind it answers 404 and says how to turn
it on — the series name customers' traffic and money, not for the internet to read.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from numgate.core import Core
from numgate.errors import Unavailable
from numgate.metrics import DatabaseGauges, registry
from numgate.settings import Settings
from numgate.web.wire import error_body


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Families:
    def __init__(self, families: list[Any]) -> None:
        self._families = families

    def collect(self) -> list[Any]:
        return self._families


def metrics_routes(core: Callable[[], Core], settings: Settings) -> list[Route]:
    gauges: list[DatabaseGauges] = []

    async def scrape(request: Request) -> Response:
        token = settings.metrics_token
        if token:
            sent = request.headers.get("authorization", "")
            scheme, _, value = sent.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
                return JSONResponse(
                    error_body(401, "send Authorization: Bearer <NUMGATE_METRICS_TOKEN> to read /metrics"),
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="numgate metrics"'},
                )
        elif not is_loopback(settings.host):
            return JSONResponse(
                error_body(
                    404,
                    f"/metrics is off: numgate listens on {settings.host}, not a loopback address; set "
                    "NUMGATE_METRICS_TOKEN to serve it to scrapers that send that token",
                ),
                status_code=404,
            )
        if not gauges:
            gauges.append(DatabaseGauges(core().db))
        text = generate_latest(registry())
        try:
            db = CollectorRegistry(auto_describe=False)
            db.register(_Families(await gauges[0].families()))  # type: ignore[arg-type]
            text += generate_latest(db)
        except Unavailable:  # the process series still tell what happened; /healthz says why
            pass
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    return [Route("/metrics", scrape, methods=["GET"])]
