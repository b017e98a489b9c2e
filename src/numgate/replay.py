"""Replay protection shared by the doors.

``once(key, ttl, fingerprint, work)`` runs ``work`` the first time ``key`` is seen and, when the
work says so (:class:`Done` with ``remember``), stores its reply: any later or concurrent call
with the same key inside ``ttl`` gets that same reply without running ``work`` again — unless
its ``fingerprint`` (the method and path) differs, which is :class:`ReplayMismatch` (a captured
request re-sent to another endpoint). A reply that is not remembered (a refusal: rate limit,
permission) forgets the key, so a retry runs for real.

``first_use(key, ttl)`` only answers whether a key is new (CAMS signature nonces).

The memory lives in the database (``replay_keys``) by default, so a restart never opens a replay
window and several server processes on one PostgreSQL share it; with ``NUMGATE_REDIS_URL`` it
lives in Redis instead. Concurrent duplicates inside one process wait on the first in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import bindparam, delete, null, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from numgate.clock import Clock
from numgate.db.coalesce import Coalescer
from numgate.db.direct import BulkUpdate, Database, Statement, array_rows
from numgate.db.tables import replay_keys
from numgate.errors import NumgateError, SharedStateUnavailable, Unavailable

#: how long a duplicate waits for the first request (in another process) to finish
WAIT_S = 30.0
PENDING_TEXT = (
    "a request with this signature was received before and has no stored answer yet (still "
    "running, or its server stopped): check its outcome, or sign a new request"
)


@dataclass(frozen=True)
class Done:
    reply: bytes
    #: False for a refusal: answer it, but forget the key
    remember: bool = True


class ReplayMismatch(NumgateError):
    """The same signature was already used for another method or path."""


class ReplayPending(Unavailable):
    """The first request with this key has not finished (or its process stopped before it did)."""

    dependency = "replay memory"


Work = Callable[[], Awaitable[Done]]


class ReplayGuard(Protocol):
    async def once(self, key: str, ttl_s: float, fingerprint: str, work: Work) -> bytes: ...

    async def first_use(self, key: str, ttl_s: float) -> bool: ...

    async def close(self) -> None: ...


class _Local:
    """Concurrent duplicates inside one process: the later ones await the first's future."""

    def __init__(self) -> None:
        self._running: dict[str, tuple[str, asyncio.Future[Done]]] = {}

    async def joined(self, key: str, fingerprint: str) -> bytes | None:
        hit = self._running.get(key)
        if hit is None:
            return None
        if hit[0] != fingerprint:
            raise ReplayMismatch(f"this signature was used for {hit[0]}")
        done = await asyncio.shield(hit[1])
        return done.reply

    def start(self, key: str, fingerprint: str) -> asyncio.Future[Done]:
        fut: asyncio.Future[Done] = asyncio.get_running_loop().create_future()
        self._running[key] = (fingerprint, fut)
        return fut

    def end(self, key: str, fut: asyncio.Future[Done], done: Done | BaseException) -> None:
        self._running.pop(key, None)
        if isinstance(done, BaseException):
            fut.set_exception(done)
            fut.exception()  # mark retrieved: nobody may be waiting
        else:
            fut.set_result(done)


rk = replay_keys.c


def _upsert_claim(ins: Any) -> Statement:
    """Insert the keys; a key already there is taken over only when it has expired (a dead entry
    not yet swept). RETURNING names the keys this statement took."""
    return Statement(
        ins.on_conflict_do_update(
            index_elements=[rk.key],
            set_={
                "fingerprint": ins.excluded.fingerprint,
                "reply": null(),
                "expires_ms": ins.excluded.expires_ms,
            },
            where=rk.expires_ms < bindparam("now"),
        ).returning(rk.key)
    )


_CLAIM_ROWS = array_rows({"key": rk.key.type, "fp": rk.fingerprint.type, "exp": rk.expires_ms.type})
#: PostgreSQL: every key of a batch in one statement (arrays ``key``, ``fp``, ``exp``)
_CLAIM_MANY = _upsert_claim(
    pg_insert(replay_keys).from_select(
        ["key", "fingerprint", "expires_ms"], select(_CLAIM_ROWS.c.key, _CLAIM_ROWS.c.fp, _CLAIM_ROWS.c.exp)
    ),
)
#: SQLite: one key (the batch shares one commit)
_CLAIM_ONE = _upsert_claim(
    sqlite_insert(replay_keys).values(
        key=bindparam("key"), fingerprint=bindparam("fp"), reply=None, expires_ms=bindparam("exp")
    ),
)
_READ = Statement(select(rk.fingerprint, rk.reply, rk.expires_ms).where(rk.key == bindparam("key")))
_REPLIES = BulkUpdate(
    update(replay_keys).where(rk.key == bindparam("key")).values(reply=bindparam("reply")),
    {"key": rk.key.type, "reply": rk.reply.type},
)
_FORGET = Statement(delete(replay_keys).where(rk.key == bindparam("key")))
_SWEEP = Statement(delete(replay_keys).where(rk.expires_ms < bindparam("now")))


