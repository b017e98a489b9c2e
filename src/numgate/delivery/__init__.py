"""Callback outbox: signing, the outbound URL guard, the retry schedule and the delivery log."""
