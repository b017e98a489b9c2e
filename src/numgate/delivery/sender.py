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
    def __init__(
        self, *, allow: Sequence[Network], timeout_s: float, concurrency: int, response_max: int = 65536
    ) -> None:
        self._allow = tuple(allow)
        #: bytes of a receiver's answer read (it is only logged); past it the connection is closed
        self._response_max = response_max
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None
        #: per URL, why the guard refuses it (None: allowed, or a host name the resolver checks)
        self._refusals: dict[str, str | None] = {}

    async def __aenter__(self) -> CallbackSender:
        connector = aiohttp.TCPConnector(
            limit=self._concurrency, resolver=GuardedResolver(self._allow), ttl_dns_cache=10
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers={"User-Agent": f"numgate/{__version__}"},
            auto_decompress=False,
            # receivers' cookies have no use here, and filtering them costs on every request
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("Accept-Encoding",),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def _refusal(self, url: str) -> str | None:
        """Why the URL may not be called before any connection (malformed, or an address literal
        the guard refuses); host names are checked by the resolver on the addresses they resolve to."""
        if url in self._refusals:
            return self._refusals[url]
        host = urlsplit(url).hostname or ""
        reason = None
        if not host:
            reason = f"malformed callback URL {url!r}"
        elif is_ip_literal(host) and (why := refusal(host.strip("[]"), self._allow)) is not None:
            reason = f"refused by the URL guard: {why}"
        if len(self._refusals) > 10_000:
            self._refusals.clear()
        self._refusals[url] = reason
        return reason

    async def send_all(self, items: Sequence[Outgoing]) -> list[Outcome]:
        """Send every item, ``concurrency`` at a time; the outcomes in the items' order."""
        outcomes: list[Outcome | None] = [None] * len(items)
        todo = iter(range(len(items)))

        async def lane() -> None:
            for i in todo:
                outcomes[i] = await self.send(items[i])

        await asyncio.gather(*(lane() for _ in range(min(self._concurrency, len(items)))))
        return outcomes  # type: ignore[return-value]  # every slot was filled

    async def _drain(self, resp: aiohttp.ClientResponse) -> None:
        """Read at most ``response_max`` bytes of the answer; a longer one closes the connection
        (the rest is never read: receivers are chosen by tenants)."""
        left = self._response_max
        while left > 0:
            chunk = await resp.content.read(min(left, 65536))
            if not chunk:
                return
            left -= len(chunk)
        if not resp.content.at_eof():
            resp.close()

    async def send(self, item: Outgoing) -> Outcome:
        assert self._session is not None
        if (reason := self._refusal(item.url)) is not None:
            return Outcome(False, None, 0, reason, permanent=True)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign_body(item.secret, item.body),
            DELIVERY_ID_HEADER: item.uid,
            ATTEMPT_HEADER: str(item.attempt),
        }
        start = time.perf_counter()
        try:
            async with self._session.post(
                item.url, data=item.body, headers=headers, allow_redirects=False
            ) as resp:
                await self._drain(resp)
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
