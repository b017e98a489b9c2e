"""The claim / lease / release statements, together and by name. PostgreSQL claims with
``FOR UPDATE SKIP LOCKED`` so several worker processes never take the same row; SQLite (one
writer, transactions begin IMMEDIATE) runs the same statement without it."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import Table, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection


def new_lease_token() -> int:
    return secrets.randbits(62)


def _is_pg(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql"


async def claim(
    conn: AsyncConnection,
    table: Table,
    *,
    where: list[Any],
    order_by: Any,
    limit: int,
    lease_until_ms: int,
    token: int,
    returning: list[Any],
    extra_values: dict[str, Any] | None = None,
) -> list[Any]:
    """Lease up to ``limit`` rows matching ``where`` (status 1, lease until, token) and return them."""
    sub = select(table.c.id).where(*where).order_by(order_by).limit(limit)
    if _is_pg(conn):
        sub = sub.with_for_update(skip_locked=True)
    stmt = (
        update(table)
        .where(table.c.id.in_(sub.scalar_subquery()))
        .values(status=1, lease_until_ms=lease_until_ms, lease_token=token, **(extra_values or {}))
        .returning(*returning)
    )
    return list((await conn.execute(stmt)).all())


async def owned_ids(conn: AsyncConnection, table: Table, ids: list[int], token: int) -> set[int]:
    """The rows of ``ids`` still leased by ``token`` (a lease that ran out may have moved on)."""
    q = select(table.c.id).where(table.c.id.in_(ids), table.c.lease_token == token, table.c.status == 1)
    if _is_pg(conn):
        q = q.with_for_update()
    return set((await conn.execute(q)).scalars())


async def release_expired(conn: AsyncConnection, table: Table, now_ms: int) -> int:
    """Put rows whose lease ran out (their worker died) back to pending."""
    res = await conn.execute(
        update(table)
        .where(table.c.status == 1, table.c.lease_until_ms < now_ms)
        .values(status=0, lease_until_ms=None, lease_token=None)
    )
    return res.rowcount or 0


async def release_token(conn: AsyncConnection, table: Table, token: int) -> int:
    """Give back rows a stopping worker leased but did not finish."""
    res = await conn.execute(
        update(table)
        .where(table.c.status == 1, table.c.lease_token == token)
        .values(status=0, lease_until_ms=None, lease_token=None)
    )
    return res.rowcount or 0


async def accounts_with_pending(conn: AsyncConnection, table_name: str) -> list[int]:
    """Distinct accounts that have pending rows, by a loose index scan (cheap with many rows)."""
    sql = text(
        f"""
        WITH RECURSIVE a(acct) AS (
          SELECT MIN(account_id) FROM {table_name} WHERE status = 0
          UNION ALL
          SELECT (SELECT MIN(account_id) FROM {table_name} WHERE status = 0 AND account_id > a.acct)
          FROM a WHERE a.acct IS NOT NULL
        )
        SELECT acct FROM a WHERE acct IS NOT NULL
        """
    )
    return [int(r[0]) for r in (await conn.execute(sql)).all()]
