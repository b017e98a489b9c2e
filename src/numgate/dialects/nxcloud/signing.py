"""NXCloud header signing (spec nxcloud.md §1). Shared by the door and by numgate.client."""

from __future__ import annotations

import hashlib

ALGORITHMS = {"md5": hashlib.md5, "sha256": hashlib.sha256}


def _around(access_key: str, biz_type: str, action: str, ts: str, secret: str) -> tuple[bytes, bytes]:
    head = f"accessKey={access_key}&action={action}&bizType={biz_type}&ts={ts}".encode()
    return head, f"&accessSecret={secret}".encode()


def string_to_sign(access_key: str, biz_type: str, action: str, ts: str, body: bytes, secret: str) -> bytes:
    """``accessKey=…&action=…&bizType=…&ts=…`` + ``&body=<raw>`` (if any) + ``&accessSecret=…``."""
    head, tail = _around(access_key, biz_type, action, ts, secret)
    if body:
        return head + b"&body=" + body + tail
    return head + tail


def compute_sign(
    access_key: str, biz_type: str, action: str, ts: str, body: bytes, secret: str, algorithm: str = "md5"
) -> str:
    try:
        digest = ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(f"unknown algorithm {algorithm!r}: use md5 or sha256") from None
    return digest(string_to_sign(access_key, biz_type, action, ts, body, secret)).hexdigest()


#: bodies that carry no parameters; clients sign them in different ways (docs/nxcloud.md)
EMPTY_BODIES = (b"", b"{}", b"[]")


def accepted_signs(
    access_key: str, biz_type: str, action: str, ts: str, body: bytes, secret: str, algorithm: str = "md5"
) -> list[str]:
    """Every signature numgate accepts for a request: the one over the raw body as sent and, for a
    body that carries no parameters (empty, ``{}`` or ``[]``), the ones real clients compute for
    it — the body left out, ``&body=`` with nothing after it, ``&body={}`` and ``&body=[]``. They
    all mean the same request, so accepting each lets no request pass as another."""
    if body.strip() not in EMPTY_BODIES:
        return [compute_sign(access_key, biz_type, action, ts, body, secret, algorithm)]
    digest = ALGORITHMS[algorithm]
    head, tail = _around(access_key, biz_type, action, ts, secret)
    forms = {head + tail, head + b"&body=" + tail, head + b"&body=" + body + tail}
    forms |= {head + b"&body=" + e + tail for e in EMPTY_BODIES[1:]}
    return [digest(f).hexdigest() for f in forms]
