"""Group commit (``numgate.db.coalesce``): concurrent items share a flush, each caller gets its
own item's result, a failed flush fails exactly the items it carried."""

from __future__ import annotations

import asyncio

import pytest

from numgate.db.coalesce import Coalescer, rounds


def test_items_arriving_during_a_flush_go_together_in_the_next() -> None:
    flushed: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        flushed.append(items)
        await asyncio.sleep(0.01)
        return [i * 10 for i in items]

    async def main() -> list[int]:
        c: Coalescer[int, int] = Coalescer(flush, max_batch=3)
        return await asyncio.gather(*(c.submit(i) for i in range(7)))

    assert asyncio.run(main()) == [0, 10, 20, 30, 40, 50, 60]
    assert flushed == [[0, 1, 2], [3, 4, 5], [6]]  # all there by the first flush; at most 3 each


def test_an_item_alone_is_flushed_at_once_and_a_failure_fails_only_its_batch() -> None:
    async def flush(items: list[int]) -> list[int]:
        if 13 in items:
            raise ValueError("the database said no")
        return items

    async def main() -> None:
        c: Coalescer[int, int] = Coalescer(flush)
        assert await asyncio.wait_for(c.submit(1), 0.5) == 1
        bad = await asyncio.gather(c.submit(12), c.submit(13), return_exceptions=True)
        assert [type(r) for r in bad] == [ValueError, ValueError]
        assert await c.submit(14) == 14  # the next batch is unaffected

    asyncio.run(main())


def test_a_caller_that_stops_waiting_leaves_the_others_served() -> None:
    seen: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        seen.append(items)
        await asyncio.sleep(0.02)
        return items

    async def main() -> None:
        c: Coalescer[int, int] = Coalescer(flush)
        gone = asyncio.create_task(c.submit(1))
        kept = asyncio.create_task(c.submit(2))
        await asyncio.sleep(0)
        gone.cancel()
        assert await kept == 2
        with pytest.raises(asyncio.CancelledError):
            await gone

    asyncio.run(main())
    assert seen == [[1, 2]]  # the item of the caller that left was written anyway


def test_rounds_never_repeat_a_key_and_keep_the_order_of_arrival() -> None:
    assert rounds(["a", "b", "a", "c", "a", "b"]) == [[0, 1, 3], [2, 5], [4]]
    assert rounds([]) == []
