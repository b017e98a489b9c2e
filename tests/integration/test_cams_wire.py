"""The CAMS door on the wire: the captured SDK vectors (clock pinned), replayed nonces, the date
window, version, unknown actions, malformed signatures, form bodies and GET."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from camssign import cams_request
from conftest import RunningServer, load_vectors
from numgate.clock import FixedClock
from numgate.core import Core
from numgate.waba.simulator import code_in, read_outbox

VECTORS = load_vectors()
KEY, SECRET = "LTAI5tTestAccessKeyId", "TestAccessKeySecret0123456789ab"
SPACE, PHONE = "cams-kei1234", "8613800001234"
PINNED = datetime(2026, 11, 22, 21, 53, 0, tzinfo=UTC)
ERROR_KEYS = {"RequestId", "HostId", "Code", "Message", "Recommend"}


@pytest.fixture
def pinned(make_server: Any) -> tuple[RunningServer, FixedClock]:
    clock = FixedClock(PINNED)
    srv = make_server(clock=clock)

    async def setup(core: Core) -> None:
        acct, _ = await core.tenancy.create_account("kei", integrator=True)
        await core.tenancy.import_key(acct.id, KEY, SECRET)
        await core.tenancy.create_app(acct.id, "kei space", appkey=SPACE)
        await core.waba.add_number(acct.id, SPACE, PHONE, "Kei")

    srv.call(setup)
    return srv, clock


def send_vector(srv: RunningServer, v: dict[str, Any]) -> httpx.Response:
    headers = dict(v.get("headers") or {})
    if v.get("content_type"):
        headers["content-type"] = v["content_type"]
    return httpx.request(v["method"], srv.base_url + v["path"], headers=headers, content=v["body"].encode())


def test_captured_sdk_requests_verify(pinned: tuple[RunningServer, FixedClock]) -> None:
    srv, _ = pinned
    acs3 = VECTORS["cams_acs3"]
    r = send_vector(srv, acs3[0])
    assert r.status_code == 200, r.text
    assert r.json()["Data"] == {
        "PhoneNumber": PHONE,
        "Id": r.json()["Data"]["Id"],
        "CodeVerificationStatus": "NOT_VERIFIED",
    }
    r = send_vector(srv, acs3[1])
    assert (r.status_code, r.json()["Success"]) == (200, True)
    [message] = srv.call(lambda core: read_outbox(core.db, PHONE))
    assert message.locale == "zh_CN" and "WhatsApp" in message.text
    r = send_vector(srv, acs3[2])  # VerifyCode=123456
    if code_in(message) == "123456":  # one chance in a million
        assert r.status_code == 200
    else:
        assert (r.status_code, r.json()["Code"]) == (400, "VerifyCode.Mismatch")
        assert set(r.json()) == ERROR_KEYS
    for v in VECTORS["cams_legacy_hmac_sha1"]:
        r = send_vector(srv, v)
        assert r.status_code == 200, r.text
        assert r.json()["Data"]["PhoneNumber"] == PHONE


def test_replayed_nonce_and_stale_date(pinned: tuple[RunningServer, FixedClock]) -> None:
    srv, clock = pinned
    v = VECTORS["cams_acs3"][0]
    assert send_vector(srv, v).status_code == 200
    r = send_vector(srv, v)
    assert (r.status_code, r.json()["Code"]) == (400, "SignatureNonceUsed")
    clock.set(datetime(2026, 11, 22, 21, 51, 39, tzinfo=UTC) + timedelta(minutes=15, seconds=1))
    r = send_vector(srv, VECTORS["cams_legacy_hmac_sha1"][0])  # Timestamp 21:52:27 is still fresh
    assert r.status_code == 200
    r = send_vector(srv, VECTORS["cams_acs3"][1])
    assert (r.status_code, r.json()["Code"]) == (400, "InvalidTimeStamp.Expired")
    # Alibaba's own text in Message; what to do in Recommend
    assert r.json()["Message"] == "Specified time stamp or date value is expired."
    assert "check the client's clock" in r.json()["Recommend"]


def test_tampered_request_is_refused_with_the_string_to_sign(
    pinned: tuple[RunningServer, FixedClock],
) -> None:
    srv, _ = pinned
    v = dict(VECTORS["cams_acs3"][0])
    v["path"] = v["path"].replace("8613800001234", "8613800001235")
    r = send_vector(srv, v)
    body = r.json()
    assert (r.status_code, body["Code"]) == (400, "SignatureDoesNotMatch")
    # Alibaba's text, with the server's string-to-sign after the colon (SDKs parse it)
    prefix = "Specified signature is not matched with our calculation. server string to sign is:"
    assert set(body) == ERROR_KEYS and body["Message"].startswith(prefix + "ACS3-HMAC-SHA256\n")


def signed(
    srv: RunningServer,
    action: str,
    params: dict[str, str],
    *,
    when: datetime,
    version: str = "2020-06-06",
    method: str = "POST",
    form: dict[str, str] | None = None,
    body_hash: str | None = None,
) -> httpx.Response:
    """A request of the vectors' key, signed as the SDK signs (ACS3)."""
    return cams_request(
        srv,
        action,
        params,
        key=KEY,
        secret=SECRET,
        when=when,
        version=version,
        method=method,
        form=form,
        body_hash=body_hash,
    )


def test_gateway_errors(pinned: tuple[RunningServer, FixedClock]) -> None:
    srv, _ = pinned
    p = {"CustSpaceId": SPACE, "PhoneNumber": PHONE}
    r = signed(srv, "GetPhoneNumberVerificationStatus", p, when=PINNED)
    assert r.status_code == 200 and r.headers["x-acs-request-id"] == r.json()["RequestId"]
    r = signed(srv, "GetPhoneNumberVerificationStatus", p, when=PINNED, method="GET")
    assert r.status_code == 200
    r = signed(srv, "GetPhoneNumberVerificationStatus", p, when=PINNED, version="2017-05-25")
    assert (r.status_code, r.json()["Code"]) == (400, "InvalidVersion")
    r = signed(srv, "DeleteEverything", p, when=PINNED)
    assert (r.status_code, r.json()["Code"]) == (404, "InvalidAction.NotFound")
    r = signed(srv, "GetPhoneNumberVerificationStatus", p, when=PINNED, body_hash="0" * 64)
    assert (r.status_code, r.json()["Code"]) == (400, "SignatureDoesNotMatch")
    # older clients put parameters in a form body: merged with the query
    r = signed(
        srv,
        "GetPhoneNumberVerificationStatus",
        {"CustSpaceId": SPACE},
        when=PINNED,
        form={"PhoneNumber": PHONE},
    )
    assert r.status_code == 200 and r.json()["Data"]["PhoneNumber"] == PHONE
    r = httpx.post(f"{srv.base_url}/", params=p)
    assert (r.status_code, r.json()["Code"]) == (400, "IncompleteSignature") and set(r.json()) == ERROR_KEYS
    r = httpx.post(f"{srv.base_url}/", params=p, headers={"Authorization": "ACS3-HMAC-SHA256 Credential=x"})
    assert (r.status_code, r.json()["Code"]) == (400, "IncompleteSignature")
