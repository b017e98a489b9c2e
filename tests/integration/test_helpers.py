"""Stopping helper processes: one that has exited counts as stopped even when another thread
reaped it first (a process pool's own manager thread joins its processes while numgate waits
for them), and one that does not stop within the grace period is killed, with a warning."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from multiprocessing import connection

import pytest

from conftest import run_sync
from numgate.helpers import stop_processes

SPAWN = multiprocessing.get_context("spawn")


def test_a_process_reaped_by_another_thread_counts_as_stopped(caplog: pytest.LogCaptureFixture) -> None:
    p = SPAWN.Process(target=time.sleep, args=(0,))
    p.start()
    connection.wait([p.sentinel], 30)
    os.waitpid(p.pid, 0)  # reaped behind multiprocessing's back, as the pool's thread does
    # what numgate asked before: multiprocessing cannot tell, and calls it alive
    assert p.is_alive()

    with caplog.at_level(logging.WARNING, logger="numgate.helpers"):
        killed = run_sync(stop_processes([p], 2.0, "test helper"))

    assert killed == 0
    assert not [r for r in caplog.records if "did not stop" in r.getMessage()]


def test_a_process_that_does_not_stop_is_killed(caplog: pytest.LogCaptureFixture) -> None:
    stuck = SPAWN.Process(target=time.sleep, args=(60,))
    quick = SPAWN.Process(target=time.sleep, args=(0,))
    stuck.start()
    quick.start()

    with caplog.at_level(logging.WARNING, logger="numgate.helpers"):
        killed = run_sync(stop_processes([stuck, quick], 1.0, "test helper"))

    assert killed == 1
    assert stuck.exitcode == -signal.SIGKILL
    assert quick.exitcode == 0
    assert [r.getMessage() for r in caplog.records] == [
        "a test helper process did not stop within 1 s: killing it"
    ]
