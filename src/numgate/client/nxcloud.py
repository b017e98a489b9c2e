"""NXCloud request signing over httpx. No public Python client exists for this API; this one is
used by numgate's own tests and shown in the docs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from numgate.dialects.nxcloud.signing import compute_sign

#: spec §5: path → (bizType, action)
ENDPOINTS: dict[str, tuple[str, str]] = {
    "/api/number/check": ("1", "numbercheck"),
    "/api/number/check/get": ("1", "numbercheck"),
    "/api/number/query": ("1", "numbercheck"),
    "/api/number/results": ("1", "numbercheck"),
}
INTEGRATOR = "/api/wa/integrator/embedded/register/"


class NxError(Exception):
    """A reply whose ``code`` is not 0 (raised only by the convenience methods)."""

    def __init__(self, reply: dict[str, Any]) -> None:
        self.reply = reply
        self.code = reply.get("code")
        super().__init__(f"{self.code}: {reply.get('msg') or reply.get('message')}")


def route_of(path: str) -> tuple[str, str]:
    if path in ENDPOINTS:
        return ENDPOINTS[path]
    if path.startswith(INTEGRATOR):
        return "2", path.rsplit("/", 1)[-1]
    raise ValueError(f"unknown NXCloud path {path!r}: pass biz_type and action")


def encode_body(body: dict[str, Any] | str | bytes | None) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return orjson.dumps(body)


def headers_for(
    access_key: str,
    access_secret: str,
    biz_type: str,
    action: str,
    body: bytes,
    *,
    ts: int | None = None,
    algorithm: str = "md5",
) -> dict[str, str]:
    """The five signed headers (plus ``algorithm`` when not md5) for one request."""
    ts_s = str(ts if ts is not None else time.time_ns() // 1_000_000)
    h = {
        "Content-Type": "application/json",
        "accessKey": access_key,
        "ts": ts_s,
        "bizType": biz_type,
        "action": action,
        "sign": compute_sign(access_key, biz_type, action, ts_s, body, access_secret, algorithm),
    }
    if algorithm != "md5":
        h["algorithm"] = algorithm
    return h


class _Base:
    def __init__(
        self,
        base_url: str,
        access_key: str,
        access_secret: str,
        algorithm: str = "md5",
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        if algorithm not in ("md5", "sha256"):
            raise ValueError("algorithm must be md5 or sha256")
        self.base_url = base_url.rstrip("/")
        self.access_key = access_key
        self.access_secret = access_secret
        self.algorithm = algorithm
        #: where ``ts`` comes from (default: this machine's clock)
        self.now_ms = now_ms

    def _prepare(
        self,
        path: str,
        body: dict[str, Any] | str | bytes | None,
        biz_type: str | None,
        action: str | None,
        ts: int | None,
    ) -> tuple[str, bytes, dict[str, str]]:
        if biz_type is None or action is None:
            biz_type, action = route_of(path)
        raw = encode_body(body)
        if ts is None and self.now_ms is not None:
            ts = self.now_ms()
        return (
            self.base_url + path,
            raw,
            headers_for(
                self.access_key, self.access_secret, biz_type, action, raw, ts=ts, algorithm=self.algorithm
            ),
        )


def _check(reply: dict[str, Any]) -> Any:
    """The reply's ``data``; NxError unless ``code`` is 0."""
    if reply.get("code") != 0:
        raise NxError(reply)
    return reply["data"]


def _submit_body(
    phone: str | list[str], appkey: str, level: int, batch_no: str | None, dr_url: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "phone": phone if isinstance(phone, str) else ",".join(phone),
        "appkey": appkey,
        "checkLevel": level,
    }
    if batch_no is not None:
        body["batchNo"] = batch_no
    if dr_url is not None:
        body["drUrl"] = dr_url
    return body


def _feed_body(cursor: str | None, body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "cursor": cursor} if cursor else body


