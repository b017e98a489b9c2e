"""The live-result cache: the latest HLR and call answer per number (separately), with where it
came from and when it was observed. A caller that accepts a fact up to ``max_age`` seconds old
(an app's ``--max-age``, a submit's ``maxAge``) gets it from here without an upstream call.

Only answers are cached, never a failure, a throttle or "no information"; an answer that learnt
nothing (validity and reachability both UNKNOWN, or a call that ended ``others``) is not cached
either, so a later caller pays for a real attempt rather than a stored shrug."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert as upsert  # ON CONFLICT: SQLite renders it too

from numgate.db.direct import Database, Statement
from numgate.db.tables import live_results
from numgate.numbers.providers import Dial, DialResponse, Live, Tri

lr = live_results.c
_stmt = upsert(live_results).values(
    e164=bindparam("e164"),
    level=bindparam("level"),
    result=bindparam("result"),
    source=bindparam("source"),
    observed_ms=bindparam("observed_ms"),
)
PUT = Statement(
    _stmt.on_conflict_do_update(
        index_elements=["e164", "level"],
        set_={
            "result": _stmt.excluded.result,
            "source": _stmt.excluded.source,
            "observed_ms": _stmt.excluded.observed_ms,
        },
        where=lr.observed_ms <= _stmt.excluded.observed_ms,
    )
)


def worth_keeping(result: Live | Dial) -> bool:
    if isinstance(result, Live):
        return not (result.validity is Tri.UNKNOWN and result.reachable is Tri.UNKNOWN)
    return result.response is not DialResponse.OTHERS


def encode(result: Live | Dial) -> str:
    if isinstance(result, Live):
        return orjson.dumps(
            [
                "live",
                result.validity.value,
                result.reachable.value,
                result.roaming.value,
                result.ported.value,
                result.network,
                result.mcc,
                result.mnc,
            ]
        ).decode()
    return orjson.dumps(["dial", result.early.value, result.answered.value, result.response.value]).decode()


def decode(text: str) -> Live | Dial:
    v: list[Any] = orjson.loads(text)
    if v[0] == "live":
        return Live(Tri(v[1]), Tri(v[2]), Tri(v[3]), Tri(v[4]), v[5], v[6], v[7])
    return Dial(Tri(v[1]), Tri(v[2]), DialResponse(v[3]))


class LiveCache:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def fresh(
        self, level: int, numbers: list[str], since_ms: int
    ) -> dict[str, tuple[Live | Dial, str, int]]:
        """E.164 → (answer, source, observed) for the numbers with an answer observed since."""
        if not numbers:
            return {}
        q = select(lr.e164, lr.result, lr.source, lr.observed_ms).where(
            lr.level == level, lr.e164.in_(numbers), lr.observed_ms >= since_ms
        )
        async with self._db.read() as tx:
            rows = await tx.all(q)
        return {r["e164"]: (decode(r["result"]), r["source"], r["observed_ms"]) for r in rows}
