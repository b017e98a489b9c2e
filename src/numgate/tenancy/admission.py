"""The one check every door makes before running an operation: ``admit(grant, operation)``.

It enforces, in this order, the account's business switch (Number Check, WhatsApp), the access
key's allow-list, and the per-account, per-operation rate limit. Doors call it with the core's
operation names (``tenancy/operations.py``) and translate its errors into their vendor's codes.

Counting uses the ``limits`` library's moving window: in memory by default (one server process),
in Redis when ``NUMGATE_REDIS_URL`` is set, so that several server processes share one count. An
unreachable Redis is :class:`~numgate.errors.SharedStateUnavailable` (the doors' "try again").
"""

from __future__ import annotations

from typing import Any

from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from numgate.errors import ActionNotAllowed, BusinessNotEnabled, RateLimited, SharedStateUnavailable
from numgate.tenancy.operations import Business, operation
from numgate.tenancy.service import KeyGrant

BUSINESS_NAMES = {Business.NUMBER_CHECK: "Number Check", Business.WHATSAPP: "WhatsApp"}


def redis_pool(url: str, timeout_s: float) -> Any:
    """A redis-py connection pool that fails fast when Redis is unreachable."""
    import redis.asyncio as redis_asyncio

    return redis_asyncio.ConnectionPool.from_url(
        url.removeprefix("async+"),
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry_on_timeout=False,
    )


class Admission:
    def __init__(
        self, per_second: int, redis_url: str | None = None, *, prefix: str = "numgate:", pool: Any = None
    ) -> None:
        """With ``redis_url``, counts in Redis through ``pool`` (see :func:`redis_pool`), which this
        object closes."""
        self.per_second = per_second
        storage: Storage
        self._pool = pool
        if redis_url:
            if pool is None:
                self._pool = pool = redis_pool(redis_url, 2.0)
            storage = RedisStorage(
                "async+" + redis_url.removeprefix("async+"),
                implementation="redispy",
                connection_pool=self._pool,
                key_prefix=prefix + "limits",
                wrap_exceptions=True,
            )
        else:
            storage = MemoryStorage()
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(storage)
        self._item = RateLimitItemPerSecond(max(per_second, 1))

    async def admit(self, grant: KeyGrant, *operations: str) -> None:
        """Raise BusinessNotEnabled, ActionNotAllowed or RateLimited, else count the call (once,
        on the first operation: an endpoint that performs several counts as one call)."""
        for name in operations:
            op = operation(name)
            if not getattr(grant.account, op.business.value):
                raise BusinessNotEnabled(f"this account has no {BUSINESS_NAMES[op.business]} business")
            if grant.allowed is not None and name not in grant.allowed:
                raise ActionNotAllowed(name)
        if self.per_second <= 0:  # 0 lifts the limit (benchmarks)
            return
        first = operations[0]
        try:
            admitted = await self._limiter.hit(self._item, "acct", str(grant.account.id), first)
        except StorageError as exc:
            raise SharedStateUnavailable(f"Redis is unreachable for the rate limits: {exc}") from exc
        if not admitted:
            raise RateLimited(
                f"more than {self.per_second} {first} calls per second for this account; "
                "slow down and retry in a second",
                retry_after_s=1.0,
            )

    async def ping(self) -> None:
        """Raise SharedStateUnavailable unless the shared store answers (``/healthz``)."""
        if self._pool is None:
            return
        import redis.asyncio as redis_asyncio

        try:
            await redis_asyncio.Redis(connection_pool=self._pool).ping()
        except Exception as exc:
            raise SharedStateUnavailable(f"Redis does not answer: {exc}") from exc

    async def reset(self) -> None:
        await self._storage.reset()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.disconnect()
