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

import asyncio
import hashlib
import hmac
import random
from dataclasses import dataclass

import argon2
from sqlalchemy import bindparam, insert, select, update

from numgate.clock import Clock
from numgate.db.coalesce import Coalescer, rounds
from numgate.db.direct import Database, Row, Statement, array_rows
from numgate.db.tables import sandbox_outbox, sandbox_phones
from numgate.errors import CodeMismatch, UpstreamError
from numgate.waba.model import CodeMethod
from numgate.waba.upstream import ON_ANOTHER_WABA, GraphFailure, UpstreamPhone, core_error

MAGIC: dict[str, tuple[str, GraphFailure]] = {
    "9901": ("add", ON_ANOTHER_WABA),
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


sp = sandbox_phones.c
PHONE_BY_ID = Statement(select(sandbox_phones).where(sp.id == bindparam("pid")))
ID_BY_PHONE = Statement(select(sp.id).where(sp.phone == bindparam("phone")))
SET_CODE = Statement(update(sandbox_phones).where(sp.id == bindparam("pid")).values(code=bindparam("code")))


def _fails(call: str, ending: str) -> bool:
    """Whether a number with this magic ending makes ``call`` fail."""
    magic = MAGIC.get(ending)
    return magic is not None and (magic[0] == call or (magic[0] == "*" and call != "add"))


_NOT_MAGIC = [sp.phone.notlike("%" + end) for end in MAGIC if _fails("verify_code", end)]
#: the right code for a number no magic ending makes fail: verified in one statement
VERIFY_IF_RIGHT = Statement(
    update(sandbox_phones)
    .where(sp.id == bindparam("pid"), sp.code == bindparam("code"), *_NOT_MAGIC)
    .values(verified=True)
    .returning(sp.id)
)
_GIVEN_ROWS = array_rows({"pid": sp.id.type, "code": sp.code.type})
#: (PostgreSQL) the same for many numbers, one per id: arrays ``pid`` and ``code``
VERIFY_ALL_RIGHT = Statement(
    update(sandbox_phones)
    .where(sp.id == _GIVEN_ROWS.c.pid, sp.code == _GIVEN_ROWS.c.code, *_NOT_MAGIC)
    .values(verified=True)
    .returning(sp.id)
)
SET_REGISTERED = Statement(
    update(sandbox_phones)
    .where(sp.id == bindparam("pid"))
    .values(registered=bindparam("registered"), pin_hash=bindparam("pin_hash"))
)
SET_DEREGISTERED = Statement(update(sandbox_phones).where(sp.id == bindparam("pid")).values(registered=False))
SEND = Statement(
    insert(sandbox_outbox).values(
        {c: bindparam(c) for c in ("phone", "channel", "locale", "text", "created_ms")}
    )
)


PIN_HASHER = argon2.PasswordHasher()


def pin_matches(stored: str, pin: str) -> bool:
    """Whether ``pin`` is the one ``stored`` was made from (argon2; a SHA-256 hex digest kept by an
    older numgate is read once and replaced on the next registration)."""
    if not stored.startswith("$argon2"):
        return hmac.compare_digest(stored, hashlib.sha256(pin.encode()).hexdigest())
    try:
        return PIN_HASHER.verify(stored, pin)
    except argon2.exceptions.VerificationError:
        return False


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

    def __init__(self, db: Database, clock: Clock, rng: random.Random | None = None) -> None:
        self._db = db
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self._checks: Coalescer[tuple[str, str], bool] = Coalescer(self._check_all)

    def waba_id_for(self, app_id: int) -> str:
        return f"sandbox-{app_id}"  # one simulated account per app

    def _fail(self, call: str, phone: str) -> None:
        if _fails(call, phone[-4:]):
            raise core_error(MAGIC[phone[-4:]][1], DURING[call])

    @staticmethod
    def _known(row: Row | None, upstream_id: str) -> Row:
        if row is None:
            raise core_error(GraphFailure(100, f"Unsupported request: no phone number {upstream_id}"), "")
        return row

    async def _row(self, upstream_id: str) -> Row:
        async with self._db.read() as tx:
            return self._known(await tx.one(PHONE_BY_ID, pid=upstream_id), upstream_id)

    async def add_number(self, cc: str, national: str, verified_name: str) -> str:
        phone = cc + national
        self._fail("add", phone)
        async with self._db.write() as tx:
            found = await tx.scalar(ID_BY_PHONE, phone=phone)
            if found is not None:
                return str(found)
            upstream_id = str(self._rng.randrange(10**14, 10**15))
            await tx.run(
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
        phone = (await self._row(upstream_id))["phone"]
        self._fail("request_code", phone)
        code = f"{self._rng.randrange(10**6):06d}"
        shown = f"{code[:3]}-{code[3:]}"
        spoken = " ".join(code[:3]) + ", " + " ".join(code[3:])
        lang = "zh" if locale.lower().startswith("zh") else "en"
        text = MESSAGES[(lang, method)].format(code=shown, spoken=spoken)
        async with self._db.write() as tx:
            await tx.run(SET_CODE, pid=upstream_id, code=code)
            await tx.run(
                SEND,
                phone=phone,
                channel=method.value,
                locale=locale,
                text=text,
                created_ms=self._clock.time_ms(),
            )

    async def verify_code(self, upstream_id: str, code: str) -> None:
        """The right code verifies the number in one statement; only otherwise is the number
        read, to answer as Meta would (unknown number, a magic failure, or a wrong code)."""
        given = code.replace("-", "").strip()
        if await self._checks.submit((upstream_id, given)):
            return
        row = await self._row(upstream_id)
        self._fail("verify_code", row["phone"])
        raise CodeMismatch("the verification code is wrong")

    async def _check_all(self, given: list[tuple[str, str]]) -> list[bool]:
        """Which of the (id, code) pairs of concurrent checks were right (and are now verified):
        on PostgreSQL one statement per round of distinct ids."""
        right = [False] * len(given)
        async with self._db.autocommit(durable=False, batched=True) as tx:
            for positions in rounds([pid for pid, _ in given]):
                if tx.is_postgres:
                    pids, codes = [given[i][0] for i in positions], [given[i][1] for i in positions]
                    ids = {r[0] for r in await tx.all(VERIFY_ALL_RIGHT, pid=pids, code=codes)}
                else:
                    ids = {
                        given[i][0]
                        for i in positions
                        if await tx.one(VERIFY_IF_RIGHT, pid=given[i][0], code=given[i][1]) is not None
                    }
                for i in positions:
                    right[i] = given[i][0] in ids
        return right

    async def register(self, upstream_id: str, pin: str) -> None:
        row = await self._row(upstream_id)
        self._fail("register", row["phone"])
        if not row["verified"]:
            raise core_error(GraphFailure(133006, "Phone number re-verification needed"), DURING["register"])
        # the PIN is kept as Meta would keep it: a slow, salted hash (argon2), checked off the loop
        stored = row["pin_hash"]
        if stored is not None and not await asyncio.to_thread(pin_matches, stored, pin):
            raise core_error(GraphFailure(133005, "Two step verification PIN Mismatch"), DURING["register"])
        pin_hash = stored if stored is not None and stored.startswith("$argon2") else None
        if pin_hash is None:
            pin_hash = await asyncio.to_thread(PIN_HASHER.hash, pin)
        async with self._db.write() as tx:
            await tx.run(SET_REGISTERED, pid=upstream_id, registered=True, pin_hash=pin_hash)

    async def deregister(self, upstream_id: str) -> None:
        self._fail("deregister", (await self._row(upstream_id))["phone"])
        async with self._db.write() as tx:
            await tx.run(SET_DEREGISTERED, pid=upstream_id)

    async def read(self, upstream_id: str) -> UpstreamPhone:
        row = await self._row(upstream_id)
        self._fail("read", row["phone"])
        return self._info(row)

    async def list_all(self) -> dict[str, UpstreamPhone]:
        async with self._db.read() as tx:
            rows = await tx.all(select(sandbox_phones))
        return {row["id"]: self._info(row) for row in rows}

    @staticmethod
    def _info(row: Row) -> UpstreamPhone:
        registered = bool(row["registered"])
        return UpstreamPhone(
            upstream_id=row["id"],
            verified_name=row["verified_name"],
            code_verification_status="VERIFIED" if row["verified"] else "NOT_VERIFIED",
            status="CONNECTED" if registered else "PENDING",
            quality_rating="GREEN" if registered else "UNKNOWN",
            name_status="APPROVED" if registered else "PENDING_REVIEW",
            messaging_limit_tier="TIER_1K" if registered else "TIER_250",
        )

    async def close(self) -> None:
        return None


async def read_outbox(db: Database, phone: str | None = None, limit: int = 50) -> list[OutboxMessage]:
    """The newest messages first, optionally for one number (digits, a leading + is ignored)."""
    q = select(sandbox_outbox).order_by(sandbox_outbox.c.id.desc()).limit(limit)
    if phone:
        q = q.where(sandbox_outbox.c.phone == phone.lstrip("+").strip())
    async with db.read() as tx:
        rows = await tx.all(q)
    return [
        OutboxMessage(r["id"], r["phone"], r["channel"], r["locale"], r["text"], r["created_ms"])
        for r in rows
    ]


def code_in(message: OutboxMessage) -> str:
    """The six digits of a code message (``123-456`` or the spoken ``1 2 3, 4 5 6``)."""
    digits = "".join(ch for ch in message.text if ch.isdigit())
    if len(digits) < 6:
        raise UpstreamError(f"outbox message {message.id} holds no code")
    return digits[-6:]
