"""The Meta upstream: WhatsApp Business Cloud API phone-number calls over the Graph API.

Graph errors are translated to the core's errors here (``core_error``); rate-limit replies
(codes 4, 80008, 130429) are retried with exponential backoff (``tenacity``) before giving up.
"""

from __future__ import annotations

from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from numgate.errors import ConfigurationError, UpstreamError
from numgate.waba.model import CodeMethod
from numgate.waba.upstream import RATE_LIMIT_CODES, GraphFailure, UpstreamPhone, core_error

PAGE_SIZE = 100
FIELDS = (
    "display_phone_number,verified_name,code_verification_status,quality_rating,name_status,"
    "status,messaging_limit_tier,throughput"
)


class _Throttled(Exception):
    def __init__(self, failure: GraphFailure) -> None:
        self.failure = failure
        super().__init__(failure.message)


class MetaGraph:
    name = "meta"

    def __init__(
        self,
        base_url: str,
        token: str | None,
        waba_id: str | None,
        *,
        attempts: int = 4,
        backoff_s: float = 1.0,
        timeout_s: float = 15.0,
    ) -> None:
        if not token or not waba_id:
            raise ConfigurationError(
                "the Meta upstream needs NUMGATE_META_TOKEN (a system-user token) and NUMGATE_META_WABA_ID"
            )
        self.waba_id = waba_id
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )

    async def _once(
        self, method: str, path: str, body: dict[str, Any] | None, params: dict[str, str] | None, during: str
    ) -> dict[str, Any]:
        resp = await self._client.request(method, path, json=body, params=params)
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise UpstreamError(f"the Graph API answered {resp.status_code} without JSON while {during}")
        err = data.get("error")
        if resp.status_code >= 400 or isinstance(err, dict):
            err = err if isinstance(err, dict) else {}
            failure = GraphFailure(
                code=int(err.get("code") or 0),
                message=str(err.get("message") or f"HTTP {resp.status_code}"),
                subcode=err.get("error_subcode"),
            )
            if failure.code in RATE_LIMIT_CODES:
                raise _Throttled(failure)
            raise core_error(failure, during)
        return data

    async def _call(
        self,
        method: str,
        path: str,
        during: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_Throttled),
                stop=stop_after_attempt(self._attempts),
                wait=wait_exponential(multiplier=self._backoff_s, max=60),
                reraise=True,
            ):
                with attempt:
                    return await self._once(method, path, body, params, during)
        except _Throttled as exc:
            raise core_error(exc.failure, during) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(f"could not reach the Graph API while {during}: {exc!r}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def waba_id_for(self, app_id: int) -> str:
        return self.waba_id

    async def add_number(self, cc: str, national: str, verified_name: str) -> str:
        data = await self._call(
            "POST",
            f"/{self.waba_id}/phone_numbers",
            "adding the number",
            {"cc": cc, "phone_number": national, "verified_name": verified_name},
        )
        return str(data["id"])

    async def request_code(self, upstream_id: str, method: CodeMethod, locale: str) -> None:
        await self._call(
            "POST",
            f"/{upstream_id}/request_code",
            "sending a verification code",
            {"code_method": method.value.upper(), "language": locale},
        )

    async def verify_code(self, upstream_id: str, code: str) -> None:
        await self._call("POST", f"/{upstream_id}/verify_code", "checking the code", {"code": code})

    async def register(self, upstream_id: str, pin: str) -> None:
        await self._call(
            "POST",
            f"/{upstream_id}/register",
            "registering the number",
            {"messaging_product": "whatsapp", "pin": pin},
        )

    async def deregister(self, upstream_id: str) -> None:
        await self._call("POST", f"/{upstream_id}/deregister", "deregistering the number", {})

    async def read(self, upstream_id: str) -> UpstreamPhone:
        d = await self._call("GET", f"/{upstream_id}", "reading the number", params={"fields": FIELDS})
        return self._info(d, upstream_id)

    async def list_all(self) -> dict[str, UpstreamPhone]:
        """``GET /<WABA_ID>/phone_numbers``, following ``paging.cursors.after`` to the last page."""
        found: dict[str, UpstreamPhone] = {}
        params = {"fields": FIELDS, "limit": str(PAGE_SIZE)}
        for _ in range(10_000):  # a bound, not a limit anyone reaches
            page = await self._call(
                "GET", f"/{self.waba_id}/phone_numbers", "listing the numbers", params=params
            )
            for d in page.get("data") or []:
                info = self._info(d, str(d.get("id")))
                found[info.upstream_id] = info
            paging = page.get("paging") or {}
            after = (paging.get("cursors") or {}).get("after")
            if not paging.get("next") or not after:
                break
            params = {**params, "after": str(after)}
        return found

    @staticmethod
    def _info(d: dict[str, Any], upstream_id: str) -> UpstreamPhone:
        return UpstreamPhone(
            upstream_id=str(d.get("id", upstream_id)),
            verified_name=str(d.get("verified_name", "")),
            code_verification_status=str(d.get("code_verification_status", "NOT_VERIFIED")),
            status=str(d.get("status", "PENDING")),
            quality_rating=str(d.get("quality_rating", "UNKNOWN")),
            name_status=str(d.get("name_status", "PENDING_REVIEW")),
            messaging_limit_tier=str(d.get("messaging_limit_tier", "TIER_250")),
        )

    async def close(self) -> None:
        await self._client.aclose()
