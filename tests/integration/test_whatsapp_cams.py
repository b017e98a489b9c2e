"""The CAMS door driven by the official alibabacloud-cams20200606 SDK, as integrators use it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from alibabacloud_cams20200606 import models as m
from alibabacloud_tea_openapi.exceptions import ClientException, ServerException

from conftest import (
    RunningServer,
    Tenant,
    add_number,
    cams_client,
    make_tenant,
    new_space,
    outbox_code,
)

PHONE = "8613800001234"


@pytest.fixture
def space(server: RunningServer, tenant: Tenant) -> str:
    return new_space(server, tenant.account_id)


@pytest.fixture
def sdk(server: RunningServer, tenant: Tenant) -> Any:
    return cams_client(server, tenant.access_key, tenant.access_secret)


def status_of(sdk: Any, space: str, phone: str = PHONE) -> str:
    r = sdk.get_phone_number_verification_status(
        m.GetPhoneNumberVerificationStatusRequest(cust_space_id=space, phone_number=phone)
    )
    assert r.status_code == 200 and r.body.code == "OK"
    assert r.body.data.phone_number == phone
    return str(r.body.data.code_verification_status)


def numbers(sdk: Any, space: str) -> dict[str, Any]:
    r = sdk.query_chatapp_phone_numbers(m.QueryChatappPhoneNumbersRequest(cust_space_id=space))
    assert r.body.code == "OK" and r.body.success is True
    return {p.phone_number: p for p in r.body.phone_numbers}


def test_whole_lifecycle_through_the_official_sdk(server: RunningServer, sdk: Any, space: str) -> None:
    r = sdk.add_chatapp_phone_number(
        m.AddChatappPhoneNumberRequest(
            cust_space_id=space, cc="86", phone_number="13800001234", verified_name="Acme"
        )
    )
    assert r.body.code == "OK" and r.body.success is True
    assert status_of(sdk, space) == "NOT_VERIFIED"
    assert numbers(sdk, space)[PHONE].status == "PENDING"

    r = sdk.get_chatapp_verify_code(
        m.GetChatappVerifyCodeRequest(cust_space_id=space, phone_number=PHONE, method="SMS", locale="en_US")
    )
    assert r.body.success is True
    code = outbox_code(server, PHONE)

    r = sdk.chatapp_verify_and_register(
        m.ChatappVerifyAndRegisterRequest(cust_space_id=space, phone_number=PHONE, verify_code=code)
    )
    assert r.body.code == "OK" and r.body.success is True
    assert status_of(sdk, space) == "VERIFIED"
    item = numbers(sdk, space)[PHONE]
    assert (item.status, item.quality_rating, item.verified_name, item.name_status) == (
        "CONNECTED",
        "GREEN",
        "Acme",
        "Approval",
    )

    r = sdk.chatapp_phone_number_deregister(
        m.ChatappPhoneNumberDeregisterRequest(cust_space_id=space, phone_number=PHONE)
    )
    assert r.body.code == "OK"
    assert numbers(sdk, space)[PHONE].status == "DISCONNECTED"
    # still verified: it can be registered again without a new code
    r = sdk.chatapp_phone_number_register(
        m.ChatappPhoneNumberRegisterRequest(cust_space_id=space, phone_number=PHONE)
    )
    assert r.body.success is True
    assert numbers(sdk, space)[PHONE].status == "CONNECTED"
    synced = sdk.chatapp_sync_phone_number(m.ChatappSyncPhoneNumberRequest(cust_space_id=space))
    assert [p.phone_number for p in synced.body.phone_numbers] == [PHONE]


def test_reply_shape_is_exact(server: RunningServer, sdk: Any, space: str) -> None:
    add_number(server, space, PHONE)
    r = sdk.get_phone_number_verification_status(
        m.GetPhoneNumberVerificationStatusRequest(cust_space_id=space, phone_number=PHONE)
    )
    body = r.body.to_map()
    assert set(body) == {"RequestId", "Code", "Message", "AccessDeniedDetail", "Data"}
    assert body["RequestId"] == body["RequestId"].upper() and len(body["RequestId"]) == 36
    assert set(body["Data"]) == {"PhoneNumber", "Id", "CodeVerificationStatus"}
    r2 = sdk.chatapp_phone_number_deregister.__self__  # the client object is reusable
    assert r2 is sdk


def test_business_profile_round_trip(server: RunningServer, sdk: Any, space: str) -> None:
    add_number(server, space, PHONE)
    sdk.modify_phone_business_profile(
        m.ModifyPhoneBusinessProfileRequest(
            cust_space_id=space,
            phone_number=PHONE,
            about="Open 9-5",
            email="help@acme.example",
            websites=["https://acme.example"],
            vertical="RETAIL",
        )
    )
    r = sdk.query_phone_business_profile(
        m.QueryPhoneBusinessProfileRequest(cust_space_id=space, phone_number=PHONE)
    )
    d = r.body.data
    assert (d.about, d.email, d.websites, d.vertical, d.address) == (
        "Open 9-5",
        "help@acme.example",
        ["https://acme.example"],
        "RETAIL",
        "",
    )


def sdk_error(fn: Any, request: Any) -> Any:
    with pytest.raises((ClientException, ServerException)) as info:
        fn(request)
    return info.value


def test_errors_reach_the_sdk_as_the_real_service_would(server: RunningServer, sdk: Any, space: str) -> None:
    add_number(server, space, PHONE)
    add_number(server, space, "8613800009902")  # simulator: request code fails upstream

    exc = sdk_error(
        sdk.get_phone_number_verification_status,
        m.GetPhoneNumberVerificationStatusRequest(cust_space_id=space),
    )
    assert isinstance(exc, ClientException) and exc.status_code == 400 and exc.code == "MissingPhoneNumber"
    assert "PhoneNumber is mandatory for this action." in exc.message
    assert exc.data["Code"] == "MissingPhoneNumber" and exc.data["HostId"] and exc.data["Recommend"]

    exc = sdk_error(
        sdk.get_phone_number_verification_status,
        m.GetPhoneNumberVerificationStatusRequest(cust_space_id="cams-nosuchspc", phone_number=PHONE),
    )
    assert (exc.status_code, exc.code) == (400, "Unknown.ResourceOwnerId")

    exc = sdk_error(
        sdk.get_phone_number_verification_status,
        m.GetPhoneNumberVerificationStatusRequest(cust_space_id=space, phone_number="8613800005555"),
    )
    assert (exc.status_code, exc.code) == (400, "PhoneNumber.NotFound")

    exc = sdk_error(
        sdk.chatapp_phone_number_register,
        m.ChatappPhoneNumberRegisterRequest(cust_space_id=space, phone_number=PHONE),
    )
    assert exc.code == "PhoneNumber.NotVerified"

    exc = sdk_error(
        sdk.chatapp_phone_number_deregister,
        m.ChatappPhoneNumberDeregisterRequest(cust_space_id=space, phone_number=PHONE),
    )
    assert exc.code == "PhoneNumber.NotRegistered"

    exc = sdk_error(
        sdk.chatapp_verify_and_register,
        m.ChatappVerifyAndRegisterRequest(cust_space_id=space, phone_number=PHONE, verify_code="123456"),
    )
    assert exc.code == "VerifyCode.Expired" and "request a code first" in exc.message

    req = m.GetChatappVerifyCodeRequest(
        cust_space_id=space, phone_number=PHONE, method="voice", locale="zh_CN"
    )
    sdk.get_chatapp_verify_code(req)
    exc = sdk_error(sdk.get_chatapp_verify_code, req)
    assert exc.code == "VerifyCode.RequestTooFrequent" and "wait" in exc.message

    code = outbox_code(server, PHONE)
    wrong = "000000" if code != "000000" else "111111"
    exc = sdk_error(
        sdk.chatapp_verify_and_register,
        m.ChatappVerifyAndRegisterRequest(cust_space_id=space, phone_number=PHONE, verify_code=wrong),
    )
    assert exc.code == "VerifyCode.Mismatch" and "4 attempt(s) left" in exc.message

    exc = sdk_error(
        sdk.get_chatapp_verify_code,
        m.GetChatappVerifyCodeRequest(
            cust_space_id=space, phone_number="8613800009902", method="sms", locale="en_US"
        ),
    )
    assert isinstance(exc, ServerException) and (exc.status_code, exc.code) == (502, "Upstream.Error")
    assert "136024" in exc.message

    exc = sdk_error(
        sdk.get_chatapp_verify_code,
        m.GetChatappVerifyCodeRequest(cust_space_id=space, phone_number=PHONE, method="fax", locale="en_US"),
    )
    assert exc.code == "InvalidParameter" and "sms or voice" in exc.message

    sdk.chatapp_verify_and_register(
        m.ChatappVerifyAndRegisterRequest(cust_space_id=space, phone_number=PHONE, verify_code=code)
    )
    exc = sdk_error(
        sdk.chatapp_phone_number_register,
        m.ChatappPhoneNumberRegisterRequest(cust_space_id=space, phone_number=PHONE),
    )
    assert exc.code == "PhoneNumber.AlreadyRegistered"


def test_another_accounts_space_and_number_are_not_yours(server: RunningServer, sdk: Any, space: str) -> None:
    """Another tenant's space or number answers exactly as one that does not exist: a tenant
    cannot tell from numgate's answers which numbers other tenants have."""
    other = make_tenant(server, name="other")
    other_space = new_space(server, other.account_id)
    add_number(server, other_space, "4915112345678")

    def status_error(spc: str, phone: str) -> Any:
        return sdk_error(
            sdk.get_phone_number_verification_status,
            m.GetPhoneNumberVerificationStatusRequest(cust_space_id=spc, phone_number=phone),
        )

    for spc in (other_space, "cams-nosuchspace"):
        exc = status_error(spc, "4915112345678")
        assert (exc.status_code, exc.code) == (400, "Unknown.ResourceOwnerId")
    theirs, nobodys = status_error(space, "4915112345678"), status_error(space, "4915112340000")
    assert (
        (theirs.status_code, theirs.code)
        == (nobodys.status_code, nobodys.code)
        == (400, "PhoneNumber.NotFound")
    )
    assert theirs.data["Message"].replace("4915112345678", "N") == nobodys.data["Message"].replace(
        "4915112340000", "N"
    )

    # attaching a number that is on another account's space is refused, not moved, with the
    # answer the upstream gives for a number on another WhatsApp Business Account (ending 9901)
    def add_error(national: str) -> Any:
        return sdk_error(
            sdk.add_chatapp_phone_number,
            m.AddChatappPhoneNumberRequest(
                cust_space_id=space, cc="49", phone_number=national, verified_name="X"
            ),
        )

    taken, elsewhere = add_error("15112345678"), add_error("15112349901")
    assert (
        (taken.status_code, taken.code) == (elsewhere.status_code, elsewhere.code) == (502, "Upstream.Error")
    )
    assert taken.data["Message"] == elsewhere.data["Message"]


