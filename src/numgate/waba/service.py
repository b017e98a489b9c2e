"""The onboarding service: one number's life from attached to registered, whichever door asked.

Each step checks and records the rules in one short transaction that holds the number's row
(``FOR UPDATE`` on PostgreSQL; SQLite serialises writers), calls the upstream outside any
transaction, then records the outcome. A request in flight is itself a row (a code request in
state ``sending``, a number ``creating``), so concurrent calls for one number see it and are
refused instead of interleaving.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import String, bindparam, delete, insert, or_, select, update

from numgate.clock import Clock
from numgate.db.coalesce import Coalescer, rounds
from numgate.db.direct import Database, Row, Statement, Tx, array_rows
from numgate.db.tables import any_of, apps, waba_code_requests, waba_numbers, waba_register_events
from numgate.errors import (
    AlreadyRegistered,
    AppNotFound,
    CodeAttemptsExhausted,
    CodeExpired,
    CodeMismatch,
    CodeRequestTooFrequent,
    Conflict,
    InvalidParameter,
    MissingParameter,
    NotRegistered,
    NotVerified,
    NumgateError,
    PhoneNumberNotFound,
    PhoneNumberTaken,
    RegisterLimitExceeded,
    UpstreamError,
)
from numgate.tenancy.service import App, TenancyService
from numgate.vault import Vault
from numgate.waba.model import (
    IN_FLIGHT,
    CodeMethod,
    OnboardingRules,
    PhoneNumber,
    Profile,
    Registration,
    Verification,
)
from numgate.waba.phones import normalise_phone, split_phone
from numgate.waba.upstream import ON_ANOTHER_WABA, UpstreamPhone, WabaUpstream, core_error

log = logging.getLogger("numgate.waba")
T = TypeVar("T")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


wn, cr, ev = waba_numbers.c, waba_code_requests.c, waba_register_events.c

#: a number as the service reads it: everything but the PIN, with its app's names
_SELECT = select(
    wn.id,
    wn.account_id,
    wn.app_id,
    wn.phone,
    wn.cc,
    wn.verified_name,
    wn.upstream_id,
    wn.verified_ms,
    wn.registration,
    wn.busy_until_ms,
    wn.status,
    wn.quality,
    wn.tier,
    wn.name_status,
    wn.profile,
    apps.c.appkey,
    apps.c.name.label("app_name"),
    apps.c.callback_url,
).join(apps, apps.c.id == wn.app_id)
BY_PHONE = Statement(_SELECT.where(wn.phone == bindparam("phone")))
#: (PostgreSQL) the numbers of many phones in one read (``varchar[]``, not ``varchar(32)[]``: a
#: cast to a length truncates, see ``array_rows``)
BY_PHONES = Statement(_SELECT.where(any_of(wn.phone, "phones", String())))
BY_PHONE_LOCKED = Statement(_SELECT.where(wn.phone == bindparam("phone")).with_for_update(of=waba_numbers))
LATEST_REQUEST = Statement(
    select(waba_code_requests)
    .where(cr.number_id == bindparam("nid"), cr.state != "failed")
    .order_by(cr.requested_ms.desc(), cr.id.desc())
    .limit(1)
)
RECENT_REQUESTS = Statement(
    select(cr.requested_ms)
    .where(cr.number_id == bindparam("nid"), cr.state != "failed", cr.requested_ms > bindparam("since"))
    .order_by(cr.requested_ms.desc())
)
INSERT_REQUEST = Statement(
    insert(waba_code_requests)
    .values({c: bindparam(c) for c in ("number_id", "method", "locale", "state", "attempts", "requested_ms")})
    .returning(cr.id)
)
SET_REQUEST_STATE = Statement(
    update(waba_code_requests).where(cr.id == bindparam("rid")).values(state=bindparam("state"))
)
GIVE_ATTEMPT_BACK = Statement(
    update(waba_code_requests).where(cr.id == bindparam("rid")).values(attempts=cr.attempts - 1)
)
MARK_USED = Statement(update(waba_code_requests).where(cr.id == bindparam("rid")).values(state="used"))
SET_VERIFIED = Statement(
    update(waba_numbers)
    .where(wn.id == bindparam("nid"))
    .values(verified_ms=bindparam("at"), updated_ms=bindparam("at"))
)


_LATEST = waba_code_requests.alias("latest")


def _attempt_allowed(number_id: Any) -> list[Any]:
    """The code request may take one more attempt: it is the latest of ``number_id``, pending
    (not used), not expired, with attempts left."""
    latest = (
        select(_LATEST.c.id)
        .where(_LATEST.c.number_id == number_id, _LATEST.c.state != "failed")
        .order_by(_LATEST.c.requested_ms.desc(), _LATEST.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    return [
        cr.number_id == number_id,
        cr.id == latest,
        cr.state != "used",
        cr.requested_ms > bindparam("expired_before"),
        cr.attempts < bindparam("max_attempts"),
    ]


_ASKED = {"phone": wn.phone.type, "account_id": wn.account_id.type, "appkey": apps.c.appkey.type}
_ASKED_ROWS = array_rows(_ASKED)
#: (PostgreSQL) One more attempt on the latest code of each caller's number, found by phone in
#: the same statement, for many numbers at once (one per phone): arrays ``phone``, ``account_id``
#: and ``appkey`` (NULL: any of the account's apps). Returns the number, the code request and its
#: attempts; no row for a phone when any condition fails (``_no_attempt`` then says which).
#: The same statement marks codes used and their numbers verified (arrays ``rids``, ``nids``;
#: ``at``): those of the checks that ended since the last one. Both parts see the rows as they
#: were before it, so a number whose code is used in it takes its attempt in the next statement
#: (a row may be changed once per statement).
CODE_WRITES = Statement(
    update(waba_code_requests)
    .where(
        wn.phone == _ASKED_ROWS.c.phone,
        wn.account_id == _ASKED_ROWS.c.account_id,
        apps.c.id == wn.app_id,
        or_(_ASKED_ROWS.c.appkey.is_(None), apps.c.appkey == _ASKED_ROWS.c.appkey),
        *_attempt_allowed(wn.id),
    )
    .values(attempts=cr.attempts + 1)
    .returning(
        _ASKED_ROWS.c.phone,
        wn.id.label("number_id"),
        cr.id.label("request_id"),
        cr.attempts,
        wn.upstream_id,
    )
    .add_cte(update(waba_code_requests).where(any_of(cr.id, "rids")).values(state="used").cte("used"))
    .add_cte(
        update(waba_numbers)
        .where(any_of(wn.id, "nids"))
        .values(verified_ms=bindparam("at"), updated_ms=bindparam("at"))
        .cte("verified")
    )
)
#: (SQLite, whose RETURNING names only the updated table) the same, for a number already found
TAKE_ATTEMPT_OF = Statement(
    update(waba_code_requests)
    .where(*_attempt_allowed(bindparam("nid")))
    .values(attempts=cr.attempts + 1)
    .returning(cr.id.label("request_id"), cr.attempts)
)
PIN_OF = Statement(select(wn.pin_enc).where(wn.id == bindparam("nid")))
RECENT_CHANGES = Statement(
    select(ev.at_ms)
    .where(ev.number_id == bindparam("nid"), ev.at_ms > bindparam("since"))
    .order_by(ev.at_ms.desc())
)
INSERT_CHANGE = Statement(
    insert(waba_register_events)
    .values({c: bindparam(c) for c in ("number_id", "kind", "outcome", "at_ms")})
    .returning(ev.id)
)
END_CHANGE = Statement(
    update(waba_register_events)
    .where(ev.id == bindparam("eid"))
    .values(outcome=bindparam("outcome"), detail=bindparam("detail"))
)
ABANDON_CHANGES = Statement(
    update(waba_register_events)
    .where(ev.number_id == bindparam("nid"), ev.outcome == "pending")
    .values(outcome="failed", detail="abandoned: the process handling it stopped")
)


@dataclass(frozen=True, slots=True)
class _Attempt:
    """A code check's attempt to take (PostgreSQL: ``CODE_WRITES``)."""

    phone: str
    account_id: int
    appkey: str | None


