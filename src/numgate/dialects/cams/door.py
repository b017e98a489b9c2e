"""The CAMS RPC door: ``POST /`` (and ``GET /``), signature checks in the spec's order
(cams.md §2), dispatch to an action, and Alibaba's reply and error bodies."""

from __future__ import annotations

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
from numgate.errors import ActionNotAllowed, NumgateError, RateLimited
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
    """A gateway-level failure: authentication, version, action. ``message`` is Alibaba's own
    text, byte for byte (clients parse some of them: the legacy SDK splits SignatureDoesNotMatch's
    on ':' to compare string-to-sign); ``recommend`` says what exactly was wrong."""

    def __init__(self, status: int, code: str, message: str, recommend: str = DOCS) -> None:
        self.status, self.code, self.message, self.recommend = status, code, message, recommend
        super().__init__(message)


# Alibaba's gateway texts (the Message of each code)
INCOMPLETE = "The request signature does not conform to Aliyun standards."
KEY_NOT_FOUND = "Specified access key is not found."
KEY_DISABLED = "Specified access key is disabled."
NOT_MATCHED = "Specified signature is not matched with our calculation. server string to sign is:"
EXPIRED = "Specified time stamp or date value is expired."
BAD_TIME = "Specified time stamp or date value is not well formatted."
NONCE_USED = "Specified signature nonce was used already."
BAD_VERSION = "Specified parameter Version is not valid."
NO_ACTION = "Specified api is not found, please check your url and method."


def _incomplete(why: str) -> Refusal:
    return Refusal(400, "IncompleteSignature", INCOMPLETE, f"{why}. {DOCS}")


def _mandatory(param: str) -> Refusal:
    return Refusal(400, f"Missing{param}", f"{param} is mandatory for this action.")


def _body(data: dict[str, Any], status: int, request_id: str, headers: dict[str, str] | None = None) -> Reply:
    h = {"x-acs-request-id": request_id, **(headers or {})}
    return Reply(status, orjson.dumps(data), "application/json;charset=utf-8", h)


def _parse_time(value: str) -> datetime:
    if len(value) == 20 and value[10] == "T" and value[19] == "Z" and value.isascii():
        try:
            return datetime.fromisoformat(value[:19]).replace(tzinfo=UTC)
        except ValueError:
            pass
    raise Refusal(
        400, "InvalidTimeStamp.Format", BAD_TIME, f"{value[:40]!r} is not YYYY-MM-DDThh:mm:ssZ (UTC). {DOCS}"
    )


