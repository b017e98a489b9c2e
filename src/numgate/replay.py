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
In the database a reply is stored just after its answer is sent, together with the keys the
next requests take (one statement for both); until then duplicates get it from memory, or, in
another process, wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import Update, bindparam, delete, null, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from numgate.clock import Clock
from numgate.db.coalesce import Coalescer
from numgate.db.direct import BulkUpdate, Database, Statement, Tx, array_rows
from numgate.db.tables import replay_keys
from numgate.errors import NumgateError, SharedStateUnavailable, StorageUnavailable, Unavailable

log = logging.getLogger("numgate.replay")

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


@dataclass(frozen=True, slots=True)
class _Claim:
    key: str
    fingerprint: str
    expires_ms: int


@dataclass(frozen=True, slots=True)
class _Reply:
    key: str
    reply: bytes


rk = replay_keys.c


def _upsert_claim(ins: Any) -> Any:
    """Insert the keys; a key already there is taken over only when it has expired (a dead entry
    not yet swept). RETURNING names the keys this statement took."""
    return ins.on_conflict_do_update(
        index_elements=[rk.key],
        set_={
            "fingerprint": ins.excluded.fingerprint,
            "reply": null(),
            "expires_ms": ins.excluded.expires_ms,
        },
        where=rk.expires_ms < bindparam("now"),
    ).returning(rk.key)


#: a batch's replies: ``UPDATE … FROM unnest`` on PostgreSQL, ``executemany`` on SQLite
_REPLIES = BulkUpdate(
    update(replay_keys).where(rk.key == bindparam("key")).values(reply=bindparam("reply")),
    {"key": rk.key.type, "reply": rk.reply.type},
)
_CLAIM_ROWS = array_rows({"claim": rk.key.type, "fp": rk.fingerprint.type, "exp": rk.expires_ms.type})
#: PostgreSQL: a batch's keys taken (arrays ``claim``, ``fp``, ``exp``) and its replies stored
#: (``_REPLIES`` as a CTE: arrays ``key`` and ``reply``), in one statement. Both parts see the
#: rows as they were before it, so a key may not be in both (``_write_all`` takes such a key in
#: a statement of its own).
_WRITE_MANY = Statement(
    _upsert_claim(
        pg_insert(replay_keys).from_select(
            ["key", "fingerprint", "expires_ms"],
            select(_CLAIM_ROWS.c.claim, _CLAIM_ROWS.c.fp, _CLAIM_ROWS.c.exp),
        )
    ).add_cte(cast(Update, _REPLIES.postgres.clause).cte("stored"))
)
#: SQLite: one key (the batch shares one commit)
_CLAIM_ONE = Statement(
    _upsert_claim(
        sqlite_insert(replay_keys).values(
            key=bindparam("key"), fingerprint=bindparam("fp"), reply=None, expires_ms=bindparam("exp")
        )
    )
)
_READ = Statement(select(rk.fingerprint, rk.reply, rk.expires_ms).where(rk.key == bindparam("key")))
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
        #: keys taken and replies stored, those of concurrent requests together
        self._writes: Coalescer[_Claim | _Reply, bool] = Coalescer(self._write_all)
        #: replies answered and not yet stored
        self._storing: set[asyncio.Future[bool]] = set()

    async def _claim(self, key: str, fingerprint: str, ttl_s: float) -> bool:
        """Take the key (True), or find it taken and live (False)."""
        return await self._writes.submit(_Claim(key, fingerprint, self._clock.time_ms() + int(ttl_s * 1000)))

    async def _write_all(self, items: list[_Claim | _Reply]) -> list[bool]:
        """Store the replies and take the keys of a batch: whether each claim took its key."""
        now = self._clock.time_ms()
        replies = [i for i in items if isinstance(i, _Reply)]
        first: dict[str, _Claim] = {}
        for item in items:  # the same key twice in one batch: the first takes it
            if isinstance(item, _Claim):
                first.setdefault(item.key, item)
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self.SWEEP_EVERY_S
            async with self._db.autocommit() as tx:  # not batched: a range, planned for its bound
                await tx.run(_SWEEP, now=now)
        # durable=False: the work a key guards commits durably after it; a reply lost in a
        # crash of the database server leaves its key taken (a replay gets ReplayPending)
        async with self._db.autocommit(durable=False, batched=True) as tx:
            if tx.is_postgres:
                replied = {r.key for r in replies}
                now_claims = [c for c in first.values() if c.key not in replied]
                taken = await self._write_many(tx, now_claims, replies, now)
                if len(now_claims) < len(first):  # a key both replied to and claimed: after
                    later = [c for c in first.values() if c.key in replied]
                    taken |= await self._write_many(tx, later, [], now)
            else:
                await tx.bulk_update(_REPLIES, [{"key": r.key, "reply": r.reply} for r in replies])
                taken = set()
                for c in first.values():
                    row = await tx.one(_CLAIM_ONE, key=c.key, fp=c.fingerprint, exp=c.expires_ms, now=now)
                    if row is not None:
                        taken.add(c.key)
        return [isinstance(i, _Claim) and i.key in taken and first[i.key] is i for i in items]

    @staticmethod
    async def _write_many(tx: Tx, claims: list[_Claim], replies: list[_Reply], now: int) -> set[str]:
        rows = await tx.all(
            _WRITE_MANY,
            claim=[c.key for c in claims],
            fp=[c.fingerprint for c in claims],
            exp=[c.expires_ms for c in claims],
            **_REPLIES.columns([{"key": r.key, "reply": r.reply} for r in replies]),
            now=now,
        )
        return {r[0] for r in rows}

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
            if not done.remember:
                async with self._db.autocommit() as tx:
                    await tx.run(_FORGET, key=key)
        except BaseException as exc:
            self._local.end(key, fut, exc)
            with contextlib.suppress(Exception):  # the database is down: the key runs out
                async with self._db.autocommit() as tx:
                    await tx.run(_FORGET, key=key)
            raise
        if done.remember:  # answered now; the reply is stored behind the answer
            stored = self._writes.enqueue(_Reply(key, done.reply))
            self._storing.add(stored)
            stored.add_done_callback(lambda f: self._remembered(f, key, fut, done))
        else:
            self._local.end(key, fut, done)
        return done.reply

    def _remembered(
        self, stored: asyncio.Future[bool], key: str, fut: asyncio.Future[Done], done: Done
    ) -> None:
        """The reply of work already done and answered is stored (or could not be). Until then,
        duplicates in this process got it from memory and those in others waited for it
        (``_stored``). If it could not be stored the key stays taken with no reply: a duplicate
        is told so (:class:`ReplayPending`) rather than run again."""
        self._storing.discard(stored)
        self._local.end(key, fut, done)
        exc = None if stored.cancelled() else stored.exception()
        if exc is None or isinstance(exc, StorageUnavailable):
            return  # an outage is logged once, by the database layer
        if isinstance(exc, NumgateError):
            log.warning("a reply could not be stored for replays of its request: %s", exc)
        else:
            log.error("a reply could not be stored for replays of its request", exc_info=exc)

    async def first_use(self, key: str, ttl_s: float) -> bool:
        return await self._claim(key, "", ttl_s)

    async def close(self) -> None:
        """Wait for the replies still being stored."""
        while self._storing:
            await asyncio.gather(*self._storing, return_exceptions=True)


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
