"""The onboarding service's vocabulary: states, rules and the phone-number record.

Status words (``status``, ``quality``, ``tier``, ``name_status``) are the upstream's own (Meta's
Cloud API enumerations), which both doors share; each door maps them where its vendor differs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from numgate.errors import InvalidParameter

DAY_MS = 86_400_000


class CodeMethod(Enum):
    SMS = "sms"
    VOICE = "voice"

    @classmethod
    def parse(cls, text: str, field: str = "method") -> CodeMethod:
        """``sms`` or ``voice``, in any case."""
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise InvalidParameter(
                field, f"{field} must be sms or voice, in any case ('sms' or 'voice'); got {text!r}"
            ) from None


class Verification(Enum):
    NOT_VERIFIED = "not_verified"
    VERIFIED = "verified"
    EXPIRED = "expired"


class Registration(Enum):
    """The number's client on the upstream, in the order ``register`` moves it."""

    NONE = "none"  # attached, never registered
    CREATING = "creating"  # registration started: making sure the upstream client exists
    CREATED = "created"  # upstream client exists; registering with the PIN
    REGISTERED = "registered"
    CREATE_FAILED = "create_failed"
    REGISTER_FAILED = "register_failed"
    DEREGISTERING = "deregistering"
    DEREGISTERED = "deregistered"


IN_FLIGHT = frozenset({Registration.CREATING, Registration.CREATED, Registration.DEREGISTERING})


@dataclass(frozen=True)
class OnboardingRules:
    """What a real upstream enforces per number, enforced the same way in every mode."""

    #: minimum time between two code requests for one number
    code_cooldown_ms: int = 60_000
    #: at most this many code requests per number in a moving window of ``code_window_ms``
    code_requests_per_window: int = 5
    code_window_ms: int = 3_600_000
    #: a code can be checked for this long after it was requested
    code_lifetime_ms: int = 600_000
    #: wrong codes accepted per code request; then a new code is needed
    code_max_attempts: int = 5
    #: a verification stays valid this long, then reads EXPIRED
    verification_valid_ms: int = 14 * DAY_MS
    #: registrations + deregistrations per number in a moving window (Meta: 10 per 72 h)
    registrations_per_window: int = 10
    registration_window_ms: int = 72 * 3_600_000
    #: an in-flight (de)registration holds the number at most this long (a crash frees it)
    busy_lease_ms: int = 120_000


@dataclass(frozen=True)
class Profile:
    about: str = ""
    address: str = ""
    description: str = ""
    email: str = ""
    profile_picture_url: str = ""
    vertical: str = ""
    websites: tuple[str, ...] = ()

    def to_json(self) -> str:
        d: dict[str, Any] = dict(self.__dict__)
        d["websites"] = list(self.websites)
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str | None) -> Profile:
        if not text:
            return cls()
        d = json.loads(text)
        d["websites"] = tuple(d.get("websites") or ())
        return cls(**d)


@dataclass(frozen=True)
class PhoneNumber:
    id: int
    account_id: int
    app_id: int
    appkey: str
    app_name: str
    callback_url: str | None
    phone: str  # digits with country code
    cc: str
    verified_name: str
    upstream_id: str | None
    verification: Verification
    verified_until_ms: int | None
    registration: Registration
    status: str
    quality: str
    tier: str
    name_status: str
    #: the stored business profile, parsed only when asked for (not on every lookup)
    profile_json: str | None = None
    #: while a (de)registration is in flight, until when it holds the number
    busy_until_ms: int | None = None

    @property
    def profile(self) -> Profile:
        return Profile.from_json(self.profile_json)
