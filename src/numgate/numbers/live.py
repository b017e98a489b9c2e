"""The live levels (HLR, Call) of a check: the cache, then the route's upstreams in order.

For the numbers of one batch (one level, one country) that passed the Basic check as mobile:

1. **Cache.** If the batch accepts an age (``maxAge`` / the app's ``--max-age``), a number with an
   answer observed within it is answered from the cache (``source: cache``): no upstream call.
2. **Route.** The level's route for the country (``numgate admin route set``), tried in order from
   the number's ``route_pos``. A disabled upstream is passed over, and so is one cooling down after
   repeated failures (unless all of them are: then they are tried anyway). A synchronous upstream
   answers at once; a failure, a throttle or "no information" moves the number on to the next
   upstream. An upstream that answers by webhook gets the number and the number **waits** (status
   3, until ``NUMGATE_UPSTREAM_WAIT`` from now): its job row is written, with an unguessable token,
   before the vendor is called, so a crash while it waits loses nothing. Its answer finishes it
   (:func:`receive`); no answer by the deadline moves it on (``requeue_overdue``).
3. After the last upstream: 122 if the last one to answer knew nothing, else 112 — never charged.

Every call is recorded with what it cost the operator (``upstream_calls``), next to what the
tenant is charged (``checks.cost``), for ``numgate admin report margin``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, delete, insert, or_, select, update

from numgate.core import Core
from numgate.db.direct import Row, Statement
from numgate.db.tables import checks, in_state, upstream_jobs
from numgate.delivery.outbox import Enqueued
from numgate.errors import NoRoute, UpstreamNotFound
from numgate.jobs.claims import new_lease_token
from numgate.metrics import metrics
from numgate.numbers.check import check_live_rules
from numgate.numbers.classify import classify
from numgate.numbers.finish import BATCH, RECORD_CALLS, CallRecord, Finisher, batch_info, count
from numgate.numbers.providers import Dial, Live, ProviderFailed
from numgate.numbers.results import CheckResult, Level, Outcome
from numgate.upstreams.base import Answer, AsyncAdapter, BadEvent, Failure, Inbound, SyncAdapter, Throttled
from numgate.upstreams.cache import LiveCache
from numgate.upstreams.kinds import KINDS

log = logging.getLogger("numgate.upstreams")

STATUS_PENDING, STATUS_LEASED, STATUS_DONE, STATUS_WAITING = 0, 1, 2, 3

c, j = checks.c, upstream_jobs.c
_JOBS = Statement(
    insert(upstream_jobs).values(
        {k: bindparam(k) for k in ("check_id", "upstream", "token", "events", "created_ms")}
    )
)
_WAIT = Statement(
    update(checks)
    .where(
        c.id == bindparam("b_id"), c.lease_token == bindparam("b_token"), in_state(c.status, STATUS_LEASED)
    )
    .values(
        status=STATUS_WAITING,
        due_ms=bindparam("b_due"),
        route_pos=bindparam("b_pos"),
        lease_until_ms=None,
        lease_token=None,
    )
)
_SET_REF = Statement(
    update(upstream_jobs).where(j.token == bindparam("b_token")).values(vendor_ref=bindparam("b_ref"))
)
#: a waiting number is moved on to the next upstream of its route (the vendor failed at once, or
#: never answered)
_MOVE_ON = Statement(
    update(checks)
    .where(c.id == bindparam("b_id"), in_state(c.status, STATUS_WAITING))
    .values(status=STATUS_PENDING, due_ms=None, route_pos=c.route_pos + 1)
)
_FORGET_JOB = Statement(delete(upstream_jobs).where(j.check_id == bindparam("b_id")))
_OVERDUE = Statement(
    select(c.id).where(in_state(c.status, STATUS_WAITING), c.due_ms < bindparam("now")).limit(1000)
)
_JOB_BY_TOKEN = Statement(select(upstream_jobs).where(j.token == bindparam("token")))
_JOB_BY_REF = Statement(
    select(upstream_jobs).where(j.vendor_ref == bindparam("ref"), j.upstream == bindparam("upstream"))
)
#: ``first``/``after``: ``<token>.`` and ``<token>/`` — the group's tokens sort between them (a
#: range, not LIKE: tokens may hold ``_``)
_GROUP_WAITS = Statement(
    select(j.id)
    .where(
        or_(j.token == bindparam("token"), and_(j.token >= bindparam("first"), j.token < bindparam("after")))
    )
    .limit(1)
)
_JOB_EVENTS = Statement(
    update(upstream_jobs).where(j.id == bindparam("id")).values(events=bindparam("events"))
)
#: a waiting number taken for finishing (the lease makes Finisher.write's ownership check hold)
_TAKE_WAITING = Statement(
    update(checks)
    .where(c.id == bindparam("id"), in_state(c.status, STATUS_WAITING))
    .values(status=STATUS_LEASED, lease_token=bindparam("token"), lease_until_ms=bindparam("until"))
)
_CHECK = Statement(
    select(c.id, c.batch_id, c.message_id, c.phone, c.status, c.result, c.route_pos).where(
        c.id == bindparam("id")
    )
)


@dataclass
class Item:
    check_id: int
    basic: CheckResult
    route_pos: int


@dataclass
class Step:
    """What the live step decided for a batch's numbers."""

    #: finished now (from the cache, an upstream, or failed)
    results: dict[int, CheckResult] = field(default_factory=dict)
    calls: list[CallRecord] = field(default_factory=list)
    #: numbers handed to an upstream that answers later (already marked waiting)
    waiting: set[int] = field(default_factory=set)


