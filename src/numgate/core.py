"""The composition root: builds every core service once, from settings and injected parts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine

from numgate.clock import Clock, SystemClock
from numgate.db.direct import Database, open_database
from numgate.db.engine import create_engine
from numgate.db.migrate import ensure_current
from numgate.ledger.service import Ledger
from numgate.replay import MemoryReplayGuard, RedisReplayGuard, ReplayGuard
from numgate.settings import Settings
from numgate.tenancy.limits import CallLimits
from numgate.tenancy.service import TenancyService
from numgate.vault import Vault, open_vault

if TYPE_CHECKING:
    from numgate.delivery.worker import Handoff
    from numgate.numbers.providers import Providers
    from numgate.numbers.service import NumberCheckService
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
    limits: CallLimits
    numbers: NumberCheckService
    providers: Providers
    waba: WabaService
    waba_signup: SignupTokens
    #: set when callbacks are queued, so the in-process delivery worker starts at once
    delivery_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    #: while a delivery worker runs in this process: fresh callbacks handed to it in memory
    callback_handoff: Handoff | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    async def close(self) -> None:
        await self.waba.upstream.close()
        await self.limits.close()
        if isinstance(self.replay, RedisReplayGuard):
            await self.replay.close()
        await self.db.close()
        await self.engine.dispose()


async def open_core(
    settings: Settings,
    *,
    clock: Clock | None = None,
    check_schema: bool = True,
    providers: Providers | None = None,
    waba_upstream: WabaUpstream | None = None,
) -> Core:
    from numgate.dialects.nxcloud.numbercheck import NxCallbackRenderer
    from numgate.numbers.providers import simulator
    from numgate.numbers.service import NumberCheckService
    from numgate.waba.service import WabaService
    from numgate.waba.signup import SignupTokens

    clock = clock or SystemClock()
    engine = create_engine(settings.resolved_database_url)
    db = open_database(engine)
    try:
        if check_schema:
            await ensure_current(engine)
        vault = await open_vault(settings, db)
        upstream = waba_upstream or _waba_upstream(settings, db, clock)
    except BaseException:
        await db.close()
        await engine.dispose()
        raise
    replay: ReplayGuard = RedisReplayGuard(settings.redis_url) if settings.redis_url else MemoryReplayGuard()
    tenancy = TenancyService(db, vault, clock)
    ledger = Ledger(db, clock)
    return Core(
        settings=settings,
        clock=clock,
        db=db,
        engine=engine,
        vault=vault,
        tenancy=tenancy,
        ledger=ledger,
        replay=replay,
        limits=CallLimits(settings.rate_limit_per_second, settings.redis_url),
        numbers=NumberCheckService(db, clock, tenancy, ledger, NxCallbackRenderer()),
        providers=providers or simulator(),
        waba=WabaService(db, clock, vault, tenancy, upstream),
        waba_signup=SignupTokens(vault, clock),
    )


def _waba_upstream(settings: Settings, db: Database, clock: Clock) -> WabaUpstream:
    if settings.waba_upstream == "meta":
        from numgate.waba.meta import MetaGraph

        return MetaGraph(
            settings.meta_base_url,
            settings.meta_token,
            settings.meta_waba_id,
            backoff_s=settings.meta_backoff_s,
        )
    from numgate.waba.simulator import SimulatedWhatsApp

    return SimulatedWhatsApp(db, clock)
