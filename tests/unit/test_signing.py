"""Callback signatures: HMAC-SHA256 as RFC 4231 defines it, whatever the order of secrets."""

from __future__ import annotations

from numgate.delivery.signing import sign_body, verify_body

# RFC 4231, test case 2
JEFE = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_the_rfc_4231_vector() -> None:
    assert sign_body("Jefe", b"what do ya want for nothing?") == "sha256=" + JEFE


def test_each_body_is_signed_alone_with_its_own_secret() -> None:
    """The keyed state is copied per body: nothing of one body or secret leaks into the next."""
    first = [sign_body(s, b) for s in ("Jefe", "other") for b in (b"what do ya want for nothing?", b"")]
    again = [sign_body(s, b) for s in ("Jefe", "other") for b in (b"what do ya want for nothing?", b"")]
    assert first == again and len(set(first)) == 4 and first[0] == "sha256=" + JEFE
    assert verify_body("Jefe", b"what do ya want for nothing?", f" sha256={JEFE}\n")
    assert not verify_body("jefe", b"what do ya want for nothing?", "sha256=" + JEFE)
