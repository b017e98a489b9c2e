"""What a batch stores stays bounded: its callback URL once (not once per callback), and an
SQLite WAL that a large write grew is truncated by the next checkpoint."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from conftest import Receiver, RunningServer, make_tenant
from numgate.client import NxClient
from numgate.db.tables import callback_targets, deliveries


async def _targets(core: Any) -> tuple[int, int, int]:
    async with core.db.read() as tx:
        return (
            await tx.scalar(select(func.count()).select_from(callback_targets)),
            await tx.scalar(select(func.count()).select_from(deliveries)),
            await tx.scalar(select(func.count(func.distinct(deliveries.c.target_id)))),
        )


def test_a_callback_url_is_stored_once(server: RunningServer, receiver: Receiver) -> None:
    t = make_tenant(server)
    url = receiver.url("/" + "p" * 1500)  # long, within the 2,048 limit
    with NxClient(server.base_url, t.access_key, t.access_secret) as nx:
        for _ in range(2):
            nx.number_check([f"2348031{n:06d}" for n in range(200)], appkey=t.appkey, dr_url=url)
    receiver.wait_for(400)
    assert server.call(_targets) == (1, 400, 1)


def test_a_grown_wal_is_truncated(make_server: Any, database_url: str) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's WAL (PostgreSQL manages its own)")
    srv = make_server(sqlite_wal_max=1024 * 1024, inprocess_workers=False)
    t = make_tenant(srv, prices={1: 1})
    wal = database_url.removeprefix("sqlite:///") + "-wal"
    with NxClient(srv.base_url, t.access_key, t.access_secret) as nx:
        for i in range(6):  # ~6 MB of pages written
            nx.number_check([f"2348031{n:06d}" for n in range(5000)], appkey=t.appkey, batch_no=f"b{i}")
    grown = os.path.getsize(wal)
    assert grown > 1024 * 1024
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.getsize(wal) >= 1024 * 1024:
        time.sleep(0.2)
    assert os.path.getsize(wal) < 1024 * 1024, (grown, os.path.getsize(wal))