class LiveStep:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.cache = LiveCache(core.db)

    async def run(
        self, level: Level, country: str | None, max_age_s: int, items: list[Item], token: int | None
    ) -> Step:
        """``token``: the lease the caller holds on the numbers (None for ``numgate check FILE``,
        which has no numbers stored: then upstreams that answer by webhook are passed over)."""
        step = Step()
        todo: list[Item] = []
        for it in items:  # invalid, non-mobile: decided by the Basic check
            ruled = check_live_rules(it.basic)
            if ruled is not None:
                step.results[it.check_id] = ruled
            else:
                todo.append(it)
        if todo and max_age_s > 0:
            todo = await self._from_cache(level, max_age_s, todo, step)
        if not todo:
            return step
        try:
            route = await self.core.upstreams.route(level, country)
        except NoRoute as exc:  # the route was removed after the submit was accepted
            log.warning("%s", exc)
            for it in todo:
                step.results[it.check_id] = CheckResult(Outcome.UPSTREAM_FAILED, it.basic.basic)
            return step
        last: dict[int, Failure] = {}
        usable = await self._usable(route)
        for pos, name in enumerate(route):
            ready = [it for it in todo if it.route_pos <= pos]
            if not ready:
                continue
            if name not in usable:
                continue
            adapter: Any = await self.core.upstreams.adapter(name, level)
            if answers_later(adapter.account.kind):
                if token is None:
                    log.warning("upstream %s answers by webhook: `numgate check FILE` passes it over", name)
                    last.update({it.check_id: Failure.FAILED for it in ready})
                    continue
                done = await self._hand_over(adapter, name, level, country, ready, step, last, token, pos)
            else:
                done = await self._ask(adapter, name, level, country, ready, step, last, max_age_s)
            todo = [it for it in todo if it.check_id not in done]
            if not todo:
                break
        for it in todo:
            outcome = (
                Outcome.NO_INFORMATION
                if last.get(it.check_id) is Failure.NO_INFORMATION
                else Outcome.UPSTREAM_FAILED
            )
            step.results[it.check_id] = CheckResult(outcome, it.basic.basic)
        return step

    async def _usable(self, route: tuple[str, ...]) -> set[str]:
        """The route's upstreams to try now: enabled, and not cooling down — unless every enabled
        one is, then all of them (a probe beats failing every number)."""
        enabled = []
        for name in route:
            try:
                if (await self.core.upstreams.account(name)).enabled:
                    enabled.append(name)
            except UpstreamNotFound:
                continue
        warm = {n for n in enabled if not self.core.upstreams.health_of(n).cooling()}
        return warm or set(enabled)

    async def _from_cache(self, level: Level, max_age_s: int, todo: list[Item], step: Step) -> list[Item]:
        now = self.core.clock.time_ms()
        e164s = [it.basic.basic.e164 for it in todo if it.basic.basic is not None]
        hits = await self.cache.fresh(int(level), e164s, now - max_age_s * 1000)
        left = []
        for it in todo:
            hit = hits.get(it.basic.basic.e164) if it.basic.basic is not None else None
            if hit is None:
                left.append(it)
                continue
            answer, _, observed = hit
            step.results[it.check_id] = _result(it.basic, answer, "cache", observed)
        return left

    async def _ask(
        self,
        adapter: SyncAdapter,
        name: str,
        level: Level,
        country: str | None,
        ready: list[Item],
        step: Step,
        last: dict[int, Failure],
        max_age_s: int = 0,
    ) -> set[int]:
        done: set[int] = set()
        health = self.core.upstreams.health_of(name)
        acct = adapter.account

        async def ask(part: list[Item]) -> None:
            by_number = {it.basic.basic.e164: it for it in part if it.basic.basic is not None}
            start = time.perf_counter()
            answers: dict[str, Answer]
            try:
                with metrics().upstream_call(_label(level), acct.kind, "lookup"):  # counts the outcome
                    answers = await adapter.check(list(by_number), max_age_s)
            except Exception as exc:  # the whole call failed (ProviderFailed, Throttled, a bug)
                if not isinstance(exc, ProviderFailed):
                    log.exception("upstream %s failed unexpectedly", name)
                failure = Failure.THROTTLED if isinstance(exc, Throttled) else Failure.FAILED
                answers = {n: Answer.failed(str(exc), failure) for n in by_number}
            ms = int((time.perf_counter() - start) * 1000)
            observed = self.core.clock.time_ms()
            worked = 0  # answers the vendor gave (a result, or "nothing known"): it works
            for number, it in by_number.items():
                a = answers.get(number) or Answer.failed(f"{name} left the number out of its answer")
                step.calls.append(
                    _call(it.check_id, name, level, country, a, acct.unit_cost, acct.cost_currency, ms)
                )
                if a.result is not None or a.failure is Failure.NO_INFORMATION:
                    worked += 1
                if a.result is not None:
                    step.results[it.check_id] = _result(it.basic, a.result, name, observed)
                    done.add(it.check_id)
                else:
                    last[it.check_id] = a.failure or Failure.FAILED
                    log.info("upstream %s: no answer for a number (%s)", name, a.detail)
            health.record(worked > 0, ms, max(len(by_number), 1))

        # a chunk's calls at once (the adapter's HTTP session bounds its connections): an HLR
        # vendor takes seconds a call, and one chunk is several calls
        parts = [ready[i : i + adapter.max_batch] for i in range(0, len(ready), adapter.max_batch)]
        await asyncio.gather(*(ask(p) for p in parts))
        return done

    async def _hand_over(
        self,
        adapter: AsyncAdapter,
        name: str,
        level: Level,
        country: str | None,
        ready: list[Item],
        step: Step,
        last: dict[int, Failure],
        lease: int,
        pos: int,
    ) -> set[int]:
        """Hand the numbers to an upstream that answers by webhook: mark them waiting (with their
        jobs) first, then call the vendor; a number the vendor refused at once is moved on."""
        core = self.core
        public = core.settings.public_url
        if not public:
            log.warning("upstream %s answers by webhook but NUMGATE_PUBLIC_URL is not set: skipped", name)
            for it in ready:
                last[it.check_id] = Failure.FAILED
            return set()
        group = secrets.token_urlsafe(24)
        tokens = {it.check_id: f"{group}.{i}" for i, it in enumerate(ready)}
        now = core.clock.time_ms()
        due = now + int(core.settings.upstream_wait_s * 1000)
        async with core.db.write() as tx:
            await tx.many(
                _JOBS,
                [
                    {
                        "check_id": it.check_id,
                        "upstream": name,
                        "token": tokens[it.check_id],
                        "events": "[]",
                        "created_ms": now,
                    }
                    for it in ready
                ],
            )
            await tx.many(
                _WAIT, [{"b_id": it.check_id, "b_token": lease, "b_due": due, "b_pos": pos} for it in ready]
            )
        step.waiting.update(it.check_id for it in ready)
        start = time.perf_counter()
        acct = adapter.account
        with metrics().upstream_call(_label(level), acct.kind, "start"):
            placed = await adapter.start(
                [(it.basic.basic.e164, tokens[it.check_id]) for it in ready if it.basic.basic is not None],
                f"{public}/upstreams/{name}/events",
            )
        ms = int((time.perf_counter() - start) * 1000)
        refs, immediate = [], []
        for it in ready:
            got = placed.get(tokens[it.check_id])
            if isinstance(got, str):
                refs.append({"b_token": tokens[it.check_id], "b_ref": got})
            else:
                immediate.append((it, got or Answer.failed(f"{name} did not take the number")))
        self.core.upstreams.health_of(name).record(
            not immediate or any(a.result for _, a in immediate), ms, len(ready)
        )
        if refs:
            async with core.db.autocommit() as tx:
                await tx.many(_SET_REF, refs)
        for it, a in immediate:  # answered at once (an invalid number) or refused
            call = _call(it.check_id, name, level, country, a, acct.unit_cost, acct.cost_currency, ms)
            if a.result is not None:
                await complete(
                    core, it.check_id, _result(it.basic, a.result, name, core.clock.time_ms()), [call]
                )
            else:
                await move_on(core, it.check_id, [call])
        return set(step.waiting)


