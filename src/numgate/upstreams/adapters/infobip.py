"""Infobip Number Lookup (HLR, synchronous): ``POST <base>/number/1/query``.

Auth ``Authorization: App <api key>`` (the account's ``--key``); body ``{"to": [digits, …]}``,
1–1,000 numbers. Errors come as ``{"requestError": {"serviceException": {"messageId", "text"}}}``
with HTTP 400/401/403/429/500; 429 means slow down. The answer carries no price: the operator's
cost is the account's ``--unit-cost`` per number.

Each result's ``status`` is read before its ``error`` (an answer can say ``REJECTED`` with error
``NO_ERROR``): DELIVERED with error 0 → valid, reachable; GSM errors EC_ABSENT_SUBSCRIBER(_SM) →
valid, not reachable; EC_UNKNOWN_SUBSCRIBER, EC_UNIDENTIFIED_SUBSCRIBER → invalid;
EC_TELESERVICE_NOT_PROVISIONED, EC_CALL_BARRED, EC_ILLEGAL_SUBSCRIBER → valid, not reachable;
REJECTED, PENDING, EXPIRED and system errors → no information (122, not charged). Roaming and
ported come from the booleans (absent: UNKNOWN); the network is the ported-to one when ported;
MCC = the first three digits of ``mccMnc``.
"""

from __future__ import annotations

from typing import Any

import orjson

from numgate.numbers.providers import Live, ProviderFailed, Tri
from numgate.numbers.results import Level
from numgate.upstreams.base import Account, Answer, Failure
from numgate.upstreams.http import VendorHttp

DEFAULT_BASE_URL = "https://api.infobip.com"
MAX_BATCH = 1000

Y, N, U = Tri.YES, Tri.NO, Tri.UNKNOWN
#: GSM error name → (validity, reachable)
ERRORS: dict[str, tuple[Tri, Tri]] = {
    "EC_ABSENT_SUBSCRIBER": (Y, N),
    "EC_ABSENT_SUBSCRIBER_SM": (Y, N),
    "EC_UNKNOWN_SUBSCRIBER": (N, N),
    "EC_UNIDENTIFIED_SUBSCRIBER": (N, N),
    "EC_TELESERVICE_NOT_PROVISIONED": (Y, N),
    "EC_CALL_BARRED": (Y, N),
    "EC_ILLEGAL_SUBSCRIBER": (Y, N),
}


def _tri(value: Any) -> Tri:
    return Y if value is True else N if value is False else U


class InfobipNumberLookup:
    level = Level.HLR
    max_batch = MAX_BATCH

    def __init__(self, account: Account, timeout_s: float) -> None:
        self.account = account
        self._http = VendorHttp(timeout_s, vendor=f"Infobip ({account.name})")
        self._url = account.base_url.rstrip("/") + "/number/1/query"

    async def check(self, numbers: list[str], max_age_s: int = 0) -> dict[str, Answer]:
        digits = {n.lstrip("+"): n for n in numbers}
        reply = await self._http.request(
            "POST",
            self._url,
            data=orjson.dumps({"to": list(digits)}),
            headers={
                "Authorization": f"App {self.account.key or ''}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        if reply.status != 200:
            raise ProviderFailed(f"Infobip answered HTTP {reply.status}: {_message(reply.body)}")
        results = reply.json().get("results")
        if not isinstance(results, list):
            raise ProviderFailed("Infobip answered without results")
        out: dict[str, Answer] = {}
        for r in results:
            if isinstance(r, dict) and (n := digits.get(str(r.get("to", "")).lstrip("+"))) is not None:
                out[n] = self._answer(r)
        for n in numbers:
            out.setdefault(n, Answer.failed("Infobip left the number out of its answer"))
        return out

    def _answer(self, r: dict[str, Any]) -> Answer:
        status = r.get("status") or {}
        error = r.get("error") or {}
        group = str(status.get("groupName", "")).upper()
        error_name = str(error.get("name", ""))
        cost, currency = self.account.unit_cost, self.account.cost_currency
        if group == "DELIVERED" and int(error.get("id", 0) or 0) == 0:
            validity, reachable = Y, Y
        elif error_name in ERRORS:
            validity, reachable = ERRORS[error_name]
        else:
            detail = f"Infobip: {status.get('name', group or 'no status')} / {error_name or 'no error'}"
            return Answer(None, Failure.NO_INFORMATION, cost, currency, detail)
        ported = _tri(r.get("ported"))
        net = (r.get("portedNetwork") if ported is Y else None) or r.get("originalNetwork") or {}
        mccmnc = str(r.get("mccMnc") or "")
        live = Live(
            validity,
            reachable,
            _tri(r.get("roaming")),
            ported,
            str(net.get("networkName") or ""),
            mccmnc[:3],
            mccmnc[3:],
        )
        return Answer(live, None, cost, currency)

    async def close(self) -> None:
        await self._http.close()


def _message(body: bytes) -> str:
    try:
        exc = orjson.loads(body)["requestError"]["serviceException"]
        return f"{exc.get('messageId', '')}: {exc.get('text', '')}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace")
