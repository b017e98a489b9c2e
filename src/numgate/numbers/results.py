"""A number's check result in the core's own words; doors render it in their vocabulary."""

from __future__ import annotations

from enum import IntEnum
from typing import Any, NamedTuple

from numgate.numbers.classify import Basic
from numgate.numbers.providers import Dial, DialResponse, Live, Tri


class Outcome(IntEnum):
    OK = 0
    INVALID_FORMAT = 1  # the item is not a phone number
    NON_MOBILE = 2  # HLR / call asked for a number that is not mobile
    UPSTREAM_FAILED = 3  # the provider failed after its retries
    NO_INFORMATION = 4  # the provider answered with nothing
    INTERNAL = 5  # numgate failed on this number

    @property
    def charged(self) -> bool:
        return self is Outcome.OK


class Level(IntEnum):
    BASIC = 1
    CALL = 4
    HLR = 5


class CheckResult(NamedTuple):
    """A number's check result (a named tuple: one is made per number checked, and a frozen
    dataclass of six fields took three times as long to make)."""

    outcome: Outcome
    basic: Basic | None = None
    live: Live | None = None
    dial: Dial | None = None
    #: live levels: where the answer came from (an upstream's name, "cache", "simulator") and
    #: when the upstream observed it (epoch ms; a cached answer keeps its original time)
    source: str | None = None
    observed_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"outcome": int(self.outcome)}
        if self.basic is not None:
            out["basic"] = list(self.basic.row())
        if self.live is not None:
            v = self.live
            out["live"] = [
                v.validity.value,
                v.reachable.value,
                v.roaming.value,
                v.ported.value,
                v.network,
                v.mcc,
                v.mnc,
            ]
        if self.dial is not None:
            d = self.dial
            out["dial"] = [d.early.value, d.answered.value, d.response.value]
        if self.source is not None:
            out["src"] = [self.source, self.observed_ms]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckResult:
        basic = live = dial = None
        if (b := data.get("basic")) is not None:
            basic = Basic.of_row(b)
        if (v := data.get("live")) is not None:
            live = Live(Tri(v[0]), Tri(v[1]), Tri(v[2]), _ported(v[3]), v[4], *(v[5:7] or ("", "")))
        if (d := data.get("dial")) is not None:
            dial = Dial(Tri(d[0]), Tri(d[1]), DialResponse(d[2]))
        source, observed = data.get("src") or (None, None)
        return cls(Outcome(data["outcome"]), basic, live, dial, source, observed)


def _ported(value: str | bool) -> Tri:
    """Results stored before numgate 0.2 kept ``ported`` as a boolean."""
    if isinstance(value, bool):
        return Tri.YES if value else Tri.NO
    return Tri(value)
