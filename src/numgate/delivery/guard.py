"""Outbound URL guard: callbacks never reach loopback, private, link-local, shared, reserved or
cloud-metadata addresses unless the operator allowlists them (``NUMGATE_CALLBACK_ALLOW``).

The check runs on the addresses DNS returns, inside aiohttp's resolver, so the connection goes
to exactly the address that was checked (no DNS-rebinding window)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import Any

from aiohttp import ThreadedResolver

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class CallbackRefused(OSError):
    """The callback's address is not a public one and is not allowlisted."""


def refusal(address: str, allow: Sequence[Network]) -> str | None:
    """Why ``address`` may not be called, or None if it may."""
    ip: Address = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in allow):
        return None
    if ip.is_loopback:
        kind = "a loopback"
    elif ip.is_link_local:
        kind = "a link-local (cloud metadata)"
    elif ip.is_private:
        kind = "a private"
    elif ip.is_multicast:
        kind = "a multicast"
    elif not ip.is_global:
        kind = "a non-public (reserved or shared)"
    else:
        return None
    return (
        f"{address} is {kind} address; callbacks to it are refused unless the operator allows it "
        "with NUMGATE_CALLBACK_ALLOW"
    )


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return False
    return True


class GuardedResolver(ThreadedResolver):
    def __init__(self, allow: Sequence[Network]) -> None:
        super().__init__()
        self._allow = tuple(allow)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[Any]:
        results = await super().resolve(host, port, family)
        for r in results:
            reason = refusal(r["host"], self._allow)
            if reason is not None:
                raise CallbackRefused(f"{host} resolves to {reason}")
        return results
