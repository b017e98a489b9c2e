"""What a live check answers (:class:`Live` for HLR, :class:`Dial` for a test call), the two ways
an upstream can fail to answer, and the built-in simulator's answers (``upstreams/adapters/
simulator.py`` serves them). The simulator is deterministic per number and has magic endings
(last four digits) that force each case:

====== ============================== ===================================
ending HLR (level 5)                  Call (level 4)
====== ============================== ===================================
0000   upstream failure → code 112    upstream failure → code 112
0001   no information → code 122      no information → code 122
0002   unreachable                    power off
0003   roaming                        busy
0004   ported (to another network)    voicemail
0005   invalid / dead number          invalid number
0006   reachable, home network        answered (bell)
0007   —                              no response
====== ============================== ===================================
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum


class ProviderFailed(Exception):
    """The upstream failed after its retries (callback code 112)."""


class NoInformation(Exception):
    """The upstream answered but had nothing about the number (callback code 122)."""


class Tri(Enum):
    YES = "YES"
    NO = "NO"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class Live:
    """An HLR answer. ``network`` is the network serving the number now (the ported-to one);
    ``mcc``/``mnc`` are strings (leading zeros kept), empty when the upstream did not say."""

    validity: Tri
    reachable: Tri
    roaming: Tri
    ported: Tri = Tri.UNKNOWN
    network: str = ""
    mcc: str = ""
    mnc: str = ""


class DialResponse(Enum):
    BELL = "bell"
    MUSIC = "music"
    BUSY = "busy"
    NO_RESPONSE = "no_response"
    INVALID_NUMBER = "invalid_number"
    NOT_AVAILABLE = "not_available"
    NUMBER_PAUSED = "number_paused"
    POWER_OFF = "power_off"
    POWER_OFF_OR_OUT_OF_SERVICE = "power_off_or_out_of_service"
    VOICEMAIL = "voicemail"
    OTHERS = "others"


@dataclass(frozen=True)
class Dial:
    early: Tri
    answered: Tri
    response: DialResponse


def _bucket(e164: str, salt: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{salt}:{e164}".encode(), digest_size=4).digest(), "big") % 100


_Y, _N, _U = Tri.YES, Tri.NO, Tri.UNKNOWN


class SimulatedHlr:
    """Deterministic: the same number always gives the same answer. Mix: 80 % reachable at home,
    8 % unreachable, 5 % roaming, 4 % ported, 3 % invalid."""

    @staticmethod
    def answer(e164: str) -> Live:
        end = e164[-4:]
        if end == "0000":
            raise ProviderFailed("simulated HLR upstream failure (magic ending 0000)")
        if end == "0001":
            raise NoInformation("simulated HLR: no information (magic ending 0001)")
        forced = {
            "0002": Live(_Y, _N, _N, _N),
            "0003": Live(_Y, _Y, _Y, _N, network="Simulated Roaming Partner"),
            "0004": Live(_Y, _Y, _N, _Y, network="Simulated Ported Network"),
            "0005": Live(_N, _N, _U),
            "0006": Live(_Y, _Y, _N, _N),
        }.get(end)
        if forced is not None:
            return forced
        b = _bucket(e164, "hlr")
        if b < 80:
            return Live(_Y, _Y, _N, _N)
        if b < 88:
            return Live(_Y, _N, _N, _N)
        if b < 93:
            return Live(_Y, _Y, _Y, _N, network="Simulated Roaming Partner")
        if b < 97:
            return Live(_Y, _Y, _N, _Y, network="Simulated Ported Network")
        return Live(_N, _N, _U)


class SimulatedCall:
    """Deterministic test call. Mix: 70 % answered, 8 % busy, 7 % no response, 5 % voicemail,
    4 % power off, 3 % music (ring-back tone), 3 % not available."""

    @staticmethod
    def answer(e164: str) -> Dial:
        end = e164[-4:]
        if end == "0000":
            raise ProviderFailed("simulated call upstream failure (magic ending 0000)")
        if end == "0001":
            raise NoInformation("simulated call: no information (magic ending 0001)")
        r = DialResponse
        forced = {
            "0002": Dial(_N, _N, r.POWER_OFF),
            "0003": Dial(_Y, _N, r.BUSY),
            "0004": Dial(_Y, _Y, r.VOICEMAIL),
            "0005": Dial(_N, _N, r.INVALID_NUMBER),
            "0006": Dial(_Y, _Y, r.BELL),
            "0007": Dial(_Y, _N, r.NO_RESPONSE),
        }.get(end)
        if forced is not None:
            return forced
        b = _bucket(e164, "call")
        for limit, dial in (
            (70, Dial(_Y, _Y, r.BELL)),
            (78, Dial(_Y, _N, r.BUSY)),
            (85, Dial(_Y, _N, r.NO_RESPONSE)),
            (90, Dial(_Y, _Y, r.VOICEMAIL)),
            (94, Dial(_N, _N, r.POWER_OFF)),
            (97, Dial(_Y, _Y, r.MUSIC)),
        ):
            if b < limit:
                return dial
        return Dial(_N, _N, r.NOT_AVAILABLE)
