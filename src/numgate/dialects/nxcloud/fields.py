"""Reading typed fields out of an NXCloud JSON body, with messages that say what is wrong."""

from __future__ import annotations

from typing import Any

from numgate.errors import InvalidParameter, MissingParameter


def text(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    v = body.get(name)
    if v is None or (isinstance(v, str) and not v.strip()):
        if required:
            raise MissingParameter(name)
        return None
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise InvalidParameter(name, f"{name} must be a string")
    return str(v).strip()


def integer(
    body: dict[str, Any], name: str, *, required: bool = False, default: int | None = None
) -> int | None:
    v = body.get(name)
    if v is None or v == "":
        if required:
            raise MissingParameter(name)
        return default
    if isinstance(v, bool):
        raise InvalidParameter(name, f"{name} must be an integer")
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v.strip())
    raise InvalidParameter(name, f"{name} must be an integer, got {v!r}")
