"""Console sessions, CSRF tokens and sign-in limits.

- A session is a cookie holding the user's id, a CSRF token and the time it began, signed with a
  key derived from the master key (itsdangerous): ``HttpOnly``, ``SameSite=Lax``, ``Secure`` when
  the console is reached over HTTPS, and good for :data:`SESSION_S` seconds. Every request looks
  the user up again: a disabled user's sessions end at once.
- Every form carries the session's CSRF token; a POST without the right one is refused (403)
  before anything is read or changed.
- Sign-in attempts are limited per client address and per email (``limits``' moving window,
  in memory): :data:`SIGN_IN_LIMIT`.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.requests import Request
from starlette.responses import Response

from numgate.tenancy.users import User

COOKIE = "numgate_console"
#: seconds a session lasts from sign-in
SESSION_S = 12 * 3600
#: failed and successful sign-ins alike, per client address and per email
SIGN_IN_LIMIT = "10/minute"


@dataclass(frozen=True)
class Session:
    user_id: int
    csrf: str


class Sessions:
    def __init__(self, key: bytes) -> None:
        self._s = URLSafeTimedSerializer(key, salt="numgate-console-session")

    def read(self, request: Request) -> Session | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data: Any = self._s.loads(raw, max_age=SESSION_S)
        except BadSignature:
            return None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("u"), int)
            or not isinstance(data.get("c"), str)
        ):
            return None
        return Session(data["u"], data["c"])

    def start(self, response: Response, request: Request, user: User) -> Session:
        session = Session(user.id, secrets.token_urlsafe(32))
        response.set_cookie(
            COOKIE,
            self._s.dumps({"u": user.id, "c": session.csrf}),
            max_age=SESSION_S,
            path="/console",
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return session

    @staticmethod
    def end(response: Response) -> None:
        response.delete_cookie(COOKIE, path="/console")


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf, sent or "")


class SignInLimiter:
    def __init__(self, limit: str = SIGN_IN_LIMIT) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._limit = parse(limit)

    def allow(self, address: str, email: str) -> bool:
        """Counts one attempt against both; False when either is over its limit."""
        by_address = self._limiter.hit(self._limit, "address", address)
        by_email = self._limiter.hit(self._limit, "email", email.strip().lower())
        return by_address and by_email
