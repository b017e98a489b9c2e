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
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Row, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from numgate.clock import Clock
from numgate.db.engine import writing
from numgate.db.tables import apps, waba_code_requests, waba_numbers, waba_register_events
from numgate.errors import (
    AlreadyRegistered,
    AppNotFound,
    CodeAttemptsExhausted,
    CodeExpired,
    CodeMismatch,
    CodeRequestTooFrequent,
    InvalidParameter,
    MissingParameter,
    NotRegistered,
    NotVerified,
    NumgateError,
    PhoneNumberNotFound,
    PhoneNumberNotOwned,
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
from numgate.waba.upstream import UpstreamPhone, WabaUpstream

log = logging.getLogger("numgate.waba")
T = TypeVar("T")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class WabaService:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        vault: Vault,
        tenancy: TenancyService,
        upstream: WabaUpstream,
        rules: OnboardingRules | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._vault = vault
        self._tenancy = tenancy
        self.upstream = upstream
        self.rules = rules or OnboardingRules()
        # the hot statements, built once (building a SQLAlchemy statement costs more than running it)
        self._by_phone = self._select().where(waba_numbers.c.phone == bindparam("phone"))
        self._by_phone_locked = self._by_phone.with_for_update(of=waba_numbers)
        req = waba_code_requests.c
        self._latest_request = (
            select(waba_code_requests)
            .where(req.number_id == bindparam("nid"), req.state != "failed")
            .order_by(req.requested_ms.desc(), req.id.desc())
            .limit(1)
        )
        self._set_attempts = (
            update(waba_code_requests).where(req.id == bindparam("rid")).values(attempts=bindparam("n"))
        )
        self._mark_used = update(waba_code_requests).where(req.id == bindparam("rid")).values(state="used")
        self._set_verified = (
            update(waba_numbers)
            .where(waba_numbers.c.id == bindparam("nid"))
            .values(verified_ms=bindparam("at"), updated_ms=bindparam("at"))
        )

    # reading -------------------------------------------------------------------------------

    def _record(self, row: Row[Any]) -> PhoneNumber:
        m = row._mapping
        verified_ms = m[waba_numbers.c.verified_ms]
        until = verified_ms + self.rules.verification_valid_ms if verified_ms is not None else None
        if until is None:
            verification = Verification.NOT_VERIFIED
        elif self._clock.time_ms() < until:
            verification = Verification.VERIFIED
        else:
            verification = Verification.EXPIRED
        return PhoneNumber(
            id=m[waba_numbers.c.id],
            account_id=m[waba_numbers.c.account_id],
            app_id=m[waba_numbers.c.app_id],
            appkey=m[apps.c.appkey],
            app_name=m[apps.c.name],
            callback_url=m[apps.c.callback_url],
            phone=m[waba_numbers.c.phone],
            cc=m[waba_numbers.c.cc],
            verified_name=m[waba_numbers.c.verified_name],
            upstream_id=m[waba_numbers.c.upstream_id],
            verification=verification,
            verified_until_ms=until,
            registration=Registration(m[waba_numbers.c.registration]),
            status=m[waba_numbers.c.status],
            quality=m[waba_numbers.c.quality],
            tier=m[waba_numbers.c.tier],
            name_status=m[waba_numbers.c.name_status],
            profile_json=m[waba_numbers.c.profile],
        )

    @staticmethod
    def _select() -> Any:
        return select(waba_numbers, apps.c.appkey, apps.c.name, apps.c.callback_url).join(
            apps, apps.c.id == waba_numbers.c.app_id
        )

    async def _app(self, account_id: int | None, appkey: str) -> App:
        if account_id is not None:
            return await self._tenancy.app_of(account_id, appkey)
        app = await self._tenancy.find_app(appkey)
        if app is None:
            raise AppNotFound(f"no app or space {appkey!r}")
        return app

    async def _locate(
        self, conn: AsyncConnection, account_id: int, phone: str, appkey: str | None, *, lock: bool
    ) -> PhoneNumber:
        """The caller's number (one query on the usual path; the app is checked only when the
        number is missing or elsewhere, to say which of app and number is wrong)."""
        row = (
            await conn.execute(self._by_phone_locked if lock else self._by_phone, {"phone": phone})
        ).first()
        number = self._record(row) if row is not None else None
        fits = number is not None and number.account_id == account_id and appkey in (None, number.appkey)
        if not fits and appkey is not None:
            await self._tenancy.app_of(account_id, appkey, conn)
        if number is None:
            where = f"space/app {appkey}" if appkey else "any of your apps"
            raise PhoneNumberNotFound(f"{phone} is not on {where}: attach it first")
        if number.account_id != account_id:
            raise PhoneNumberNotOwned(f"{phone} is not on any app of this account")
        if appkey is not None and number.appkey != appkey:
            raise PhoneNumberNotFound(f"{phone} is not in space/app {appkey} (it is in {number.appkey})")
        return number

    async def number(self, account_id: int, phone: str, appkey: str | None = None) -> PhoneNumber:
        phone = normalise_phone(phone)
        async with self._engine.connect() as conn:
            return await self._locate(conn, account_id, phone, appkey, lock=False)

    async def list_numbers(
        self, account_id: int | None, appkey: str | None = None, status: str | None = None
    ) -> list[PhoneNumber]:
        q = self._select().order_by(waba_numbers.c.id)
        if appkey is not None:
            app = await self._app(account_id, appkey)
            q = q.where(waba_numbers.c.app_id == app.id)
        if account_id is not None:
            q = q.where(waba_numbers.c.account_id == account_id)
        if status:
            q = q.where(waba_numbers.c.status == status.upper())
        async with self._engine.connect() as conn:
            return [self._record(r) for r in (await conn.execute(q)).all()]

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
        async with self._engine.connect() as conn:
            existing = (await conn.execute(self._select().where(waba_numbers.c.phone == full))).first()
        if existing is not None:
            number = self._record(existing)
            if number.app_id == app.id:
                return number
            raise PhoneNumberTaken(f"{full} is already attached to another app; detach it there first")
        upstream_id = await self._upstream(self.upstream.add_number(cc, national, name), "adding the number")
        now = self._clock.time_ms()
        try:
            async with writing(self._engine) as conn:
                await conn.execute(
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
        except IntegrityError:
            raise PhoneNumberTaken(f"{full} was attached to an app at the same moment; retry") from None
        log.info("number attached", extra={"account": app.account_id, "app": app.id})
        async with self._engine.connect() as conn:
            return self._record(
                (await conn.execute(self._select().where(waba_numbers.c.phone == full))).one()
            )

    # verification codes --------------------------------------------------------------------

    async def request_code(
        self, account_id: int, phone: str, method: CodeMethod, locale: str, appkey: str | None = None
    ) -> None:
        phone = normalise_phone(phone)
        r, now = self.rules, self._clock.time_ms()
        async with writing(self._engine) as conn:
            number = await self._locate(conn, account_id, phone, appkey, lock=True)
            recent = (
                (
                    await conn.execute(
                        select(waba_code_requests.c.requested_ms)
                        .where(
                            waba_code_requests.c.number_id == number.id,
                            waba_code_requests.c.state != "failed",
                            waba_code_requests.c.requested_ms > now - r.code_window_ms,
                        )
                        .order_by(waba_code_requests.c.requested_ms.desc())
                    )
                )
                .scalars()
                .all()
            )
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
            request_id = (
                await conn.execute(
                    insert(waba_code_requests)
                    .values(
                        number_id=number.id,
                        method=method.value,
                        locale=locale,
                        state="sending",
                        attempts=0,
                        requested_ms=now,
                    )
                    .returning(waba_code_requests.c.id)
                )
            ).scalar_one()
        state = "failed"
        try:
            await self._upstream(
                self.upstream.request_code(self._upstream_id(number), method, locale), "sending a code"
            )
            state = "sent"
        finally:
            async with writing(self._engine) as conn:
                await conn.execute(
                    update(waba_code_requests)
                    .where(waba_code_requests.c.id == request_id)
                    .values(state=state)
                )

    async def verify_code(self, account_id: int, phone: str, code: str, appkey: str | None = None) -> None:
        phone = normalise_phone(phone)
        code = (code or "").strip()
        if not code:
            raise MissingParameter("code", "the verification code is required")
        r, now = self.rules, self._clock.time_ms()
        async with writing(self._engine) as conn:
            number = await self._locate(conn, account_id, phone, appkey, lock=True)
            req = (await conn.execute(self._latest_request, {"nid": number.id})).first()
            if req is None or req.state == "used":
                raise CodeExpired(f"no verification code is pending for {phone}: request a code first")
            if now >= req.requested_ms + r.code_lifetime_ms:
                raise CodeExpired(
                    f"the code sent to {phone} at {_iso(req.requested_ms)} has expired (codes last "
                    f"{r.code_lifetime_ms // 60_000} minutes): request a new one"
                )
            if req.attempts >= r.code_max_attempts:
                raise CodeAttemptsExhausted(
                    f"{req.attempts} wrong codes were entered for the last code sent to {phone}: "
                    "request a new one"
                )
            attempts = req.attempts + 1
            await conn.execute(self._set_attempts, {"rid": req.id, "n": attempts})
        try:
            await self._upstream(
                self.upstream.verify_code(self._upstream_id(number), code), "checking the code"
            )
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
            async with writing(self._engine) as conn:
                await conn.execute(
                    update(waba_code_requests)
                    .where(waba_code_requests.c.id == req.id)
                    .values(attempts=waba_code_requests.c.attempts - 1)
                )
            raise
        async with writing(self._engine) as conn:
            await conn.execute(self._mark_used, {"rid": req.id})
            await conn.execute(self._set_verified, {"nid": number.id, "at": self._clock.time_ms()})

    # registration --------------------------------------------------------------------------

    async def _check_window(self, conn: AsyncConnection, number: PhoneNumber, now: int) -> None:
        r = self.rules
        times = (
            (
                await conn.execute(
                    select(waba_register_events.c.at_ms)
                    .where(
                        waba_register_events.c.number_id == number.id,
                        waba_register_events.c.at_ms > now - r.registration_window_ms,
                    )
                    .order_by(waba_register_events.c.at_ms.desc())
                )
            )
            .scalars()
            .all()
        )
        if len(times) >= r.registrations_per_window:
            free_at = times[r.registrations_per_window - 1] + r.registration_window_ms
            raise RegisterLimitExceeded(
                f"{number.phone} was registered or deregistered {len(times)} times in the last "
                f"{r.registration_window_ms // 3_600_000} hours (the upstream allows "
                f"{r.registrations_per_window}); the next is possible after {_iso(free_at)}"
            )

    async def _begin_change(
        self,
        conn: AsyncConnection,
        number: PhoneNumber,
        kind: str,
        state: Registration,
        now: int,
        **values: Any,
    ) -> int:
        """Record a (de)registration attempt and hold the number in ``state`` while it runs."""
        if number.registration in IN_FLIGHT:
            raise AlreadyRegistered(f"a registration change for {number.phone} is in progress; retry shortly")
        await self._check_window(conn, number, now)
        event_id = (
            await conn.execute(
                insert(waba_register_events)
                .values(number_id=number.id, kind=kind, outcome="pending", at_ms=now)
                .returning(waba_register_events.c.id)
            )
        ).scalar_one()
        await conn.execute(
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
        async with writing(self._engine) as conn:
            await conn.execute(update(waba_numbers).where(waba_numbers.c.id == number_id).values(**values))
            if event_id is not None:
                await conn.execute(
                    update(waba_register_events)
                    .where(waba_register_events.c.id == event_id)
                    .values(outcome=outcome, detail=detail)
                )

    async def register(self, account_id: int, phone: str, appkey: str | None = None) -> PhoneNumber:
        """Create the upstream client and register it with the number's PIN (3 → 4 → 5)."""
        phone = normalise_phone(phone)
        now = self._clock.time_ms()
        async with writing(self._engine) as conn:
            number = await self._locate(conn, account_id, phone, appkey, lock=True)
            number = await self._free_stale(conn, number, now)
            if number.verification is Verification.EXPIRED:
                raise NotVerified(
                    f"the verification of {phone} expired on {_iso(number.verified_until_ms or 0)}: "
                    "request and check a new code"
                )
            if number.verification is not Verification.VERIFIED:
                raise NotVerified(f"{phone} is not verified: request and check a code first")
            if number.registration is Registration.REGISTERED:
                raise AlreadyRegistered(f"{phone} is already registered")
            pin_enc = (
                await conn.execute(select(waba_numbers.c.pin_enc).where(waba_numbers.c.id == number.id))
            ).scalar_one()
            if pin_enc is None:  # the two-step PIN: made once, kept encrypted, never returned
                pin_enc = self._vault.encrypt(f"{secrets.randbelow(10**6):06d}")
            event_id = await self._begin_change(
                conn, number, "register", Registration.CREATING, now, pin_enc=pin_enc
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
        async with writing(self._engine) as conn:
            number = await self._locate(conn, account_id, phone, appkey, lock=True)
            number = await self._free_stale(conn, number, now)
            if number.registration is not Registration.REGISTERED:
                raise NotRegistered(f"{phone} is not registered, so it cannot be deregistered")
            event_id = await self._begin_change(conn, number, "deregister", Registration.DEREGISTERING, now)
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

    async def _free_stale(self, conn: AsyncConnection, number: PhoneNumber, now: int) -> PhoneNumber:
        """A (de)registration whose process died holds the number only until its lease ends."""
        if number.registration not in IN_FLIGHT:
            return number
        busy = (
            await conn.execute(select(waba_numbers.c.busy_until_ms).where(waba_numbers.c.id == number.id))
        ).scalar_one()
        if busy is not None and busy > now:
            return number
        back = (
            Registration.REGISTERED
            if number.registration is Registration.DEREGISTERING
            else Registration.NONE
        )
        await conn.execute(
            update(waba_numbers).where(waba_numbers.c.id == number.id).values(registration=back.value)
        )
        await conn.execute(
            update(waba_register_events)
            .where(waba_register_events.c.number_id == number.id, waba_register_events.c.outcome == "pending")
            .values(outcome="failed", detail="abandoned: the process handling it stopped")
        )
        return await self._locate(conn, number.account_id, number.phone, None, lock=False)

    # upstream sync and profile -------------------------------------------------------------

    async def sync(self, account_id: int, appkey: str) -> list[PhoneNumber]:
        """Refresh every number of a space from the upstream's listing of the WhatsApp Business
        Account; a number the upstream no longer lists reads DELETED."""
        numbers = await self.list_numbers(account_id, appkey)
        listing = await self._upstream(self.upstream.list_all(), "listing the numbers")
        now = self._clock.time_ms()
        async with writing(self._engine) as conn:
            for number in numbers:
                if number.upstream_id is None:
                    continue
                info = listing.get(number.upstream_id)
                values = self._info_values(info) if info is not None else {"status": "DELETED"}
                await conn.execute(
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