def test_permission_deny_names_the_action(server: RunningServer, tenant: Tenant, space: str) -> None:
    add_number(server, space, PHONE)
    creds = server.call(
        lambda core: core.tenancy.create_key(tenant.account_id, ["cams:GetPhoneNumberVerificationStatus"])
    )
    limited = cams_client(server, creds.access_key, creds.access_secret)
    assert status_of(limited, space) == "NOT_VERIFIED"
    exc = sdk_error(
        limited.get_chatapp_verify_code,
        m.GetChatappVerifyCodeRequest(cust_space_id=space, phone_number=PHONE, method="sms", locale="en_US"),
    )
    assert (exc.status_code, exc.code) == (400, "Ram.PermissionDeny")
    assert exc.access_denied_detail["AuthAction"] == "cams:GetChatappVerifyCode"


def test_account_without_whatsapp_is_unsubscribed(server: RunningServer) -> None:
    t = make_tenant(server, name="nowa", whatsapp=False)
    space = new_space(server, t.account_id)
    exc = sdk_error(
        cams_client(server, t.access_key, t.access_secret).query_chatapp_phone_numbers,
        m.QueryChatappPhoneNumbersRequest(cust_space_id=space),
    )
    assert (exc.status_code, exc.code) == (400, "Product.Unsubscript")


