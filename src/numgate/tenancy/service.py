"""Accounts, their access keys and their apps."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, update

from numgate import ids
from numgate.clock import Clock
from numgate.db.direct import Database, Statement, Tx
from numgate.db.tables import access_keys, accounts, apps
from numgate.delivery.urls import CallbackUrls
from numgate.errors import (
    AppLimitReached,
    AppNotFound,
    AppNotOwned,
    Conflict,
    InvalidParameter,
    NotFound,
)
from numgate.ledger.service import require_account
from numgate.tenancy.operations import parse_allowed
from numgate.vault import Vault

#: how long an access key's lookup is cached in a process (a disabled key stops working
#: within this many seconds on every server process)
KEY_CACHE_SECONDS = 2.0
MAX_APPS_PER_ACCOUNT = 1000


@dataclass(frozen=True)
class Account:
    id: int
    name: str
    integrator: bool
    number_check: bool
    whatsapp: bool
    enabled: bool = True


@dataclass(frozen=True)
class Credentials:
    account_id: int
    access_key: str
    access_secret: str


@dataclass(frozen=True)
class KeyGrant:
    """What an authenticated access key may do."""

    access_key: str
    secret: str
    #: the key and its account are both enabled
    enabled: bool
    account: Account
    #: core operation names (tenancy/operations.py) the key may call; None: every operation
    allowed: frozenset[str] | None

    @property
    def refusal(self) -> str | None:
        """Why the key may not be used, or None."""
        if not self.account.enabled:
            return "this access key's account is disabled"
        if not self.enabled:
            return "this access key is disabled"
        return None


@dataclass(frozen=True)
class KeyInfo:
    access_key: str
    account_id: int
    enabled: bool
    allowed: list[str] | None
    created_ms: int


@dataclass(frozen=True)
class App:
    id: int
    account_id: int
    appkey: str
    name: str
    callback_url: str | None
    #: callbacks per POST (1: NXCloud's one per number)
    callback_batch: int = 1
    #: how old a cached HLR / call result the app accepts by default, seconds (0: always live)
    max_age_s: int = 0

    @property
    def space_id(self) -> str:
        """The same object's name on the CAMS door (CustSpaceId)."""
        return self.appkey


def _account(r: Any) -> Account:
    return Account(
        r["id"],
        r["name"],
        bool(r["integrator"]),
        bool(r["number_check"]),
        bool(r["whatsapp"]),
        bool(r["enabled"]),
    )


def _app(r: Any) -> App:
    return App(
        r["id"],
        r["account_id"],
        r["appkey"],
        r["name"],
        r["callback_url"],
        r["callback_batch"],
        r["max_age_s"],
    )


@dataclass(frozen=True)
class AppCallback:
    """What sending an app's callbacks needs: its signing secret and its batch size."""

    secret: str
    batch: int


_GRANT = Statement(
    select(
        access_keys.c.secret_enc,
        access_keys.c.enabled,
        access_keys.c.allowed_actions,
        accounts.c.id,
        accounts.c.name,
        accounts.c.integrator,
        accounts.c.number_check,
        accounts.c.whatsapp,
        accounts.c.enabled.label("account_enabled"),
    )
    .join(accounts, accounts.c.id == access_keys.c.account_id)
    .where(access_keys.c.access_key == bindparam("key"))
)
_APP_BY_KEY = Statement(select(apps).where(apps.c.appkey == bindparam("appkey"), apps.c.deleted_ms.is_(None)))
_APP_CALLBACK = Statement(
    select(apps.c.secret_enc, apps.c.callback_batch).where(apps.c.id == bindparam("id"))
)
#: an app's callback settings are cached this long in a process (a change or a rotated secret
#: reaches every worker within it)
APP_CACHE_SECONDS = 5.0
MAX_CALLBACK_BATCH = 1000
#: the oldest cached live result an app may accept (hlrlookup.com keeps results 30 days)
MAX_AGE_S = 30 * 86_400
_INSERT_KEY = Statement(
    access_keys.insert().values(
        {
            c: bindparam(c)
            for c in ("access_key", "account_id", "secret_enc", "enabled", "allowed_actions", "created_ms")
        }
    )
)


