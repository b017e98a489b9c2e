"""The claim / lease / release statements, together and by name. PostgreSQL claims with
``FOR UPDATE SKIP LOCKED`` so several worker processes never take the same row; SQLite (one
writer, transactions begin IMMEDIATE) runs the same statement without it.

Every leased table has ``status`` (0 pending, 1 leased, then the table's own final states),
``lease_until_ms`` and ``lease_token``. The statements are built once per table
(:class:`Leases`) and run on a :class:`~numgate.db.direct.Tx`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Table, bindparam, select, text, update

from numgate.db.direct import Database, Statement, Tx
from numgate.db.tables import any_of, in_state
from numgate.errors import Unavailable

log = logging.getLogger("numgate.jobs")

PENDING, LEASED = 0, 1


def new_lease_token() -> int:
    return secrets.randbits(62)


class Leases:
    """Claiming and releasing rows of one table."""

    def __init__(self, table: Table) -> None:
        c = table.c
        self.table = table
        self._owned = Statement(
            select(c.id)
            .where(c.lease_token == bindparam("token"), in_state(c.status, LEASED))
            .with_for_update()
        )
        self._release_expired = Statement(
            update(table)
            .where(self._unlocked(in_state(c.status, LEASED), c.lease_until_ms < bindparam("now")))
            .values(status=PENDING, lease_until_ms=None, lease_token=None)
        )
        self._release_token = Statement(
            update(table)
            .where(self._unlocked(in_state(c.status, LEASED), c.lease_token == bindparam("token")))
            .values(status=PENDING, lease_until_ms=None, lease_token=None)
        )
        self._pending_accounts = Statement(
            text(
                f"""
                WITH RECURSIVE a(acct) AS (
                  SELECT MIN(account_id) FROM {table.name} WHERE status = {PENDING}
                  UNION ALL
                  SELECT (SELECT MIN(account_id) FROM {table.name}
                          WHERE status = {PENDING} AND account_id > a.acct)
                  FROM a WHERE a.acct IS NOT NULL
                )
                SELECT acct FROM a WHERE acct IS NOT NULL
                """
            )
        )

    def claim_statement(
        self,
        *,
        where: list[Any],
        order_by: Any,
        returning: list[Any],
        extra_values: dict[str, Any] | None = None,
    ) -> Statement:
        """``UPDATE … SET status=1, lease … WHERE id IN (the first :limit rows matching where)
        RETURNING …``; run it with ``limit``, ``until`` and ``token`` (and where's own binds)."""
        t = self.table
        sub = select(t.c.id).where(*where).order_by(order_by).limit(bindparam("limit"))
        sub = sub.with_for_update(skip_locked=True)  # rendered on PostgreSQL only
        return self._lease(t.c.id.in_(sub.scalar_subquery()), returning, extra_values)

    def lease_ids_statement(
        self, *, returning: list[Any], extra_values: dict[str, Any] | None = None
    ) -> Statement:
        """(PostgreSQL) ``UPDATE … SET status=1, lease … WHERE id = ANY(:ids) RETURNING …``: rows
        the transaction already holds (``lock_statement``) leased, for work that goes on after
        it commits; run it with ``ids``, ``until`` and ``token``."""
        return self._lease(any_of(self.table.c.id, "ids"), returning, extra_values)

    def _lease(self, which: Any, returning: list[Any], extra_values: dict[str, Any] | None) -> Statement:
        return Statement(
            update(self.table)
            .where(which)
            .values(
                status=LEASED,
                lease_until_ms=bindparam("until"),
                lease_token=bindparam("token"),
                **(extra_values or {}),
            )
            .returning(*returning)
        )

    def lock_statement(self, *, where: list[Any], order_by: Any, returning: list[Any]) -> Statement:
        """``SELECT … WHERE where ORDER BY order_by LIMIT :limit FOR UPDATE SKIP LOCKED`` (PostgreSQL):
        the rows held by the claiming transaction instead of leased, for work that is done and
        written before it commits. The claim makes no new row version (only the lock in each
        row's header), and a worker that dies gives them back when its connection closes;
        several workers still never take the same row. SQLite runs it as a plain ``SELECT``
        (no row locks: its transactions lock the whole database, too coarse to hold while the
        work runs)."""
        t = self.table
        return Statement(
            select(*returning)
            .where(*where)
            .order_by(order_by)
            .limit(bindparam("limit"))
            .with_for_update(skip_locked=True, of=t)
        )

    async def owned_ids(self, tx: Tx, token: int) -> set[int]:
        """The rows still leased by ``token`` (a lease that ran out may have moved on), locked."""
        return {r[0] for r in await tx.all(self._owned, token=token)}

    async def release_expired(self, tx: Tx, now_ms: int) -> int:
        """Put rows whose lease ran out (their worker died) back to pending."""
        return await tx.run(self._release_expired, now=now_ms)

    async def release_token(self, tx: Tx, token: int) -> int:
        """Give back rows a stopping worker leased but did not finish."""
        return await tx.run(self._release_token, token=token)

    async def renew(self, tx: Tx, tokens: Iterable[int], until_ms: int) -> int:
        """Extend the leases a live worker still holds (a dead worker's run out: see
        :class:`LeaseKeeper`)."""
        held = sorted(tokens)
        if not held:
            return 0
        c = self.table.c
        return await tx.run(
            update(self.table)
            .where(self._unlocked(in_state(c.status, LEASED), c.lease_token.in_(held)))
            .values(lease_until_ms=until_ms)
        )

    def _unlocked(self, *where: Any) -> Any:
        """``id IN (the rows matching where that no other transaction holds)``, for the lease
        sweeps (renew, release): a row held elsewhere is being finished or recorded right now,
        which ends its lease anyway. Waiting for it instead could deadlock on PostgreSQL: a sweep
        locks its rows in index order while a worker finishing or recording a round locks its
        own in the round's order (seen: a renewal against a round of callback attempts)."""
        c = self.table.c
        return c.id.in_(select(c.id).where(*where).with_for_update(skip_locked=True).scalar_subquery())

    async def accounts_with_pending(self, tx: Tx) -> list[int]:
        """Distinct accounts that have pending rows, by a loose index scan (cheap with many rows)."""
        return [int(r[0]) for r in await tx.all(self._pending_accounts)]


class LeaseKeeper:
    """Keeps the leases a worker holds alive while it works on them: every third of the lease it
    pushes their end one lease further. A worker that dies stops renewing, so its rows are free
    again within one lease (``NUMGATE_WORKER_LEASE``) however long the work would have taken."""

    def __init__(
        self, db: Database, leases: Leases, lease_s: float, now_ms: Callable[[], int], held: set[int]
    ) -> None:
        self._db = db
        self._leases = leases
        self.lease_ms = int(lease_s * 1000)
        self._now_ms = now_ms
        #: the tokens to keep alive (shared with whoever takes and gives back leases)
        self.held = held

    def until(self) -> int:
        return self._now_ms() + self.lease_ms

    async def renew_once(self) -> None:
        if self.held:
            async with self._db.autocommit() as tx:
                await self._leases.renew(tx, self.held, self.until())

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.lease_ms / 3000)
            try:
                await self.renew_once()
            except Unavailable as exc:  # the database is down: the next round tries again
                log.debug("lease renewal skipped: %s", exc)
