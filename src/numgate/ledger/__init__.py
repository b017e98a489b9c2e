"""Prices and the append-only ledger: top-ups, reservations, charges and releases."""