def _label(level: Level) -> str:
    return "hlr" if level is Level.HLR else "call"


def _result(basic: CheckResult, answer: Live | Dial, source: str, observed_ms: int) -> CheckResult:
    if isinstance(answer, Live):
        return CheckResult(Outcome.OK, basic.basic, live=answer, source=source, observed_ms=observed_ms)
    return CheckResult(Outcome.OK, basic.basic, dial=answer, source=source, observed_ms=observed_ms)


def _call(
    check_id: int,
    name: str,
    level: Level,
    country: str | None,
    a: Answer,
    unit_cost: int,
    currency: str,
    ms: int,
) -> CallRecord:
    outcome = "ok" if a.result is not None else (a.failure or Failure.FAILED).value
    cost = a.cost if a.cost is not None else (unit_cost if a.result is not None else 0)
    return CallRecord(check_id, name, level, country, outcome, cost, a.currency or currency, ms)


# waiting numbers ---------------------------------------------------------------------------------


async def _rows_for(core: Core, check_id: int) -> tuple[Row, Any] | None:
    async with core.db.read() as tx:
        row = await tx.one(_CHECK, id=check_id)
        if row is None:
            return None
        b = await tx.one(BATCH, id=row["batch_id"])
    return row, batch_info(b)


async def complete(core: Core, check_id: int, result: CheckResult, calls: list[CallRecord]) -> bool:
    """Finish a waiting number with ``result`` (its webhook came, or the vendor answered at
    once); False if it is no longer waiting (a duplicate or late webhook)."""
    found = await _rows_for(core, check_id)
    if found is None:
        return False
    row, info = found
    token = new_lease_token()
    finisher = Finisher(core)
    w = finisher.writes([row], {info.id: info}, {check_id: result}, core.clock.time_ms(), calls)
    enqueued = Enqueued()
    try:
        async with core.db.write() as tx:
            until = core.clock.time_ms() + int(core.settings.worker_lease_s * 1000)
            if not await tx.run(_TAKE_WAITING, id=check_id, token=token, until=until):
                return False
            w, enqueued = await finisher.write(tx, token, w, {info.id: info}, 1)
            await tx.run(_FORGET_JOB, b_id=check_id)
    except BaseException:
        core.outbox.rolled_back(enqueued)
        raise
    core.outbox.committed(enqueued)
    count(w, {info.id: info})
    return True


