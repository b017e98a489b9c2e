"""WhatsApp integrator endpoints (bizType 2) in NXCloud's words (spec nxcloud.md §3)."""

from __future__ import annotations

from typing import Any

import phonenumbers

from numgate.core import Core
from numgate.dialects.nxcloud import fields
from numgate.dialects.nxcloud.door import Reply
from numgate.tenancy.service import KeyGrant
from numgate.waba.model import CodeMethod, PhoneNumber, Registration, Verification

OK = "Request successful"

#: core registration state → NXCloud register_status (a number not yet registered is "3,
#: creation in progress": createClient moves it 3 → 4 → 5)
REGISTER_STATUS: dict[Registration, int] = {
    Registration.NONE: 3,
    Registration.CREATING: 3,
    Registration.CREATED: 4,
    Registration.REGISTERED: 5,
    Registration.CREATE_FAILED: 1,
    Registration.REGISTER_FAILED: 2,
    Registration.DEREGISTERING: 5,
    Registration.DEREGISTERED: 4,
}
#: NXCloud's spelling of the unknown quality rating
QUALITY = {"UNKNOWN": "UNKNOW"}


def _phone(body: dict[str, Any]) -> str:
    return fields.text(body, "phone_number", required=True) or ""


def phone_row(n: PhoneNumber, waba_id: str) -> dict[str, Any]:
    try:
        display = phonenumbers.format_number(
            phonenumbers.parse("+" + n.phone), phonenumbers.PhoneNumberFormat.INTERNATIONAL
        )
    except phonenumbers.NumberParseException:  # pragma: no cover - stored numbers parse
        display = "+" + n.phone
    return {
        "display_phone_number": display,
        "quality_rating": QUALITY.get(n.quality, n.quality),
        "verified_name": n.verified_name,
        "name_status": n.name_status,
        "code_verification_status": "VERIFIED" if n.verification is Verification.VERIFIED else "NOT_VERIFIED",
        "current_limit": n.tier,
        "register_status": REGISTER_STATUS[n.registration],
        "status": n.status,
        "waba_id": waba_id,
        "waba_name": n.app_name,
    }


async def login(core: Core, grant: KeyGrant, body: dict[str, Any]) -> Reply:
    return Reply(0, OK, {"token": core.waba_signup.issue(grant.account.id)})


async def create_app(core: Core, grant: KeyGrant, body: dict[str, Any]) -> Reply:
    name = fields.text(body, "app_name", required=True) or ""
    webhook = fields.text(body, "webhook", required=True) or ""
    app = await core.tenancy.create_app(grant.account.id, name, webhook, url_field="webhook")
    return Reply(0, OK, {"app_id": app.id, "app_name": app.name, "app_key": app.appkey})


async def phone_list(core: Core, grant: KeyGrant, body: dict[str, Any]) -> Reply:
    appkey = fields.text(body, "appkey", required=True) or ""
    numbers = await core.waba.list_numbers(grant.account.id, appkey)
    return Reply(0, OK, [phone_row(n, core.waba.waba_id(n)) for n in numbers])


async def get_code(core: Core, grant: KeyGrant, body: dict[str, Any]) -> Reply:
    phone = _phone(body)
    method = CodeMethod.parse(fields.text(body, "method", required=True) or "")
    locale = fields.text(body, "language") or "en_US"
    await core.waba.request_code(grant.account.id, phone, method, locale)
    return Reply(0, OK, {})


async def check_code(core: Core, grant: KeyGrant, body: dict[str, Any]) -> Reply:
    phone = _phone(body)
    code = fields.text(body, "code", required=True) or ""
    await core.waba.verify_code(grant.account.id, phone, code)
    return Reply(0, OK, None)


async def create_client(core: Core, grant: KeyGrant, body: dict[str, Any]) -> Reply:
    await core.waba.register(grant.account.id, _phone(body))
    return Reply(0, OK, None)


HANDLERS = {
    "login": login,
    "createApp": create_app,
    "phoneList": phone_list,
    "getCode": get_code,
    "checkCode": check_code,
    "createClient": create_client,
}
