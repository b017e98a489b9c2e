"""Reading typed fields out of an NXCloud JSON body, with messages that say what is wrong.

Every value is checked here, at the door, so that what reaches the core and the database is the
same on SQLite and PostgreSQL: text without control characters (PostgreSQL refuses a NUL),
integers in a stated range, ASCII digits only.
"""

from __future__ import annotations

import re
from typing import Any

from numgate.errors import InvalidParameter, MissingParameter

#: C0 controls but tab, LF and CR; DEL; C1 controls
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: integers outside this range are refused (they would overflow the database's 64-bit integers)
INT_RANGE = (-(2**31), 2**31 - 1)


def clean(name: str, value: str) -> str:
    """``value`` if it holds no control character, else InvalidParameter."""
    if _CONTROL.search(value):
        raise InvalidParameter(name, f"{name} contains a control character")
    return value


def text(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    v = body.get(name)
    if v is None or (isinstance(v, str) and not v.strip()):
        if required:
            raise MissingParameter(name)
        return None
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise InvalidParameter(name, f"{name} must be a string")
    return clean(name, str(v).strip())


def integer(
    body: dict[str, Any],
    name: str,
    *,
    required: bool = False,
    default: int | None = None,
    lo: int = INT_RANGE[0],
    hi: int = INT_RANGE[1],
) -> int | None:
    v = body.get(name)
    if v is None or v == "":
        if required:
            raise MissingParameter(name)
        return default
    if isinstance(v, bool):
        raise InvalidParameter(name, f"{name} must be an integer")
    if isinstance(v, str):
        s = v.strip()
        digits = s[1:] if s.startswith("-") else s
        if not (digits.isascii() and digits.isdigit() and len(digits) <= 18):
            raise InvalidParameter(name, f"{name} must be an integer, got {v[:40]!r}")
        v = int(s)
    if not isinstance(v, int):
        raise InvalidParameter(name, f"{name} must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise InvalidParameter(name, f"{name} must be from {lo} to {hi}, got {v}")
    return v
