"""More CAMS clients than the one the project started with: Alibaba's legacy RPC SDK
(``aliyun-python-sdk-core``, HMAC-SHA1), which parses some error messages, and the official SDK
with its ACS3-HMAC-SM3 algorithm. Every authentication error carries Alibaba's own code and text."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

import httpx
import pytest
from alibabacloud_cams20200606 import models as m
from alibabacloud_cams20200606.client import Client
from alibabacloud_tea_openapi import utils_models
from alibabacloud_tea_openapi.exceptions import ClientException as TeaClientException

from camssign import cams_request
from conftest import RunningServer, Tenant, add_number, make_tenant

PHONE = "8613800001234"
NOT_MATCHED = "Specified signature is not matched with our calculation. server string to sign is:"


def legacy_call(srv: RunningServer, key: str, secret: str, action: str, **params: str) -> Any:
    """One RPC call through the legacy SDK: its parsed reply, or the exception it raised."""
    from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkcore.request import CommonRequest

    client = AcsClient(key, secret, "cn-hangzhou", auto_retry=False, timeout=30)
    req = CommonRequest(domain=f"127.0.0.1:{srv.port}", version="2020-06-06", action_name=action)
    req.set_protocol_type("http")
    req.set_method("POST")
    for k, v in params.items():
        req.add_query_param(k, v)
    try:
        return json.loads(client.do_action_with_exception(req))
    except (ServerException, ClientException) as exc:
        return exc


@pytest.fixture
def tenant_with_number(server: RunningServer) -> Tenant:
    t = make_tenant(server)
    add_number(server, t.appkey, PHONE)
    return t


def test_the_legacy_sdk_works_and_parses_numgate_errors(
    server: RunningServer, tenant_with_number: Tenant
) -> None:
    from aliyunsdkcore.acs_exception.exceptions import ServerException

    t = tenant_with_number
    for var in ("HTTP_PROXY", "http_proxy"):
        os.environ.pop(var, None)
    ok = legacy_call(
        server,
        t.access_key,
        t.access_secret,
        "GetPhoneNumberVerificationStatus",
        CustSpaceId=t.appkey,
        PhoneNumber=PHONE,
    )
    assert ok["Code"] == "OK" and ok["Data"]["CodeVerificationStatus"] == "NOT_VERIFIED"
    # a wrong secret: the SDK splits this message on ':' to compare string-to-sign (it crashed
    # with IndexError on numgate's old text); it raises the service's error now
    bad = legacy_call(server, t.access_key, "wrong", "QueryChatappPhoneNumbers", CustSpaceId=t.appkey)
    assert isinstance(bad, ServerException), bad
    assert bad.get_error_code() == "SignatureDoesNotMatch" and bad.get_error_msg().startswith(
        NOT_MATCHED + "POST&%2F&"
    )
    unknown = legacy_call(server, "LTAInosuchkey", "x", "QueryChatappPhoneNumbers", CustSpaceId=t.appkey)
    assert (unknown.get_http_status(), unknown.get_error_code()) == (404, "InvalidAccessKeyId.NotFound")
    assert unknown.get_error_msg() == "Specified access key is not found."
    missing = legacy_call(
        server, t.access_key, t.access_secret, "GetPhoneNumberVerificationStatus", CustSpaceId=t.appkey
    )
    assert (missing.get_error_code(), missing.get_error_msg()) == (
        "MissingPhoneNumber",
        "PhoneNumber is mandatory for this action.",
    )


def test_the_official_sdk_signs_with_sm3(server: RunningServer, tenant_with_number: Tenant) -> None:
    t = tenant_with_number
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        os.environ.pop(var, None)

    def sdk(secret: str) -> Client:
        config = utils_models.Config(
            access_key_id=t.access_key,
            access_key_secret=secret,
            endpoint=f"127.0.0.1:{server.port}",
            protocol="http",
            signature_algorithm="ACS3-HMAC-SM3",
        )
        return Client(config)

    req = m.GetPhoneNumberVerificationStatusRequest(cust_space_id=t.appkey, phone_number=PHONE)
    r = sdk(t.access_secret).get_phone_number_verification_status(req)
    assert r.body.code == "OK" and r.body.data.code_verification_status == "NOT_VERIFIED"
    with pytest.raises(TeaClientException) as caught:
        sdk("wrong").get_phone_number_verification_status(req)
    assert caught.value.code == "SignatureDoesNotMatch"
    assert caught.value.data["Message"].startswith(NOT_MATCHED + "ACS3-HMAC-SM3\n")


def test_every_gateway_error_is_alibabas_code_and_text(
    server: RunningServer, tenant_with_number: Tenant
) -> None:
    t = tenant_with_number
    now = server.clock.now()
    params = {"CustSpaceId": t.appkey, "PhoneNumber": PHONE}

    def send(**kw: Any) -> tuple[int, str, str]:
        action = kw.pop("action", "GetPhoneNumberVerificationStatus")
        args: dict[str, Any] = {"key": t.access_key, "secret": t.access_secret, "when": now} | kw
        r = cams_request(server, action, params, **args)
        return r.status_code, r.json()["Code"], r.json()["Message"]

    expected = {
        "unknown key": (
            (404, "InvalidAccessKeyId.NotFound", "Specified access key is not found."),
            {"key": "LTAIx"},
        ),
        "expired": (
            (400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired."),
            {"when": now - timedelta(minutes=16)},
        ),
        "version": (
            (400, "InvalidVersion", "Specified parameter Version is not valid."),
            {"version": "2017-01-01"},
        ),
        "action": (
            (404, "InvalidAction.NotFound", "Specified api is not found, please check your url and method."),
            {"action": "DropDatabase"},
        ),
    }
    for name, (answer, kw) in expected.items():
        assert send(**kw) == answer, name
    assert send(nonce="n1")[0] == 200
    assert send(nonce="n1") == (400, "SignatureNonceUsed", "Specified signature nonce was used already.")
    status, code, message = send(secret="wrong")
    assert (status, code) == (400, "SignatureDoesNotMatch") and message.startswith(NOT_MATCHED)
    r = httpx.post(f"{server.base_url}/", params=params)
    assert (r.status_code, r.json()["Code"], r.json()["Message"]) == (
        400,
        "IncompleteSignature",
        "The request signature does not conform to Aliyun standards.",
    )
    server.call(lambda core: core.tenancy.set_key_enabled(t.access_key, False))
    assert send() == (400, "InvalidAccessKeyId.Inactive", "Specified access key is disabled.")