@dataclass(frozen=True, slots=True)
class _Used:
    """A code checked right: used, and its number verified (PostgreSQL: ``CODE_WRITES``)."""

    phone: str
    request_id: int
    number_id: int


class WabaService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        vault: Vault,
        tenancy: TenancyService,
        upstream: WabaUpstream,
        rules: OnboardingRules | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._vault = vault
        self._tenancy = tenancy
        self.upstream = upstream
        self.rules = rules or OnboardingRules()
        self._by_phone: Coalescer[str, Row | None] = Coalescer(self._read_phones)
        #: (PostgreSQL) code checks' attempts, and the codes used by those that succeeded
        self._codes: Coalescer[_Attempt | _Used, Row | None] = Coalescer(self._code_writes)

    # reading -------------------------------------------------------------------------------

    def _record(self, m: Row) -> PhoneNumber:
        verified_ms = m["verified_ms"]
        until = verified_ms + self.rules.verification_valid_ms if verified_ms is not None else None
        if until is None:
            verification = Verification.NOT_VERIFIED
        elif self._clock.time_ms() < until:
            verification = Verification.VERIFIED
        else:
            verification = Verification.EXPIRED
        return PhoneNumber(
            id=m["id"],
            account_id=m["account_id"],
            app_id=m["app_id"],
            appkey=m["appkey"],
            app_name=m["app_name"],
            callback_url=m["callback_url"],
            phone=m["phone"],
            cc=m["cc"],
            verified_name=m["verified_name"],
            upstream_id=m["upstream_id"],
            verification=verification,
            verified_until_ms=until,
            registration=Registration(m["registration"]),
            status=m["status"],
            quality=m["quality"],
            tier=m["tier"],
            name_status=m["name_status"],
            profile_json=m["profile"],
            busy_until_ms=m["busy_until_ms"],
        )

    async def _app(self, account_id: int | None, appkey: str) -> App:
        if account_id is not None:
            return await self._tenancy.app_of(account_id, appkey)
        app = await self._tenancy.find_app(appkey)
        if app is None:
            raise AppNotFound(f"no app or space {appkey!r}")
        return app

    async def _locate(
        self, tx: Tx, account_id: int, phone: str, appkey: str | None, *, lock: bool
    ) -> PhoneNumber:
        return await self._fit(
            await tx.one(BY_PHONE_LOCKED if lock else BY_PHONE, phone=phone), account_id, phone, appkey, tx
        )

    async def _fit(
        self, row: Row | None, account_id: int, phone: str, appkey: str | None, tx: Tx | None = None
    ) -> PhoneNumber:
        """The caller's number from its row (the app is read only when the number is missing or
        elsewhere, to say which of app and number is wrong)."""
        number = self._record(row) if row is not None else None
        fits = number is not None and number.account_id == account_id and appkey in (None, number.appkey)
        if not fits and appkey is not None:
            await self._tenancy.app_of(account_id, appkey, tx)
        if number is None or number.account_id != account_id:
            # another tenant's number reads exactly like one that does not exist
            where = f"space/app {appkey}" if appkey else "any of your apps"
            raise PhoneNumberNotFound(f"{phone} is not on {where}: attach it first")
        if appkey is not None and number.appkey != appkey:
            raise PhoneNumberNotFound(f"{phone} is not in space/app {appkey} (it is in {number.appkey})")
        return number

    async def number(self, account_id: int, phone: str, appkey: str | None = None) -> PhoneNumber:
        """The caller's number, read together with the numbers concurrent requests ask for (one
        round trip for all of them; each still reads what was committed before it asked)."""
        phone = normalise_phone(phone)
        return await self._fit(await self._by_phone.submit(phone), account_id, phone, appkey)

    async def _read_phones(self, phones: list[str]) -> list[Row | None]:
        async with self._db.read(batched=True) as tx:
            if tx.is_postgres:
                rows = {r["phone"]: r for r in await tx.all(BY_PHONES, phones=list(set(phones)))}
            else:  # in-process reads: nothing to save by joining them
                rows = {p: await tx.one(BY_PHONE, phone=p) for p in set(phones)}
        return [rows.get(p) for p in phones]

    async def list_numbers(
        self, account_id: int | None, appkey: str | None = None, status: str | None = None
    ) -> list[PhoneNumber]:
        q = _SELECT.order_by(waba_numbers.c.id)
        if appkey is not None:
            app = await self._app(account_id, appkey)
            q = q.where(waba_numbers.c.app_id == app.id)
        if account_id is not None:
            q = q.where(waba_numbers.c.account_id == account_id)
        if status:
            q = q.where(waba_numbers.c.status == status.upper())
        async with self._db.read() as tx:
            return [self._record(r) for r in await tx.all(q)]

    # attaching -----------------------------------------------------------------------------

    async def add_number(
        self,
        account_id: int | None,
        appkey: str,
        phone: str,
        verified_name: str,
        *,
        cc: str | None = None,
    ) -> PhoneNumber:
        """Attach a number to an app (``account_id`` None: the operator, for any app)."""
        app = await self._app(account_id, appkey)
        cc, national = split_phone(phone, cc)
        full = cc + national
        name = (verified_name or "").strip()
        if not name:
            raise MissingParameter("verified_name", "a display (verified) name is required")
        if len(name) > 200:
            raise InvalidParameter("verified_name", "the display name is longer than 200 characters")
        async with self._db.read() as tx:
            existing = await tx.one(BY_PHONE, phone=full)
        if existing is not None:
            number = self._record(existing)
            if number.app_id == app.id:
                return number
            if account_id is not None and number.account_id != account_id:
                # another tenant's number: the answer the upstream gives for a number on another
                # WhatsApp Business Account, so that a tenant learns nothing about other tenants
                raise core_error(ON_ANOTHER_WABA, "adding the number")
            owner = f" of account {number.account_id}" if account_id is None else ""
            raise PhoneNumberTaken(
                f"{full} is already attached to app {number.appkey}{owner}; delete it there first "
                "(numgate admin number delete)"
            )
        upstream_id = await self._upstream(self.upstream.add_number(cc, national, name), "adding the number")
        now = self._clock.time_ms()
        try:
            async with self._db.write() as tx:
                await tx.run(
                    insert(waba_numbers).values(
                        account_id=app.account_id,
                        app_id=app.id,
                        phone=full,
                        cc=cc,
                        verified_name=name,
                        upstream_id=upstream_id,
                        registration=Registration.NONE.value,
                        status="PENDING",
                        quality="UNKNOWN",
                        tier="TIER_250",
                        name_status="PENDING_REVIEW",
                        created_ms=now,
                        updated_ms=now,
                    )
                )
        except Conflict:
            raise PhoneNumberTaken(f"{full} was attached to an app at the same moment; retry") from None
        log.info("number attached", extra={"account": app.account_id, "app": app.id})
        async with self._db.read() as tx:
            return self._record(await tx.one(BY_PHONE, phone=full))

    async def delete_number(self, phone: str) -> PhoneNumber:
        """Detach a number from numgate (the operator's command): its code requests and
        (de)registration history go with it. The upstream keeps the number as it is."""
        phone = normalise_phone(phone)
        async with self._db.write() as tx:
            row = await tx.one(BY_PHONE_LOCKED, phone=phone)
            if row is None:
                raise PhoneNumberNotFound(f"{phone} is not attached to any app")
            number = self._record(row)
            await tx.run(delete(waba_code_requests).where(cr.number_id == number.id))
            await tx.run(delete(waba_register_events).where(ev.number_id == number.id))
            await tx.run(delete(waba_numbers).where(wn.id == number.id))
        log.info("number detached", extra={"account": number.account_id, "app": number.app_id})
        return number

    @staticmethod
    async def app_has_numbers(tx: Tx, app_id: int) -> bool:
        return await tx.one(select(wn.id).where(wn.app_id == app_id).limit(1)) is not None

    # verification codes --------------------------------------------------------------------

    async def request_code(
        self, account_id: int, phone: str, method: CodeMethod, locale: str, appkey: str | None = None
    ) -> None:
        phone = normalise_phone(phone)
        r, now = self.rules, self._clock.time_ms()
        async with self._db.write() as tx:
            number = await self._locate(tx, account_id, phone, appkey, lock=True)
            recent = [
                row[0] for row in await tx.all(RECENT_REQUESTS, nid=number.id, since=now - r.code_window_ms)
            ]
            if recent and now - recent[0] < r.code_cooldown_ms:
                wait_s = -(-(recent[0] + r.code_cooldown_ms - now) // 1000)
                raise CodeRequestTooFrequent(
                    f"a code was requested for {phone} {(now - recent[0]) // 1000} s ago: wait {wait_s} s "
                    f"(one request per {r.code_cooldown_ms // 1000} s)"
                )
            if len(recent) >= r.code_requests_per_window:
                free_at = recent[r.code_requests_per_window - 1] + r.code_window_ms
                raise CodeRequestTooFrequent(
                    f"{len(recent)} codes were requested for {phone} in the last "
                    f"{r.code_window_ms // 60_000} minutes (the limit is {r.code_requests_per_window}); "
                    f"the next can be requested after {_iso(free_at)}"
                )
            request_id = await tx.scalar(
                INSERT_REQUEST,
                number_id=number.id,
                method=method.value,
                locale=locale,
                state="sending",
                attempts=0,
                requested_ms=now,
            )
        state = "failed"
        try:
            await self._upstream(
                self.upstream.request_code(self._upstream_id(number), method, locale), "sending a code"
            )
            state = "sent"
        finally:
            async with self._db.write() as tx:
                await tx.run(SET_REQUEST_STATE, rid=request_id, state=state)

    async def verify_code(self, account_id: int, phone: str, code: str, appkey: str | None = None) -> None:
        """An attempt is taken from the latest code in one conditional UPDATE (it is still
        pending, not expired, not out of attempts, on the caller's number); the upstream checks
        the code; then the number is verified and the code used. Only when no attempt could be
        taken is more read, to say why."""
        phone = normalise_phone(phone)
        code = (code or "").strip()
        if not code:
            raise MissingParameter("code", "the verification code is required")
        r, now = self.rules, self._clock.time_ms()
        taken: dict[str, Any] | None = None
        if self._db.dialect.name == "postgresql":  # the number found and the attempt taken at once
            row = await self._codes.submit(_Attempt(phone, account_id, appkey))
            taken = dict(row) if row is not None else None
        else:  # SQLite's RETURNING names only the updated table's columns
            async with self._db.write() as tx:
                number = await self._locate(tx, account_id, phone, appkey, lock=False)
                row = await tx.one(TAKE_ATTEMPT_OF, nid=number.id, **self._attempt_limits(now))
            if row is not None:
                taken = {
                    "number_id": number.id,
                    "request_id": row["request_id"],
                    "attempts": row["attempts"],
                    "upstream_id": number.upstream_id,
                }
        if taken is None:
            await self._no_attempt(account_id, phone, appkey, now)
        assert taken is not None
        number_id, request_id, attempts = taken["number_id"], taken["request_id"], taken["attempts"]
        upstream_id = taken["upstream_id"]
        if upstream_id is None:  # pragma: no cover - add_number always stores one
            raise UpstreamError(f"{phone} has no upstream id; attach it again")
        try:
            await self._upstream(self.upstream.verify_code(upstream_id, code), "checking the code")
        except CodeMismatch:
            left = r.code_max_attempts - attempts
            raise CodeMismatch(
                f"the verification code for {phone} is wrong; "
                + (
                    f"{left} attempt(s) left for this code"
                    if left
                    else "no attempts left: request a new code"
                )
            ) from None
        except NumgateError:  # not the caller's fault: give the attempt back
            async with self._db.autocommit() as tx:
                await tx.run(GIVE_ATTEMPT_BACK, rid=request_id)
            raise
        if self._db.dialect.name == "postgresql":  # in the statement of the next attempts
            await self._codes.submit(_Used(phone, request_id, number_id))
        else:
            async with self._db.write() as tx:
                await tx.run(MARK_USED, rid=request_id)
                await tx.run(SET_VERIFIED, nid=number_id, at=self._clock.time_ms())

    def _attempt_limits(self, now: int) -> dict[str, int]:
        """The parameters of the statements that take an attempt: a code still unexpired at
        ``now`` with attempts left."""
        r = self.rules
        return {"expired_before": now - r.code_lifetime_ms, "max_attempts": r.code_max_attempts}

    async def _code_writes(self, items: list[_Attempt | _Used]) -> list[Row | None]:
        """(PostgreSQL) The attempts of concurrent code checks taken, and the codes of those that
        succeeded used (their numbers verified), in one statement per round of distinct phones (a
        number's code is changed once per statement: a second check of it waits a round, and so
        does the attempt of a number whose code is used in this round). Each attempt gets its row
        (None: no attempt could be taken); each code used, None."""
        now = self._clock.time_ms()
        used = [i for i in items if isinstance(i, _Used)]
        asked = [(n, i) for n, i in enumerate(items) if isinstance(i, _Attempt)]
        taken: list[Row | None] = [None] * len(items)
        # the phones of the codes used come first: they take round 0, their attempts wait
        phones = [u.phone for u in used] + [a.phone for _, a in asked]
        async with self._db.autocommit(batched=True) as tx:
            for k, positions in enumerate(rounds(phones)):
                these = [asked[p - len(used)] for p in positions if p >= len(used)]
                if k and not these:  # only a code used twice (two right checks at once)
                    continue
                rows = await tx.all(
                    CODE_WRITES,
                    phone=[a.phone for _, a in these],
                    account_id=[a.account_id for _, a in these],
                    appkey=[a.appkey for _, a in these],
                    rids=[u.request_id for u in used] if k == 0 else [],
                    nids=[u.number_id for u in used] if k == 0 else [],
                    at=now,
                    **self._attempt_limits(now),
                )
                by_phone = {row["phone"]: row for row in rows}
                for n, a in these:
                    taken[n] = by_phone.get(a.phone)
        return taken

    async def _no_attempt(self, account_id: int, phone: str, appkey: str | None, now: int) -> None:
        """Why no attempt could be taken: raises the error that says so."""
        r = self.rules
        async with self._db.read() as tx:
            number = await self._locate(tx, account_id, phone, appkey, lock=False)
            req = await tx.one(LATEST_REQUEST, nid=number.id)
        if req is None or req["state"] == "used":
            raise CodeExpired(f"no verification code is pending for {phone}: request a code first")
        if now >= req["requested_ms"] + r.code_lifetime_ms:
            raise CodeExpired(
                f"the code sent to {phone} at {_iso(req['requested_ms'])} has expired (codes last "
                f"{r.code_lifetime_ms // 60_000} minutes): request a new one"
            )
        if req["attempts"] >= r.code_max_attempts:
            raise CodeAttemptsExhausted(
                f"{req['attempts']} wrong codes were entered for the last code sent to {phone}: "
                "request a new one"
            )
        # the code changed between the attempt and this read (a new one was requested): retry
        raise CodeExpired(f"a new code was requested for {phone} meanwhile: check that one")

    # registration --------------------------------------------------------------------------

    async def _check_window(self, tx: Tx, number: PhoneNumber, now: int) -> None:
        r = self.rules
        times = [
            row[0]
            for row in await tx.all(RECENT_CHANGES, nid=number.id, since=now - r.registration_window_ms)
        ]
        if len(times) >= r.registrations_per_window:
            free_at = times[r.registrations_per_window - 1] + r.registration_window_ms
            raise RegisterLimitExceeded(
                f"{number.phone} was registered or deregistered {len(times)} times in the last "
                f"{r.registration_window_ms // 3_600_000} hours (the upstream allows "
                f"{r.registrations_per_window}); the next is possible after {_iso(free_at)}"
            )

    async def _begin_change(
        self,
        tx: Tx,
        number: PhoneNumber,
        kind: str,
        state: Registration,
        now: int,
        **values: Any,
    ) -> int:
        """Record a (de)registration attempt and hold the number in ``state`` while it runs."""
        if number.registration in IN_FLIGHT:
            raise AlreadyRegistered(f"a registration change for {number.phone} is in progress; retry shortly")
        await self._check_window(tx, number, now)
        event_id = await tx.scalar(
            INSERT_CHANGE, number_id=number.id, kind=kind, outcome="pending", at_ms=now
        )
        await tx.run(
            update(waba_numbers)
            .where(waba_numbers.c.id == number.id)
            .values(
                registration=state.value,
                busy_until_ms=now + self.rules.busy_lease_ms,
                updated_ms=now,
                **values,
            )
        )
        return int(event_id)

    async def _set(self, number_id: int, **values: Any) -> None:
        await self._end_change(number_id, None, "", **values)

    async def _end_change(
        self, number_id: int, event_id: int | None, outcome: str, detail: str | None = None, **values: Any
    ) -> None:
        """Update the number and, when ``event_id`` is given, record how its change ended."""
        values["updated_ms"] = self._clock.time_ms()
        async with self._db.write() as tx:
            await tx.run(update(waba_numbers).where(waba_numbers.c.id == number_id).values(**values))
            if event_id is not None:
                await tx.run(END_CHANGE, eid=event_id, outcome=outcome, detail=detail)

    async def register(self, account_id: int, phone: str, appkey: str | None = None) -> PhoneNumber:
        """Create the upstream client and register it with the number's PIN (3 → 4 → 5)."""
        phone = normalise_phone(phone)
        now = self._clock.time_ms()
        async with self._db.write() as tx:
            number = await self._locate(tx, account_id, phone, appkey, lock=True)
            number = await self._free_stale(tx, number, now)
            if number.verification is Verification.EXPIRED:
                raise NotVerified(
                    f"the verification of {phone} expired on {_iso(number.verified_until_ms or 0)}: "
                    "request and check a new code"
                )
            if number.verification is not Verification.VERIFIED:
                raise NotVerified(f"{phone} is not verified: request and check a code first")
            if number.registration is Registration.REGISTERED:
                raise AlreadyRegistered(f"{phone} is already registered")
            pin_enc = await tx.scalar(PIN_OF, nid=number.id)
            if pin_enc is None:  # the two-step PIN: made once, kept encrypted, never returned
                pin_enc = self._vault.encrypt(f"{secrets.randbelow(10**6):06d}")
            event_id = await self._begin_change(
                tx, number, "register", Registration.CREATING, now, pin_enc=pin_enc
            )
        upstream_id = self._upstream_id(number)
        try:
            info = await self._upstream(self.upstream.read(upstream_id), "creating the client")
        except NumgateError as exc:
            await self._end_change(
                number.id, event_id, "failed", registration=Registration.CREATE_FAILED.value, detail=str(exc)
            )
            raise
        await self._set(number.id, registration=Registration.CREATED.value, **self._info_values(info))
        try:
            await self._upstream(
                self.upstream.register(upstream_id, self._vault.decrypt(pin_enc)), "registering the number"
            )
        except NumgateError as exc:
            await self._end_change(
                number.id,
                event_id,
                "failed",
                registration=Registration.REGISTER_FAILED.value,
                detail=str(exc),
            )
            raise
        try:
            info = await self._upstream(self.upstream.read(upstream_id), "reading the registered number")
            extra = self._info_values(info)
        except NumgateError:
            extra = {"status": "CONNECTED"}
        await self._end_change(
            number.id, event_id, "ok", registration=Registration.REGISTERED.value, busy_until_ms=None, **extra
        )
        return await self.number(account_id, phone)

    async def verify_and_register(
        self, account_id: int, phone: str, code: str, appkey: str | None = None
    ) -> PhoneNumber:
        """Check the code, then register; a number already registered stays so (re-verified)."""
        await self.verify_code(account_id, phone, code, appkey)
        number = await self.number(account_id, phone, appkey)
        if number.registration is Registration.REGISTERED:
            return number
        return await self.register(account_id, phone, appkey)

    async def deregister(self, account_id: int, phone: str, appkey: str | None = None) -> PhoneNumber:
        phone = normalise_phone(phone)
        now = self._clock.time_ms()
        async with self._db.write() as tx:
            number = await self._locate(tx, account_id, phone, appkey, lock=True)
            number = await self._free_stale(tx, number, now)
            if number.registration is not Registration.REGISTERED:
                raise NotRegistered(f"{phone} is not registered, so it cannot be deregistered")
            event_id = await self._begin_change(tx, number, "deregister", Registration.DEREGISTERING, now)
        try:
            await self._upstream(
                self.upstream.deregister(self._upstream_id(number)), "deregistering the number"
            )
        except NumgateError as exc:
            await self._end_change(
                number.id,
                event_id,
                "failed",
                registration=Registration.REGISTERED.value,
                busy_until_ms=None,
                detail=str(exc),
            )
            raise
        await self._end_change(
            number.id,
            event_id,
            "ok",
            registration=Registration.DEREGISTERED.value,
            busy_until_ms=None,
            status="DISCONNECTED",
        )
        return await self.number(account_id, phone)

    async def _free_stale(self, tx: Tx, number: PhoneNumber, now: int) -> PhoneNumber:
        """A (de)registration whose process died holds the number only until its lease ends."""
        if number.registration not in IN_FLIGHT:
            return number
        busy = number.busy_until_ms
        if busy is not None and busy > now:
            return number
        back = (
            Registration.REGISTERED
            if number.registration is Registration.DEREGISTERING
            else Registration.NONE
        )
        await tx.run(
            update(waba_numbers).where(waba_numbers.c.id == number.id).values(registration=back.value)
        )
        await tx.run(ABANDON_CHANGES, nid=number.id)
        return await self._locate(tx, number.account_id, number.phone, None, lock=False)

    # upstream sync and profile -------------------------------------------------------------

    async def sync(self, account_id: int, appkey: str) -> list[PhoneNumber]:
        """Refresh every number of a space from the upstream's listing of the WhatsApp Business
        Account; a number the upstream no longer lists reads DELETED."""
        numbers = await self.list_numbers(account_id, appkey)
        listing = await self._upstream(self.upstream.list_all(), "listing the numbers")
        now = self._clock.time_ms()
        async with self._db.write() as tx:
            for number in numbers:
                if number.upstream_id is None:
                    continue
                info = listing.get(number.upstream_id)
                values = self._info_values(info) if info is not None else {"status": "DELETED"}
                await tx.run(
                    update(waba_numbers)
                    .where(waba_numbers.c.id == number.id)
                    .values(updated_ms=now, **values)
                )
        return await self.list_numbers(account_id, appkey)

    async def set_profile(
        self, account_id: int, phone: str, appkey: str | None, changes: dict[str, Any]
    ) -> PhoneNumber:
        number = await self.number(account_id, phone, appkey)
        merged = {**number.profile.__dict__, **{k: v for k, v in changes.items() if v is not None}}
        merged["websites"] = tuple(merged.get("websites") or ())
        await self._set(number.id, profile=Profile(**merged).to_json())
        return await self.number(account_id, phone, appkey)

    def waba_id(self, number: PhoneNumber) -> str:
        """The WhatsApp Business Account the number is on, as the upstream names it."""
        return self.upstream.waba_id_for(number.app_id)

    # helpers -------------------------------------------------------------------------------

    @staticmethod
    def _info_values(info: UpstreamPhone) -> dict[str, Any]:
        return {
            "status": info.status,
            "quality": info.quality_rating,
            "tier": info.messaging_limit_tier,
            "name_status": info.name_status,
        }

    @staticmethod
    def _upstream_id(number: PhoneNumber) -> str:
        if number.upstream_id is None:  # pragma: no cover - add_number always stores one
            raise UpstreamError(f"{number.phone} has no upstream id; attach it again")
        return number.upstream_id

    async def _upstream(self, call: Awaitable[T], during: str) -> T:
        """The one place an upstream's unexpected failure becomes the core's UpstreamError."""
        try:
            return await call
        except NumgateError:
            raise
        except Exception as exc:
            log.warning("upstream failed while %s: %r", during, exc)
            raise UpstreamError(f"the WhatsApp upstream failed while {during}; retry later") from exc