class TenancyService:
    def __init__(self, db: Database, vault: Vault, clock: Clock, urls: CallbackUrls) -> None:
        self._db = db
        self._vault = vault
        self._clock = clock
        self._urls = urls
        self._key_cache: dict[str, tuple[float, KeyGrant | None]] = {}
        self._app_cache: dict[int, tuple[float, AppCallback]] = {}

    # accounts -----------------------------------------------------------------------------

    async def create_account(
        self, name: str, *, integrator: bool = False, number_check: bool = True, whatsapp: bool = True
    ) -> tuple[Account, Credentials]:
        name = name.strip()
        if not name:
            raise InvalidParameter("name", "an account needs a non-empty name")
        async with self._db.write() as tx:
            account_id = await tx.scalar(
                accounts.insert()
                .values(
                    name=name,
                    integrator=integrator,
                    number_check=number_check,
                    whatsapp=whatsapp,
                    created_ms=self._clock.time_ms(),
                )
                .returning(accounts.c.id)
            )
            creds = await self._insert_key(tx, account_id, None)
        return Account(account_id, name, integrator, number_check, whatsapp, True), creds

    async def get_account(self, account_id: int) -> Account:
        async with self._db.read() as tx:
            row = await tx.one(select(accounts).where(accounts.c.id == account_id))
        if row is None:
            raise NotFound(f"no account with id {account_id}")
        return _account(row)

    async def set_account_enabled(self, account_id: int, enabled: bool) -> Account:
        """Disable (or enable again) an account: while disabled, every one of its keys is refused."""
        async with self._db.write() as tx:
            n = await tx.run(update(accounts).where(accounts.c.id == account_id).values(enabled=enabled))
        if not n:
            raise NotFound(f"no account with id {account_id}")
        self._key_cache.clear()
        return await self.get_account(account_id)

    async def set_businesses(
        self,
        account_id: int,
        *,
        integrator: bool | None = None,
        number_check: bool | None = None,
        whatsapp: bool | None = None,
    ) -> Account:
        """Turn an account's businesses on or off (None: unchanged); its keys see the change
        within the key cache's lifetime (this process: at once)."""
        values = {
            k: v
            for k, v in (("integrator", integrator), ("number_check", number_check), ("whatsapp", whatsapp))
            if v is not None
        }
        if values:
            async with self._db.write() as tx:
                n = await tx.run(update(accounts).where(accounts.c.id == account_id).values(**values))
            if not n:
                raise NotFound(f"no account with id {account_id}")
            self._key_cache.clear()
        return await self.get_account(account_id)

    async def list_accounts(self) -> list[tuple[Account, int, int]]:
        """Every account with its number of enabled keys and of apps."""
        keys_n = (
            select(func.count())
            .where(access_keys.c.account_id == accounts.c.id, access_keys.c.enabled.is_(True))
            .scalar_subquery()
        )
        apps_n = (
            select(func.count())
            .where(apps.c.account_id == accounts.c.id, apps.c.deleted_ms.is_(None))
            .scalar_subquery()
        )
        async with self._db.read() as tx:
            rows = await tx.all(
                select(accounts, keys_n.label("k"), apps_n.label("a")).order_by(accounts.c.id)
            )
        return [(_account(r), r["k"], r["a"]) for r in rows]

    # access keys ---------------------------------------------------------------------------

    async def _insert_key(
        self,
        tx: Tx,
        account_id: int,
        allowed: list[str] | None,
        key: str | None = None,
        secret: str | None = None,
    ) -> Credentials:
        key, secret = key or ids.new_access_key(), secret or ids.new_secret()
        try:
            await tx.run(
                _INSERT_KEY,
                access_key=key,
                account_id=account_id,
                secret_enc=self._vault.encrypt(secret),
                enabled=True,
                allowed_actions=json.dumps(sorted(allowed)) if allowed is not None else None,
                created_ms=self._clock.time_ms(),
            )
        except Conflict:
            raise InvalidParameter("access_key", f"the access key {key!r} exists already") from None
        return Credentials(account_id, key, secret)

    async def create_key(self, account_id: int, allowed: list[str] | None = None) -> Credentials:
        """A new key; ``allowed`` limits it to these operations (core names or door aliases,
        ``tenancy/operations.py``), None allows every operation."""
        names = parse_allowed(allowed) if allowed is not None else None
        async with self._db.write() as tx:
            await require_account(tx, account_id)
            return await self._insert_key(tx, account_id, names)

    async def import_key(self, account_id: int, access_key: str, secret: str) -> Credentials:
        """Store a key pair chosen by the operator (e.g. to keep a vendor's existing keys)."""
        async with self._db.write() as tx:
            await require_account(tx, account_id)
            return await self._insert_key(tx, account_id, None, access_key, secret)

    async def set_key_enabled(self, access_key: str, enabled: bool) -> None:
        async with self._db.write() as tx:
            n = await tx.run(
                update(access_keys).where(access_keys.c.access_key == access_key).values(enabled=enabled)
            )
        if not n:
            raise NotFound(f"no access key {access_key!r}")
        self._key_cache.pop(access_key, None)

    async def list_keys(self, account_id: int | None = None) -> list[KeyInfo]:
        """Access keys (never their secrets), oldest first; one account's when given."""
        q = select(
            access_keys.c.access_key,
            access_keys.c.account_id,
            access_keys.c.enabled,
            access_keys.c.allowed_actions,
            access_keys.c.created_ms,
        ).order_by(access_keys.c.account_id, access_keys.c.created_ms)
        async with self._db.read() as tx:
            if account_id is not None:
                await require_account(tx, account_id)
                q = q.where(access_keys.c.account_id == account_id)
            rows = await tx.all(q)
        return [
            KeyInfo(
                r["access_key"],
                r["account_id"],
                bool(r["enabled"]),
                json.loads(r["allowed_actions"]) if r["allowed_actions"] is not None else None,
                r["created_ms"],
            )
            for r in rows
        ]

    async def credentials(self, account_id: int) -> list[Credentials]:
        async with self._db.read() as tx:
            rows = await tx.all(
                select(access_keys.c.access_key, access_keys.c.secret_enc)
                .where(access_keys.c.account_id == account_id, access_keys.c.enabled.is_(True))
                .order_by(access_keys.c.created_ms)
            )
        return [Credentials(account_id, r["access_key"], self._vault.decrypt(r["secret_enc"])) for r in rows]

    async def grant(self, access_key: str) -> KeyGrant | None:
        """The key's grant, or None if unknown. Cached briefly: this is on every request."""
        now = time.monotonic()
        hit = self._key_cache.get(access_key)
        if hit is not None and hit[0] > now:
            return hit[1]
        async with self._db.read() as tx:
            r = await tx.one(_GRANT, key=access_key)
        grant = None
        if r is not None:
            allowed = r["allowed_actions"]
            account = Account(
                r["id"],
                r["name"],
                bool(r["integrator"]),
                bool(r["number_check"]),
                bool(r["whatsapp"]),
                bool(r["account_enabled"]),
            )
            grant = KeyGrant(
                access_key=access_key,
                secret=self._vault.decrypt(r["secret_enc"]),
                enabled=bool(r["enabled"]) and account.enabled,
                account=account,
                allowed=frozenset(json.loads(allowed)) if allowed is not None else None,
            )
        if len(self._key_cache) > 10_000:
            self._key_cache.clear()
        self._key_cache[access_key] = (now + KEY_CACHE_SECONDS, grant)
        return grant

    # apps ----------------------------------------------------------------------------------

    async def create_app(
        self,
        account_id: int,
        name: str,
        callback_url: str | None = None,
        *,
        appkey: str | None = None,
        url_field: str = "callback URL",
    ) -> App:
        """``url_field`` names the callback URL in error messages the way the caller's client does."""
        name = name.strip()
        if not name:
            raise InvalidParameter("name", "an app needs a non-empty name")
        if callback_url:
            callback_url = self._urls.check(callback_url, url_field)
        async with self._db.write() as tx:
            await require_account(tx, account_id)
            count = await tx.scalar(
                select(func.count()).where(apps.c.account_id == account_id, apps.c.deleted_ms.is_(None))
            )
            if count >= MAX_APPS_PER_ACCOUNT:
                raise AppLimitReached(
                    f"account {account_id} already has {count} apps (the limit is {MAX_APPS_PER_ACCOUNT})"
                )
            key = appkey or ids.new_appkey()
            try:
                app_id = await tx.scalar(
                    apps.insert()
                    .values(
                        account_id=account_id,
                        appkey=key,
                        name=name,
                        callback_url=callback_url or None,
                        secret_enc=self._vault.encrypt(ids.new_secret()),
                        created_ms=self._clock.time_ms(),
                    )
                    .returning(apps.c.id)
                )
            except Conflict:
                raise InvalidParameter("appkey", f"the appkey {key!r} is taken") from None
        return App(app_id, account_id, key, name, callback_url or None, 1)

    async def list_apps(self, account_id: int) -> list[App]:
        async with self._db.read() as tx:
            rows = await tx.all(
                select(apps)
                .where(apps.c.account_id == account_id, apps.c.deleted_ms.is_(None))
                .order_by(apps.c.id)
            )
        return [_app(r) for r in rows]

    async def set_callback_url(
        self, appkey: str, callback_url: str | None, url_field: str = "callback URL"
    ) -> App:
        """Change (or, with None, remove) an app's default callback URL."""
        url = self._urls.check(callback_url, url_field) if callback_url else None
        async with self._db.write() as tx:
            n = await tx.run(
                update(apps)
                .where(apps.c.appkey == appkey, apps.c.deleted_ms.is_(None))
                .values(callback_url=url)
            )
        if not n:
            raise AppNotFound(f"no app with appkey {appkey!r}")
        app = await self.find_app(appkey)
        assert app is not None
        return app

    async def delete_app(self, appkey: str, has_numbers: Callable[[Tx, int], Awaitable[bool]]) -> App:
        """Delete an app: its appkey stops working on every door (and stays taken). Refused while
        WhatsApp numbers are attached to it (``has_numbers``): delete or move them first."""
        async with self._db.write() as tx:
            app = await self.find_app(appkey, tx)
            if app is None:
                raise AppNotFound(f"no app with appkey {appkey!r}")
            if await has_numbers(tx, app.id):
                raise InvalidParameter(
                    "appkey",
                    f"app {appkey} still has WhatsApp numbers: delete them first (admin number delete)",
                )
            await tx.run(update(apps).where(apps.c.id == app.id).values(deleted_ms=self._clock.time_ms()))
        return app

    async def find_app(self, appkey: str, tx: Tx | None = None) -> App | None:
        """The app with this appkey; in ``tx`` when given."""
        if tx is None:
            async with self._db.read() as own:
                return await self.find_app(appkey, own)
        row = await tx.one(_APP_BY_KEY, appkey=appkey)
        return _app(row) if row is not None else None

    async def app_of(self, account_id: int, appkey: str, tx: Tx | None = None) -> App:
        """The caller's app: AppNotFound if no such appkey, AppNotOwned if it is another's."""
        app = await self.find_app(appkey, tx)
        if app is None:
            raise AppNotFound(f"no app with appkey {appkey!r}")
        if app.account_id != account_id:
            raise AppNotOwned(f"appkey {appkey!r} belongs to another customer")
        return app

    async def callback_settings(self, app_id: int) -> AppCallback:
        """An app's signing secret and batch size (cached briefly: this is on every callback)."""
        now = time.monotonic()
        hit = self._app_cache.get(app_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        async with self._db.read() as tx:
            row = await tx.one(_APP_CALLBACK, id=app_id)
        if row is None:
            raise NotFound(f"no app with id {app_id}")
        settings = AppCallback(self._vault.decrypt(row["secret_enc"]), int(row["callback_batch"]))
        if len(self._app_cache) > 10_000:
            self._app_cache.clear()
        self._app_cache[app_id] = (now + APP_CACHE_SECONDS, settings)
        return settings

    async def app_secret(self, app_id: int) -> str:
        return (await self.callback_settings(app_id)).secret

    async def rotate_app_secret(self, appkey: str) -> str:
        """A new callback-signing secret for the app (the old one stops at once in this process,
        within the settings cache's lifetime in others); the new secret."""
        secret = ids.new_secret()
        await self._update_app(appkey, secret_enc=self._vault.encrypt(secret))
        return secret

    async def set_max_age(self, appkey: str, seconds: int) -> App:
        """How old a cached HLR or call result the app accepts when a submit does not say
        (``maxAge``): 0 (always live) to 30 days."""
        if not 0 <= seconds <= MAX_AGE_S:
            raise InvalidParameter(
                "max_age", f"the maximum age is from 0 to {MAX_AGE_S} seconds, got {seconds}"
            )
        return await self._update_app(appkey, max_age_s=seconds)

    async def _update_app(self, appkey: str, **values: Any) -> App:
        async with self._db.write() as tx:
            n = await tx.run(
                update(apps).where(apps.c.appkey == appkey, apps.c.deleted_ms.is_(None)).values(**values)
            )
        if not n:
            raise AppNotFound(f"no app with appkey {appkey!r}")
        app = await self.find_app(appkey)
        assert app is not None
        self._app_cache.pop(app.id, None)
        return app

    async def set_callback_batch(self, appkey: str, batch: int) -> App:
        """Callbacks per POST for an app: 1 (NXCloud's one per number) to 1,000 (a JSON array)."""
        if not 1 <= batch <= MAX_CALLBACK_BATCH:
            raise InvalidParameter(
                "callback_batch",
                f"the callback batch size must be from 1 to {MAX_CALLBACK_BATCH}, got {batch}",
            )
        return await self._update_app(appkey, callback_batch=batch)
