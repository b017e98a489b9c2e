"""The core's operations: what an access key may be allowed to do, named once for every door.

Each door maps its endpoints to these names (NXCloud ``getCode`` and CAMS
``GetChatappVerifyCode`` are both ``whatsapp:requestCode``), so one allow-list entry covers an
operation whichever door it comes through, and the rate limit counts it once. The names the doors
used before (``wa:getCode``, ``cams:GetChatappVerifyCode``, ``numbercheck:get``) are accepted as
aliases when a key is created.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from numgate.errors import InvalidParameter


class Business(Enum):
    """An account's business switches (``accounts.number_check``, ``accounts.whatsapp``)."""

    NUMBER_CHECK = "number_check"
    WHATSAPP = "whatsapp"


@dataclass(frozen=True)
class Operation:
    name: str
    business: Business
    summary: str
    #: the door-specific names that mean this operation (accepted in ``--allow``)
    aliases: tuple[str, ...] = ()


_NC, _WA = Business.NUMBER_CHECK, Business.WHATSAPP

OPERATIONS: tuple[Operation, ...] = (
    Operation("numbercheck:submit", _NC, "submit a batch (NXCloud /api/number/check)"),
    Operation(
        "numbercheck:check", _NC, "check one number now (NXCloud /api/number/check/get)", ("numbercheck:get",)
    ),
    Operation("numbercheck:query", _NC, "read results (NXCloud /api/number/query)"),
    Operation("numbercheck:results", _NC, "pull every result after a cursor (/api/number/results)"),
    Operation("whatsapp:signup", _WA, "open the embedded sign-up page (NXCloud login)", ("wa:login",)),
    Operation("whatsapp:createApp", _WA, "create an app (NXCloud createApp)", ("wa:createApp",)),
    Operation(
        "whatsapp:listNumbers",
        _WA,
        "list numbers (NXCloud phoneList, CAMS QueryChatappPhoneNumbers)",
        ("wa:phoneList", "cams:QueryChatappPhoneNumbers"),
    ),
    Operation(
        "whatsapp:readNumber",
        _WA,
        "read a number's verification status (CAMS GetPhoneNumberVerificationStatus)",
        ("cams:GetPhoneNumberVerificationStatus",),
    ),
    Operation(
        "whatsapp:addNumber",
        _WA,
        "attach a number to an app or space (CAMS AddChatappPhoneNumber)",
        ("cams:AddChatappPhoneNumber",),
    ),
    Operation(
        "whatsapp:requestCode",
        _WA,
        "send a verification code (NXCloud getCode, CAMS GetChatappVerifyCode)",
        ("wa:getCode", "cams:GetChatappVerifyCode"),
    ),
    Operation(
        "whatsapp:verifyCode",
        _WA,
        "check a verification code (NXCloud checkCode; CAMS ChatappVerifyAndRegister with register)",
        ("wa:checkCode",),
    ),
    Operation(
        "whatsapp:register",
        _WA,
        "register a number (NXCloud createClient, CAMS ChatappPhoneNumberRegister)",
        ("wa:createClient", "cams:ChatappPhoneNumberRegister"),
    ),
    Operation(
        "whatsapp:deregister",
        _WA,
        "deregister a number (CAMS ChatappPhoneNumberDeregister)",
        ("cams:ChatappPhoneNumberDeregister",),
    ),
    Operation(
        "whatsapp:syncNumbers",
        _WA,
        "refresh numbers from the upstream (CAMS ChatappSyncPhoneNumber)",
        ("cams:ChatappSyncPhoneNumber",),
    ),
    Operation(
        "whatsapp:readProfile",
        _WA,
        "read a business profile (CAMS QueryPhoneBusinessProfile)",
        ("cams:QueryPhoneBusinessProfile",),
    ),
    Operation(
        "whatsapp:updateProfile",
        _WA,
        "change a business profile (CAMS ModifyPhoneBusinessProfile)",
        ("cams:ModifyPhoneBusinessProfile",),
    ),
)

BY_NAME: dict[str, Operation] = {op.name: op for op in OPERATIONS}
#: every accepted spelling (names and aliases, case-insensitive) → the operations it means
_LOOKUP: dict[str, tuple[str, ...]] = {
    spelling.lower(): (op.name,) for op in OPERATIONS for spelling in (op.name, *op.aliases)
}
#: CAMS ChatappVerifyAndRegister checks the code and registers: it needs both
_LOOKUP["cams:chatappverifyandregister"] = ("whatsapp:verifyCode", "whatsapp:register")


def operation(name: str) -> Operation:
    """The operation a door names (an exact core name; a door typo is a bug, not user input)."""
    return BY_NAME[name]


def parse_allowed(values: Iterable[str]) -> list[str]:
    """Core operation names from ``--allow`` values: each may be repeated or comma-separated, a
    core name, a door's alias, or ``numbercheck:*`` / ``whatsapp:*``. Unknown names are refused
    with the list of valid ones."""
    out: list[str] = []
    unknown: list[str] = []
    for value in values:
        for raw in value.split(","):
            item = raw.strip()
            if not item:
                continue
            prefix = item.lower().removesuffix(":*")
            if item.endswith(":*") and prefix in ("numbercheck", "whatsapp"):
                out += [op.name for op in OPERATIONS if op.name.startswith(prefix + ":")]
            elif (names := _LOOKUP.get(item.lower())) is not None:
                out += names
            else:
                unknown.append(item)
    if unknown:
        raise InvalidParameter(
            "allow",
            f"unknown operation(s): {', '.join(unknown)}. Valid names: "
            f"{', '.join(op.name for op in OPERATIONS)} (or numbercheck:*, whatsapp:*); "
            "see `numgate admin key operations`",
        )
    if not out:
        raise InvalidParameter("allow", "--allow needs at least one operation name")
    return sorted(set(out))
