"""Checking at the pace of a receiver that keeps up.

A chunk's callbacks that their receiver has no room for in this process's delivery worker wait in
the table, and are claimed back from it (a second write each) when it has. The check worker
outruns one receiver by far: without a hold-back, measured on PostgreSQL, 87 % of a 100,000-number
run's callbacks went that way. So an account whose callbacks waited for a receiver is checked
further only as that receiver makes room — while it keeps up (answered each of its last 200
callbacks, not paused). A receiver that fails or is paused holds nothing back, and one that stops
answering only until its callbacks time out: its account's numbers are then checked at full speed
and their results wait in the table (and in the pull feed) for it.

Only the account's own checking waits: other accounts are claimed as before (the check worker
claims per account).
"""

from __future__ import annotations

from collections.abc import Callable

#: a held-back account's checking resumes once its receivers have room for this many callbacks
#: (or for its whole share of a chunk, if smaller): fewer would make many small claims
RESUME_AT = 100

#: a receiver's room for more callbacks while it keeps up; None while it does not
RoomWhileKeepingUp = Callable[[int], "int | None"]


class HoldBack:
    def __init__(self) -> None:
        #: account id → the receivers its checking waits for
        self._waits_for: dict[int, set[int]] = {}

    def waited(self, waiting: dict[int, set[int]]) -> None:
        """Callbacks of these accounts waited in the table for these receivers' room."""
        for account_id, receivers in waiting.items():
            self._waits_for.setdefault(account_id, set()).update(receivers)

    def share(self, account_id: int, share: int, room: RoomWhileKeepingUp | None) -> int:
        """How many of the account's pending numbers to check now, at most ``share``: fewer, or
        none, while receivers that had no room for its callbacks keep up and still have little
        room. A receiver not keeping up (or no delivery worker here: ``room`` None) ends it."""
        receivers = self._waits_for.get(account_id)
        if not receivers:
            return share
        rooms = [room(r) for r in receivers] if room is not None else [None]
        known = [r for r in rooms if r is not None]
        if len(known) < len(rooms):  # one of them does not keep up (or nothing delivers here)
            del self._waits_for[account_id]
            return share
        least = min(known)
        return min(share, least) if least >= min(share, RESUME_AT) else 0
