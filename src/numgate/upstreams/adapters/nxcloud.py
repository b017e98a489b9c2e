"""NXCloud's own Number Check as an upstream (HLR level 5 and Call level 4, asynchronous).

numgate submits ``POST <base>/api/number/check`` (signed headers ``accessKey``, ``ts``,
``bizType`` 1, ``action`` numbercheck, ``sign`` = MD5 hex of
``accessKey=…&action=…&bizType=…&ts=…&body=<raw>&accessSecret=…``) with the numbers of one
country, ``checkLevel`` 5 or 4, the account's ``--appkey`` and a ``drUrl`` of
``<NUMGATE_PUBLIC_URL>/upstreams/<name>/events?job=<group>``. NXCloud answers with a
``messageId`` (number *i* of a larger batch is ``<messageId>-<i, 6 digits>``) and later POSTs one
callback per number to that URL. NXCloud signs no callback: the unguessable ``job`` token in the
URL, matched against the job the callback's ``messageId`` belongs to, is what authenticates it.

The callback is read in both of NXCloud's shapes: v1 (``data.live {validity, reachable,
roaming}``, ``data.dial {early, answered, response}``) with numgate's v2 additions (``ported``,
``mcc``, ``mnc``, ``network`` in ``live``), and v2's flat ``data {active, ported, mcc, mnc,
operator}`` (``active`` → validity; reachability stays UNKNOWN) — ``YES``/``NO`` in either case.
Code 122 is no information; any other non-zero code is a failure. ``cost`` is the operator's.
"""

from __future__ import annotations

import hashlib
import time
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from numgate.ledger.money import SCALE
from numgate.numbers.providers import Dial, DialResponse, Live, ProviderFailed, Tri
from numgate.numbers.results import Level
from numgate.upstreams.base import Account, Answer, BadEvent, Event, Failure, Inbound
from numgate.upstreams.http import VendorHttp

DEFAULT_BASE_URL = "http://api2.nxcloud.com"
MAX_BATCH = 5000


def sign(access_key: str, secret: str, ts: str, body: bytes) -> str:
    text = f"accessKey={access_key}&action=numbercheck&bizType=1&ts={ts}&body=".encode()
    return hashlib.md5(text + body + f"&accessSecret={secret}".encode()).hexdigest()


def _tri(value: Any) -> Tri:
    v = str(value or "").upper()
    return Tri.YES if v == "YES" else Tri.NO if v == "NO" else Tri.UNKNOWN


class NxCloudCheck:
    max_batch = MAX_BATCH

    def __init__(self, account: Account, level: Level, timeout_s: float) -> None:
        self.account = account
        self.level = level
        self._http = VendorHttp(timeout_s, vendor=f"NXCloud ({account.name})")
        self._url = account.base_url.rstrip("/") + "/api/number/check"

    def _headers(self, body: bytes) -> dict[str, str]:
        ts = str(time.time_ns() // 1_000_000)
        key = self.account.key or ""
        return {
            "Content-Type": "application/json",
            "accessKey": key,
            "ts": ts,
            "bizType": "1",
            "action": "numbercheck",
            "sign": sign(key, self.account.secret or "", ts, body),
        }

    async def start(self, numbers: list[tuple[str, str]], events_url: str) -> dict[str, str | Answer]:
        group = numbers[0][1].split(".", 1)[0]
        body = orjson.dumps(
            {
                "phone": ",".join(e.lstrip("+") for e, _ in numbers),
                "checkLevel": int(self.level),
                "appkey": self.account.options.get("appkey", ""),
                "drUrl": f"{events_url}?job={group}",
            }
        )
        try:
            reply = await self._http.request("POST", self._url, data=body, sign=self._headers)
            if reply.status != 200:
                raise ProviderFailed(f"NXCloud answered HTTP {reply.status}")
            answer = reply.json()
            if answer.get("code") != 0:
                raise ProviderFailed(
                    f"NXCloud refused the batch: {answer.get('code')} {answer.get('msg', '')}"
                )
            mid = str((answer.get("data") or {}).get("messageId") or "")
            if not mid:
                raise ProviderFailed("NXCloud accepted the batch without a messageId")
        except ProviderFailed as exc:
            return {token: Answer.failed(str(exc)) for _, token in numbers}
        if len(numbers) == 1:
            return {numbers[0][1]: mid}
        return {token: f"{mid}-{i:06d}" for i, (_, token) in enumerate(numbers, 1)}

    def parse_event(self, inbound: Inbound, token: str | None) -> Event:
        try:
            body = orjson.loads(inbound.body)
        except orjson.JSONDecodeError:
            raise BadEvent(400, "an NXCloud callback is a JSON object") from None
        if not isinstance(body, dict) or not body.get("messageId"):
            raise BadEvent(400, "an NXCloud callback names its messageId")
        return Event(str(body["messageId"]), body, True)

    def conclude(self, events: list[dict[str, Any]]) -> Answer:
        body = events[-1]
        code = body.get("code")
        cost, currency = _cost(body.get("cost"))
        if code == 122:
            return Answer(
                None, Failure.NO_INFORMATION, cost, currency, "NXCloud: 122 Information not detected"
            )
        if code != 0:
            return Answer.failed(f"NXCloud: {code} {body.get('msg') or body.get('message') or ''}")
        data = body.get("data") or {}
        if self.level is Level.CALL:
            d = data.get("dial") or {}
            raw = d.get("response", data.get("response", "others"))
            try:
                response = DialResponse(str(raw).lower())
            except ValueError:
                response = DialResponse.OTHERS
            dial = Dial(
                _tri(d.get("early", data.get("ring"))), _tri(d.get("answered", data.get("answer"))), response
            )
            return Answer(dial, None, cost, currency)
        live = data.get("live")
        if isinstance(live, dict):  # v1, with numgate's v2 additions when the upstream is numgate
            result = Live(
                _tri(live.get("validity")),
                _tri(live.get("reachable")),
                _tri(live.get("roaming")),
                _tri(live.get("ported")),
                str(live.get("network") or ""),
                str(live.get("mcc") or ""),
                str(live.get("mnc") or ""),
            )
        else:  # v2: flat fields
            result = Live(
                _tri(data.get("active")),
                Tri.UNKNOWN,
                Tri.UNKNOWN,
                _tri(data.get("ported")),
                str(data.get("operator") or ""),
                str(data.get("mcc") or ""),
                str(data.get("mnc") or ""),
            )
        return Answer(result, None, cost, currency)

    async def close(self) -> None:
        await self._http.close()


def _cost(cost: Any) -> tuple[int | None, str | None]:
    if not isinstance(cost, dict):
        return None, None
    try:
        return int(Decimal(str(cost.get("price"))) * SCALE), str(cost.get("currency") or "USD")
    except (InvalidOperation, ValueError):
        return None, None
