"""CAMS request signatures (spec cams.md §2): ACS3-HMAC-SHA256, ACS3-HMAC-SM3 and the legacy
HMAC-SHA1 style."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

ACS3 = "ACS3-HMAC-SHA256"
ACS3_SM3 = "ACS3-HMAC-SM3"


def _sm3(data: bytes = b"") -> Any:
    return hashlib.new("sm3", data)  # OpenSSL's SM3, through hashlib


#: the ACS3 algorithms numgate verifies, by name: the hash of the canonical request and of the
#: body, which the HMAC uses too
ACS3_HASHES: dict[str, Callable[..., Any]] = {ACS3: hashlib.sha256, ACS3_SM3: _sm3}
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def body_hash(algorithm: str, body: bytes) -> str:
    """``x-acs-content-sha256`` for ``algorithm`` (for SM3 it holds the SM3 hash, as the SDK sends)."""
    return ACS3_HASHES[algorithm](body).hexdigest()  # type: ignore[no-any-return]


def rfc3986(text: str) -> str:
    """Percent-encode all but ``A-Za-z0-9-_.~`` (UTF-8, upper-case hex; space is %20)."""
    return quote(text, safe="-_.~")


def form_pairs(raw: str) -> list[tuple[str, str]]:
    """Form-decode a query or ``x-www-form-urlencoded`` body (``+`` is a space)."""
    return parse_qsl(raw, keep_blank_values=True)


def canonical_query(query: str | list[tuple[str, str]]) -> str:
    """The signed form of a query: given raw, or as the decoded pairs of ``form_pairs``."""
    pairs = sorted(form_pairs(query) if isinstance(query, str) else query)
    return "&".join(f"{rfc3986(k)}={rfc3986(v)}" for k, v in pairs)


@dataclass(frozen=True)
class Authorization:
    algorithm: str
    access_key_id: str
    signed_headers: list[str]
    signature: str


class MalformedAuthorization(ValueError):
    pass


def parse_authorization(value: str) -> Authorization:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm not in ACS3_HASHES:
        raise MalformedAuthorization(
            f"the Authorization header must start with {' or '.join(ACS3_HASHES)}, not {algorithm[:40]!r}"
        )
    parts: dict[str, str] = {}
    for item in rest.split(","):
        k, sep, v = item.strip().partition("=")
        if sep:
            parts[k.strip()] = v.strip()
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if not parts.get(k)]
    if missing:
        raise MalformedAuthorization(f"the Authorization header lacks {', '.join(missing)}")
    return Authorization(
        algorithm, parts["Credential"], parts["SignedHeaders"].split(";"), parts["Signature"].lower()
    )


def acs3_string_to_sign(
    method: str,
    query: str | list[tuple[str, str]],
    header_values: dict[str, list[str]],
    signed_headers: Iterable[str],
    body_sha256: str,
    algorithm: str = ACS3,
) -> str:
    signed = list(signed_headers)
    block = "".join(
        f"{name}:{','.join(sorted(v.strip() for v in header_values.get(name, [])))}\n" for name in signed
    )
    canonical = "\n".join([method.upper(), "/", canonical_query(query), block, ";".join(signed), body_sha256])
    return f"{algorithm}\n{ACS3_HASHES[algorithm](canonical.encode()).hexdigest()}"


def acs3_signature(secret: str, string_to_sign: str, algorithm: str = ACS3) -> str:
    return hmac.new(secret.encode(), string_to_sign.encode(), ACS3_HASHES[algorithm]).hexdigest()


def legacy_string_to_sign(method: str, params: Iterable[tuple[str, str]]) -> str:
    pairs = sorted((k, v) for k, v in params if k != "Signature")
    joined = "&".join(f"{rfc3986(k)}={rfc3986(v)}" for k, v in pairs)
    return f"{method.upper()}&{rfc3986('/')}&{rfc3986(joined)}"


def legacy_signature(secret: str, string_to_sign: str) -> str:
    digest = hmac.new((secret + "&").encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()
