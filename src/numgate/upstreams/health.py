"""Each upstream's health, as the routing sees it: its recent answers (success rate, latency
percentiles over the last :data:`WINDOW`), and a cool-down after :data:`TRIP_AFTER` failures in a
row — 30 s, doubling to 5 minutes while it keeps failing — during which the routing skips it
(unless every upstream of the route is cooling down: then it is tried anyway, as a probe).
Bookkeeping only, over an injected clock."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

WINDOW = 200
TRIP_AFTER = 5
COOL_FIRST_S = 30.0
COOL_MAX_S = 300.0


class Health:
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._window: deque[tuple[bool, float]] = deque(maxlen=WINDOW)
        self.calls = 0
        self.failures_in_a_row = 0
        self._cool_s = COOL_FIRST_S
        self.cooling_until = 0.0

    def record(self, ok: bool, latency_ms: float, n: int = 1) -> None:
        """``n`` numbers answered (or not) by one call that took ``latency_ms``."""
        self.calls += n
        for _ in range(min(n, WINDOW)):
            self._window.append((ok, latency_ms))
        if ok:
            self.failures_in_a_row = 0
            self._cool_s = COOL_FIRST_S
            self.cooling_until = 0.0
            return
        self.failures_in_a_row += n
        if self.failures_in_a_row >= TRIP_AFTER and self._now() >= self.cooling_until:
            self.cooling_until = self._now() + self._cool_s
            self._cool_s = min(self._cool_s * 2, COOL_MAX_S)

    def cooling(self) -> bool:
        return self._now() < self.cooling_until

    def snapshot(self) -> dict[str, Any]:
        latencies = sorted(ms for _, ms in self._window)

        def pct(p: float) -> float | None:
            if not latencies:
                return None
            return round(latencies[min(len(latencies) - 1, math.ceil(p * len(latencies)) - 1)], 1)

        ok = sum(1 for good, _ in self._window if good)
        return {
            "calls": self.calls,
            "success_rate": round(ok / len(self._window), 3) if self._window else None,
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
            "failures_in_a_row": self.failures_in_a_row,
            "cooling_for_s": round(max(self.cooling_until - self._now(), 0.0), 1),
        }
