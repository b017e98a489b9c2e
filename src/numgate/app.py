"""Builds the ASGI application: mounts the doors, opens the core, starts in-process workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from numgate import __version__
from numgate.clock import Clock
from numgate.core import Core
from numgate.errors import Unavailable
from numgate.gateway import open_gateway
from numgate.logs import AccessLog
from numgate.outages import OUTAGES
from numgate.settings import Settings
from numgate.web.wire import INTERNAL_ERROR, Dispatch, error_body, not_allowed

log = logging.getLogger("numgate.app")


class NumgateApp:
    """The ASGI app. ``core`` is available once the lifespan has started."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        on_core: Callable[[Core], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.core: Core | None = None
        #: which upstream serves which level (known once started): printed, and in /healthz
        self.serving: dict[str, Any] = {}
        self._on_core = on_core
        self._workers: Any = None
        #: when the server began to stop (the drain budget counts from there)
        self._stopping_since: float | None = None
        self._starlette = Starlette(
            routes=self._routes(),
            lifespan=self._lifespan,
            exception_handlers={404: _not_found, 405: _not_allowed, 500: _internal},
        )
        self._dispatch = self._doors(Dispatch(self._starlette, settings.max_body))
        self._asgi = AccessLog(self._dispatch, enabled=settings.access_log)

    def _doors(self, dispatch: Dispatch) -> Dispatch:
        """The vendor endpoints, dispatched ahead of Starlette (see ``web/wire.py``)."""
        from numgate.dialects.cams.door import add_cams_routes
        from numgate.dialects.nxcloud.routes import add_nxcloud_routes

        add_nxcloud_routes(dispatch, self._require_core)
        add_cams_routes(dispatch, self._require_core)
        return dispatch

    def _routes(self) -> list[BaseRoute]:
        from numgate.console.pages import Console
        from numgate.web.metrics import metrics_routes
        from numgate.web.signup import signup_routes
        from numgate.web.upstream_events import upstream_event_routes

        routes: list[BaseRoute] = [Route("/healthz", self._healthz, methods=["GET"])]
        routes += metrics_routes(self._require_core, self.settings)
        routes += upstream_event_routes(self._require_core)
        routes += signup_routes(self._require_core)
        routes += Console(self._require_core).routes()
        return routes

    def oversize_response(self, path: str) -> bytes:
        """The 413 answer the server sends itself for a body declared over NUMGATE_MAX_BODY."""
        return self._dispatch.oversize_response(path)

    def _require_core(self) -> Core:
        if self.core is None:  # pragma: no cover - the lifespan always runs first
            raise RuntimeError("numgate is not started")
        return self.core

    async def _healthz(self, request: Request) -> Response:
        """Each dependency probed now; 503 while one is down (its name says which)."""
        core = self._require_core()
        deps = await probe_dependencies(core)
        ok = all(d["status"] == "ok" for d in deps.values())
        return JSONResponse(
            {
                "status": "ok" if ok else "unavailable",
                "version": __version__,
                "sandbox": self.settings.sandbox,
                "dependencies": deps,
                "upstreams": await serving(core),
            },
            status_code=200 if ok else 503,
        )

    def begin_shutdown(self) -> None:
        """The server is stopping (SIGTERM): the workers stop taking work now, while requests in
        flight finish; both share the drain budget (``NUMGATE_DRAIN``)."""
        self._stopping_since = time.monotonic()
        if self._workers is not None:
            self._workers.signal_stop()

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.core = await open_gateway(self.settings, clock=self.clock)
        self.serving = await serving(self.core)
        try:
            if self.settings.inprocess_workers:
                from numgate.jobs.runner import WorkerSet

                self._workers = WorkerSet(self.core)
                await self._workers.start()
            if self._on_core is not None:
                self._on_core(self.core)
            yield
        finally:
            if self._workers is not None:
                spent = time.monotonic() - self._stopping_since if self._stopping_since else 0.0
                await self._workers.stop(timeout=max(self.settings.drain_s - spent, 1.0))
            await self.core.close()
            log.info("numgate stopped: workers finished their step, database closed")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._asgi(scope, receive, send)


async def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse(error_body(404, f"Not Found: no endpoint at {request.url.path}"), status_code=404)


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse(not_allowed(request.method, request.url.path), status_code=405)


async def _internal(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s", request.url.path, exc_info=exc)
    return JSONResponse(INTERNAL_ERROR, status_code=500)


async def probe_dependencies(core: Core) -> dict[str, dict[str, Any]]:
    """``{"database": {"status": "ok", "ms": 1.2}, "redis": {...}}``: a round trip to each."""
    from sqlalchemy import text

    async def database() -> None:
        async with core.db.read() as tx:
            await tx.scalar(text("SELECT 1"))

    probes: dict[str, Callable[[], Awaitable[None]]] = {"database": database}
    if core.settings.redis_url:
        probes["redis"] = core.admission.ping
    out: dict[str, dict[str, Any]] = {}
    for name, probe in probes.items():
        start = time.monotonic()
        try:
            await asyncio.wait_for(probe(), core.settings.db_timeout_s)
        except (Unavailable, TimeoutError) as exc:
            reason = str(exc) or "no answer within NUMGATE_DB_TIMEOUT"
            OUTAGES.down(name, reason)
            out[name] = {"status": "down", "since_s": _down_for(name)}
            continue
        OUTAGES.up(name, start)
        out[name] = {"status": "ok", "ms": round((time.monotonic() - start) * 1000, 2)}
    return out


async def serving(core: Core) -> dict[str, Any]:
    """Which upstream serves which level: {"hlr": {"*": ["simulator"]}, "call": {…}, "waba": "meta"}
    ({} per level when nothing does: such submits are refused with 206)."""
    out: dict[str, Any] = {}
    with contextlib.suppress(Unavailable):
        out = dict(await core.upstreams.serving())
    out["waba"] = core.settings.resolved_waba_upstream
    return out


def describe_serving(serving: dict[str, Any]) -> str:
    """``serving`` in one line: "HLR: * simulator · Call: NG twilio → simulator, * simulator · …"."""
    parts = []
    for key, label in (("hlr", "HLR"), ("call", "Call")):
        per = serving.get(key) or {}
        routes = ", ".join(f"{c} {' → '.join(names)}" for c, names in per.items()) or "none (refused: 206)"
        parts.append(f"{label}: {routes}")
    parts.append(f"WhatsApp: {serving.get('waba', '?')}")
    return " · ".join(parts)


def _down_for(name: str) -> float:
    outage = OUTAGES.current().get(name)
    return round(time.monotonic() - outage.since, 1) if outage is not None else 0.0


def create_app(settings: Settings, *, clock: Clock | None = None) -> NumgateApp:
    return NumgateApp(settings, clock=clock)
