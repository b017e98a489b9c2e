"""The server's garbage-collection clock (``web/server.py: pace_gc``): young collections on a
timer, the older generations every so many of them."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from numgate.web.server import pace_gc


def test_generations_are_collected_on_the_clock() -> None:
    seen: list[int] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    async def run() -> None:
        task = asyncio.create_task(pace_gc(young_every_s=0.001, middle_every=3, full_every=6))
        while len(seen) < 12:
            await asyncio.sleep(0.001)
        task.cancel()

    gc.callbacks.append(record)
    threshold = gc.get_threshold()
    gc.disable()  # only the clock's collections are counted
    try:
        asyncio.run(run())
    finally:
        gc.enable()
        gc.set_threshold(*threshold)
        gc.callbacks.remove(record)
    assert seen[:12] == [0, 0, 1, 0, 0, 2, 0, 0, 1, 0, 0, 2]
