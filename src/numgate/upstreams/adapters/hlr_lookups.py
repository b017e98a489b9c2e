"""hlr-lookups.com API v2 (HLR, synchronous, one number per request): ``POST <base>/hlr-lookup``
with ``{"msisdn": "+…"}``; ``<base>`` is ``https://www.hlr-lookups.com/api/v2``.

Auth: ``X-Digest-Key`` (``--key``), ``X-Digest-Timestamp`` (Unix seconds) and
``X-Digest-Signature`` = hex HMAC-SHA256(``--secret``, path + timestamp + METHOD + body), the path
relative to ``/api/v2`` (``/hlr-lookup``). Each answer carries ``cost`` (a string, EUR): the
operator's cost. HTTP 429, 502 and 504 are read as "too many requests" (v1 used 502/504 for
concurrency limits).

``connectivity_status`` → numgate (research/upstreams.md §2.1): CONNECTED from a live HLR
(``data_source`` LIVE_HLR) → valid, reachable; CONNECTED from any other source (an MNP or hybrid
route) → valid, reachability UNKNOWN; ABSENT → valid, not reachable; INVALID_MSISDN → invalid;
UNDETERMINED → UNKNOWN. Roaming and ported from the booleans; the network is the ported-to one
when ported.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from numgate.ledger.money import SCALE
from numgate.numbers.providers import Live, ProviderFailed, Tri
from numgate.numbers.results import Level
from numgate.upstreams.base import Account, Answer, Failure, each_number
from numgate.upstreams.http import Reply, VendorHttp

DEFAULT_BASE_URL = "https://www.hlr-lookups.com/api/v2"
MAX_BATCH = 20
PATH = "/hlr-lookup"

Y, N, U = Tri.YES, Tri.NO, Tri.UNKNOWN


def digest(secret: str, path: str, ts: str, method: str, body: bytes) -> str:
    msg = path.encode() + ts.encode() + method.upper().encode() + body
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def _tri(value: Any) -> Tri:
    return Y if value is True else N if value is False else U


def _throttled(reply: Reply) -> bool:
    return reply.status in (429, 502, 504)


class HlrLookups:
    level = Level.HLR
    max_batch = MAX_BATCH

    def __init__(self, account: Account, timeout_s: float) -> None:
        self.account = account
        self._http = VendorHttp(timeout_s, vendor=f"hlr-lookups.com ({account.name})")
        self._url = account.base_url.rstrip("/") + PATH

    def _sign(self, body: bytes) -> dict[str, str]:
        ts = str(int(time.time()))
        return {
            "X-Digest-Key": self.account.key or "",
            "X-Digest-Timestamp": ts,
            "X-Digest-Signature": digest(self.account.secret or "", PATH, ts, "POST", body),
        }

    async def check(self, numbers: list[str], max_age_s: int = 0) -> dict[str, Answer]:
        return await each_number(numbers, self._one)

    async def _one(self, e164: str) -> Answer:
        body = orjson.dumps({"msisdn": e164})
        reply = await self._http.request(
            "POST",
            self._url,
            data=body,
            headers={"Content-Type": "application/json"},
            sign=self._sign,
            throttled=_throttled,
        )
        if reply.status != 200:
            raise ProviderFailed(f"hlr-lookups.com answered HTTP {reply.status}: {reply.body[:200]!r}")
        return self._answer(reply.json())

    def _answer(self, r: dict[str, Any]) -> Answer:
        status = str(r.get("connectivity_status", ""))
        cost = _cost(r.get("cost"))
        currency = "EUR" if cost is not None else None
        ported = _tri(r.get("is_ported"))
        roaming = _tri(r.get("is_roaming"))
        network = str(
            (r.get("ported_network_name") if ported is Y else None) or r.get("original_network_name") or ""
        )
        mcc, mnc = str(r.get("mcc") or ""), str(r.get("mnc") or "")
        if status == "CONNECTED":
            reachable = Y if r.get("data_source") == "LIVE_HLR" else U
            live = Live(Y, reachable, roaming if reachable is Y else U, ported, network, mcc, mnc)
        elif status == "ABSENT":
            live = Live(Y, N, roaming, ported, network, mcc, mnc)
        elif status == "INVALID_MSISDN":
            live = Live(N, N, U, U, str(r.get("original_network_name") or ""), mcc, mnc)
        else:  # UNDETERMINED or anything undocumented: nothing learnt
            return Answer(
                None, Failure.NO_INFORMATION, cost, currency, f"hlr-lookups.com: {status or 'no status'}"
            )
        return Answer(live, None, cost, currency)

    async def close(self) -> None:
        await self._http.close()


def _cost(value: Any) -> int | None:
    try:
        return int(Decimal(str(value)) * SCALE) if value is not None else None
    except InvalidOperation:
        return None
