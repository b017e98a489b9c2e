"""The built-in simulator as an upstream (both live levels): deterministic per number, with the
magic endings of ``numgate.numbers.providers``. It answers in sandbox mode wherever no route is
set, and outside sandbox mode only where a route names it (``simulator``)."""

from __future__ import annotations

from numgate.numbers.providers import NoInformation, ProviderFailed, SimulatedCall, SimulatedHlr
from numgate.numbers.results import Level
from numgate.upstreams.base import Account, Answer, Failure

NAME = "simulator"


def account() -> Account:
    return Account(0, NAME, NAME, "", None, None, None, {}, 0, "USD", True)


class Simulator:
    max_batch = 5000

    def __init__(self, level: Level) -> None:
        self.account = account()
        self.level = level

    async def check(self, numbers: list[str], max_age_s: int = 0) -> dict[str, Answer]:
        out: dict[str, Answer] = {}
        for n in numbers:
            try:
                result = SimulatedHlr.answer(n) if self.level is Level.HLR else SimulatedCall.answer(n)
            except ProviderFailed as exc:
                out[n] = Answer.failed(str(exc))
            except NoInformation as exc:
                out[n] = Answer(None, Failure.NO_INFORMATION, detail=str(exc))
            else:
                out[n] = Answer(result, None, 0, "USD")
        return out

    async def close(self) -> None:
        return None
