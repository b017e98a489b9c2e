"""Number Check (bizType 1) in NXCloud's words: handlers, callback body, query rows (spec §2)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import orjson

from numgate.core import Core
from numgate.dialects.nxcloud import fields
from numgate.dialects.nxcloud.door import Reply
from numgate.errors import InvalidCheckLevel, InvalidParameter
from numgate.ledger.money import to_float
from numgate.numbers.classify import Basic, NumberKind
from numgate.numbers.providers import Live
from numgate.numbers.results import CheckResult, Level, Outcome
from numgate.tenancy.service import KeyGrant

NOT_CHECKED_YET = "not checked yet"

#: core outcome → (callback code, msg)
OUTCOME_CODES: dict[Outcome, tuple[int, str]] = {
    Outcome.OK: (0, "success"),
    Outcome.INVALID_FORMAT: (114, "Invalid number format"),
    Outcome.NON_MOBILE: (120, "Non-mobile number check not supported"),
    Outcome.UPSTREAM_FAILED: (112, "Backend service call failed"),
    Outcome.NO_INFORMATION: (122, "Information not detected"),
    Outcome.INTERNAL: (103, "Internal server error"),
}

NUMBER_TYPE: dict[NumberKind, int] = {
    NumberKind.OTHER: 0,
    NumberKind.FIXED_LINE: 1,
    NumberKind.MOBILE: 2,
    NumberKind.TOLL_FREE: 3,
    NumberKind.VOIP: 4,
    NumberKind.UAN: 5,
    NumberKind.PERSONAL: 6,
    NumberKind.VOICEMAIL: 7,
    NumberKind.PREMIUM: 8,
}


def basic_fields(b: Basic) -> dict[str, Any]:
    return {
        "preCheck": "YES" if b.valid else "NO",
        "regionCode": b.region,
        "countryCode": str(b.country_code),
        "nationalNumber": b.national_number,
        "standNumber": b.e164,
        "numberType": NUMBER_TYPE[b.kind],
        "carrier": b.carrier,
    }


class NxCallbackRenderer:
    """The v1 callback body of spec §2.2, byte for byte."""

    def callback(
        self, *, message_id: str, batch_no: str, phone: str, result: CheckResult, cost: int, currency: str
    ) -> bytes:
        code, msg = OUTCOME_CODES[result.outcome]
        body: dict[str, Any] = {
            "messageId": message_id,
            "code": code,
            "msg": msg,
            "batchNo": batch_no,
            "phone": phone,
        }
        if result.outcome is Outcome.OK and result.basic is not None:
            data: dict[str, Any] = {"basic": basic_fields(result.basic)}
            if result.live is not None:
                data["live"] = live_fields(result.live)
            if result.dial is not None:
                d = result.dial
                data["dial"] = {
                    "early": d.early.value,
                    "answered": d.answered.value,
                    "response": d.response.value,
                }
            body["data"] = data
            body["cost"] = {"price": to_float(cost), "currency": currency}
        if result.source is not None:  # numgate's addition: where a live answer came from
            body["numgate"] = provenance(result)
        return orjson.dumps(body)


def live_fields(lv: Live) -> dict[str, str]:
    """v1's ``validity``, ``reachable``, ``roaming``, then NXCloud v2's ``ported`` and — where the
    upstream said — ``mcc``, ``mnc`` and ``network``."""
    out = {
        "validity": lv.validity.value,
        "reachable": lv.reachable.value,
        "roaming": lv.roaming.value,
        "ported": lv.ported.value,
    }
    for k, v in (("mcc", lv.mcc), ("mnc", lv.mnc), ("network", lv.network)):
        if v:
            out[k] = v
    return out


def provenance(result: CheckResult) -> dict[str, str]:
    observed = result.observed_ms
    return {
        "source": result.source or "",
        "observedAt": iso_ms(observed) if observed is not None else "",
    }


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def submit(core: Core, grant: KeyGrant, body: dict[str, Any]) -> Reply:
    phone = fields.text(body, "phone") or ""
    appkey = fields.text(body, "appkey", required=True)
    assert appkey is not None
    level = _level(body)
    batch_no = body.get("batchNo")
    if (batch_no is not None and not isinstance(batch_no, str | int)) or isinstance(batch_no, bool):
        raise InvalidParameter("batchNo", "batchNo must be a string")
    sub = await core.numbers.submit(
        grant.account.id,
        appkey=appkey,
        phone=phone,
        level=level,
        batch_no=fields.clean("batchNo", str(batch_no)) if batch_no not in (None, "") else None,
        dr_url=fields.text(body, "drUrl"),
        # numgate's addition: how old a cached HLR / call result may be, seconds (None: the app's)
        max_age_s=fields.integer(body, "maxAge"),
    )
    return Reply(0, "success", {"messageId": sub.message_id, "batchNo": sub.batch_no})


def _level(body: dict[str, Any]) -> int:
    try:
        level = fields.integer(body, "checkLevel", default=1)
    except InvalidParameter:
        raise InvalidCheckLevel(f"checkLevel must be 1, 4 or 5, got {body.get('checkLevel')!r}") from None
    assert level is not None
    return level


def _query_row(row: Any) -> dict[str, Any]:
    r = row.result
    basic = basic_fields(r.basic) if r is not None and r.basic is not None else None
    out: dict[str, Any] = {
        "messageId": row.message_id,
        "batchNo": row.batch_no,
        "phone": row.phone,
        "checkLevel": int(row.level),
    }
    # numgate's addition: the number's callback code and msg ("" and "not checked yet" before
    # its check ends), so that a failed number (112, 114, 122 …) is told from a pending one
    if r is None:
        out["code"], out["msg"] = "", NOT_CHECKED_YET
    else:
        out["code"], out["msg"] = OUTCOME_CODES[r.outcome]
    for k in (
        "preCheck",
        "regionCode",
        "countryCode",
        "nationalNumber",
        "standNumber",
        "numberType",
        "carrier",
    ):
        out[k] = basic[k] if basic is not None else ""
    out["price"] = to_float(row.cost) if row.cost is not None else ""
    out["currency"] = row.currency
    lv = r.live if r is not None and row.level is Level.HLR else None
    out.update(
        validity=lv.validity.value if lv else "",
        reachable=lv.reachable.value if lv else "",
        roaming=lv.roaming.value if lv else "",
    )
    if row.level is Level.CALL:
        d = r.dial if r is not None else None
        out.update(
            early=d.early.value if d else "",
            answered=d.answered.value if d else "",
            response=d.response.value if d else "",
        )
    else:
        out.update(early="", answered="", response="")
    # numgate's additions (after NXCloud's columns): v2's live fields and the provenance
    out.update(
        ported=lv.ported.value if lv else "",
        mcc=lv.mcc if lv else "",
        mnc=lv.mnc if lv else "",
        network=lv.network if lv else "",
    )
    prov = provenance(r) if r is not None and r.source is not None else None
    out.update(source=prov["source"] if prov else "", observedAt=prov["observedAt"] if prov else "")
    return out


async def query(core: Core, grant: KeyGrant, body: dict[str, Any]) -> Reply:
    raw_date = fields.text(body, "date", required=True)
    assert raw_date is not None
    try:
        day = date.fromisoformat(raw_date)
        if len(raw_date) != 10:
            raise ValueError
    except ValueError:
        raise InvalidParameter("date", "Incorrect date format [yyyy-MM-dd]") from None
    page = fields.integer(body, "page", required=True)
    page_size = fields.integer(body, "pageSize", required=True)
    assert page is not None and page_size is not None
    result = await core.numbers.query(
        grant.account.id,
        day=day,
        page=page,
        page_size=page_size,
        message_id=fields.text(body, "messageId"),
        batch_no=fields.text(body, "batchNo"),
        phone=fields.text(body, "phone"),
        appkey=fields.text(body, "appkey"),
    )
    return Reply(
        0,
        "Request successful",
        {
            "page": result.page,
            "pageSize": result.page_size,
            "totalPage": result.total_page,
            "totalSize": result.total_size,
            "result": [_query_row(r) for r in result.rows],
        },
    )


async def results(core: Core, grant: KeyGrant, body: dict[str, Any]) -> Reply:
    """numgate's pull feed (``/api/number/results``): each result exactly as its callback body."""
    page = await core.numbers.results(
        grant.account.id,
        cursor=fields.text(body, "cursor"),
        limit=fields.integer(body, "limit", default=1000, lo=1, hi=1000) or 1000,
        appkey=fields.text(body, "appkey"),
        lag_ms=int(2 * core.settings.db_timeout_s * 1000),
    )
    renderer = core.numbers.renderer
    return Reply(
        0,
        "success",
        {
            "results": [
                orjson.loads(
                    renderer.callback(
                        message_id=r.message_id,
                        batch_no=r.batch_no,
                        phone=r.phone,
                        result=r.result,  # type: ignore[arg-type]  # a feed row is always finished
                        cost=r.cost or 0,
                        currency=r.currency,
                    )
                )
                for r in page.rows
            ],
            "cursor": page.cursor,
            "more": page.more,
        },
    )


V2_TYPE = {NumberKind.MOBILE: "mobile"}


async def check_get(core: Core, grant: KeyGrant, body: dict[str, Any]) -> Reply:
    phone = fields.text(body, "phone") or ""
    appkey = fields.text(body, "appkey", required=True)
    assert appkey is not None
    res = await core.numbers.check_now(
        grant.account.id,
        appkey=appkey,
        phone=phone,
        level=_level(body),
        batch_no=fields.text(body, "batchNo"),
    )
    r = res.result
    b = r.basic
    if b is None:
        number_type, fail = "invalid", "Invalid number format"
    elif not b.valid:
        number_type, fail = "invalid", "Number is not valid for its numbering plan"
    else:
        number_type, fail = V2_TYPE.get(b.kind, "others"), ""
    return Reply(
        0,
        "Success",
        {
            "requestId": res.request_id,
            "batchNo": res.batch_no,
            "basic": {
                "phone": res.phone,
                "country": b.region if b else "",
                "numberType": number_type,
                "operator": b.carrier if b else "",
                "failReason": fail,
            },
            "cost": {"price": to_float(res.cost), "currency": res.currency},
        },
    )
