"""The delivery log, as the CLI shows it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from numgate.core import Core
from numgate.db.tables import deliveries
from numgate.delivery.worker import STATUS_NAMES
from numgate.errors import InvalidParameter, NotFound

_BY_NAME = {v: k for k, v in STATUS_NAMES.items()}


def _row(r: Any, body: bool = False) -> dict[str, Any]:
    out = {
        "delivery_id": r["uid"],
        "status": STATUS_NAMES[r["status"]],
        "attempts": r["attempts"],
        "last_status": r["last_status"],
        "last_latency_ms": r["last_latency_ms"],
        "last_error": r["last_error"],
        "url": r["url"],
        "account_id": r["account_id"],
        "created_ms": r["created_ms"],
        "updated_ms": r["updated_ms"],
        "next_attempt_ms": r["next_ms"] if r["status"] == 0 else None,
    }
    if body:
        out["body"] = r["body"]
    return out


async def list_deliveries(
    core: Core, *, account_id: int | None, status: str | None, limit: int
) -> list[dict[str, Any]]:
    q = select(deliveries).order_by(deliveries.c.id.desc()).limit(limit)
    if account_id is not None:
        q = q.where(deliveries.c.account_id == account_id)
    if status is not None:
        if status not in _BY_NAME:
            raise InvalidParameter("status", f"status must be one of {', '.join(_BY_NAME)}")
        q = q.where(deliveries.c.status == _BY_NAME[status])
    async with core.db.read() as tx:
        return [_row(r) for r in await tx.all(q)]


async def get_delivery(core: Core, uid: str) -> dict[str, Any]:
    async with core.db.read() as tx:
        r = await tx.one(select(deliveries).where(deliveries.c.uid == uid))
    if r is None:
        raise NotFound(f"no delivery {uid!r}")
    return _row(r, body=True)
