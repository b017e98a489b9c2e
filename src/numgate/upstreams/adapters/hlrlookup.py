"""hlrlookup.com ``apiv2`` (HLR, synchronous).

``POST <base>/apiv2/hlr`` with the credentials in the JSON body (``api_key``, ``api_secret``:
the account's ``--key`` and ``--secret``) and 1–80 ``requests``; the results keep the request
order. HTTP 429 means "slow down" (not charged); 401 bad credentials; 400 a bad parameter. Each
result carries ``credits_spent``: the operator's cost is that many times the account's unit cost
(``--unit-cost``: the price of one credit).

When the tenant accepts answers a day old or more (``maxAge``), each request carries
``cache_days_private`` and ``cache_days_global`` (whole days, at most 30): hlrlookup.com may answer
from its caches, and ``credits_spent`` says what that cost (0 for the account's own cache, ½ for
the global one).

``live_status`` → numgate (research/upstreams.md §2.2): LIVE → valid, reachable; ABSENT_SUBSCRIBER
and NO_TELESERVICE_PROVISIONED → valid, not reachable; DEAD → invalid; INCONCLUSIVE, NO_COVERAGE,
NOT_AVAILABLE_NETWORK_ONLY (also misspelt NOT_AVAIALBLE…), NOT_APPLICABLE → unknown. Roaming is
never reported (UNKNOWN); ``is_ported`` YES/NO/UNKNOWN; the network and MCC/MNC are the current
network's. A per-result ``error`` other than NONE is a failure of that number.
"""

from __future__ import annotations

from typing import Any

import orjson

from numgate.numbers.providers import Live, ProviderFailed, Tri
from numgate.numbers.results import Level
from numgate.upstreams.base import Account, Answer, Failure
from numgate.upstreams.http import VendorHttp

DEFAULT_BASE_URL = "https://api.hlrlookup.com"
MAX_BATCH = 80
#: the vendor's bound on ``cache_days_private`` / ``cache_days_global`` (beyond it: HTTP 400)
CACHE_DAYS_MAX = 30

Y, N, U = Tri.YES, Tri.NO, Tri.UNKNOWN
LIVE_STATUS: dict[str, tuple[Tri, Tri]] = {
    "LIVE": (Y, Y),
    "ABSENT_SUBSCRIBER": (Y, N),
    "NO_TELESERVICE_PROVISIONED": (Y, N),
    "DEAD": (N, N),
    "INCONCLUSIVE": (U, U),
    "NO_COVERAGE": (U, U),
    "NOT_AVAILABLE_NETWORK_ONLY": (U, U),
    "NOT_AVAIALBLE_NETWORK_ONLY": (U, U),
    "NOT_APPLICABLE": (U, U),
}
TRI = {"YES": Y, "NO": N}


class HlrLookupCom:
    level = Level.HLR
    max_batch = MAX_BATCH

    def __init__(self, account: Account, timeout_s: float) -> None:
        self.account = account
        self._http = VendorHttp(timeout_s, vendor=f"hlrlookup.com ({account.name})")
        self._url = account.base_url.rstrip("/") + "/apiv2/hlr"

    async def check(self, numbers: list[str], max_age_s: int = 0) -> dict[str, Answer]:
        digits = [n.lstrip("+") for n in numbers]
        # the tenant accepts answers this many whole days old: hlrlookup.com may answer from its
        # caches (the account's own lookups: free; other customers': half a credit)
        days = min(max_age_s // 86_400, CACHE_DAYS_MAX)
        cache = {"cache_days_private": days, "cache_days_global": days} if days else {}
        body = orjson.dumps(
            {
                "api_key": self.account.key or "",
                "api_secret": self.account.secret or "",
                "requests": [{"telephone_number": d, **cache} for d in digits],
            }
        )
        reply = await self._http.request(
            "POST", self._url, data=body, headers={"Content-Type": "application/json"}
        )
        if reply.status != 200:
            raise ProviderFailed(f"hlrlookup.com answered HTTP {reply.status}: {_message(reply.body)}")
        results = (reply.json().get("body") or {}).get("results")
        if not isinstance(results, list):
            raise ProviderFailed("hlrlookup.com answered without body.results")
        out: dict[str, Answer] = {}
        by_number = {d: n for d, n in zip(digits, numbers, strict=True)}
        for i, r in enumerate(results):
            asked = str(((r or {}).get("request_parameters") or {}).get("telephone_number", ""))
            number = by_number.get(asked.lstrip("+")) or (numbers[i] if i < len(numbers) else None)
            if number is not None and isinstance(r, dict):
                out[number] = self._answer(r)
        for n in numbers:  # a number the answer left out failed
            out.setdefault(n, Answer.failed("hlrlookup.com left the number out of its answer"))
        return out

    def _answer(self, r: dict[str, Any]) -> Answer:
        error = r.get("error", "NONE")
        if error != "NONE":
            return Answer.failed(f"hlrlookup.com: {error}")
        status = str(r.get("live_status", ""))
        validity, reachable = LIVE_STATUS.get(status, (U, U))
        network = r.get("current_network_details") or r.get("original_network_details") or {}
        mccmnc = str(network.get("mccmnc") or "")
        credits = r.get("credits_spent")
        cost = None
        if isinstance(credits, int | float):
            cost = round(credits * self.account.unit_cost)
        live = Live(
            validity,
            reachable,
            U,
            TRI.get(str(r.get("is_ported", "")).upper(), U),
            str(network.get("name") or ""),
            mccmnc[:3],
            mccmnc[3:],
        )
        if status == "NO_COVERAGE":  # nothing learnt, nothing charged by the vendor either
            return Answer(
                None, Failure.NO_INFORMATION, cost, self.account.cost_currency, "hlrlookup.com: NO_COVERAGE"
            )
        return Answer(live, None, cost, self.account.cost_currency)

    async def close(self) -> None:
        await self._http.close()


def _message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(data, dict):
        return f"{data.get('error', '')} {data.get('message', '')}".strip()
    return str(data)[:200]
