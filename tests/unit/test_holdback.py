"""Which of an account's numbers the check worker checks now, while a receiver that had no room
for its callbacks keeps up (``delivery/holdback.py``)."""

from __future__ import annotations

from numgate.delivery.holdback import RESUME_AT, HoldBack, RoomWhileKeepingUp


def rooms(**by_receiver: int | None) -> RoomWhileKeepingUp:
    table = {int(k[1:]): v for k, v in by_receiver.items()}
    return lambda receiver_id: table[receiver_id]


def test_an_account_no_receiver_waited_for_gets_its_share() -> None:
    hb = HoldBack()
    hb.waited({1: {10}})
    assert hb.share(2, 250, rooms(r10=0)) == 250  # account 2 waited for nobody


def test_a_receiver_keeping_up_paces_its_account() -> None:
    hb = HoldBack()
    hb.waited({1: {10}})
    assert hb.share(1, 250, rooms(r10=0)) == 0  # no room: wait
    assert hb.share(1, 250, rooms(r10=RESUME_AT - 1)) == 0  # too little to be worth a claim
    assert hb.share(1, 250, rooms(r10=RESUME_AT)) == RESUME_AT  # what it has room for
    assert hb.share(1, 250, rooms(r10=1000)) == 250  # never more than the share
    assert hb.share(1, 40, rooms(r10=40)) == 40  # a share smaller than RESUME_AT goes at once


def test_the_receiver_with_the_least_room_sets_the_pace() -> None:
    hb = HoldBack()
    hb.waited({1: {10}})
    hb.waited({1: {11}})
    assert hb.share(1, 250, rooms(r10=1000, r11=150)) == 150
    assert hb.share(1, 250, rooms(r10=1000, r11=0)) == 0


def test_a_receiver_not_keeping_up_ends_the_hold_back() -> None:
    hb = HoldBack()
    hb.waited({1: {10, 11}})
    assert hb.share(1, 250, rooms(r10=0, r11=None)) == 250  # r11 fails or is paused
    assert hb.share(1, 250, rooms(r10=0, r11=0)) == 250  # forgotten until its callbacks wait again
    hb.waited({1: {10}})
    assert hb.share(1, 250, rooms(r10=0)) == 0


def test_without_a_delivery_worker_in_the_process_nothing_is_held_back() -> None:
    hb = HoldBack()
    hb.waited({1: {10}})
    assert hb.share(1, 250, None) == 250
