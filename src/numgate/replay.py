"""Replay protection shared by the doors.

``ReplayGuard.once(key, ttl, work)`` runs ``work`` the first time ``key`` is seen and stores its
reply; any later (or concurrent) call with the same key inside ``ttl`` gets that same reply
without running ``work`` again. ``first_use(key, ttl)`` only answers whether a key is
new. The in-memory backends serve one server process; with several server processes set
``NUMGATE_REDIS_URL`` so that every process shares the same memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol


class ReplayGuard(Protocol):
    async def once(self, key: str, ttl_s: float, work: Callable[[], Awaitable[bytes]]) -> bytes:
        """Run ``work`` once per key within ``ttl_s``; repeats get the first result (NXCloud)."""
        ...

    async def first_use(self, key: str, ttl_s: float) -> bool:
        """True the first time a key is seen within ``ttl_s`` (CAMS signature nonces)."""
        ...


class MemoryReplayGuard:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._entries: dict[str, tuple[float, asyncio.Future[bytes]]] = {}
        self._monotonic = monotonic
        self._next_sweep = 0.0

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + 5.0
        dead = [k for k, (exp, fut) in self._entries.items() if exp <= now and fut.done()]
        for k in dead:
            del self._entries[k]

    async def once(self, key: str, ttl_s: float, work: Callable[[], Awaitable[bytes]]) -> bytes:
        now = self._monotonic()
        self._sweep(now)
        hit = self._entries.get(key)
        if hit is not None and (hit[0] > now or not hit[1].done()):
            return await asyncio.shield(hit[1])
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._entries[key] = (now + ttl_s, fut)
        try:
            reply = await work()
        except BaseException as exc:
            # nothing was answered: forget the key so that a retry runs for real
            del self._entries[key]
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            raise
        fut.set_result(reply)
        return reply

    async def first_use(self, key: str, ttl_s: float) -> bool:
        now = self._monotonic()
        self._sweep(now)
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return False
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        fut.set_result(b"")
        self._entries[key] = (now + ttl_s, fut)
        return True


class RedisReplayGuard:
    """The same contract over Redis, for several server processes (``NUMGATE_REDIS_URL``)."""

    def __init__(self, url: str, prefix: str = "numgate:replay:") -> None:
        import redis.asyncio as redis_asyncio

        self._redis = redis_asyncio.from_url(url)
        self._prefix = prefix

    async def once(self, key: str, ttl_s: float, work: Callable[[], Awaitable[bytes]]) -> bytes:
        k = self._prefix + key
        ttl_ms = int(ttl_s * 1000)
        if await self._redis.set(k, b"\x00pending", nx=True, px=ttl_ms):
            try:
                reply = await work()
            except BaseException:
                await self._redis.delete(k)
                raise
            await self._redis.set(k, b"\x01" + reply, px=ttl_ms)
            return reply
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            value = await self._redis.get(k)
            if value is None:  # the first request failed without a reply: run for real
                return await self.once(key, ttl_s, work)
            if value[:1] == b"\x01":
                return bytes(value[1:]) if isinstance(value, bytes) else value[1:].encode()
            await asyncio.sleep(0.01)
        raise TimeoutError("the first request with this signature did not finish in 30 s")

    async def first_use(self, key: str, ttl_s: float) -> bool:
        return bool(await self._redis.set(self._prefix + key, b"1", nx=True, px=int(ttl_s * 1000)))

    async def close(self) -> None:
        await self._redis.aclose()