def test_wrong_secret_and_unknown_key(server: RunningServer, tenant: Tenant, space: str) -> None:
    req = m.QueryChatappPhoneNumbersRequest(cust_space_id=space)
    exc = sdk_error(cams_client(server, tenant.access_key, "not-the-secret").query_chatapp_phone_numbers, req)
    assert (exc.status_code, exc.code) == (400, "SignatureDoesNotMatch")
    exc = sdk_error(cams_client(server, "LTAInobody", "x").query_chatapp_phone_numbers, req)
    assert (exc.status_code, exc.code) == (404, "InvalidAccessKeyId.NotFound")


def test_legacy_sdk_signature_style(server: RunningServer, tenant: Tenant, space: str) -> None:
    add_number(server, space, PHONE)
    client = cams_client(server, tenant.access_key, tenant.access_secret)
    client._signature_algorithm = "v2"
    assert status_of(client, space) == "NOT_VERIFIED"


def test_rate_limit_is_system_limit_control(make_server: Any) -> None:
    srv = make_server(rate_limit_per_second=10)
    t = make_tenant(srv)
    space = new_space(srv, t.account_id)
    sdk = cams_client(srv, t.access_key, t.access_secret)
    req = m.QueryChatappPhoneNumbersRequest(cust_space_id=space)
    results = []
    for _ in range(15):
        try:
            sdk.query_chatapp_phone_numbers(req)
            results.append("OK")
        except ClientException as exc:
            results.append(exc.code)
    assert results.count("OK") >= 10 and "System.LimitControl" in results
    assert json.dumps(results)
