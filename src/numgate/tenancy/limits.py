"""Per-account, per-action call limits and access-key policies, shared by both doors.

Counting uses the ``limits`` library's moving window: in memory by default (one server process),
in Redis when ``NUMGATE_REDIS_URL`` is set, so that several server processes share one count.
"""

from __future__ import annotations

from typing import Any

from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from numgate.errors import ActionNotAllowed, RateLimited
from numgate.tenancy.service import KeyGrant


class CallLimits:
    def __init__(self, per_second: int, redis_url: str | None = None) -> None:
        self.per_second = per_second
        storage: Storage
        self._pool: Any = None
        if redis_url:
            import redis.asyncio as redis_asyncio

            plain = redis_url.removeprefix("async+")
            # our own pool, so that close() can release its connections
            self._pool = redis_asyncio.ConnectionPool.from_url(plain)
            storage = RedisStorage("async+" + plain, implementation="redispy", connection_pool=self._pool)
        else:
            storage = MemoryStorage()
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(storage)
        self._item = RateLimitItemPerSecond(max(per_second, 1))

    async def admit(self, grant: KeyGrant, action: str) -> None:
        """Raise ActionNotAllowed or RateLimited, else count the call."""
        if grant.allowed_actions is not None and action not in grant.allowed_actions:
            raise ActionNotAllowed(action)
        if self.per_second <= 0:  # 0 lifts the limit (benchmarks)
            return
        if not await self._limiter.hit(self._item, "acct", str(grant.account.id), action):
            raise RateLimited(
                f"more than {self.per_second} {action} calls per second for this account; "
                "slow down and retry in a second",
                retry_after_s=1.0,
            )

    async def reset(self) -> None:
        await self._storage.reset()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.disconnect()
