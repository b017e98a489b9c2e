"""The vendor kinds numgate speaks: what each needs, which levels it serves, how its adapter is
made. ``numgate admin upstream add --kind KIND`` names one of these."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from numgate.numbers.results import Level
from numgate.upstreams.adapters import hlr_lookups, hlrlookup, infobip, nxcloud, twilio_lookup, twilio_voice
from numgate.upstreams.base import Account, Adapter

HLR, CALL = frozenset({Level.HLR}), frozenset({Level.CALL})


@dataclass(frozen=True)
class Kind:
    name: str
    levels: frozenset[Level]
    default_base_url: str
    #: what ``upstream add`` must be given: key, secret, from_number, appkey
    needs: tuple[str, ...]
    #: answers later, by webhook (needs NUMGATE_PUBLIC_URL)
    asynchronous: bool
    make: Callable[[Account, Level, float], Adapter]
    summary: str


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "hlrlookup",
            HLR,
            hlrlookup.DEFAULT_BASE_URL,
            ("key", "secret"),
            False,
            lambda a, lvl, t: hlrlookup.HlrLookupCom(a, t),
            "hlrlookup.com apiv2 (api_key / api_secret in the body; 80 numbers a call)",
        ),
        Kind(
            "infobip",
            HLR,
            infobip.DEFAULT_BASE_URL,
            ("key",),
            False,
            lambda a, lvl, t: infobip.InfobipNumberLookup(a, t),
            "Infobip Number Lookup (App API key; 1,000 numbers a call)",
        ),
        Kind(
            "twilio-lookup",
            HLR,
            twilio_lookup.DEFAULT_BASE_URL,
            ("key", "secret"),
            False,
            lambda a, lvl, t: twilio_lookup.TwilioLookup(a, t),
            "Twilio Lookup v2 line_status (Account SID / Auth Token)",
        ),
        Kind(
            "hlr-lookups",
            HLR,
            hlr_lookups.DEFAULT_BASE_URL,
            ("key", "secret"),
            False,
            lambda a, lvl, t: hlr_lookups.HlrLookups(a, t),
            "hlr-lookups.com API v2 (HMAC digest)",
        ),
        Kind(
            "nxcloud",
            HLR | CALL,
            nxcloud.DEFAULT_BASE_URL,
            ("key", "secret", "appkey"),
            True,
            lambda a, lvl, t: nxcloud.NxCloudCheck(a, lvl, t),
            "NXCloud Number Check, levels 5 and 4 (accessKey / accessSecret / appkey; callbacks)",
        ),
        Kind(
            "twilio-voice",
            CALL,
            twilio_voice.DEFAULT_BASE_URL,
            ("key", "secret", "from_number"),
            True,
            lambda a, lvl, t: twilio_voice.TwilioVoice(a, t),
            "Twilio Programmable Voice test calls (Account SID / Auth Token / caller number; "
            "status callbacks)",
        ),
    )
}
