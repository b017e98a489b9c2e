"""NXCloud header signing (spec nxcloud.md §1). Shared by the door and by numgate.client."""

from __future__ import annotations

import hashlib

ALGORITHMS = {"md5": hashlib.md5, "sha256": hashlib.sha256}


def string_to_sign(access_key: str, biz_type: str, action: str, ts: str, body: bytes, secret: str) -> bytes:
    """``accessKey=…&action=…&bizType=…&ts=…`` + ``&body=<raw>`` (if any) + ``&accessSecret=…``."""
    head = f"accessKey={access_key}&action={action}&bizType={biz_type}&ts={ts}".encode()
    tail = f"&accessSecret={secret}".encode()
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
