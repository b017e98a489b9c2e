"""The CAMS RPC door: ``POST /`` (and ``GET /``), signature checks in the spec's order
(cams.md §2), dispatch to an action, and Alibaba's reply and error bodies."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from numgate import ids
from numgate.core import Core
from numgate.dialects.cams import signing
from numgate.dialects.cams.actions import ACTIONS, check_required
from numgate.dialects.cams.codes import DOCS, code_for
from numgate.errors import ActionNotAllowed, BusinessNotEnabled, NumgateError, RateLimited
from numgate.tenancy.service import KeyGrant
from numgate.web.wire import Dispatch, Incoming, Reply

log = logging.getLogger("numgate.cams")

VERSION = "2020-06-06"
WINDOW_S = 15 * 60
#: parameters of the legacy signature style, not of the action
LEGACY = {
    "Action",
    "Version",
    "AccessKeyId",
    "Timestamp",
    "SignatureNonce",
    "SignatureMethod",
    "SignatureVersion",
    "Signature",
    "SignatureType",
    "Format",
    "RegionId",
}


class Refusal(Exception):
    """A gateway-level failure: authentication, version, action."""

    def __init__(self, status: int, code: str, message: str, recommend: str = DOCS) -> None:
        self.status, self.code, self.message, self.recommend = status, code, message, recommend
        super().__init__(message)


def _body(data: dict[str, Any], status: int, request_id: str, headers: dict[str, str] | None = None) -> Reply:
    h = {"x-acs-request-id": request_id, **(headers or {})}
    return Reply(status, orjson.dumps(data), "application/json;charset=utf-8", h)


def _parse_time(value: str) -> datetime:
    if len(value) == 20 and value[10] == "T" and value[19] == "Z":
        try:
            return datetime.fromisoformat(value[:19]).replace(tzinfo=UTC)
        except ValueError:
            pass
    raise Refusal(
        400,
        "InvalidTimeStamp.Format",
        f"Specified time stamp {value!r} is not in YYYY-MM-DDThh:mm:ssZ (UTC).",
    )


class CamsDoor:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def _grant(self, access_key: str) -> KeyGrant:
        grant = await self.core.tenancy.grant(access_key)
        if grant is None:
            raise Refusal(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        if not grant.enabled:
            raise Refusal(400, "InvalidAccessKeyId.Inactive", "Specified access key is disabled.")
        return grant

    async def _acs3(
        self, request: Incoming, query_pairs: list[tuple[str, str]]
    ) -> tuple[KeyGrant, dict[str, str]]:
        h = request.headers
        try:
            auth = signing.parse_authorization(h["authorization"])
        except signing.MalformedAuthorization as exc:
            raise Refusal(
                400,
                "IncompleteSignature",
                f"The request signature does not conform to Aliyun standards: {exc}.",
            ) from None
        grant = await self._grant(auth.access_key_id)
        body_sha = hashlib.sha256(request.body).hexdigest() if request.body else signing.EMPTY_SHA256
        claimed = h.get("x-acs-content-sha256", "")
        if not claimed:
            raise Refusal(400, "IncompleteSignature", "The x-acs-content-sha256 header is required.")
        if claimed.lower() != body_sha:
            raise Refusal(
                400, "SignatureDoesNotMatch", "x-acs-content-sha256 is not the SHA-256 of the request body."
            )
        values = {name: request.header_values(name) for name in auth.signed_headers}
        sts = signing.acs3_string_to_sign(
            request.method, query_pairs, values, auth.signed_headers, claimed.lower()
        )
        expected = signing.acs3_signature(grant.secret, sts)
        if not hmac.compare_digest(expected.encode(), auth.signature.encode()):
            raise Refusal(
                400,
                "SignatureDoesNotMatch",
                "Specified signature does not match our calculation.",
                f"Server StringToSign: {sts!r}. Sign every header listed in SignedHeaders. {DOCS}",
            )
        return grant, {
            "date": h.get("x-acs-date", ""),
            "nonce": h.get("x-acs-signature-nonce", ""),
            "version": h.get("x-acs-version", ""),
            "action": h.get("x-acs-action", ""),
        }

    async def _legacy(
        self, request: Incoming, pairs: list[tuple[str, str]]
    ) -> tuple[KeyGrant, dict[str, str]]:
        p = dict(pairs)
        if not p.get("AccessKeyId"):
            raise Refusal(400, "IncompleteSignature", "The legacy signature needs the AccessKeyId parameter.")
        grant = await self._grant(p["AccessKeyId"])
        if p.get("SignatureMethod", "HMAC-SHA1") != "HMAC-SHA1":
            raise Refusal(400, "InvalidParameter", "SignatureMethod must be HMAC-SHA1.")
        sts = signing.legacy_string_to_sign(request.method, pairs)
        expected = signing.legacy_signature(grant.secret, sts)
        if not hmac.compare_digest(expected.encode(), p["Signature"].encode()):
            raise Refusal(
                400,
                "SignatureDoesNotMatch",
                "Specified signature does not match our calculation.",
                f"Server StringToSign: {sts!r}. {DOCS}",
            )
        return grant, {
            "date": p.get("Timestamp", ""),
            "nonce": p.get("SignatureNonce", ""),
            "version": p.get("Version", ""),
            "action": p.get("Action", ""),
        }

    async def serve(self, request: Incoming) -> Reply:
        request_id = ids.new_request_id()
        host = request.headers.get("host", "cams")
        state = request.state
        grant: KeyGrant | None = None
        action_name = ""
        try:
            body = request.body
            query_pairs = signing.form_pairs(request.query)
            pairs = list(query_pairs)
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if body and content_type == "application/x-www-form-urlencoded":
                pairs += signing.form_pairs(body.decode("utf-8", "replace"))
            if "authorization" in request.headers:
                grant, meta = await self._acs3(request, query_pairs)
            elif any(k == "Signature" for k, _ in pairs):
                grant, meta = await self._legacy(request, pairs)
            else:
                raise Refusal(
                    400,
                    "IncompleteSignature",
                    "The request is not signed: send an ACS3-HMAC-SHA256 Authorization header or the "
                    "legacy Signature parameters.",
                )
            state["account"] = grant.account.id
            await self._check_freshness(grant, meta)
            action_name = meta["action"]
            act = ACTIONS.get(action_name)
            if act is None:
                raise Refusal(
                    404,
                    "InvalidAction.NotFound",
                    f"Specified api {action_name!r} is not found, please check your url and method.",
                )
            params = {k: v for k, v in pairs if k not in LEGACY}
            if not grant.account.whatsapp:
                raise BusinessNotEnabled("this account has no WhatsApp (CAMS) business")
            await self.core.limits.admit(grant, f"cams:{act.name}")
            check_required(act, params)
            payload = await act.run(self.core, grant, params)
        except Refusal as r:
            state["code"] = r.code
            return _body(
                {
                    "RequestId": request_id,
                    "HostId": host,
                    "Code": r.code,
                    "Message": r.message,
                    "Recommend": r.recommend,
                },
                r.status,
                request_id,
            )
        except Exception as exc:
            if not isinstance(exc, NumgateError):
                log.exception("unhandled error in CAMS action %s", action_name)
            c = code_for(exc)
            code, message, recommend = c.render(exc)
            state["code"] = code
            data: dict[str, Any] = {
                "RequestId": request_id,
                "HostId": host,
                "Code": code,
                "Message": message,
                "Recommend": recommend,
            }
            headers: dict[str, str] = {}
            if isinstance(exc, ActionNotAllowed) and grant is not None:
                data["AccessDeniedDetail"] = {
                    "AuthAction": exc.action,
                    "AuthPrincipalDisplayName": grant.access_key,
                    "AuthPrincipalOwnerId": str(grant.account.id),
                    "AuthPrincipalType": "AccessKey",
                    "EncodedDiagnosticMessage": "",
                    "NoPermissionType": "ImplicitDeny",
                    "PolicyType": "AccessKeyActionAllowList",
                }
            if isinstance(exc, RateLimited):
                headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
            return _body(data, c.status, request_id, headers)
        state["code"] = "OK"
        reply = {
            "RequestId": request_id,
            "Code": "OK",
            "Message": "None",
            "AccessDeniedDetail": "None",
            **payload,
        }
        return _body(reply, 200, request_id)

    async def _check_freshness(self, grant: KeyGrant, meta: dict[str, str]) -> None:
        if not meta["date"]:
            raise Refusal(400, "MissingTimestamp", "x-acs-date (or Timestamp) is mandatory for this action.")
        when = _parse_time(meta["date"])
        skew = abs(self.core.clock.now().timestamp() - when.timestamp())
        if skew > WINDOW_S:
            raise Refusal(
                400,
                "InvalidTimeStamp.Expired",
                f"Specified time stamp or date value is expired: it is {int(skew)} s from the server's time "
                f"(allowed: {WINDOW_S} s); check the client's clock.",
            )
        nonce = meta["nonce"]
        if not nonce:
            raise Refusal(
                400,
                "MissingSignatureNonce",
                "x-acs-signature-nonce (or SignatureNonce) is mandatory for this action.",
            )
        if not await self.core.replay.first_use(f"cams:{grant.access_key}:{nonce}", 2 * WINDOW_S):
            raise Refusal(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
        if meta["version"] != VERSION:
            raise Refusal(
                400,
                "InvalidVersion",
                f"Specified parameter Version {meta['version']!r} is not valid: use {VERSION}.",
            )


def add_cams_routes(dispatch: Dispatch, core: Callable[[], Core]) -> None:
    async def endpoint(request: Incoming) -> Reply:
        return await CamsDoor(core()).serve(request)

    dispatch.add("/", ("GET", "POST"), endpoint)
