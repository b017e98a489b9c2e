"""Callback signatures: HMAC-SHA256 of the raw body with the app's secret.

Headers numgate adds to every callback (the body stays byte-compatible with the vendor's):

- ``X-Numgate-Signature: sha256=<lowercase hex HMAC-SHA256(app secret, raw body)>``
- ``X-Numgate-Delivery-Id: <32 hex>`` — stable across retries, for de-duplication
- ``X-Numgate-Attempt: <1, 2, …>``

A POST that carries several callbacks (an app's ``--callback-batch N``) has, instead of the
delivery id, ``X-Numgate-Batch-Size: <n>`` and ``X-Numgate-Delivery-Ids: <id1>,<id2>,…`` (one per
element of the array, in order); ``X-Numgate-Attempt`` is then the highest attempt among them.
"""

from __future__ import annotations

import functools
import hashlib
import hmac

SIGNATURE_HEADER = "X-Numgate-Signature"
DELIVERY_ID_HEADER = "X-Numgate-Delivery-Id"
ATTEMPT_HEADER = "X-Numgate-Attempt"
BATCH_SIZE_HEADER = "X-Numgate-Batch-Size"
BATCH_IDS_HEADER = "X-Numgate-Delivery-Ids"


@functools.lru_cache(maxsize=1024)
def _keyed(secret: str) -> hmac.HMAC:
    """An HMAC-SHA256 keyed with ``secret`` and fed nothing: copied for each body, which skips
    OpenSSL's key set-up (the dearer half of signing a callback-sized body)."""
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)


def sign_body(secret: str, body: bytes) -> str:
    h = _keyed(secret).copy()
    h.update(body)
    return "sha256=" + h.hexdigest()


def verify_body(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does: recompute over the raw bytes, compare in constant time."""
    return hmac.compare_digest(sign_body(secret, body), header.strip())
