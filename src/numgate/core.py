"""Builds every core service once, from settings and injected parts. What the core cannot
know — how a door words a callback — is injected (``renderer``); ``numgate.gateway`` is where the
doors' parts are wired in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine

from numgate.clock import Clock, SystemClock
from numgate.db.direct import Database, open_database
from numgate.db.engine import create_engine, require_database
from numgate.db.migrate import ensure_current
from numgate.delivery.log import DeliveryLog
from numgate.delivery.outbox import CallbackTargets, Outbox
from numgate.delivery.urls import CallbackUrls
from numgate.ledger.service import Ledger
from numgate.metrics import metered
from numgate.numbers.batches import BatchReports
from numgate.replay import DatabaseReplayGuard, RedisReplayGuard, ReplayGuard
from numgate.settings import Settings
from numgate.tenancy.admission import Admission, redis_pool
from numgate.tenancy.service import TenancyService
from numgate.tenancy.users import ConsoleUsers
from numgate.vault import Vault, open_vault

if TYPE_CHECKING:
    from numgate.numbers.service import CallbackRenderer, NumberCheckService
    from numgate.upstreams.registry import Upstreams
    from numgate.waba.service import WabaService
    from numgate.waba.signup import SignupTokens
    from numgate.waba.upstream import WabaUpstream


@dataclass
class Core:
    settings: Settings
    clock: Clock
    #: what the services run their statements on (``db/direct.py``)
    db: Database
    #: SQLAlchemy's engine on the same database: migrations and the schema check
    engine: AsyncEngine
    vault: Vault
    tenancy: TenancyService
    ledger: Ledger
    replay: ReplayGuard
    admission: Admission
    urls: CallbackUrls
    outbox: Outbox
    deliveries: DeliveryLog
    numbers: NumberCheckService
    batches: BatchReports
    #: the operator's HLR and test-call upstreams, their routes and health
    upstreams: Upstreams
    waba: WabaService
    waba_signup: SignupTokens
    #: people who sign in to the console
    users: ConsoleUsers
    extras: dict[str, Any] = field(default_factory=dict)

    async def close(self) -> None:
        await self.upstreams.close()
        await self.waba.upstream.close()
        await self.admission.close()
        await self.replay.close()
        await self.db.close()
        await self.engine.dispose()


async def open_core(
    settings: Settings,
    *,
    clock: Clock | None = None,
    check_schema: bool = True,
    create: bool = False,
    renderer: CallbackRenderer,
    waba_upstream: WabaUpstream | None = None,
) -> Core:
    """Open the database and build the services. Unless ``create`` (``migrate``, ``demo``), an
    SQLite file that does not exist is :class:`~numgate.errors.DatabaseMissing`: a command run
    from the wrong directory never starts a second, empty installation."""
    from numgate.numbers.service import NumberCheckService
    from numgate.upstreams.registry import Upstreams
    from numgate.waba.service import WabaService
    from numgate.waba.signup import SignupTokens

    clock = clock or SystemClock()
    url = settings.resolved_database_url
    if not create:
        require_database(url)
    engine = create_engine(url, timeout_s=settings.db_timeout_s)
    db = open_database(engine, timeout_s=settings.db_timeout_s, wal_max=settings.sqlite_wal_max)
    try:
        if check_schema:
            await ensure_current(engine)
        vault = await open_vault(settings, db)
        upstream = waba_upstream or _waba_upstream(settings, db, clock)
    except BaseException:
        await db.close()
        await engine.dispose()
        raise
    pool = redis_pool(settings.redis_url, settings.db_timeout_s) if settings.redis_url else None
    replay: ReplayGuard = (
        RedisReplayGuard(pool, settings.redis_prefix) if pool is not None else DatabaseReplayGuard(db, clock)
    )
    urls = CallbackUrls(settings.callback_allow, settings.callback_url_max)
    targets = CallbackTargets(db, clock)
    tenancy = TenancyService(db, vault, clock, urls)
    ledger = Ledger(db, clock)
    upstreams = Upstreams(db, vault, clock, sandbox=settings.sandbox, timeout_s=settings.upstream_timeout_s)
    outbox = Outbox(db, clock, settings.worker_lease_s, settings.callback_retry_window_s, targets=targets)
    return Core(
        settings=settings,
        clock=clock,
        db=db,
        engine=engine,
        vault=vault,
        tenancy=tenancy,
        ledger=ledger,
        replay=replay,
        admission=Admission(
            settings.rate_limit_per_second, settings.redis_url, prefix=settings.redis_prefix, pool=pool
        ),
        urls=urls,
        outbox=outbox,
        deliveries=DeliveryLog(db, clock, outbox),
        numbers=NumberCheckService(db, clock, tenancy, ledger, renderer, urls, targets, upstreams),
        batches=BatchReports(db),
        upstreams=upstreams,
        waba=WabaService(
            db, clock, vault, tenancy, metered(upstream, "waba", settings.resolved_waba_upstream)
        ),
        waba_signup=SignupTokens(vault, clock),
        users=ConsoleUsers(db, clock),
    )


def _waba_upstream(settings: Settings, db: Database, clock: Clock) -> WabaUpstream:
    if settings.resolved_waba_upstream == "meta":
        from numgate.waba.meta import MetaGraph

        return MetaGraph(
            settings.meta_base_url,
            settings.meta_token,
            settings.meta_waba_id,
            backoff_s=settings.meta_backoff_s,
        )
    from numgate.waba.simulator import SimulatedWhatsApp

    return SimulatedWhatsApp(db, clock)
