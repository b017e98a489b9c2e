"""Group commit for small writes many requests make at once: :class:`Coalescer` gathers the
items that arrive while a flush is on its way to the database and sends them together in the
next one, so under load a round trip carries tens of items instead of one, and when idle an
item goes at once (no timer, no added wait).

Each caller awaits its own item's result; a failed flush fails every item it carried (the
caller sees the database's error, as it would have alone). A caller that stops waiting does
not take its item back: it is written anyway, as a statement already sent would have been."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """``await submit(item)`` is ``flush([item])[0]``, with the items of concurrent callers
    flushed together: at most one flush at a time, each of at most ``max_batch`` items."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[Sequence[R]]], max_batch: int = 500) -> None:
        self._flush = flush
        self._max = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        return await self.enqueue(item)

    def enqueue(self, item: T) -> asyncio.Future[R]:
        """``submit`` for a caller that does not wait there: the item's future, resolved when
        its flush is done (write-behind: a callback on it, no task per item)."""
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        return fut

    async def _run(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._max], self._pending[self._max :]
                try:
                    results = await self._flush([item for item, _ in batch])
                except BaseException as exc:
                    for _, fut in batch:
                        if fut.done():
                            continue
                        if isinstance(exc, Exception):
                            fut.set_exception(exc)
                            fut.exception()  # retrieved: its caller may have stopped waiting
                        else:
                            fut.cancel()
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
        finally:
            self._task = None
            for _, fut in self._pending:  # only left when the loop was cancelled (shutdown)
                if not fut.done():
                    fut.cancel()
            self._pending = []


def rounds(keys: Sequence[object]) -> list[list[int]]:
    """The positions of ``keys`` split into rounds in which no key repeats (the n-th time a key
    appears goes in round n): one statement per round when a key may be changed only once per
    statement (an UPDATE ... FROM touches a row once, however many input rows match it)."""
    seen: dict[object, int] = {}
    out: list[list[int]] = []
    for i, k in enumerate(keys):
        n = seen[k] = seen.get(k, -1) + 1
        if n == len(out):
            out.append([])
        out[n].append(i)
    return out
