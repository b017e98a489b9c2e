"""The CAMS phone-number actions (spec cams.md §3): parameters in, reply payload out."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from numgate.core import Core
from numgate.errors import InvalidParameter, MissingParameter
from numgate.tenancy.service import KeyGrant
from numgate.waba.model import CodeMethod, PhoneNumber

Params = dict[str, str]
Payload = dict[str, Any]

#: core → CAMS name status
NAME_STATUS = {"APPROVED": "Approval", "DECLINED": "Rejected", "REJECTED": "Rejected"}


@dataclass(frozen=True)
class Action:
    name: str
    required: tuple[str, ...]
    run: Callable[[Core, KeyGrant, Params], Awaitable[Payload]]
    #: the core operations it performs (tenancy/operations.py)
    operations: tuple[str, ...]


ACTIONS: dict[str, Action] = {}


def action(
    *required: str, ops: tuple[str, ...]
) -> Callable[[Callable[[Core, KeyGrant, Params], Awaitable[Payload]]], Any]:
    def register(fn: Callable[[Core, KeyGrant, Params], Awaitable[Payload]]) -> Any:
        name = "".join(
            part.capitalize() if part != "chatapp" else "Chatapp" for part in fn.__name__.split("_")
        )
        ACTIONS[name] = Action(name, required, fn, ops)
        return fn

    return register


def verification_word(n: PhoneNumber) -> str:
    return {"verified": "VERIFIED", "expired": "EXPIRED"}.get(n.verification.value, "NOT_VERIFIED")


def phone_item(n: PhoneNumber) -> Payload:
    return {
        "PhoneNumber": n.phone,
        "VerifiedName": n.verified_name,
        "Status": n.status,
        "CodeVerificationStatus": verification_word(n),
        "QualityRating": n.quality,
        "MessagingLimitTier": n.tier,
        "NameStatus": NAME_STATUS.get(n.name_status, "Pending_Review"),
        "NewNameStatus": "None",
        "StatusCallbackUrl": n.callback_url or "",
        "UpCallbackUrl": n.callback_url or "",
        "StatusQueue": "",
        "UpQueue": "",
        "IsOfficial": "false",
    }


def _space(p: Params) -> str:
    return p["CustSpaceId"]


@action("CustSpaceId", "PhoneNumber", ops=("whatsapp:readNumber",))
async def get_phone_number_verification_status(core: Core, grant: KeyGrant, p: Params) -> Payload:
    n = await core.waba.number(grant.account.id, p["PhoneNumber"], _space(p))
    return {
        "Data": {
            "PhoneNumber": n.phone,
            "Id": n.upstream_id or str(n.id),
            "CodeVerificationStatus": verification_word(n),
        }
    }


@action("CustSpaceId", "PhoneNumber", "Method", "Locale", ops=("whatsapp:requestCode",))
async def get_chatapp_verify_code(core: Core, grant: KeyGrant, p: Params) -> Payload:
    method = CodeMethod.parse(p["Method"], "Method")
    await core.waba.request_code(grant.account.id, p["PhoneNumber"], method, p["Locale"], _space(p))
    return {"Success": True}


@action("CustSpaceId", "PhoneNumber", "VerifyCode", ops=("whatsapp:verifyCode", "whatsapp:register"))
async def chatapp_verify_and_register(core: Core, grant: KeyGrant, p: Params) -> Payload:
    await core.waba.verify_and_register(grant.account.id, p["PhoneNumber"], p["VerifyCode"], _space(p))
    return {"Success": True}


@action("CustSpaceId", "PhoneNumber", ops=("whatsapp:register",))
async def chatapp_phone_number_register(core: Core, grant: KeyGrant, p: Params) -> Payload:
    await core.waba.register(grant.account.id, p["PhoneNumber"], _space(p))
    return {"Success": True}


@action("CustSpaceId", "PhoneNumber", ops=("whatsapp:deregister",))
async def chatapp_phone_number_deregister(core: Core, grant: KeyGrant, p: Params) -> Payload:
    await core.waba.deregister(grant.account.id, p["PhoneNumber"], _space(p))
    return {}


@action("CustSpaceId", "Cc", "PhoneNumber", "VerifiedName", ops=("whatsapp:addNumber",))
async def add_chatapp_phone_number(core: Core, grant: KeyGrant, p: Params) -> Payload:
    await core.waba.add_number(grant.account.id, _space(p), p["PhoneNumber"], p["VerifiedName"], cc=p["Cc"])
    return {"Success": True}


@action(ops=("whatsapp:listNumbers",))
async def query_chatapp_phone_numbers(core: Core, grant: KeyGrant, p: Params) -> Payload:
    numbers = await core.waba.list_numbers(
        grant.account.id, p.get("CustSpaceId") or None, p.get("Status") or None
    )
    return {"Success": True, "PhoneNumbers": [phone_item(n) for n in numbers]}


@action("CustSpaceId", ops=("whatsapp:syncNumbers",))
async def chatapp_sync_phone_number(core: Core, grant: KeyGrant, p: Params) -> Payload:
    numbers = await core.waba.sync(grant.account.id, _space(p))
    return {"Success": True, "PhoneNumbers": [phone_item(n) for n in numbers]}


@action("CustSpaceId", "PhoneNumber", ops=("whatsapp:readProfile",))
async def query_phone_business_profile(core: Core, grant: KeyGrant, p: Params) -> Payload:
    pr = (await core.waba.number(grant.account.id, p["PhoneNumber"], _space(p))).profile
    return {
        "Success": True,
        "Data": {
            "About": pr.about,
            "Address": pr.address,
            "Description": pr.description,
            "Email": pr.email,
            "ProfilePictureUrl": pr.profile_picture_url,
            "Vertical": pr.vertical,
            "Websites": list(pr.websites),
        },
    }


@action("CustSpaceId", "PhoneNumber", ops=("whatsapp:updateProfile",))
async def modify_phone_business_profile(core: Core, grant: KeyGrant, p: Params) -> Payload:
    websites: tuple[str, ...] | None = None
    if p.get("Websites"):
        try:
            parsed = json.loads(p["Websites"])
        except ValueError:
            parsed = None
        if not isinstance(parsed, list) or not all(isinstance(w, str) for w in parsed):
            raise InvalidParameter(
                "Websites", 'Websites must be a JSON array of URLs, e.g. ["https://a.example"]'
            )
        if len(parsed) > 2:
            raise InvalidParameter("Websites", "at most 2 websites")
        websites = tuple(parsed)
    changes = {
        "about": p.get("About"),
        "address": p.get("Address"),
        "description": p.get("Description"),
        "email": p.get("Email"),
        "profile_picture_url": p.get("ProfilePictureUrl"),
        "vertical": p.get("Vertical"),
        "websites": websites,
    }
    await core.waba.set_profile(grant.account.id, p["PhoneNumber"], _space(p), changes)
    return {"Success": True}


def check_required(act: Action, params: Params) -> None:
    for name in act.required:
        if not params.get(name, "").strip():
            raise MissingParameter(name)
