"""One outage is one pair of log lines: a call that was already under way when the outage was
seen does not end it by succeeding (the CI flake of 2026-11-30: a statement in flight when the
database was cut off finished, logged "available again after 0.0 s", and the next failure logged
a second outage)."""

from __future__ import annotations

import logging
import time

import pytest

from numgate.outages import Outages


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "numgate.outages"]


def test_a_call_begun_before_the_outage_does_not_end_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="numgate.outages")
    outages = Outages()
    in_flight = time.monotonic()
    outages.down("database", "connection refused")
    outages.up("database", in_flight)  # began before the outage: proves nothing
    outages.down("database", "connection refused")  # still the same outage
    assert "database" in outages.current()
    assert lines(caplog) == ["database unavailable: connection refused"]

    outages.up("database", time.monotonic())  # began after it: the database is back
    assert outages.current() == {}
    assert len(lines(caplog)) == 2 and lines(caplog)[1].startswith("database available again")


def test_a_success_without_a_start_time_ends_the_outage(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="numgate.outages")
    outages = Outages()
    outages.up("redis")  # nothing was down: nothing logged
    outages.down("redis", "timeout")
    outages.up("database")  # another dependency
    assert "redis" in outages.current()
    outages.up("redis")
    assert outages.current() == {} and len(lines(caplog)) == 2
