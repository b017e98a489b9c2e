"""The sandbox upstream: behaves like Meta's phone-number calls, keeps its state in numgate's
database, and writes each code it "sends" into the sandbox outbox instead of texting or calling.

Magic numbers (the last four digits of the number) force each upstream failure on demand:

=======  =====================  ===================================================
ending   failing call           Graph error it imitates
=======  =====================  ===================================================
9901     add number             100 number already on another WhatsApp Business Account
9902     request code           136024 Request code error
9903     verify code            136025 Verify code error (every code is refused)
9904     read (client create)   1 An unknown error occurred
9905     register               133015 wait a few minutes before registering
9906     register               133016 too many (de)registrations
9907     deregister             2 Service temporarily unavailable
9908     every call but add     130429 rate limit hit
9909     register               133006 re-verification needed
=======  =====================  ===================================================
"""

from __future__ import annotations

import hashlib
import hmac
import random
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from numgate.clock import Clock
from numgate.db.engine import writing
from numgate.db.tables import sandbox_outbox, sandbox_phones
from numgate.errors import CodeMismatch, UpstreamError
from numgate.waba.model import CodeMethod
from numgate.waba.upstream import GraphFailure, UpstreamPhone, core_error

MAGIC: dict[str, tuple[str, GraphFailure]] = {
    "9901": (
        "add",
        GraphFailure(100, "Invalid parameter: the number is already on another WhatsApp Business Account"),
    ),
    "9902": ("request_code", GraphFailure(136024, "Request code error")),
    "9903": ("verify_code", GraphFailure(136025, "Verify code error")),
    "9904": ("read", GraphFailure(1, "An unknown error occurred")),
    "9905": (
        "register",
        GraphFailure(133015, "Please wait a few minutes before attempting to register this phone number"),
    ),
    "9906": ("register", GraphFailure(133016, "Account register deregister rate limit exceeded")),
    "9907": ("deregister", GraphFailure(2, "Service temporarily unavailable")),
    "9908": ("*", GraphFailure(130429, "Rate limit hit")),
    "9909": ("register", GraphFailure(133006, "Phone number re-verification needed")),
}

DURING = {
    "add": "adding the number",
    "request_code": "sending a verification code",
    "verify_code": "checking the code",
    "read": "reading the number",
    "register": "registering the number",
    "deregister": "deregistering the number",
}

MESSAGES = {
    ("zh", CodeMethod.SMS): "您的 WhatsApp 验证码是 {code}",
    ("zh", CodeMethod.VOICE): "您的 WhatsApp 验证码是 {spoken}",
    ("en", CodeMethod.SMS): "Your WhatsApp code is {code}",
    ("en", CodeMethod.VOICE): "Your WhatsApp code is {spoken}",
}


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    phone: str
    channel: str
    locale: str
    text: str
    created_ms: int


