"""A fake hlrlookup.com apiv2 server, written from its published contract (see the class docstring)."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

#: by the number's last digit: (live_status, is_ported, current network, mccmnc, credits)
HLRLOOKUP_ENDINGS: dict[str, tuple[str, str, str, str, float]] = {
    "0": ("LIVE", "NO", "MTN Nigeria", "62130", 1),
    "1": ("ABSENT_SUBSCRIBER", "NO", "MTN Nigeria", "62130", 1),
    "2": ("DEAD", "UNKNOWN", "", "", 1),
    "3": ("NO_COVERAGE", "UNKNOWN", "", "", 0),
    "4": ("INCONCLUSIVE", "UNKNOWN", "Glo Mobile", "62150", 1),
    "6": ("LIVE", "YES", "Airtel Nigeria", "62120", 1),
    "7": ("NOT_AVAIALBLE_NETWORK_ONLY", "NO", "9mobile", "62160", 1),  # the docs' misspelling
}
#: "5": a per-result error (INSUFFICIENT_CREDIT); any other digit: as "0"


@dataclass
class FakeHlrLookup:
    """``POST /apiv2/hlr`` of hlrlookup.com: credentials in the JSON body (401 otherwise), 1–80
    ``requests`` (400 otherwise), ``body.results`` in request order echoing ``request_parameters``.

    ``mode``: ``ok``; ``throttle`` (429 ``TOO_MANY_REQUESTS`` — ``throttle_times`` times, then
    ok; 0 = always); ``error`` (500, no body); ``hang`` (answers after ``hang_s``); ``malformed``
    (200 with a body that is not JSON); ``partial`` (leaves out every other number)."""

    base_url: str = ""
    api_key: str = "hk-test"
    api_secret: str = "hs-test"
    mode: str = "ok"
    throttle_times: int = 0
    hang_s: float = 30.0
    #: seconds every accepted call takes (the vendor's own HLR round trip)
    delay_s: float = 0.0
    #: numbers other customers looked up recently (hlrlookup.com's global cache: half a credit)
    global_cache: set[str] = field(default_factory=set)
    #: numbers this account looked up (its private cache: free); filled by live lookups
    private_cache: set[str] = field(default_factory=set)
    #: numbers answered from a cache, and which one
    cached: list[tuple[str, str]] = field(default_factory=list)
    #: the numbers of each accepted call, of each well-formed request (throttled ones too), and
    #: every HTTP status answered
    calls: list[list[str]] = field(default_factory=list)
    asked: list[list[str]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def looked_up(self) -> list[str]:
        with self.lock:
            return [n for call in self.calls for n in call]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/apiv2/hlr", self._hlr)
        return app

    def _answer(self, status: int, body: Any = None) -> web.Response:
        with self.lock:
            self.statuses.append(status)
        if body is None:
            return web.Response(status=status)
        return web.json_response(body, status=status)

    async def _hlr(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return self._answer(400, {"error": "BAD_REQUEST", "message": "Invalid JSON"})
        if body.get("api_key") != self.api_key or body.get("api_secret") != self.api_secret:
            return self._answer(401, {"error": "UNAUTHORIZED", "message": "Invalid api_key or api_secret"})
        reqs = body.get("requests")
        if not isinstance(reqs, list) or not 1 <= len(reqs) <= 80:
            return self._answer(
                400, {"error": "BAD_REQUEST", "message": "requests must hold 1 to 80 numbers"}
            )
        for r in reqs:
            for k in ("cache_days_private", "cache_days_global"):
                if not isinstance(r.get(k, 0), int) or not 0 <= r.get(k, 0) <= 30:
                    return self._answer(400, {"error": "BAD_REQUEST", "message": f"{k} must be from 0 to 30"})
        with self.lock:
            self.asked.append([str(r.get("telephone_number", "")) for r in reqs])
            throttled = self.mode == "throttle" and (
                self.throttle_times == 0 or self.statuses.count(429) < self.throttle_times
            )
        if throttled:
            return self._answer(429, {"error": "TOO_MANY_REQUESTS", "message": "Please try again later"})
        if self.mode == "error":
            return self._answer(500)
        if self.mode == "hang":
            await asyncio.sleep(self.hang_s)
        if self.mode == "malformed":
            with self.lock:
                self.statuses.append(200)
            return web.Response(text="<html>upstream gateway</html>", content_type="application/json")
        numbers = [str(r.get("telephone_number", "")) for r in reqs]
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        with self.lock:
            self.calls.append(numbers)
        results = [self._cached(r) or self._result(str(r.get("telephone_number", ""))) for r in reqs]
        if self.mode == "partial":
            results = results[::2]
        return self._answer(200, {"body": {"results": results}})

    def _cached(self, req: dict[str, Any]) -> dict[str, Any] | None:
        number = str(req.get("telephone_number", ""))
        with self.lock:
            if req.get("cache_days_private", 0) > 0 and number in self.private_cache:
                which, credits = "private", 0.0
            elif req.get("cache_days_global", 0) > 0 and number in self.global_cache:
                which, credits = "global", 0.5
            else:
                return None
            self.cached.append((number, which))
        return {**self._result(number, save=False), "credits_spent": credits}

    def _result(self, number: str, save: bool = True) -> dict[str, Any]:
        params = {"telephone_number": number, "save_to_cache": "YES", "cache_days_private": 0}
        digits = "".join(ch for ch in number if ch.isdigit())
        last = digits[-1:] or "0"
        if last == "5":
            return {"error": "INSUFFICIENT_CREDIT", "request_parameters": params, "credits_spent": 0}
        status, ported, net, mccmnc, credits = HLRLOOKUP_ENDINGS.get(last, HLRLOOKUP_ENDINGS["0"])
        if save:
            with self.lock:
                self.private_cache.add(number)
        details = {"name": net, "mccmnc": mccmnc, "country_name": "Nigeria", "country_iso3": "NGA"}
        return {
            "error": "NONE",
            "uuid": hashlib.sha1(digits.encode()).hexdigest(),
            "request_parameters": params,
            "credits_spent": credits,
            "detected_telephone_number": digits,
            "live_status": status,
            "original_network": "AVAILABLE",
            "original_network_details": details,
            "current_network": "AVAILABLE" if net else "NOT_AVAILABLE",
            "current_network_details": details if net else {},
            "is_ported": ported,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "telephone_number_type": "MOBILE",
        }
