"""The rules a callback URL must meet, checked once when it is given (a submit's ``drUrl``, an
app's callback URL, NXCloud ``createApp``'s webhook), so that a URL that can never be called is
refused at once instead of failing for the whole retry window:

- ``http`` or ``https``, a host, at most ``NUMGATE_CALLBACK_URL_MAX`` characters (2,048);
- no credentials (``user:pass@host``): they would be stored and logged in clear;
- a valid port (1–65535);
- an address literal in any form ``inet_aton`` reads (``2130706433``, ``127.1``, ``0x7f.1``) is
  rewritten to its canonical form and must pass the outbound guard (``guard.py``) — a loopback,
  private or metadata address is refused unless ``NUMGATE_CALLBACK_ALLOW`` allows it. Host names
  are checked again on the addresses they resolve to, when the callback is sent.

A URL's **receiver** is its scheme, host and port: callbacks are queued and paced per receiver.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import SplitResult, urlsplit, urlunsplit

from numgate.delivery.guard import Network, refusal
from numgate.errors import InvalidParameter

DEFAULT_MAX_LENGTH = 2048
_LOCAL_NAMES = ("localhost", "localhost.localdomain")


def _canonical_ip(host: str) -> str | None:
    """The canonical text of an address literal (IPv4 in any inet_aton form, or IPv6), or None."""
    bare = host.strip("[]")
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if not host or not all(c in "0123456789abcdefxABCDEFX." for c in host):
        return None  # a name: letters beyond hex digits, or a dash
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        return None


def receiver_of(url: str) -> str:
    """``scheme://host:port`` of a checked URL (the default port spelled out)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


class CallbackUrls:
    def __init__(self, allow: Sequence[Network] = (), max_length: int = DEFAULT_MAX_LENGTH) -> None:
        self._allow = tuple(allow)
        self.max_length = max_length

    def check(self, url: str, field: str = "callback URL") -> str:
        """The URL as numgate stores it (an address literal canonicalised), or InvalidParameter
        with a message naming ``field`` as the caller's client calls it."""
        if len(url) > self.max_length:
            raise InvalidParameter(
                field, f"{field} has {len(url)} characters; the limit is {self.max_length}"
            )
        if any(ord(c) < 33 or ord(c) == 127 for c in url):
            raise InvalidParameter(field, f"{field} contains spaces or control characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise InvalidParameter(field, f"{field} has an invalid port or host: {url[:200]!r}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidParameter(field, f"{field} must be an http(s) URL, got {url[:200]!r}")
        if parts.username is not None or parts.password is not None:
            raise InvalidParameter(
                field,
                f"{field} must not carry credentials (user:password@): they would be stored and logged "
                "in clear. Verify the X-Numgate-Signature header instead, or put a token in the path",
            )
        if port == 0:
            raise InvalidParameter(field, f"{field} has port 0; use a port from 1 to 65535")
        host = parts.hostname
        canonical = _canonical_ip(host)
        if canonical is not None:
            reason = refusal(canonical, self._allow)
            if reason is not None:
                raise InvalidParameter(field, f"{field} is refused: {reason}")
            if canonical != host.strip("[]"):
                return self._with_host(parts, canonical)
        elif host.rstrip(".").lower() in _LOCAL_NAMES or host.rstrip(".").lower().endswith(".localhost"):
            reason = refusal("127.0.0.1", self._allow)
            if reason is not None:
                raise InvalidParameter(field, f"{field} is refused: {host} is {reason.split(' is ', 1)[1]}")
        return url

    @staticmethod
    def _with_host(parts: SplitResult, host: str) -> str:
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
