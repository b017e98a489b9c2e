"""A fake Twilio Lookup v2 server, written from its published contract (see the class docstring)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from aiohttp import web

#: by the last digit: (valid, line_status.status, line_status.error_code)
TWILIO_LOOKUP_ENDINGS: dict[str, tuple[bool, str | None, int | None]] = {
    "0": (True, "reachable", None),
    "1": (True, "unreachable", None),
    "2": (True, "inactive", None),
    "3": (True, None, 60610),  # outside coverage: nothing known
    "4": (True, "active", None),
    "5": (True, None, 60616),  # the lookup rate limit: a failure of this upstream
    "6": (False, None, None),
}


@dataclass
class FakeTwilioLookup:
    """``GET /v2/PhoneNumbers/{n}?Fields=…`` of Twilio Lookup: HTTP Basic with the Account SID and
    Auth Token (401 ``20003``), the packages asked for in ``Fields`` (others ``null``)."""

    base_url: str = ""
    account_sid: str = "AC" + "0" * 31 + "2"
    auth_token: str = "lookup-token"
    asked: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v2/PhoneNumbers/{number}", self._lookup)
        return app

    async def _lookup(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"code": 20003, "message": "Authenticate", "status": 401}, status=401)
        number = request.match_info["number"]
        fields = set(request.query.get("Fields", "").split(","))
        self.asked.append(number)
        valid, status, code = TWILIO_LOOKUP_ENDINGS.get(number[-1:], TWILIO_LOOKUP_ENDINGS["0"])
        return web.json_response(
            {
                "calling_country_code": "234",
                "country_code": "NG",
                "phone_number": number,
                "valid": valid,
                "validation_errors": [] if valid else ["INVALID_BUT_POSSIBLE"],
                "line_type_intelligence": {
                    "mobile_country_code": "621",
                    "mobile_network_code": "30",
                    "carrier_name": "MTN Nigeria",
                    "type": "mobile",
                    "error_code": None,
                }
                if "line_type_intelligence" in fields
                else None,
                "line_status": {"status": status, "error_code": code} if "line_status" in fields else None,
            }
        )