async def move_on(core: Core, check_id: int, calls: list[CallRecord]) -> None:
    """A waiting number goes back to the queue for the next upstream of its route."""
    now = core.clock.time_ms()
    async with core.db.write() as tx:
        if await tx.run(_MOVE_ON, b_id=check_id):
            await tx.run(_FORGET_JOB, b_id=check_id)
            if calls:
                await tx.many(RECORD_CALLS, [c.row(now) for c in calls])
    core.numbers.announce()


async def requeue_overdue(core: Core) -> int:
    """Numbers whose upstream never answered by their deadline move on to the next upstream."""
    async with core.db.read() as tx:
        overdue = [int(r[0]) for r in await tx.all(_OVERDUE, now=core.clock.time_ms())]
    for check_id in overdue:
        await move_on(core, check_id, [])
    if overdue:
        log.warning(
            "%d number(s) got no answer from their upstream in time: trying the next one", len(overdue)
        )
    return len(overdue)


@dataclass(frozen=True)
class Received:
    status: int
    message: str


async def receive(core: Core, name: str, inbound: Inbound, token: str | None) -> Received:
    """An upstream's webhook: authenticated the vendor's way (or by the job token in its URL),
    recorded with its job, and — when it is the job's last — the number finished."""
    try:
        acct = await core.upstreams.account(name)
    except UpstreamNotFound:
        return Received(404, f"no upstream named {name}")
    kind = KINDS.get(acct.kind)
    if kind is None or not kind.asynchronous:
        return Received(404, f"upstream {name} ({acct.kind}) sends no webhooks")
    parser = await core.upstreams.adapter(name, min(kind.levels))
    try:
        event = parser.parse_event(inbound, token)  # type: ignore[attr-defined]
    except BadEvent as exc:
        log.warning("refused a webhook for upstream %s: %s", name, exc)
        return Received(exc.status, str(exc))
    async with core.db.read() as tx:
        job = await tx.one(_JOB_BY_REF, ref=event.vendor_ref, upstream=name)
        if job is None and token:
            job = await tx.one(_JOB_BY_TOKEN, token=token)
    if job is None:
        if token and await _group_waits(core, token):
            # the vendor answered before numgate stored its reference: it retries
            return Received(503, "this job's reference is not stored yet: try again")
        # finished long ago (a late or repeated event; the number moved on): acknowledged, ignored
        return Received(200 if token else 404, "no waiting job for this event")
    if not token or not _token_matches(job["token"], token):
        return Received(403, "the job token in the URL does not match this event's job")
    events = orjson.loads(job["events"] or "[]")
    events.append(event.data)
    async with core.db.autocommit() as tx:
        await tx.run(_JOB_EVENTS, id=job["id"], events=orjson.dumps(events).decode())
    if not event.final:
        return Received(200, "ok")
    found = await _rows_for(core, job["check_id"])
    if found is None or found[0]["status"] != STATUS_WAITING:
        return Received(200, "ok (the number is no longer waiting)")
    row, info = found
    adapter = await core.upstreams.adapter(name, info.level)
    answer = adapter.conclude(events)  # type: ignore[attr-defined]
    call = _call(row["id"], name, info.level, info.country, answer, acct.unit_cost, acct.cost_currency, 0)
    basic = CheckResult(Outcome.OK, classify(row["phone"]))  # deterministic: as when it was submitted
    if answer.result is None:
        if await _more_upstreams(core, info.level, info.country, int(row["route_pos"] or 0)):
            await move_on(core, row["id"], [call])
            return Received(200, "ok (moved on to the next upstream)")
        # the route's last upstream: 122 if it knew nothing, else 112 (neither charged)
        known = (
            Outcome.NO_INFORMATION if answer.failure is Failure.NO_INFORMATION else Outcome.UPSTREAM_FAILED
        )
        await complete(core, row["id"], CheckResult(known, basic.basic), [call])
        return Received(200, "ok")
    result = _result(basic, answer.result, name, core.clock.time_ms())
    await complete(core, row["id"], result, [call])
    return Received(200, "ok")