class CamsDoor:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def _grant(self, access_key: str) -> KeyGrant:
        grant = await self.core.tenancy.grant(access_key)
        if grant is None:
            raise Refusal(404, "InvalidAccessKeyId.NotFound", KEY_NOT_FOUND)
        if grant.refusal is not None:
            raise Refusal(400, "InvalidAccessKeyId.Inactive", KEY_DISABLED, f"{grant.refusal}. {DOCS}")
        return grant

    async def _acs3(
        self, request: Incoming, query_pairs: list[tuple[str, str]]
    ) -> tuple[KeyGrant, dict[str, str]]:
        h = request.headers
        try:
            auth = signing.parse_authorization(h["authorization"])
        except signing.MalformedAuthorization as exc:
            raise _incomplete(str(exc)) from None
        grant = await self._grant(auth.access_key_id)
        claimed = h.get("x-acs-content-sha256", "").lower()
        if not claimed:
            raise _incomplete("the x-acs-content-sha256 header is required")
        values = {name: request.header_values(name) for name in auth.signed_headers}
        sts = signing.acs3_string_to_sign(
            request.method, query_pairs, values, auth.signed_headers, claimed, auth.algorithm
        )
        if claimed != signing.body_hash(auth.algorithm, request.body):
            raise Refusal(
                400,
                "SignatureDoesNotMatch",
                NOT_MATCHED + sts,
                f"x-acs-content-sha256 is not the {auth.algorithm} hash of the request body. {DOCS}",
            )
        expected = signing.acs3_signature(grant.secret, sts, auth.algorithm)
        if not hmac.compare_digest(expected.encode(), auth.signature.encode()):
            raise Refusal(
                400,
                "SignatureDoesNotMatch",
                NOT_MATCHED + sts,
                f"Sign every header listed in SignedHeaders, with the AccessKeySecret. {DOCS}",
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
            raise _mandatory("AccessKeyId")
        grant = await self._grant(p["AccessKeyId"])
        if p.get("SignatureMethod", "HMAC-SHA1") != "HMAC-SHA1":
            raise Refusal(
                400,
                "InvalidSignatureMethod",
                "Specified signature method is not supported.",
                f"numgate verifies SignatureMethod HMAC-SHA1 (or an ACS3 Authorization header). {DOCS}",
            )
        sts = signing.legacy_string_to_sign(request.method, pairs)
        expected = signing.legacy_signature(grant.secret, sts)
        if not hmac.compare_digest(expected.encode(), p["Signature"].encode()):
            raise Refusal(400, "SignatureDoesNotMatch", NOT_MATCHED + sts)
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
        state["endpoint"] = "unknown"  # the action, once the request is authenticated
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
                raise _incomplete(
                    "the request is not signed: send an ACS3-HMAC-SHA256 (or -SM3) Authorization header "
                    "or the legacy Signature parameters"
                )
            state["account"] = grant.account.id
            await self._check_freshness(grant, meta)
            action_name = meta["action"]
            act = ACTIONS.get(action_name)
            state["endpoint"] = action_name if act is not None else "unknown"
            if act is None:
                raise Refusal(404, "InvalidAction.NotFound", NO_ACTION, f"{action_name[:80]!r}: {DOCS}")
            params = {k: v for k, v in pairs if k not in LEGACY}
            await self.core.admission.admit(grant, *act.operations)
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
            return self._error(exc, grant, action_name, request_id, host, state)
        state["code"] = "OK"
        reply = {
            "RequestId": request_id,
            "Code": "OK",
            "Message": "None",
            "AccessDeniedDetail": "None",
            **payload,
        }
        return _body(reply, 200, request_id)

    def _error(
        self,
        exc: Exception,
        grant: KeyGrant | None,
        action_name: str,
        request_id: str,
        host: str,
        state: dict[str, Any],
    ) -> Reply:
        """Alibaba's error body for a core error (``codes.py``)."""
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
                "AuthAction": f"cams:{action_name}",
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

    async def _check_freshness(self, grant: KeyGrant, meta: dict[str, str]) -> None:
        if not meta["date"]:
            raise _mandatory("Timestamp")
        when = _parse_time(meta["date"])
        skew = abs(self.core.clock.now().timestamp() - when.timestamp())
        if skew > WINDOW_S:
            raise Refusal(
                400,
                "InvalidTimeStamp.Expired",
                EXPIRED,
                f"The request's time is {int(skew)} s from the server's (allowed: {WINDOW_S} s); check "
                f"the client's clock. {DOCS}",
            )
        nonce = meta["nonce"]
        if not nonce:
            raise _mandatory("SignatureNonce")
        if len(nonce) > 128:
            raise _incomplete("the signature nonce is longer than 128 characters")
        if meta["version"] != VERSION:
            raise Refusal(400, "InvalidVersion", BAD_VERSION, f"Use Version {VERSION}. {DOCS}")
        if not await self.core.replay.first_use(f"cams:{grant.access_key}:{nonce}", 2 * WINDOW_S):
            raise Refusal(400, "SignatureNonceUsed", NONCE_USED)


def refuse(status: int, detail: str) -> Reply:
    """A refusal before the request is read (a body too large), in Alibaba's error body."""
    request_id = ids.new_request_id()
    data = {
        "RequestId": request_id,
        "HostId": "cams",
        "Code": "RequestEntityTooLarge",
        "Message": "The request entity is too large.",
        "Recommend": f"{detail}. {DOCS}",
    }
    return _body(data, status, request_id)


def add_cams_routes(dispatch: Dispatch, core: Callable[[], Core]) -> None:
    async def endpoint(request: Incoming) -> Reply:
        return await CamsDoor(core()).serve(request)

    dispatch.add("/", ("GET", "POST"), endpoint, refuse, "cams")
