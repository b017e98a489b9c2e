"""A fake hlr-lookups.com API v2 server, written from its published contract (see the class docstring)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field

from aiohttp import web

#: by the last digit: connectivity_status, data_source, is_ported, is_roaming
HLR_LOOKUPS_ENDINGS: dict[str, tuple[str, str, bool | None, bool | None]] = {
    "0": ("CONNECTED", "LIVE_HLR", False, False),
    "1": ("ABSENT", "LIVE_HLR", False, None),
    "2": ("INVALID_MSISDN", "LIVE_HLR", None, None),
    "3": ("UNDETERMINED", "LIVE_HLR", None, None),
    "4": ("CONNECTED", "MNP_DB", True, None),  # an MNP route: CONNECTED says nothing of reachability
    "6": ("CONNECTED", "LIVE_HLR", True, True),
}


@dataclass
class FakeHlrLookups:
    """``POST /api/v2/hlr-lookup`` of hlr-lookups.com: ``X-Digest-Key``, ``X-Digest-Timestamp``
    (±300 s) and ``X-Digest-Signature`` = hex HMAC-SHA256(secret, path + ts + METHOD + body) with
    the path relative to ``/api/v2`` (401 otherwise); one ``msisdn`` per request; ``cost`` a
    4-decimal EUR string. ``mode`` ``busy``: 502 (v1's "too many concurrent requests")."""

    base_url: str = ""
    api_key: str = "hl-key"
    api_secret: str = "hl-secret"
    mode: str = "ok"
    asked: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v2/hlr-lookup", self._lookup)
        return app

    async def _lookup(self, request: web.Request) -> web.Response:
        body = await request.read()
        ts = request.headers.get("X-Digest-Timestamp", "")
        msg = b"/hlr-lookup" + ts.encode() + b"POST" + body
        expected = hmac.new(self.api_secret.encode(), msg, hashlib.sha256).hexdigest()
        fresh = ts.isdigit() and abs(int(ts) - time.time()) < 300
        if (
            request.headers.get("X-Digest-Key") != self.api_key
            or not fresh
            or not hmac.compare_digest(request.headers.get("X-Digest-Signature", ""), expected)
        ):
            return web.json_response(
                {"success": False, "errors": [{"code": 1000, "message": "Invalid digest signature"}]},
                status=401,
            )
        if self.mode == "busy":
            return web.Response(status=502)
        msisdn = str(json.loads(body).get("msisdn", ""))
        with self.lock:
            self.asked.append(msisdn)
        status, source, ported, roaming = HLR_LOOKUPS_ENDINGS.get(msisdn[-1:], HLR_LOOKUPS_ENDINGS["0"])
        return web.json_response(
            {
                "id": hashlib.sha1(msisdn.encode()).hexdigest()[:12],
                "msisdn": msisdn,
                "connectivity_status": status,
                "mccmnc": "62130",
                "mcc": "621",
                "mnc": "30",
                "original_network_name": "MTN Nigeria",
                "original_country_code": "NG",
                "is_ported": ported,
                "ported_network_name": "Airtel Nigeria" if ported else None,
                "is_roaming": roaming,
                "cost": "0.0100",
                "timestamp": "2026-11-29 19:16:17.676+0000",
                "route": "IP1",
                "processing_status": "COMPLETED",
                "error_code": None,
                "data_source": source,
            }
        )
