"""HTTP to vendors: one aiohttp session per adapter, a time-out on every call, and the vendor's
"slow down" honoured — a throttled call waits (the vendor's ``Retry-After`` when it gives one,
else 0.25 s, doubling) and tries again, at most :data:`RETRIES` times, then gives up with
:class:`~numgate.upstreams.base.Throttled` so the number moves to the next upstream. A time-out or
a connection failure is :class:`~numgate.numbers.providers.ProviderFailed`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from numgate import __version__
from numgate.numbers.providers import ProviderFailed
from numgate.upstreams.base import Throttled

RETRIES = 3
FIRST_WAIT_S = 0.25
#: a Retry-After longer than this is not waited for: the next upstream is tried instead
LONGEST_WAIT_S = 5.0
#: connections to one vendor account at once
CONNECTIONS = 16


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import orjson

        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise ProviderFailed(
                f"malformed JSON in an HTTP {self.status} answer: {self.body[:200]!r}"
            ) from None


def basic_auth(user: str, password: str) -> dict[str, str]:
    """The ``Authorization`` header of HTTP Basic (RFC 7617)."""
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _is_429(reply: Reply) -> bool:
    return reply.status == 429


class VendorHttp:
    def __init__(self, timeout_s: float, *, vendor: str) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._vendor = vendor
        self._session: aiohttp.ClientSession | None = None

    def _get(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=CONNECTIONS),
                headers={"User-Agent": f"numgate/{__version__}"},
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        throttled: Callable[[Reply], bool] = _is_429,
        sign: Callable[[bytes], dict[str, str]] | None = None,
        **kwargs: Any,
    ) -> Reply:
        """The vendor's answer, whatever its status (the adapter reads it), after back-off on
        throttling. ``sign`` gives headers from the exact body bytes (signed vendors)."""
        wait = FIRST_WAIT_S
        base_headers = dict(kwargs.pop("headers", None) or {})
        for attempt in range(RETRIES + 1):
            headers = dict(base_headers)
            if sign is not None:  # signed again on each try: the signature may cover a time
                headers.update(sign(kwargs.get("data") or b""))
            try:
                async with self._get().request(method, url, headers=headers, **kwargs) as resp:
                    reply = Reply(
                        resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.read()
                    )
            except TimeoutError:
                raise ProviderFailed(
                    f"{self._vendor} did not answer within {self._timeout.total:g} s"
                ) from None
            except aiohttp.ClientError as exc:
                raise ProviderFailed(f"{self._vendor} unreachable: {type(exc).__name__}: {exc}") from None
            if not throttled(reply):
                return reply
            if attempt == RETRIES:
                break
            after = _retry_after(reply.headers.get("retry-after"))
            if after is not None and after > LONGEST_WAIT_S:
                break
            await asyncio.sleep(after if after is not None else wait)
            wait *= 2
        raise Throttled(f"{self._vendor} kept answering HTTP {reply.status} (too many requests)")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None
