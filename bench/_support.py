"""Shared by the benchmark scripts (run as ``python bench/<name>.py``, so this is importable)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@contextmanager
def scratch_database(url: str | None) -> Iterator[str | None]:
    """A fresh PostgreSQL database next to ``url``'s (same server and user; named after it with a
    random suffix), dropped afterwards; ``None`` (SQLite) passes through. Each benchmark run then
    starts from empty tables, whatever earlier runs left."""
    if not url:
        yield None
        return
    import asyncio
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import asyncpg  # type: ignore[import-untyped]

    parts = urlsplit(url)
    name = f"{parts.path.lstrip('/') or 'numgate'}_{uuid.uuid4().hex[:8]}"
    admin = urlunsplit(parts._replace(path="/postgres"))

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