class DatabaseReplayGuard:
    """The replay memory in numgate's database (no Redis configured). The keys and replies of
    concurrent requests are written together (:class:`~numgate.db.coalesce.Coalescer`): one
    round trip for all the requests that arrived while the previous one was on its way."""

    SWEEP_EVERY_S = 30.0

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._local = _Local()
        self._next_sweep = 0.0
        self._claims: Coalescer[tuple[str, str, int], bool] = Coalescer(self._claim_all)
        self._replies: Coalescer[tuple[str, bytes], None] = Coalescer(self._store_all)

    async def _claim(self, key: str, fingerprint: str, ttl_s: float) -> bool:
        """Take the key (True), or find it taken and live (False)."""
        return await self._claims.submit((key, fingerprint, self._clock.time_ms() + int(ttl_s * 1000)))

    async def _claim_all(self, items: list[tuple[str, str, int]]) -> list[bool]:
        now = self._clock.time_ms()
        first: dict[str, tuple[str, str, int]] = {}
        for item in items:  # the same key twice in one batch: the first takes it
            first.setdefault(item[0], item)
        async with self._db.autocommit() as tx:
            if time.monotonic() >= self._next_sweep:
                self._next_sweep = time.monotonic() + self.SWEEP_EVERY_S
                await tx.run(_SWEEP, now=now)
            if tx.is_postgres:
                rows = await tx.all(
                    _CLAIM_MANY,
                    key=[k for k, _, _ in first.values()],
                    fp=[f for _, f, _ in first.values()],
                    exp=[e for _, _, e in first.values()],
                    now=now,
                )
                taken = {r[0] for r in rows}
            else:
                taken = set()
                for k, f, e in first.values():
                    if await tx.one(_CLAIM_ONE, key=k, fp=f, exp=e, now=now) is not None:
                        taken.add(k)
        return [item[0] in taken and first[item[0]] is item for item in items]

    async def _store_all(self, items: list[tuple[str, bytes]]) -> list[None]:
        async with self._db.autocommit() as tx:
            await tx.bulk_update(_REPLIES, [{"key": k, "reply": r} for k, r in items])
        return [None] * len(items)

    async def _stored(self, key: str, fingerprint: str) -> bytes | None:
        """The reply another process stored (or is about to) under ``key``; None if the key was
        let go meanwhile (that request was refused or failed: this one runs for real)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            async with self._db.read() as tx:
                row = await tx.one(_READ, key=key)
            if row is None:
                return None
            if row["fingerprint"] != fingerprint:
                raise ReplayMismatch(f"this signature was used for {row['fingerprint']}")
            if row["reply"] is not None:
                return bytes(row["reply"])
            if time.monotonic() >= deadline:
                raise ReplayPending(PENDING_TEXT)
            await asyncio.sleep(0.02)

    async def once(self, key: str, ttl_s: float, fingerprint: str, work: Work) -> bytes:
        reply = await self._local.joined(key, fingerprint)
        if reply is not None:
            return reply
        while not await self._claim(key, fingerprint, ttl_s):
            reply = await self._stored(key, fingerprint)
            if reply is not None:
                return reply
        fut = self._local.start(key, fingerprint)
        try:
            done = await work()
            if done.remember:
                await self._replies.submit((key, done.reply))
            else:
                async with self._db.autocommit() as tx:
                    await tx.run(_FORGET, key=key)
        except BaseException as exc:
            self._local.end(key, fut, exc)
            with contextlib.suppress(Exception):  # the database is down: the key runs out
                async with self._db.autocommit() as tx:
                    await tx.run(_FORGET, key=key)
            raise
        self._local.end(key, fut, done)
        return done.reply

    async def first_use(self, key: str, ttl_s: float) -> bool:
        return await self._claim(key, "", ttl_s)

    async def close(self) -> None:
        return None


class RedisReplayGuard:
    """The same contract over Redis (``NUMGATE_REDIS_URL``), under ``prefix``."""

    def __init__(self, pool: Any, prefix: str = "numgate:") -> None:
        import redis.asyncio as redis_asyncio

        self._redis = redis_asyncio.Redis(connection_pool=pool)
        self._prefix = prefix + "replay:"
        self._local = _Local()

    async def _call(self, coro: Awaitable[Any]) -> Any:
        import redis

        try:
            return await coro
        except redis.RedisError as exc:
            raise SharedStateUnavailable(f"Redis is unreachable for the replay memory: {exc}") from exc

    async def once(self, key: str, ttl_s: float, fingerprint: str, work: Work) -> bytes:
        reply = await self._local.joined(key, fingerprint)
        if reply is not None:
            return reply
        k = self._prefix + key
        ttl_ms = int(ttl_s * 1000)
        fp = fingerprint.encode()
        while not await self._call(self._redis.set(k, b"\x00" + fp, nx=True, px=ttl_ms)):
            reply = await self._stored(k, fp)
            if reply is not None:
                return reply
        fut = self._local.start(key, fingerprint)
        try:
            done = await work()
            if done.remember:
                await self._call(self._redis.set(k, b"\x01" + fp + b"\n" + done.reply, px=ttl_ms))
            else:
                await self._call(self._redis.delete(k))
        except BaseException as exc:
            self._local.end(key, fut, exc)
            with contextlib.suppress(Exception):
                await self._redis.delete(k)
            raise
        self._local.end(key, fut, done)
        return done.reply

    async def _stored(self, k: str, fp: bytes) -> bytes | None:
        deadline = time.monotonic() + WAIT_S
        while True:
            value = await self._call(self._redis.get(k))
            if value is None:
                return None
            stored_fp, _, reply = value[1:].partition(b"\n")
            if stored_fp != fp:
                raise ReplayMismatch(f"this signature was used for {stored_fp.decode()}")
            if value[:1] == b"\x01":
                return bytes(reply)
            if time.monotonic() >= deadline:
                raise ReplayPending(PENDING_TEXT)
            await asyncio.sleep(0.01)

    async def first_use(self, key: str, ttl_s: float) -> bool:
        return bool(
            await self._call(self._redis.set(self._prefix + key, b"1", nx=True, px=int(ttl_s * 1000)))
        )

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=False)
