"""Which dependencies are down right now, and one log line per outage.

The storage layer and the Redis-backed parts report here when a call fails for a reason worth
retrying (:class:`~numgate.errors.Unavailable`) and when one succeeds again. An outage is logged
once as a warning when it starts and once when it ends — not once per request, and never with a
traceback. ``/healthz`` reads the same state after probing each dependency itself.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

log = logging.getLogger("numgate.outages")


@dataclass
class Outage:
    since: float
    reason: str


class Outages:
    def __init__(self) -> None:
        self._down: dict[str, Outage] = {}

    def down(self, dependency: str, reason: str) -> None:
        if dependency not in self._down:
            self._down[dependency] = Outage(time.monotonic(), reason)
            log.warning("%s unavailable: %s", dependency, reason)

    def up(self, dependency: str, started: float | None = None) -> None:
        """A call to ``dependency`` succeeded. ``started`` (``time.monotonic()`` when the call
        began): a call already under way when the outage was seen proves nothing about recovery —
        its success ends nothing, so one outage stays one pair of lines."""
        if self._down:  # the usual case costs one truth test
            outage = self._down.get(dependency)
            if outage is None or (started is not None and started <= outage.since):
                return
            del self._down[dependency]
            log.warning("%s available again after %.1f s", dependency, time.monotonic() - outage.since)

    def current(self) -> dict[str, Outage]:
        return dict(self._down)


#: this process's view (each process reports what it saw itself)
OUTAGES = Outages()
