"""Checking one number at a level: classification first, then the live provider if asked."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from numgate.numbers.classify import NumberKind, classify
from numgate.numbers.providers import NoInformation, ProviderFailed, Providers
from numgate.numbers.results import CheckResult, Level, Outcome

log = logging.getLogger("numgate.numbers")


def check_basic(item: str) -> CheckResult:
    basic = classify(item)
    if basic is None:
        return CheckResult(Outcome.INVALID_FORMAT)
    return CheckResult(Outcome.OK, basic)


def check_basic_many(items: Sequence[str]) -> list[CheckResult]:
    return [check_basic(i) for i in items]


async def check_live(first: CheckResult, level: Level, providers: Providers) -> CheckResult:
    """Complete a Basic result with HLR or call data (120 rules, 112 / 122 from the provider)."""
    if first.outcome is not Outcome.OK or first.basic is None:
        return first
    if first.basic.kind is not NumberKind.MOBILE:
        return CheckResult(Outcome.NON_MOBILE, first.basic)
    try:
        if level is Level.HLR:
            return CheckResult(Outcome.OK, first.basic, live=await providers.hlr.lookup(first.basic.e164))
        return CheckResult(Outcome.OK, first.basic, dial=await providers.call.dial(first.basic.e164))
    except ProviderFailed as exc:
        log.info("provider failed: %s", exc)
        return CheckResult(Outcome.UPSTREAM_FAILED, first.basic)
    except NoInformation:
        return CheckResult(Outcome.NO_INFORMATION, first.basic)
    except Exception:
        log.exception("provider error")
        return CheckResult(Outcome.UPSTREAM_FAILED, first.basic)


async def check_many(
    items: Sequence[str], level: Level, providers: Providers, concurrency: int = 64
) -> list[CheckResult]:
    """Check a chunk: classification in a thread (it is CPU work), live checks concurrently."""
    basics = await asyncio.to_thread(check_basic_many, items)
    if level is Level.BASIC:
        return basics
    sem = asyncio.Semaphore(concurrency)

    async def one(r: CheckResult) -> CheckResult:
        async with sem:
            return await check_live(r, level, providers)

    return list(await asyncio.gather(*(one(r) for r in basics)))
