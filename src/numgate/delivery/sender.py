"""Outbound callback POSTs with aiohttp (the fastest client measured here), behind the URL guard."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from numgate import __version__
from numgate.delivery.guard import CallbackRefused, GuardedResolver, Network, is_ip_literal, refusal
from numgate.delivery.signing import ATTEMPT_HEADER, DELIVERY_ID_HEADER, SIGNATURE_HEADER, sign_body


@dataclass(frozen=True)
class Outgoing:
    uid: str
    url: str
    body: bytes
    secret: str
    attempt: int


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: int | None
    latency_ms: int
    error: str | None
    #: True when retrying cannot help (the URL is refused by the guard, or malformed)
    permanent: bool = False


def _cause_chain(exc: BaseException) -> list[BaseException]:
    out, cur = [], exc
    while cur is not None and cur not in out:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__  # type: ignore[assignment]
    return out


class CallbackSender:
    def __init__(self, *, allow: Sequence[Network], timeout_s: float, concurrency: int) -> None:
        self._allow = tuple(allow)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None
        self._sem = asyncio.Semaphore(concurrency)

    async def __aenter__(self) -> CallbackSender:
        connector = aiohttp.TCPConnector(
            limit=self._concurrency, resolver=GuardedResolver(self._allow), ttl_dns_cache=10
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers={"User-Agent": f"numgate/{__version__}"},
            auto_decompress=False,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, item: Outgoing) -> Outcome:
        assert self._session is not None
        host = urlsplit(item.url).hostname or ""
        if not host:
            return Outcome(False, None, 0, f"malformed callback URL {item.url!r}", permanent=True)
        if is_ip_literal(host) and (reason := refusal(host.strip("[]"), self._allow)) is not None:
            return Outcome(False, None, 0, f"refused by the URL guard: {reason}", permanent=True)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign_body(item.secret, item.body),
            DELIVERY_ID_HEADER: item.uid,
            ATTEMPT_HEADER: str(item.attempt),
        }
        start = time.perf_counter()
        async with self._sem:
            try:
                async with self._session.post(
                    item.url, data=item.body, headers=headers, allow_redirects=False
                ) as resp:
                    await resp.read()
                    status = resp.status
            except Exception as exc:
                ms = int((time.perf_counter() - start) * 1000)
                for e in _cause_chain(exc):
                    if isinstance(e, CallbackRefused):
                        return Outcome(False, None, ms, f"refused by the URL guard: {e}", permanent=True)
                if isinstance(exc, TimeoutError | asyncio.TimeoutError):
                    return Outcome(False, None, ms, f"timed out after {self._timeout.total:g} s")
                return Outcome(False, None, ms, f"{type(exc).__name__}: {exc}"[:500])
        ms = int((time.perf_counter() - start) * 1000)
        if 200 <= status < 300:
            return Outcome(True, status, ms, None)
        return Outcome(False, status, ms, f"receiver answered HTTP {status}")