def _check_get_body(phone: str, appkey: str, batch_no: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"phone": phone, "appkey": appkey, "checkLevel": 1}
    if batch_no is not None:
        body["batchNo"] = batch_no
    return body


class NxClient(_Base):
    """Synchronous client. ``post`` returns the parsed reply whatever its code; the named methods
    raise :class:`NxError` unless ``code`` is 0."""

    def __init__(
        self,
        base_url: str,
        access_key: str,
        access_secret: str,
        algorithm: str = "md5",
        timeout: float = 30.0,
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(base_url, access_key, access_secret, algorithm, now_ms)
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def post(
        self,
        path: str,
        body: dict[str, Any] | str | bytes | None = None,
        *,
        biz_type: str | None = None,
        action: str | None = None,
        ts: int | None = None,
    ) -> dict[str, Any]:
        url, raw, headers = self._prepare(path, body, biz_type, action, ts)
        resp = self._http.post(url, content=raw, headers=headers)
        result: dict[str, Any] = resp.json()
        return result

    def number_check(
        self,
        phone: str | list[str],
        *,
        appkey: str,
        level: int = 1,
        batch_no: str | None = None,
        dr_url: str | None = None,
    ) -> dict[str, Any]:
        return _check(self.post("/api/number/check", _submit_body(phone, appkey, level, batch_no, dr_url)))

    def number_query(self, **body: Any) -> dict[str, Any]:
        return _check(self.post("/api/number/query", body))

    def number_results(self, cursor: str | None = None, **body: Any) -> dict[str, Any]:
        """numgate's pull feed: ``{"results": [callback bodies], "cursor": …, "more": …}``."""
        return _check(self.post("/api/number/results", _feed_body(cursor, body)))

    def number_check_get(self, phone: str, *, appkey: str, batch_no: str | None = None) -> dict[str, Any]:
        return _check(self.post("/api/number/check/get", _check_get_body(phone, appkey, batch_no)))

    def integrator(self, name: str, body: dict[str, Any] | None = None) -> Any:
        return _check(self.post(INTEGRATOR + name, body))


class AsyncNxClient(_Base):
    """Asynchronous client, same methods as :class:`NxClient`, awaited."""

    def __init__(
        self,
        base_url: str,
        access_key: str,
        access_secret: str,
        algorithm: str = "md5",
        timeout: float = 30.0,
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(base_url, access_key, access_secret, algorithm, now_ms)
        self._http = httpx.AsyncClient(timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncNxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def post(
        self,
        path: str,
        body: dict[str, Any] | str | bytes | None = None,
        *,
        biz_type: str | None = None,
        action: str | None = None,
        ts: int | None = None,
    ) -> dict[str, Any]:
        url, raw, headers = self._prepare(path, body, biz_type, action, ts)
        resp = await self._http.post(url, content=raw, headers=headers)
        result: dict[str, Any] = resp.json()
        return result

    async def number_check(
        self,
        phone: str | list[str],
        *,
        appkey: str,
        level: int = 1,
        batch_no: str | None = None,
        dr_url: str | None = None,
    ) -> dict[str, Any]:
        return _check(
            await self.post("/api/number/check", _submit_body(phone, appkey, level, batch_no, dr_url))
        )

    async def number_query(self, **body: Any) -> dict[str, Any]:
        return _check(await self.post("/api/number/query", body))

    async def number_results(self, cursor: str | None = None, **body: Any) -> dict[str, Any]:
        return _check(await self.post("/api/number/results", _feed_body(cursor, body)))

    async def number_check_get(
        self, phone: str, *, appkey: str, batch_no: str | None = None
    ) -> dict[str, Any]:
        return _check(await self.post("/api/number/check/get", _check_get_body(phone, appkey, batch_no)))

    async def integrator(self, name: str, body: dict[str, Any] | None = None) -> Any:
        return _check(await self.post(INTEGRATOR + name, body))
