"""How hard to push one receiver: its connection limit, its pauses and its health.

Receivers are chosen by tenants, and they differ by orders of magnitude: a load-balanced service
takes hundreds of callbacks at once, a webhook handler on Python's standard ``http.server`` takes
one at a time and drops connections past a listen backlog of five. numgate finds each one's pace
the way TCP finds a path's: a :class:`Pacer` per receiver (scheme, host and port)

- starts at two connections and doubles its limit each round of answers while the receiver keeps
  up (slow start), then grows it by one a round (congestion avoidance), up to
  ``NUMGATE_CALLBACK_CONCURRENCY``; but past a handful of connections (:data:`FREE_UP_TO`) it
  takes one such step (a doubling, or one more) per :data:`STEP_EVERY_S` seconds at most. A
  connection a full listen backlog dropped shows only when the kernel retries it, a second
  later; growing every round of a 1 ms receiver took the limit to dozens in that second, and
  each retry burst then got five of them in, the last ones past the time-out;
- halves it — at most once per round — when the receiver shows strain: a time-out, a refused or
  reset connection, HTTP 429 or 503, or an answer far slower than its usual (a dropped connection
  the kernel retried a second later); and remembers the concurrency that strained it: for
  :data:`CEILING_S` seconds it grows to at most one less than the number of attempts that were in
  flight when the strained one started, then probes above it again (one strain per probe, not
  one per round: a receiver with a listen backlog of five is found out once, not every few
  milliseconds at the price of a second-long retransmission each time);
- after five failures in a row pauses the receiver: 1 s, then 2, 4 … up to 60 s — never longer
  than the retry interval (``NUMGATE_CALLBACK_RETRY_INTERVAL``), so that its callbacks keep their
  retry schedule — during which none of its callbacks is attempted, then probes it with one
  connection.

A pacer is pure bookkeeping over an injected clock; the scheduler (``scheduler.py``) asks it for
room and tells it how each attempt went.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any

START = 2
#: up to this many connections the limit grows with each round of answers
FREE_UP_TO = 4
#: above it, at most one step of growth per this many seconds: longer than the second a
#: connection dropped by a full listen backlog takes to show (the kernel's first retry)
STEP_EVERY_S = 1.5
PAUSE_AFTER = 5
PAUSE_FIRST_S = 1.0
PAUSE_MAX_S = 60.0
#: answers remembered for the success rate and latency percentiles
WINDOW = 200
#: seconds a learnt ceiling holds before the limit may probe above it again
CEILING_S = 30.0
#: an answer slower than this many times the receiver's usual is strain
SLOW_FACTOR = 8.0
#: … and slower than this (a fast receiver's jitter is no strain)
SLOW_FLOOR_MS = 250.0


class Result(Enum):
    OK = "ok"
    #: the receiver is overloaded or unreachable: fewer connections
    STRAIN = "strain"
    #: it answered with an error (a 4xx, a 500): retried later, the pace unchanged
    FAILED = "failed"


@dataclass(frozen=True)
class PacerState:
    """What ``numgate deliveries receivers`` shows of a receiver."""

    limit: int
    in_flight: int
    paused_for_s: float
    success_rate: float | None
    p50_ms: float | None
    p99_ms: float | None
    attempts: int

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Pacer:
    def __init__(self, max_limit: int, now: float, pause_max_s: float = PAUSE_MAX_S) -> None:
        self.max_limit = max(max_limit, 1)
        self.pause_max_s = min(pause_max_s, PAUSE_MAX_S)
        self.limit = float(min(START, self.max_limit))
        self.threshold = float(self.max_limit)  # slow start until here
        self.in_flight = 0
        self.failures_in_row = 0
        self.pauses = 0
        self.paused_until = 0.0
        self._last_decrease = -math.inf
        self._window: deque[tuple[bool, float]] = deque(maxlen=WINDOW)
        self._usual_ms: float | None = None  # a slow moving average of successful latencies
        self.attempts = 0
        #: the concurrency the receiver is known to take, until ``ceiling_until``
        self.ceiling = math.inf
        self.ceiling_until = 0.0
        self._stepped_at = now  # the last growth step above FREE_UP_TO

    # room ------------------------------------------------------------------------------------

    def paused(self, now: float) -> bool:
        return now < self.paused_until

    def room(self, now: float) -> int:
        """How many more attempts may start now."""
        if self.paused(now):
            return 0
        return max(int(self.limit) - self.in_flight, 0)

    def started(self, n: int = 1) -> int:
        """An attempt starts; the number in flight with it (give it back to :meth:`finished`)."""
        self.in_flight += n
        self.attempts += n
        return self.in_flight

    # answers ---------------------------------------------------------------------------------

    def finished(
        self, result: Result, latency_ms: float, now: float, n: int = 1, level: int | None = None
    ) -> None:
        """One attempt (carrying ``n`` callbacks) ended; ``level``: what :meth:`started` said."""
        self.in_flight = max(self.in_flight - n, 0)
        if result is Result.OK and self._is_slow(latency_ms):
            # delivered, but late (a connection the kernel dropped and retried a second later):
            # fewer connections, and remember how many were too many — but the receiver answers,
            # so it is never paused for it
            self._window.append((True, latency_ms))
            self.failures_in_row = 0
            self._strained(level, latency_ms, now)
            return
        self._window.append((result is Result.OK, latency_ms))
        if result is Result.OK:
            self.failures_in_row = 0
            self.pauses = 0
            self._usual_ms = latency_ms if self._usual_ms is None else 0.9 * self._usual_ms + 0.1 * latency_ms
            cap = self.ceiling if now < self.ceiling_until else math.inf
            self.limit = max(min(self._grown(now), float(self.max_limit), cap), 1.0)
            return
        self.failures_in_row += 1
        if result is Result.STRAIN:
            self._strained(level, latency_ms, now)
        # one pause per burst: the failures of attempts already in flight when it began do not
        # lengthen it (28 connections refused at once are one signal, not five doublings)
        if self.failures_in_row >= PAUSE_AFTER and now >= self.paused_until:
            wait = min(PAUSE_FIRST_S * 2**self.pauses, self.pause_max_s)
            self.paused_until = now + wait
            self.pauses += 1
            self.failures_in_row = 0
            self.limit = 1.0  # then one probe at a time

    def _grown(self, now: float) -> float:
        """The limit after an answer that kept up: one more a round while small, then a step
        (a doubling in slow start, one more after) at most every STEP_EVERY_S seconds."""
        slow_start = self.limit < self.threshold
        if self.limit < FREE_UP_TO:
            return min(self.limit + (1.0 if slow_start else 1.0 / self.limit), float(FREE_UP_TO))
        if now - self._stepped_at < STEP_EVERY_S:
            return self.limit
        self._stepped_at = now
        return min(self.limit * 2, max(self.threshold, self.limit + 1)) if slow_start else self.limit + 1

    def _strained(self, level: int | None, latency_ms: float, now: float) -> None:
        if level is not None:
            known = self.ceiling if now < self.ceiling_until else math.inf
            self.ceiling = max(min(level - 1, known), 1)
            self.ceiling_until = now + CEILING_S
        self._decrease(latency_ms, now)

    def _is_slow(self, latency_ms: float) -> bool:
        usual = self._usual_ms
        return usual is not None and latency_ms > max(SLOW_FACTOR * usual, SLOW_FLOOR_MS)

    def _decrease(self, latency_ms: float, now: float) -> None:
        # once per round: a burst of failures from one round of attempts is one signal
        round_s = max((self._usual_ms or latency_ms) / 1000, 0.05)
        if now - self._last_decrease < round_s:
            return
        self._last_decrease = now
        self.threshold = max(self.limit / 2, 1.0)
        self.limit = min(self.threshold, self.ceiling) if now < self.ceiling_until else self.threshold

    # what it shows ---------------------------------------------------------------------------

    def state(self, now: float) -> PacerState:
        answers = list(self._window)
        ok = [ms for good, ms in answers if good]
        lat = sorted(ok)
        return PacerState(
            limit=int(self.limit),
            in_flight=self.in_flight,
            paused_for_s=round(max(self.paused_until - now, 0.0), 1),
            success_rate=round(len(ok) / len(answers), 3) if answers else None,
            p50_ms=round(lat[len(lat) // 2], 1) if lat else None,
            p99_ms=round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1) if lat else None,
            attempts=self.attempts,
        )
