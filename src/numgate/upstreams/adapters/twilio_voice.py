"""Twilio Programmable Voice as a test-call upstream (Call level, asynchronous).

A test call is ``POST <base>/2010-04-01/Accounts/{AccountSid}/Calls.json`` (form-encoded, HTTP
Basic with the Account SID ``--key`` and Auth Token ``--secret``) from the account's
``--from-number``, with answering-machine detection on, TwiML that hangs up as soon as the call
is answered, a ring time-out, and status callbacks for ``initiated ringing answered completed``
to ``<NUMGATE_PUBLIC_URL>/upstreams/<name>/events?job=<token>``. Every callback must carry a valid
``X-Twilio-Signature`` (base64 HMAC-SHA1 with the Auth Token over the URL and the sorted form
parameters); one that does not is refused with 403 and changes nothing.

Outcome → numgate's dial (research/upstreams.md §3.2; ``bell`` means "it rang"):

====================================================  =====  ========  ==============
what Twilio reported                                  early  answered  response
====================================================  =====  ========  ==============
completed, AnsweredBy human (or no AMD verdict)       YES    YES       bell
completed, AnsweredBy machine_* or fax                YES    NO        voicemail
completed, AnsweredBy unknown                         YES    UNKNOWN   others
busy                                                  YES if it rang, else UNKNOWN; NO; busy
no-answer after ringing                               YES    NO        bell
no-answer without ringing                             NO     NO        no_response
failed, SIP 404/484/604 (or REST 21217/21214)         NO     NO        invalid_number
failed, SIP 480                                       NO     NO        not_available
failed, anything else                                 UNKNOWN NO       others
canceled                                              rang?  NO        bell / no_response
====================================================  =====  ========  ==============

The operator's cost is the account's ``--unit-cost`` per call (Twilio prices a call only later,
on the Call resource).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
from typing import Any
from urllib.parse import parse_qsl

from numgate.numbers.providers import Dial, DialResponse, ProviderFailed, Tri
from numgate.numbers.results import Level
from numgate.upstreams.base import Account, Answer, BadEvent, Event, Inbound
from numgate.upstreams.http import VendorHttp, basic_auth

DEFAULT_BASE_URL = "https://api.twilio.com"
#: seconds the phone rings before Twilio gives up (no-answer)
RING_S = 25
FINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
#: REST errors that are an answer about the number, not a failure of the upstream
INVALID_NUMBER_CODES = {21217, 21214}
TWIML = "<Response><Hangup/></Response>"

Y, N, U = Tri.YES, Tri.NO, Tri.UNKNOWN
R = DialResponse


def signature(token: str, url: str, params: list[tuple[str, str]]) -> str:
    """``X-Twilio-Signature`` for a form POST to ``url`` (Twilio's RequestValidator)."""
    payload = url + "".join(k + v for k, v in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()).decode()


def _without_port(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=host))


class TwilioVoice:
    level = Level.CALL

    def __init__(self, account: Account, timeout_s: float) -> None:
        self.account = account
        self._http = VendorHttp(timeout_s, vendor=f"Twilio Voice ({account.name})")
        self._url = f"{account.base_url.rstrip('/')}/2010-04-01/Accounts/{account.key}/Calls.json"
        self._auth = basic_auth(account.key or "", account.secret or "")

    async def start(self, numbers: list[tuple[str, str]], events_url: str) -> dict[str, str | Answer]:
        out: dict[str, str | Answer] = {}
        for e164, token in numbers:  # Twilio queues calls past its rate: one request each
            try:
                out[token] = await self._call(e164, f"{events_url}?job={token}")
            except ProviderFailed as exc:
                out[token] = Answer.failed(str(exc))
        return out

    async def _call(self, e164: str, callback: str) -> str | Answer:
        form = [
            ("To", e164),
            ("From", self.account.from_number or ""),
            ("Twiml", TWIML),
            ("Timeout", str(RING_S)),
            ("MachineDetection", "Enable"),
            ("StatusCallback", callback),
            ("StatusCallbackMethod", "POST"),
            *(("StatusCallbackEvent", e) for e in ("initiated", "ringing", "answered", "completed")),
        ]
        reply = await self._http.request("POST", self._url, data=form, headers=self._auth)
        if reply.status == 201:
            sid = reply.json().get("sid")
            if not isinstance(sid, str) or not sid:
                raise ProviderFailed("Twilio created a call without a sid")
            return sid
        error: dict[str, Any] = {}
        with contextlib.suppress(ProviderFailed):
            error = reply.json()
        code = error.get("code") if isinstance(error, dict) else None
        if reply.status == 400 and code in INVALID_NUMBER_CODES:
            return Answer(Dial(N, N, R.INVALID_NUMBER), None, 0, self.account.cost_currency)
        raise ProviderFailed(
            f"Twilio refused the call: HTTP {reply.status} {code or ''} {error.get('message', '')}"
        )

    def parse_event(self, inbound: Inbound, token: str | None) -> Event:
        if not inbound.content_type.startswith("application/x-www-form-urlencoded"):
            raise BadEvent(400, "a Twilio status callback is form-encoded")
        params = parse_qsl(inbound.body.decode("utf-8", "replace"), keep_blank_values=True)
        sent = inbound.headers.get("x-twilio-signature", "")
        token_ = self.account.secret or ""
        valid = any(
            hmac.compare_digest(signature(token_, url, params), sent)
            for url in (inbound.url, _without_port(inbound.url))
        )
        if not sent or not valid:
            raise BadEvent(403, "X-Twilio-Signature does not match this upstream's Auth Token")
        data = dict(params)
        sid = data.get("CallSid", "")
        if not sid:
            raise BadEvent(400, "no CallSid in the status callback")
        kept: dict[str, Any] = {
            k: data[k]
            for k in ("CallStatus", "AnsweredBy", "SipResponseCode", "SequenceNumber", "CallDuration")
            if k in data
        }
        return Event(sid, kept, data.get("CallStatus", "") in FINAL)

    def conclude(self, events: list[dict[str, Any]]) -> Answer:
        statuses = [e.get("CallStatus", "") for e in events]
        rang = any(s in ("ringing", "in-progress", "answered") for s in statuses)
        final = next((e for e in reversed(events) if e.get("CallStatus") in FINAL), events[-1])
        status = final.get("CallStatus", "")
        answered_by = final.get("AnsweredBy") or next(
            (e["AnsweredBy"] for e in reversed(events) if e.get("AnsweredBy")), ""
        )
        sip = str(final.get("SipResponseCode", ""))
        if status == "completed":
            if answered_by.startswith("machine") or answered_by == "fax":
                dial = Dial(Y, N, R.VOICEMAIL)
            elif answered_by == "unknown":
                dial = Dial(Y, U, R.OTHERS)
            else:
                dial = Dial(Y, Y, R.BELL)
        elif status == "busy":
            dial = Dial(Y if rang else U, N, R.BUSY)
        elif status in ("no-answer", "canceled"):
            dial = Dial(Y, N, R.BELL) if rang else Dial(N, N, R.NO_RESPONSE)
        elif sip in ("404", "484", "604"):
            dial = Dial(N, N, R.INVALID_NUMBER)
        elif sip == "480":
            dial = Dial(N, N, R.NOT_AVAILABLE)
        else:
            dial = Dial(U, N, R.OTHERS)
        return Answer(dial, None, self.account.unit_cost, self.account.cost_currency)

    async def close(self) -> None:
        await self._http.close()
