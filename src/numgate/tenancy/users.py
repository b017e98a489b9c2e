"""Console users: the people who sign in to ``/console`` — separate from API keys.

A user has an email, a password kept only as an argon2id hash, and a role: ``operator`` (every
account) or ``tenant`` (bound to one account: only its data, everywhere). Hashing runs off the
event loop (argon2 is deliberately slow). An unknown email costs the same hash as a wrong password,
so sign-in timing does not tell which emails exist.
"""

from __future__ import annotations

import asyncio
import functools
import re
from dataclasses import dataclass
from typing import Any

import argon2
from sqlalchemy import select, update

from numgate.clock import Clock
from numgate.db.direct import Database
from numgate.db.tables import accounts, console_users
from numgate.errors import Conflict, InvalidParameter, NotFound

OPERATOR, TENANT = "operator", "tenant"
PASSWORD_MIN = 10
PASSWORD_MAX = 1024
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}$")

_HASHER = argon2.PasswordHasher()


@functools.cache
def _dummy() -> str:
    """What an unknown email is checked against (hashed once, when first needed)."""
    return _HASHER.hash("numgate-no-such-user")


u = console_users.c


@dataclass(frozen=True)
class User:
    id: int
    email: str
    role: str
    account_id: int | None
    enabled: bool
    created_ms: int
    last_sign_in_ms: int | None

    @property
    def is_operator(self) -> bool:
        return self.role == OPERATOR

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _user(r: Any) -> User:
    return User(
        r["id"],
        r["email"],
        r["role"],
        r["account_id"],
        bool(r["enabled"]),
        r["created_ms"],
        r["last_sign_in_ms"],
    )


def normalise_email(email: str) -> str:
    e = email.strip().lower()
    if not EMAIL.match(e):
        raise InvalidParameter("email", f"not an email address: {email!r}")
    return e


class ConsoleUsers:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def create(self, email: str, password: str, *, account_id: int | None) -> User:
        """``account_id`` None: an operator; else a tenant user of that account."""
        email = normalise_email(email)
        if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
            raise InvalidParameter(
                "password", f"a password is {PASSWORD_MIN} to {PASSWORD_MAX} characters long"
            )
        hashed = await asyncio.to_thread(_HASHER.hash, password)
        async with self._db.write() as tx:
            if (
                account_id is not None
                and await tx.one(select(accounts.c.id).where(accounts.c.id == account_id)) is None
            ):
                raise NotFound(f"no account with id {account_id}")
            if await tx.one(select(u.id).where(u.email == email)) is not None:
                raise InvalidParameter("email", f"a console user {email} exists already")
            try:
                uid = await tx.scalar(
                    console_users.insert()
                    .values(
                        email=email,
                        password_hash=hashed,
                        role=TENANT if account_id is not None else OPERATOR,
                        account_id=account_id,
                        enabled=True,
                        created_ms=self._clock.time_ms(),
                    )
                    .returning(u.id)
                )
            except Conflict:
                raise InvalidParameter("email", f"a console user {email} exists already") from None
        return await self.get(int(uid))

    async def get(self, user_id: int) -> User:
        async with self._db.read() as tx:
            r = await tx.one(select(console_users).where(u.id == user_id))
        if r is None:
            raise NotFound(f"no console user with id {user_id}")
        return _user(r)

    async def list(self) -> list[User]:
        async with self._db.read() as tx:
            return [_user(r) for r in await tx.all(select(console_users).order_by(u.id))]

    async def set_enabled(self, email: str, enabled: bool) -> User:
        email = normalise_email(email)
        async with self._db.write() as tx:
            if not await tx.run(update(console_users).where(u.email == email).values(enabled=enabled)):
                raise NotFound(f"no console user {email}")
            r = await tx.one(select(console_users).where(u.email == email))
        return _user(r)

    async def authenticate(self, email: str, password: str) -> User | None:
        """The user, when the email and password match an enabled user; else None."""
        try:
            email = normalise_email(email)
        except InvalidParameter:
            email = ""
        async with self._db.read() as tx:
            r = await tx.one(select(console_users).where(u.email == email)) if email else None
        stored = r["password_hash"] if r is not None else await asyncio.to_thread(_dummy)
        ok = await asyncio.to_thread(_verify, stored, password[:PASSWORD_MAX])
        if r is None or not ok or not r["enabled"]:
            return None
        async with self._db.autocommit() as tx:
            await tx.run(
                update(console_users).where(u.id == r["id"]).values(last_sign_in_ms=self._clock.time_ms())
            )
        return _user(r)


def _verify(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except argon2.exceptions.VerificationError:
        return False
    except argon2.exceptions.InvalidHashError:
        return False
