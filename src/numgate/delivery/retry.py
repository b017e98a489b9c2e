"""The retry decision, as a pure function the worker only records."""

from __future__ import annotations


def next_attempt_ms(now_ms: int, deadline_ms: int, interval_ms: int) -> int | None:
    """When to try again after a failed attempt, or None when the retry window is over.

    NXCloud's policy (numgate's default): every 60 s for up to 60 minutes after the first try.
    """
    nxt = now_ms + interval_ms
    return nxt if nxt <= deadline_ms else None
