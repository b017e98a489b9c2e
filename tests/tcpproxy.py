"""A TCP proxy in front of a real server (PostgreSQL, Redis) that a test can cut: refuse new
connections and drop the open ones (the server is down), or black-hole everything (a silent
network partition: packets go nowhere, nothing is answered or closed)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

PASS, REFUSE, BLACKHOLE = "pass", "refuse", "blackhole"


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = PASS
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._pipes: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        #: every connection's writer, both sides, to close them all at the end
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.run_coroutine_threadsafe(self._close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    def set(self, mode: str) -> None:
        """PASS, REFUSE (new connections closed at once, open ones dropped) or BLACKHOLE."""
        assert self._loop is not None
        done = threading.Event()

        def apply() -> None:
            self.mode = mode
            if mode == REFUSE:
                for a, b in list(self._pipes):
                    a.transport.abort()
                    b.transport.abort()
                self._pipes.clear()
            done.set()

        self._loop.call_soon_threadsafe(apply)
        done.wait(5)

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._server = loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        loop.run_forever()
        loop.close()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # a plain function, not a coroutine: the connection is on record (and closed by _close)
        # from the moment it is accepted. Given a coroutine, asyncio runs it as a task, and a
        # task cancelled by _close before its first step left its socket open — Python 3.11's
        # streams then fail on the cancelled task's exception() and never close it (seen as an
        # unclosed-socket warning failing a test)
        self._writers.add(writer)
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == REFUSE:
            writer.transport.abort()
            return
        if self.mode == BLACKHOLE:
            await self._swallow(reader, writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        pair = (writer, up_writer)
        self._pipes.add(pair)
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        self._pipes.discard(pair)

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while await reader.read(65536):
                pass
        writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                while self.mode == BLACKHOLE:  # a partition: what is sent goes nowhere, for now
                    await asyncio.sleep(0.05)
                if self.mode == REFUSE:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
