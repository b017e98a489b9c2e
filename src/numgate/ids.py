"""Identifiers handed to customers: access keys, secrets, appkeys, message ids."""

from __future__ import annotations

import secrets
import string
import uuid

_LOWER_ALNUM = string.ascii_lowercase + string.digits
_ALNUM = string.ascii_letters + string.digits


def _token(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def new_access_key() -> str:
    return "ng" + _token(_LOWER_ALNUM, 14)


def new_secret() -> str:
    return _token(_ALNUM, 32)


def new_appkey() -> str:
    return _token(_LOWER_ALNUM, 12)


def new_space_id() -> str:
    return "cams-" + _token(_LOWER_ALNUM, 10)


def new_message_id() -> str:
    """32 random hex digits (what uuid4().hex looks like, at a third of its cost)."""
    return secrets.token_hex(16)


def new_delivery_ids(n: int, now_ms: int) -> list[str]:
    """``n`` callback delivery ids, 32 hex digits each: the time in milliseconds (12 digits), then
    80 random bits, from one read of the system's random source. Ids drawn together sort
    together, after the earlier ones, so a chunk's callbacks are added at one end of the
    ``deliveries.uid`` index, a few pages, instead of one random page each — a third of the
    CPU per stored callback in SQLite (measured: 14.5 against 4.8 µs a row), and less WAL."""
    prefix = f"{now_ms:012x}"
    h = secrets.token_bytes(10 * n).hex()
    return [prefix + h[i : i + 20] for i in range(0, 20 * n, 20)]


def new_batch_no() -> str:
    return str(secrets.randbelow(9 * 10**11) + 10**11)


def new_request_id() -> str:
    return str(uuid.uuid4()).upper()