class SimulatedWhatsApp:
    name = "simulator"

    def __init__(self, engine: AsyncEngine, clock: Clock, rng: random.Random | None = None) -> None:
        self._engine = engine
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        p = sandbox_phones.c
        self._phone_and_code = select(p.phone, p.code).where(p.id == bindparam("pid"))
        self._set_verified = update(sandbox_phones).where(p.id == bindparam("pid")).values(verified=True)

    def waba_id_for(self, app_id: int) -> str:
        return f"sandbox-{app_id}"  # one simulated account per app

    def _fail(self, call: str, phone: str) -> None:
        magic = MAGIC.get(phone[-4:])
        if magic is not None and (magic[0] == call or (magic[0] == "*" and call != "add")):
            raise core_error(magic[1], DURING[call])

    async def _phone(self, upstream_id: str) -> str:
        async with self._engine.connect() as conn:
            phone = (
                await conn.execute(select(sandbox_phones.c.phone).where(sandbox_phones.c.id == upstream_id))
            ).scalar_one_or_none()
        if phone is None:
            raise core_error(GraphFailure(100, f"Unsupported request: no phone number {upstream_id}"), "")
        return str(phone)

    async def add_number(self, cc: str, national: str, verified_name: str) -> str:
        phone = cc + national
        self._fail("add", phone)
        async with writing(self._engine) as conn:
            found = (
                await conn.execute(select(sandbox_phones.c.id).where(sandbox_phones.c.phone == phone))
            ).scalar_one_or_none()
            if found is not None:
                return str(found)
            upstream_id = str(self._rng.randrange(10**14, 10**15))
            await conn.execute(
                insert(sandbox_phones).values(
                    id=upstream_id,
                    phone=phone,
                    verified_name=verified_name,
                    verified=False,
                    registered=False,
                    created_ms=self._clock.time_ms(),
                )
            )
        return upstream_id

    async def request_code(self, upstream_id: str, method: CodeMethod, locale: str) -> None:
        phone = await self._phone(upstream_id)
        self._fail("request_code", phone)
        code = f"{self._rng.randrange(10**6):06d}"
        shown = f"{code[:3]}-{code[3:]}"
        spoken = " ".join(code[:3]) + ", " + " ".join(code[3:])
        lang = "zh" if locale.lower().startswith("zh") else "en"
        text = MESSAGES[(lang, method)].format(code=shown, spoken=spoken)
        async with writing(self._engine) as conn:
            await conn.execute(
                update(sandbox_phones).where(sandbox_phones.c.id == upstream_id).values(code=code)
            )
            await conn.execute(
                insert(sandbox_outbox).values(
                    phone=phone,
                    channel=method.value,
                    locale=locale,
                    text=text,
                    created_ms=self._clock.time_ms(),
                )
            )

    async def verify_code(self, upstream_id: str, code: str) -> None:
        async with writing(self._engine) as conn:
            row = (await conn.execute(self._phone_and_code, {"pid": upstream_id})).first()
            if row is None:
                raise core_error(GraphFailure(100, f"Unsupported request: no phone number {upstream_id}"), "")
            self._fail("verify_code", row.phone)
            given = code.replace("-", "").strip()
            if row.code is None or not hmac.compare_digest(row.code.encode(), given.encode()):
                raise CodeMismatch("the verification code is wrong")
            await conn.execute(self._set_verified, {"pid": upstream_id})

    async def register(self, upstream_id: str, pin: str) -> None:
        phone = await self._phone(upstream_id)
        self._fail("register", phone)
        pin_hash = hashlib.sha256(pin.encode()).hexdigest()
        async with writing(self._engine) as conn:
            row = (await conn.execute(select(sandbox_phones).where(sandbox_phones.c.id == upstream_id))).one()
            if not row.verified:
                raise core_error(
                    GraphFailure(133006, "Phone number re-verification needed"), DURING["register"]
                )
            if row.pin_hash is not None and not hmac.compare_digest(row.pin_hash, pin_hash):
                raise core_error(
                    GraphFailure(133005, "Two step verification PIN Mismatch"), DURING["register"]
                )
            await conn.execute(
                update(sandbox_phones)
                .where(sandbox_phones.c.id == upstream_id)
                .values(registered=True, pin_hash=pin_hash)
            )

    async def deregister(self, upstream_id: str) -> None:
        phone = await self._phone(upstream_id)
        self._fail("deregister", phone)
        async with writing(self._engine) as conn:
            await conn.execute(
                update(sandbox_phones).where(sandbox_phones.c.id == upstream_id).values(registered=False)
            )

    async def read(self, upstream_id: str) -> UpstreamPhone:
        phone = await self._phone(upstream_id)
        self._fail("read", phone)
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(sandbox_phones).where(sandbox_phones.c.id == upstream_id))).one()
        return self._info(row)

    async def list_all(self) -> dict[str, UpstreamPhone]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(sandbox_phones))).all()
        return {row.id: self._info(row) for row in rows}

    @staticmethod
    def _info(row: Any) -> UpstreamPhone:
        upstream_id = row.id
        return UpstreamPhone(
            upstream_id=upstream_id,
            verified_name=row.verified_name,
            code_verification_status="VERIFIED" if row.verified else "NOT_VERIFIED",
            status="CONNECTED" if row.registered else "PENDING",
            quality_rating="GREEN" if row.registered else "UNKNOWN",
            name_status="APPROVED" if row.registered else "PENDING_REVIEW",
            messaging_limit_tier="TIER_1K" if row.registered else "TIER_250",
        )

    async def close(self) -> None:
        return None


async def read_outbox(engine: AsyncEngine, phone: str | None = None, limit: int = 50) -> list[OutboxMessage]:
    """The newest messages first, optionally for one number (digits, a leading + is ignored)."""
    q = select(sandbox_outbox).order_by(sandbox_outbox.c.id.desc()).limit(limit)
    if phone:
        q = q.where(sandbox_outbox.c.phone == phone.lstrip("+").strip())
    async with engine.connect() as conn:
        rows = (await conn.execute(q)).all()
    return [OutboxMessage(r.id, r.phone, r.channel, r.locale, r.text, r.created_ms) for r in rows]


def code_in(message: OutboxMessage) -> str:
    """The six digits of a code message (``123-456`` or the spoken ``1 2 3, 4 5 6``)."""
    digits = "".join(ch for ch in message.text if ch.isdigit())
    if len(digits) < 6:
        raise UpstreamError(f"outbox message {message.id} holds no code")
    return digits[-6:]
