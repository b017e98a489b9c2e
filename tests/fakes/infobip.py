"""A fake Infobip Number Lookup server, written from its published contract (see the class docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

#: by the last digit: (status groupName, status name, error id, error name, ported, roaming)
INFOBIP_ENDINGS: dict[str, tuple[str, str, int, str, bool, bool]] = {
    "0": ("DELIVERED", "DELIVERED_TO_HANDSET", 0, "NO_ERROR", False, False),
    "1": ("UNDELIVERABLE", "UNDELIVERABLE_NOT_DELIVERED", 27, "EC_ABSENT_SUBSCRIBER", False, False),
    "2": ("UNDELIVERABLE", "UNDELIVERABLE_NOT_DELIVERED", 1, "EC_UNKNOWN_SUBSCRIBER", False, False),
    "3": ("REJECTED", "REJECTED_DESTINATION", 0, "NO_ERROR", False, False),  # NO_ERROR, yet no answer
    "6": ("DELIVERED", "DELIVERED_TO_HANDSET", 0, "NO_ERROR", True, True),
}


@dataclass
class FakeInfobip:
    """``POST /number/1/query`` of Infobip: ``Authorization: App <key>`` (401 ``UNAUTHORIZED`` in
    the ``requestError`` envelope otherwise), ``to`` 1–1,000 numbers without ``+`` (400)."""

    base_url: str = ""
    api_key: str = "ib-app-key"
    asked: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/number/1/query", self._query)
        return app

    @staticmethod
    def _error(status: int, mid: str, text: str) -> web.Response:
        return web.json_response(
            {"requestError": {"serviceException": {"messageId": mid, "text": text}}}, status=status
        )

    async def _query(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"App {self.api_key}":
            return self._error(401, "UNAUTHORIZED", "Invalid login details")
        to = (await request.json()).get("to")
        if not isinstance(to, list) or not 1 <= len(to) <= 1000 or any(str(n).startswith("+") for n in to):
            return self._error(400, "BAD_REQUEST", "Bad request")
        self.asked += to
        results = []
        for n in to:
            group, name, eid, ename, ported, roaming = INFOBIP_ENDINGS.get(n[-1:], INFOBIP_ENDINGS["0"])
            net = {
                "networkName": "MTN Nigeria",
                "networkPrefix": "803",
                "countryName": "Nigeria",
                "countryPrefix": "234",
            }
            results.append(
                {
                    "to": n,
                    "mccMnc": "62130",
                    "originalNetwork": net,
                    "ported": ported,
                    "portedNetwork": {**net, "networkName": "Airtel Nigeria"} if ported else None,
                    "roaming": roaming,
                    "status": {"groupId": 3, "groupName": group, "id": 5, "name": name},
                    "error": {
                        "groupId": 0 if eid == 0 else 1,
                        "groupName": "OK",
                        "id": eid,
                        "name": ename,
                        "permanent": eid == 1,
                    },
                }
            )
        return web.json_response({"results": results, "bulkId": "BULK-1"})
