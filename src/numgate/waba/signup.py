"""Short-lived sign-up tokens: an integrator's ``login`` hands one to its customer, whose browser
opens numgate's sign-up page with it to attach a number to one of the integrator's apps.

A token is the vault's authenticated encryption of ``{account, expiry}``: nothing to store,
nothing to forge, unreadable to the customer."""

from __future__ import annotations

import json
import secrets

from numgate.clock import Clock
from numgate.errors import ConfigurationError, InvalidParameter
from numgate.vault import Vault

TOKEN_LIFETIME_MS = 30 * 60_000


class SignupTokens:
    def __init__(self, vault: Vault, clock: Clock, lifetime_ms: int = TOKEN_LIFETIME_MS) -> None:
        self._vault = vault
        self._clock = clock
        self.lifetime_ms = lifetime_ms

    def issue(self, account_id: int) -> str:
        payload = {
            "a": account_id,
            "exp": self._clock.time_ms() + self.lifetime_ms,
            "n": secrets.token_hex(4),
        }
        return self._vault.encrypt(json.dumps(payload))

    def account_of(self, token: str) -> int:
        """The integrator account behind a token; InvalidParameter if forged or expired."""
        try:
            payload = json.loads(self._vault.decrypt(token))
        except (ConfigurationError, ValueError):
            raise InvalidParameter("token", "this sign-up link is not valid: ask for a new one") from None
        if self._clock.time_ms() > int(payload["exp"]):
            raise InvalidParameter("token", "this sign-up link has expired: ask for a new one")
        return int(payload["a"])