async def _group_waits(core: Core, token: str) -> bool:
    """Whether a job of this token (or of the group ``<token>.<n>``) still waits."""
    async with core.db.read() as tx:
        return await tx.one(_GROUP_WAITS, token=token, first=token + ".", after=token + "/") is not None


async def _more_upstreams(core: Core, level: Level, country: str | None, pos: int) -> bool:
    try:
        return pos + 1 < len(await core.upstreams.route(level, country))
    except NoRoute:
        return False


def _token_matches(job_token: str, given: str) -> bool:
    return hmac.compare_digest(job_token, given) or hmac.compare_digest(job_token.split(".", 1)[0], given)


def answers_later(kind: str) -> bool:
    k = KINDS.get(kind)
    return k is not None and k.asynchronous


# numgate check FILE ------------------------------------------------------------------------------


async def simulated(level: Level, results: list[CheckResult]) -> list[CheckResult]:
    """The live levels from the built-in simulator (``numgate check FILE`` in sandbox mode)."""
    from numgate.upstreams.adapters.simulator import NAME, Simulator

    out = list(results)
    todo = []
    for i, r in enumerate(results):
        ruled = check_live_rules(r)
        if ruled is not None:
            out[i] = ruled
        else:
            todo.append(i)
    numbers = [b.e164 for i in todo if (b := results[i].basic) is not None]
    answers = await Simulator(level).check(numbers)
    now = int(time.time() * 1000)
    for i in todo:
        b = results[i].basic
        assert b is not None
        a = answers[b.e164]
        if a.result is not None:
            out[i] = _result(results[i], a.result, NAME, now)
        else:
            bad = Outcome.NO_INFORMATION if a.failure is Failure.NO_INFORMATION else Outcome.UPSTREAM_FAILED
            out[i] = CheckResult(bad, b)
    return out


class RouteAnswers:
    """The live levels through the operator's routes (``numgate check FILE`` outside sandbox
    mode): synchronous upstreams only, with failover; each call's cost is recorded."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.step = LiveStep(core)

    async def __call__(self, level: Level, results: list[CheckResult]) -> list[CheckResult]:
        out = list(results)
        groups: dict[str | None, list[int]] = {}
        for i, r in enumerate(results):
            groups.setdefault(r.basic.region if r.basic is not None else None, []).append(i)
        calls: list[CallRecord] = []
        for country, idxs in groups.items():
            if any(check_live_rules(results[i]) is None for i in idxs):
                await self.core.upstreams.route(level, country)  # NoRoute: the command stops here
            step = await self.step.run(level, country, 0, [Item(i, results[i], 0) for i in idxs], None)
            for i in idxs:
                out[i] = step.results[i]
            calls += [dataclasses.replace(c, check_id=None) for c in step.calls]
        if calls:
            now = self.core.clock.time_ms()
            async with self.core.db.autocommit() as tx:
                await tx.many(RECORD_CALLS, [c.row(now) for c in calls])
        return out
