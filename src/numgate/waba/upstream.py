"""The interface every WhatsApp upstream implements, and the one translation of Graph API
errors into the core's errors (shared by the Meta adapter and the simulator that imitates it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from numgate import errors as e
from numgate.waba.model import CodeMethod

#: Graph error codes that mean "slow down" (retried with backoff by the Meta adapter)
RATE_LIMIT_CODES = frozenset({4, 80008, 130429})


@dataclass(frozen=True)
class UpstreamPhone:
    """What the upstream reports about one number (Graph ``GET /<PHONE_NUMBER_ID>``)."""

    upstream_id: str
    verified_name: str
    code_verification_status: str  # VERIFIED, NOT_VERIFIED, EXPIRED
    status: str  # PENDING, CONNECTED, …
    quality_rating: str  # GREEN, YELLOW, RED, UNKNOWN
    name_status: str  # APPROVED, PENDING_REVIEW, …
    messaging_limit_tier: str  # TIER_250, TIER_1K, …


class WabaUpstream(Protocol):
    name: str

    def waba_id_for(self, app_id: int) -> str:
        """The WhatsApp Business Account id the numbers of an app are on."""
        ...

    async def add_number(self, cc: str, national: str, verified_name: str) -> str:
        """Attach the number to the WABA; returns its upstream id (PHONE_NUMBER_ID)."""
        ...

    async def request_code(self, upstream_id: str, method: CodeMethod, locale: str) -> None: ...

    async def verify_code(self, upstream_id: str, code: str) -> None:
        """Raise CodeMismatch for a wrong code."""
        ...

    async def register(self, upstream_id: str, pin: str) -> None: ...

    async def deregister(self, upstream_id: str) -> None: ...

    async def read(self, upstream_id: str) -> UpstreamPhone: ...

    async def list_all(self) -> dict[str, UpstreamPhone]:
        """Every number on the WhatsApp Business Account, by upstream id (all pages)."""
        ...

    async def close(self) -> None: ...


@dataclass
class GraphFailure:
    """A Graph API error reply: ``{"error": {"message", "type", "code", "error_subcode"}}``."""

    code: int
    message: str
    subcode: int | None = None


#: Graph's refusal to add a number that is on another WhatsApp Business Account
ON_ANOTHER_WABA = GraphFailure(
    100, "Invalid parameter: the number is already on another WhatsApp Business Account"
)


def core_error(failure: GraphFailure, during: str) -> e.NumgateError:
    """The core error for a Graph error met while doing ``during`` (e.g. "requesting a code")."""
    what = f"the WhatsApp upstream refused {during}: {failure.message} (Graph code {failure.code})"
    match failure.code:
        case 136025:
            return e.CodeMismatch("the verification code is wrong")
        case 133006:
            return e.NotVerified(f"{what}; verify the number again (request and check a new code)")
        case 133016:
            return e.RegisterLimitExceeded(
                f"{what}: at most 10 registrations and deregistrations per number in 72 hours"
            )
        case 133005:
            return e.UpstreamError(f"{what}: the number's two-step PIN on the upstream differs from ours")
        case 190:
            return e.UpstreamError(f"{what}: the access token is invalid or expired (NUMGATE_META_TOKEN)")
        case c if c in RATE_LIMIT_CODES:
            return e.UpstreamError(f"{what}: the upstream is rate limiting; retry in a few minutes")
        case _:
            return e.UpstreamError(what)
