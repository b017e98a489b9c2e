"""Stopping helper processes: one that has exited counts as stopped even when another thread
reaped it first (a process pool's own manager thread joins its processes while numgate waits
for them), and one that does not stop within the grace period is killed, with a warning; the
callback senders, once stopped, leave no thread that still calls into their event loop."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing import connection

import pytest

from conftest import run_sync
from numgate.delivery.outbound import ProcessOutbound, open_outbound
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


def test_stopped_sender_processes_leave_no_thread_reading_their_pipes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The thread reading a sender's pipe ends with a call into the event loop; the stop waits
    for it, so a loop closed right after the stop (a server shutting down) is never called."""
    failed: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda a: failed.append(f"{a.thread}: {a.exc_value!r}"))

    async def open_and_stop() -> ProcessOutbound:
        outbound = open_outbound(
            2, allow=[ipaddress.ip_network("127.0.0.0/8")], timeout_s=1.0, concurrency=4, response_max=1024
        )
        assert isinstance(outbound, ProcessOutbound)
        async with outbound:
            pass
        readers = [s._reader for s in outbound._senders]
        assert readers and not any(r.is_alive() for r in readers)
        return outbound

    for _ in range(10):
        outbound = asyncio.run(open_and_stop())  # the loop is closed as soon as the stop returns
        for s in outbound._senders:
            s._reader.join(5)
    assert failed == []
