"""Signing a CAMS request by hand, as the official SDK signs it (ACS3), for the requests the SDK
will not produce: a fixed nonce, a wrong version, a form body, a forged body hash."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from urllib.parse import urlencode

import httpx

from conftest import RunningServer
from numgate.dialects.cams import signing


def cams_request(
    srv: RunningServer,
    action: str,
    params: dict[str, str],
    *,
    key: str,
    secret: str,
    when: datetime,
    nonce: str | None = None,
    version: str = "2020-06-06",
    method: str = "POST",
    form: dict[str, str] | None = None,
    body_hash: str | None = None,
) -> httpx.Response:
    query = urlencode(sorted(params.items()))
    body = urlencode(form).encode() if form else b""
    h = {
        "host": f"127.0.0.1:{srv.port}",
        "x-acs-version": version,
        "x-acs-action": action,
        "x-acs-date": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "x-acs-signature-nonce": nonce or uuid.uuid4().hex,
        "accept": "application/json",
        "x-acs-content-sha256": body_hash or hashlib.sha256(body).hexdigest(),
    }
    if form:
        h["content-type"] = "application/x-www-form-urlencoded"
    names = sorted(h)
    sts = signing.acs3_string_to_sign(
        method, query, {k: [h[k]] for k in names}, names, h["x-acs-content-sha256"]
    )
    sig = signing.acs3_signature(secret, sts)
    h["Authorization"] = f"ACS3-HMAC-SHA256 Credential={key},SignedHeaders={';'.join(names)},Signature={sig}"
    return httpx.request(method, f"{srv.base_url}/?{query}", headers=h, content=body)
