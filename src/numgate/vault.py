"""Secrets at rest: every access secret, app secret and WhatsApp PIN is stored encrypted.

The master key is a Fernet key (``cryptography``), from ``NUMGATE_SECRET_KEY`` or, when that is
unset, from ``<data dir>/secret.key``. A missing file is generated once, with a warning; it is
never silently regenerated: the database keeps a check value, and a key that cannot read it
stops numgate with a message saying what to restore. ``NUMGATE_SECRET_KEY`` may hold several
comma-separated keys for rotation (the first encrypts, all decrypt).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select

from numgate.db.direct import Database
from numgate.db.tables import meta
from numgate.errors import ConfigurationError
from numgate.settings import Settings

log = logging.getLogger("numgate.vault")

_CHECK_KEY = "vault_check"
_CHECK_PLAIN = "numgate-vault-check"


class Vault:
    def __init__(self, keys: list[bytes]) -> None:
        self._first = keys[0] if keys else b""
        try:
            self._fernet = MultiFernet([Fernet(k) for k in keys])
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(
                "NUMGATE_SECRET_KEY is not a Fernet key (32 url-safe base64-encoded bytes); "
                'make one with: python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())"'
            ) from exc

    def derive(self, purpose: str) -> bytes:
        """A key for one purpose (console sessions …), derived from the master key (HMAC-SHA256):
        rotating the master key rotates it."""
        import hashlib
        import hmac

        return hmac.new(self._first, purpose.encode(), hashlib.sha256).digest()

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise ConfigurationError(
                "a stored secret cannot be decrypted with the configured master key"
            ) from exc


def key_file(settings: Settings) -> Path:
    return settings.data_dir / "secret.key"


def _read_keys(settings: Settings) -> list[bytes] | None:
    if settings.secret_key:
        return [k.strip().encode() for k in settings.secret_key.split(",") if k.strip()]
    path = key_file(settings)
    if path.exists():
        return [path.read_text().strip().encode()]
    return None


async def open_vault(settings: Settings, db: Database) -> Vault:
    """Load (or, the very first time, create) the master key and check it against the database."""
    keys = _read_keys(settings)
    async with db.write() as tx:
        check = await tx.scalar(select(meta.c.value).where(meta.c.key == _CHECK_KEY))
        if keys is None:
            if check is not None:
                raise ConfigurationError(
                    f"the master key file {key_file(settings)} is missing, but this database "
                    "holds secrets encrypted with it. Restore that file (or set "
                    "NUMGATE_SECRET_KEY to the key); numgate will not generate a new one."
                )
            keys = [_generate_key_file(settings)]
        vault = Vault(keys)
        if check is None:
            await tx.run(meta.insert().values(key=_CHECK_KEY, value=vault.encrypt(_CHECK_PLAIN)))
        else:
            try:
                ok = vault.decrypt(check) == _CHECK_PLAIN
            except ConfigurationError:
                ok = False
            if not ok:
                raise ConfigurationError(
                    "the configured master key (NUMGATE_SECRET_KEY or "
                    f"{key_file(settings)}) is not the one this database was created with; "
                    "secrets could not be read. Use the original key."
                )
    return vault


def _generate_key_file(settings: Settings) -> bytes:
    path = key_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
    log.warning(
        "no master key configured: generated %s. Back it up: without it the stored secrets "
        "cannot be read. Set NUMGATE_SECRET_KEY in production.",
        path,
    )
    return key
