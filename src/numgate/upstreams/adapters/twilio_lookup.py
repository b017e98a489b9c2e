"""Twilio Lookup v2 (HLR, synchronous, one number per request):
``GET <base>/v2/PhoneNumbers/{e164}?Fields=line_type_intelligence,line_status``.

HTTP Basic auth with the Account SID (``--key``) and Auth Token (``--secret``). Errors:
``{"code", "message", "more_info", "status"}``; HTTP 429 (code 20429) means slow down. The answer
carries no price: the account's ``--unit-cost`` per lookup.

``valid: false`` → invalid. ``line_status.status`` (read case-insensitively): reachable → valid,
reachable; active → valid, reachability unknown; unreachable → valid, not reachable; inactive →
invalid. A package error: 60606 (package not enabled), 60611 (quota) and 60616 (rate limit) are
the upstream failing (the next upstream is tried); 60600, 60607, 60610, 60619 (no coverage for the
number) are no information (122). Roaming and ported are not reported (UNKNOWN); the network and
MCC/MNC come from ``line_type_intelligence``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from numgate.numbers.providers import Live, ProviderFailed, Tri
from numgate.numbers.results import Level
from numgate.upstreams.base import Account, Answer, Failure, each_number
from numgate.upstreams.http import Reply, VendorHttp, basic_auth

DEFAULT_BASE_URL = "https://lookups.twilio.com"
#: numbers looked up at once (one request each)
MAX_BATCH = 20

Y, N, U = Tri.YES, Tri.NO, Tri.UNKNOWN
STATUS: dict[str, tuple[Tri, Tri]] = {
    "reachable": (Y, Y),
    "active": (Y, U),
    "unreachable": (Y, N),
    "inactive": (N, N),
}
FAILING = {60606, 60611, 60616}


def _throttled(reply: Reply) -> bool:
    return reply.status == 429


class TwilioLookup:
    level = Level.HLR
    max_batch = MAX_BATCH

    def __init__(self, account: Account, timeout_s: float) -> None:
        self.account = account
        self._http = VendorHttp(timeout_s, vendor=f"Twilio Lookup ({account.name})")
        self._base = account.base_url.rstrip("/")
        self._auth = basic_auth(account.key or "", account.secret or "")

    async def check(self, numbers: list[str], max_age_s: int = 0) -> dict[str, Answer]:
        return await each_number(numbers, self._one)

    async def _one(self, e164: str) -> Answer:
        url = f"{self._base}/v2/PhoneNumbers/{quote(e164)}"
        reply = await self._http.request(
            "GET",
            url,
            params={"Fields": "line_type_intelligence,line_status"},
            headers=self._auth,
            throttled=_throttled,
        )
        if reply.status != 200:
            raise ProviderFailed(f"Twilio Lookup answered HTTP {reply.status}: {_message(reply.body)}")
        return self._answer(reply.json())

    def _answer(self, r: dict[str, Any]) -> Answer:
        cost, currency = self.account.unit_cost, self.account.cost_currency
        lti = r.get("line_type_intelligence") or {}
        network = str(lti.get("carrier_name") or "")
        mcc, mnc = str(lti.get("mobile_country_code") or ""), str(lti.get("mobile_network_code") or "")
        if r.get("valid") is False:
            return Answer(Live(N, N, U, U, network, mcc, mnc), None, cost, currency)
        status = r.get("line_status") or {}
        code = status.get("error_code")
        if code is not None:
            if int(code) in FAILING:
                return Answer.failed(f"Twilio Lookup line_status error {code}")
            return Answer(None, Failure.NO_INFORMATION, None, None, f"Twilio Lookup line_status error {code}")
        validity, reachable = STATUS.get(str(status.get("status", "")).lower(), (U, U))
        return Answer(Live(validity, reachable, U, U, network, mcc, mnc), None, cost, currency)

    async def close(self) -> None:
        await self._http.close()


def _message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
        return f"{data.get('code', '')} {data.get('message', '')}".strip()
    except (orjson.JSONDecodeError, AttributeError):
        return body[:200].decode("utf-8", "replace")
