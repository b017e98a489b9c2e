"""A fake Twilio Programmable Voice server, written from its published contract (see the class docstring)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import threading
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web


def twilio_signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """Twilio's RequestValidator: base64 HMAC-SHA1 over the URL and the sorted ``key+value``s."""
    msg = url + "".join(k + v for k, v in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), msg.encode(), hashlib.sha1).digest()).decode()


#: by the number's last digit: the status-callback sequence (CallStatus, extra parameters)
TWILIO_ENDINGS: dict[str, list[tuple[str, dict[str, str]]]] = {
    "1": [("ringing", {}), ("in-progress", {}), ("completed", {"AnsweredBy": "human", "CallDuration": "1"})],
    "2": [("ringing", {}), ("in-progress", {}), ("completed", {"AnsweredBy": "machine_start"})],
    "3": [("busy", {"SipResponseCode": "486"})],
    "4": [("ringing", {}), ("no-answer", {"SipResponseCode": "487", "CallDuration": "0"})],
    "5": [("no-answer", {"SipResponseCode": "487"})],
    "6": [("failed", {"SipResponseCode": "404"})],
    "7": [("failed", {"SipResponseCode": "480"})],
    "8": [],  # the callbacks never come
}
#: "9": REST error 21217 at create (not a valid phone number); any other digit: as "1"


@dataclass
class FakeTwilioVoice:
    """``POST /2010-04-01/Accounts/{AccountSid}/Calls.json``: form-encoded, HTTP Basic with the
    Account SID and Auth Token (401 ``20003`` otherwise), ``To``/``From`` and ``Twiml`` required
    (400 ``21201``-style otherwise), 201 with the Call resource. Then the status callbacks the
    request asked for (``StatusCallbackEvent``; ``initiated`` first), form-encoded, with
    ``SequenceNumber``, ``CallbackSource`` and ``X-Twilio-Signature``.

    ``mode``: ``ok``; ``twice`` (every callback sent twice); ``hold`` (callbacks kept until
    :meth:`release`); ``delay_s`` between callbacks."""

    base_url: str = ""
    account_sid: str = "AC" + "0" * 31 + "1"
    auth_token: str = "twilio-auth-token"
    mode: str = "ok"
    delay_s: float = 0.02
    created: list[dict[str, str]] = field(default_factory=list)
    #: (sid, CallStatus, HTTP status numgate answered)
    delivered: list[tuple[str, str, int]] = field(default_factory=list)
    held: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Calls.json", self._create)
        return app

    async def _create(self, request: web.Request) -> web.Response:
        self._loop = asyncio.get_running_loop()
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if request.headers.get("Authorization") != expected or request.match_info["sid"] != self.account_sid:
            return web.json_response(
                {
                    "code": 20003,
                    "message": "Authenticate",
                    "more_info": "https://www.twilio.com/docs/errors/20003",
                    "status": 401,
                },
                status=401,
            )
        form = await request.post()
        to, from_ = str(form.get("To", "")), str(form.get("From", ""))
        if not to or not from_ or not (form.get("Twiml") or form.get("Url")):
            return web.json_response(
                {"code": 21201, "message": "No 'To', 'From' or 'Twiml' parameter", "status": 400}, status=400
            )
        if to.endswith("9"):
            return web.json_response(
                {
                    "code": 21217,
                    "message": f"Phone number {to} is not a valid phone number",
                    "status": 400,
                    "more_info": "https://www.twilio.com/docs/errors/21217",
                },
                status=400,
            )
        with self.lock:
            sid = "CA" + hashlib.sha1(f"{to}{len(self.created)}".encode()).hexdigest()[:32]
            self.created.append(
                {
                    "sid": sid,
                    "To": to,
                    "From": from_,
                    "MachineDetection": str(form.get("MachineDetection", "")),
                }
            )
        events = set(form.getall("StatusCallbackEvent", [])) or {"completed"}
        callback = str(form.get("StatusCallback", ""))
        if callback:
            seq = [("initiated", {}), *TWILIO_ENDINGS.get(to[-1], TWILIO_ENDINGS["1"])]
            task = asyncio.get_running_loop().create_task(self._send(sid, to, from_, callback, seq, events))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        body = {
            "sid": sid,
            "account_sid": self.account_sid,
            "to": to,
            "from": from_,
            "status": "queued",
            "direction": "outbound-api",
            "price": None,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{sid}.json",
        }
        return web.json_response(body, status=201)

    async def _send(
        self, sid: str, to: str, from_: str, url: str, seq: list[tuple[str, dict[str, str]]], events: set[str]
    ) -> None:
        wanted = {"initiated": "initiated", "ringing": "ringing", "in-progress": "answered"}
        n = 0
        for status, extra in seq:
            if wanted.get(status, "completed") not in events:
                continue
            params = [
                ("CallSid", sid),
                ("AccountSid", self.account_sid),
                ("To", to),
                ("From", from_),
                ("CallStatus", status),
                ("Direction", "outbound-api"),
                ("ApiVersion", "2010-04-01"),
                ("CallbackSource", "call-progress-events"),
                ("SequenceNumber", str(n)),
                *extra.items(),
            ]
            n += 1
            await asyncio.sleep(self.delay_s)
            if self.mode == "hold":
                with self.lock:
                    self.held.append((url, params))
                continue
            for _ in range(2 if self.mode == "twice" else 1):
                await self.post(url, params)

    async def post(self, url: str, params: list[tuple[str, str]], signature: str | None = None) -> int:
        sig = signature if signature is not None else twilio_signature(self.auth_token, url, params)
        async with (
            aiohttp.ClientSession() as s,
            s.post(url, data=params, headers={"X-Twilio-Signature": sig}) as resp,
        ):
            await resp.read()
        with self.lock:
            self.delivered.append((dict(params)["CallSid"], dict(params)["CallStatus"], resp.status))
        return resp.status

    def release(self, signature: str | None = None) -> list[int]:
        """Send the held callbacks now (from the test's thread); their HTTP statuses."""
        assert self._loop is not None
        with self.lock:
            held, self.held = self.held, []

        async def send() -> list[int]:
            return [await self.post(url, params, signature) for url, params in held]

        return asyncio.run_coroutine_threadsafe(send(), self._loop).result(30)

    def wait_held(self, n: int, timeout: float = 10) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if len(self.held) >= n:
                    return
            time.sleep(0.02)
        raise AssertionError(f"expected {n} held callbacks, got {len(self.held)}")
