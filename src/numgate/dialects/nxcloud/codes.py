"""NXCloud vocabulary: envelopes, authentication codes, and one table per endpoint family that
maps the core's errors to NXCloud codes (looked up along the exception's class hierarchy)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

from numgate import errors as e


class Family(Enum):
    SUBMIT = "submit"  # §2.1 v1: {"msg","code","data"}
    QUERY = "query"  # §2.3 v1: {"msg","code","data"}
    CHECK_GET = "check_get"  # §2.4 v2: {"code","message","data"}
    FEED = "feed"  # numgate's /api/number/results: {"msg","code","data"}, the query's codes
    INTEGRATOR = "integrator"  # §3: {"code","data","message"}


def render(family: Family, code: int, message: str, data: Any) -> bytes:
    if family in (Family.SUBMIT, Family.QUERY, Family.FEED):
        return orjson.dumps({"msg": message, "code": code, "data": data})
    if family is Family.CHECK_GET:
        return orjson.dumps({"code": code, "message": message, "data": data})
    return orjson.dumps({"code": code, "data": data, "message": message})


# authentication (§1): the same codes and texts in every family
MISSING_PARAMETERS = (1001, "Missing parameters")
PARAMETER_ERROR = (1002, "Parameter error")
INVALID_SIGNATURE = (1003, "Invalid signature")
TIMESTAMP_EXPIRED = (1004, "Timestamp expired")
INSUFFICIENT_PERMISSIONS = (1005, "Insufficient permissions")


@dataclass(frozen=True)
class Code:
    code: int
    text: str
    #: True: the envelope carries the core error's own message (it says what to fix);
    #: False: the vendor's fixed text, reproduced exactly.
    detail: bool = False

    def message(self, exc: BaseException) -> str:
        return str(exc) or self.text if self.detail else self.text


SUBMIT_CODES: dict[type[BaseException], Code] = {
    e.ActionNotAllowed: Code(1005, "Insufficient permissions", detail=True),
    e.BusinessNotEnabled: Code(1005, "Insufficient permissions", detail=True),
    e.InvalidRequest: Code(201, "Parameter error or empty", detail=True),
    e.UnknownCountry: Code(203, "Country operator information not recognized"),
    e.InvalidCheckLevel: Code(207, "Invalid check type"),
    e.BatchNoTooLong: Code(212, "Batch number length cannot exceed 64 characters"),
    e.AppNotFound: Code(202, "Application not available or incorrect appkey"),
    e.AppNotOwned: Code(
        210,
        "Inconsistent customer information corresponding to the authentication mechanism and the "
        "customer information corresponding to the appkey",
    ),
    e.PriceNotFound: Code(205, "No application pricing found"),
    e.NoRoute: Code(206, "Exception in request check business interface", detail=True),
    e.InsufficientBalance: Code(211, "Insufficient customer balance"),
    e.LimitExceeded: Code(288, "Request failed", detail=True),
    # a dependency is down: "try again" (the X-Numgate-Error-Detail header names it)
    e.Unavailable: Code(299, "System error"),
    e.NumgateError: Code(299, "System error"),
    Exception: Code(299, "System error"),
}

QUERY_CODES: dict[type[BaseException], Code] = {
    e.ActionNotAllowed: Code(1005, "Insufficient permissions", detail=True),
    e.BusinessNotEnabled: Code(1005, "Insufficient permissions", detail=True),
    e.InvalidRequest: Code(88, "Parameter error", detail=True),
    e.AppNotFound: SUBMIT_CODES[e.AppNotFound],
    e.AppNotOwned: SUBMIT_CODES[e.AppNotOwned],
    e.LimitExceeded: Code(288, "Request failed", detail=True),
    e.Unavailable: Code(299, "System error"),
    e.NumgateError: Code(299, "System error"),
    Exception: Code(299, "System error"),
}

CHECK_GET_CODES: dict[type[BaseException], Code] = {**SUBMIT_CODES}

INTEGRATOR_CODES: dict[type[BaseException], Code] = {
    e.MissingParameter: Code(9000, "Parameter exception", detail=True),
    e.InvalidRequest: Code(-1, "Request failed", detail=True),
    e.NotIntegrator: Code(9007, "Non-integrator request"),
    e.BusinessNotEnabled: Code(1005, "Insufficient permissions", detail=True),
    e.AppNotFound: Code(9008, "appkey does not exist"),
    e.AppNotOwned: Code(9010, "appkey belongs to another customer"),
    e.AppLimitReached: Code(9009, "More than 1000 customer apps"),
    e.PhoneNumberNotFound: Code(-1, "Request failed", detail=True),
    e.NotFound: Code(-1, "Request failed", detail=True),
    e.ActionNotAllowed: Code(1005, "Insufficient permissions", detail=True),
    e.Onboarding: Code(-1, "Request failed", detail=True),
    e.LimitExceeded: Code(-1, "Request failed", detail=True),
    e.UpstreamError: Code(9001, "System business error", detail=True),
    e.NoRoute: Code(9001, "System business error", detail=True),
    # a dependency is down: a fixed text, never the driver's words
    e.Unavailable: Code(9001, "System business error"),
    e.NumgateError: Code(9001, "System business error"),
    Exception: Code(-1, "Request failed"),
}

TABLES = {
    Family.SUBMIT: SUBMIT_CODES,
    Family.QUERY: QUERY_CODES,
    Family.CHECK_GET: CHECK_GET_CODES,
    Family.FEED: QUERY_CODES,
    Family.INTEGRATOR: INTEGRATOR_CODES,
}

FAILURE_DATA: dict[Family, Any] = {
    Family.SUBMIT: {"messageId": "", "batchNo": ""},
    Family.QUERY: None,
    Family.CHECK_GET: None,
    Family.FEED: None,
    Family.INTEGRATOR: None,
}


def code_for(family: Family, exc: BaseException) -> Code:
    table = TABLES[family]
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    raise AssertionError("every table maps Exception")  # pragma: no cover
