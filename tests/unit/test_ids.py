"""Delivery ids: 32 hex digits, unique, and in the order they were drawn (time first)."""

from __future__ import annotations

import re

from numgate.ids import new_delivery_ids


def test_delivery_ids_are_unique_hex_and_sort_by_time() -> None:
    first = new_delivery_ids(1000, 1_796_000_000_000)
    later = new_delivery_ids(1000, 1_796_000_000_001)
    assert all(re.fullmatch(r"[0-9a-f]{32}", u) for u in first + later)
    assert len(set(first + later)) == 2000
    assert max(first) < min(later)
    assert {u[:12] for u in first} == {f"{1_796_000_000_000:012x}"}
