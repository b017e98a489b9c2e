"""CAMS vocabulary for failures: one table from the core's errors to HTTP status, Code and
Message (spec cams.md §4), looked up along the exception's class hierarchy."""

from __future__ import annotations

from dataclasses import dataclass

from numgate import errors as e

DOCS = "See numgate docs/whatsapp.md, section 'CAMS error codes'."


@dataclass(frozen=True)
class CamsCode:
    status: int
    code: str
    #: the vendor's fixed text; None: the core error's own message (it says what to fix)
    text: str | None = None
    #: the core error's message goes into Recommend (never for outages and bugs: it could
    #: carry a driver's or a stack's words)
    explain: bool = True

    def render(self, exc: BaseException) -> tuple[str, str, str]:
        """(Code, Message, Recommend)."""
        detail = str(exc)
        if isinstance(exc, e.MissingParameter) and self.code == "Missing":
            name = exc.name
            return f"Missing{name}", f"{name} is mandatory for this action.", DOCS
        if self.text is None:
            return self.code, detail, DOCS
        if not self.explain or not detail or detail == self.text:
            return self.code, self.text, DOCS
        return self.code, self.text, f"{detail}. {DOCS}"


UNOWNED = CamsCode(400, "Unknown.ResourceOwnerId", "The resource does not belong to the current user.")
INTERNAL = CamsCode(
    500, "InternalError", "The request processing has failed due to some unknown error.", explain=False
)
UNAVAILABLE = CamsCode(
    503,
    "ServiceUnavailable",
    "The request has failed due to a temporary failure of the server.",
    explain=False,
)

TABLE: dict[type[BaseException], CamsCode] = {
    e.MissingParameter: CamsCode(400, "Missing"),
    e.InvalidRequest: CamsCode(400, "InvalidParameter"),
    e.AppNotFound: UNOWNED,
    e.AppNotOwned: UNOWNED,
    e.PhoneNumberNotFound: CamsCode(400, "PhoneNumber.NotFound"),
    e.NotFound: UNOWNED,
    e.BusinessNotEnabled: CamsCode(
        400, "Product.Unsubscript", "You have not subscribed to the specified product."
    ),
    e.ActionNotAllowed: CamsCode(
        400, "Ram.PermissionDeny", "You are not authorized to perform the operation."
    ),
    e.PermissionDenied: CamsCode(
        400, "Ram.PermissionDeny", "You are not authorized to perform the operation."
    ),
    e.LimitExceeded: CamsCode(400, "System.LimitControl", "The system is under flow control."),
    e.CodeMismatch: CamsCode(400, "VerifyCode.Mismatch"),
    e.CodeExpired: CamsCode(400, "VerifyCode.Expired"),
    e.CodeAttemptsExhausted: CamsCode(400, "VerifyCode.TooManyAttempts"),
    e.CodeRequestTooFrequent: CamsCode(400, "VerifyCode.RequestTooFrequent"),
    e.NotVerified: CamsCode(400, "PhoneNumber.NotVerified"),
    e.AlreadyRegistered: CamsCode(400, "PhoneNumber.AlreadyRegistered"),
    e.NotRegistered: CamsCode(400, "PhoneNumber.NotRegistered"),
    e.RegisterLimitExceeded: CamsCode(400, "PhoneNumber.RegisterLimitExceeded"),
    e.UpstreamError: CamsCode(502, "Upstream.Error"),
    # no upstream configured for what was asked (live checks outside the sandbox)
    e.NoRoute: CamsCode(400, "Upstream.NoRoute"),
    e.NumgateError: INTERNAL,
    # the database or Redis is down, or too slow: worth retrying
    e.Unavailable: UNAVAILABLE,
    Exception: INTERNAL,
}


def code_for(exc: BaseException) -> CamsCode:
    for cls in type(exc).__mro__:
        if cls in TABLE:
            return TABLE[cls]
    raise AssertionError("the table maps Exception")  # pragma: no cover
