"""The per-number rules, with an injected clock: cooldown, request cap, code lifetime, wrong
attempts, 14-day verification, and the 10 (de)registrations per moving 72 hours."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alibabacloud_cams20200606 import models as m
from alibabacloud_tea_openapi.exceptions import ClientException

from conftest import RunningServer, add_number, cams_client, make_tenant, outbox_code
from numgate.client import NxClient
from numgate.clock import FixedClock
from numgate.waba.service import _Attempt, _Used

PHONE = "5511987654321"


class World:
    def __init__(self, srv: RunningServer, clock: FixedClock) -> None:
        self.srv, self.clock = srv, clock
        t = make_tenant(srv)
        self.tenant = t
        self.nx = NxClient(srv.base_url, t.access_key, t.access_secret, now_ms=clock.time_ms)
        add_number(srv, t.appkey, PHONE)

    def call(self, name: str, **body: Any) -> dict[str, Any]:
        # a client's clock moves between requests (an identical signed request is a replay)
        self.clock.advance(milliseconds=1)
        return self.nx.post(f"/api/wa/integrator/embedded/register/{name}", body)

    def ok(self, name: str, **body: Any) -> Any:
        reply = self.call(name, **body)
        assert reply["code"] == 0, reply
        return reply["data"]

    def fails(self, name: str, **body: Any) -> str:
        reply = self.call(name, **body)
        assert reply["code"] == -1, reply
        return str(reply["message"])

    def verify(self) -> None:
        self.ok("getCode", phone_number=PHONE, method="sms")
        self.ok("checkCode", phone_number=PHONE, code=outbox_code(self.srv, PHONE))

    def row(self) -> dict[str, Any]:
        [row] = self.ok("phoneList", appkey=self.tenant.appkey)
        return dict(row)


def world_at(make_server: Any, start: datetime) -> Iterator[World]:
    clock = FixedClock(start)
    w = World(make_server(clock=clock), clock)
    yield w
    w.nx.close()


@pytest.fixture
def world(make_server: Any) -> Iterator[World]:
    yield from world_at(make_server, datetime.now(UTC))


def test_cooldown_between_code_requests(world: World) -> None:
    world.ok("getCode", phone_number=PHONE, method="sms")
    world.clock.advance(seconds=59)
    assert "wait 1 s" in world.fails("getCode", phone_number=PHONE, method="sms")
    world.clock.advance(seconds=1)
    world.ok("getCode", phone_number=PHONE, method="voice")


def test_code_requests_per_hour(world: World) -> None:
    for _ in range(5):
        world.ok("getCode", phone_number=PHONE, method="sms")
        world.clock.advance(seconds=61)
    msg = world.fails("getCode", phone_number=PHONE, method="sms")
    assert "5 codes were requested" in msg and "the limit is 5" in msg
    world.clock.advance(minutes=60 - 5 * 61 / 60)  # the first request leaves the window
    world.ok("getCode", phone_number=PHONE, method="sms")


def test_code_lifetime(world: World) -> None:
    world.ok("getCode", phone_number=PHONE, method="sms")
    code = outbox_code(world.srv, PHONE)
    world.clock.advance(minutes=9, seconds=59)
    world.clock.advance(seconds=1)
    assert "has expired" in world.fails("checkCode", phone_number=PHONE, code=code)
    world.ok("getCode", phone_number=PHONE, method="sms")
    world.clock.advance(minutes=9, seconds=59)
    world.ok("checkCode", phone_number=PHONE, code=outbox_code(world.srv, PHONE))


def test_wrong_attempts_per_code(world: World) -> None:
    world.ok("getCode", phone_number=PHONE, method="sms")
    code = outbox_code(world.srv, PHONE)
    wrong = "000000" if code != "000000" else "111111"
    for left in (4, 3, 2, 1):
        assert f"{left} attempt(s) left" in world.fails("checkCode", phone_number=PHONE, code=wrong)
    assert "no attempts left" in world.fails("checkCode", phone_number=PHONE, code=wrong)
    # exhausted: even the right code is refused until a new one is requested
    assert "wrong codes were entered" in world.fails("checkCode", phone_number=PHONE, code=code)
    world.clock.advance(seconds=60)
    world.verify()
    assert world.row()["code_verification_status"] == "VERIFIED"


def test_wrong_codes_sent_at_once_each_take_their_own_attempt(world: World) -> None:
    """Concurrent checks of one number's code (taken together in one round trip on PostgreSQL)
    still count one attempt each."""
    world.ok("getCode", phone_number=PHONE, method="sms")
    code = outbox_code(world.srv, PHONE)
    wrong = [w for w in (f"{i:06d}" for i in range(1, 8)) if w != code][:5]
    with ThreadPoolExecutor(5) as pool:
        said = list(pool.map(lambda w: world.fails("checkCode", phone_number=PHONE, code=w), wrong))
    left = sorted(m.split(";")[1].strip() for m in said)
    assert left == [f"{n} attempt(s) left for this code" for n in (1, 2, 3, 4)] + [
        "no attempts left: request a new code"
    ]
    assert "wrong codes were entered" in world.fails("checkCode", phone_number=PHONE, code=code)


def test_a_code_used_and_a_new_attempt_on_it_in_one_batch(world: World) -> None:
    """(PostgreSQL) A code checked right is marked used in the statement that takes the next
    attempts; an attempt on the same number in that batch waits a round, and so finds the code
    used (no attempt taken), as it would have in a statement of its own."""
    if not world.srv.settings.database_url.startswith("postgresql"):
        pytest.skip("SQLite takes each attempt in its own write (no batched code writes)")
    world.ok("getCode", phone_number=PHONE, method="sms")
    account_id = world.tenant.account_id

    async def batch(core: Any) -> tuple[Any, Any]:
        waba = core.waba
        [first] = await waba._code_writes([_Attempt(PHONE, account_id, None)])
        assert first is not None and first["attempts"] == 1
        used = _Used(PHONE, first["request_id"], first["number_id"])
        # two right checks of the code at once, and a third check behind them
        return await waba._code_writes([used, used, _Attempt(PHONE, account_id, None)])

    assert world.srv.call(batch) == [None, None, None]
    assert world.row()["code_verification_status"] == "VERIFIED"
    assert "no verification code is pending" in world.fails(
        "checkCode", phone_number=PHONE, code=outbox_code(world.srv, PHONE)
    )


def test_a_code_with_a_digit_too_many_is_wrong(world: World) -> None:
    world.ok("getCode", phone_number=PHONE, method="sms")
    code = outbox_code(world.srv, PHONE)
    assert "is wrong" in world.fails("checkCode", phone_number=PHONE, code=code + "7")
    world.ok("checkCode", phone_number=PHONE, code=code)


def test_verification_lasts_14_days_on_both_doors(make_server: Any) -> None:
    real_now = datetime.now(UTC)
    for w in world_at(make_server, real_now - timedelta(days=14, minutes=1)):
        w.verify()
        w.clock.advance(days=14, seconds=-60)  # a minute before expiry; near real time for CAMS dates
        assert w.row()["code_verification_status"] == "VERIFIED"
        sdk = cams_client(w.srv, w.tenant.access_key, w.tenant.access_secret)
        req = m.GetPhoneNumberVerificationStatusRequest(cust_space_id=w.tenant.appkey, phone_number=PHONE)
        assert sdk.get_phone_number_verification_status(req).body.data.code_verification_status == "VERIFIED"
        w.clock.advance(minutes=1)
        assert sdk.get_phone_number_verification_status(req).body.data.code_verification_status == "EXPIRED"
        assert w.row()["code_verification_status"] == "NOT_VERIFIED"  # NXCloud has no EXPIRED
        assert "verification of" in w.fails("createClient", phone_number=PHONE)
        w.clock.advance(seconds=60)
        w.verify()
        w.ok("createClient", phone_number=PHONE)


def test_ten_registrations_per_moving_72_hours(world: World) -> None:
    world.verify()
    sdk = cams_client(world.srv, world.tenant.access_key, world.tenant.access_secret)
    dereg = m.ChatappPhoneNumberDeregisterRequest(cust_space_id=world.tenant.appkey, phone_number=PHONE)
    for _ in range(5):
        world.ok("createClient", phone_number=PHONE)
        world.clock.advance(seconds=30)
        sdk.chatapp_phone_number_deregister(dereg)
        world.clock.advance(seconds=30)
    msg = world.fails("createClient", phone_number=PHONE)
    assert "10 times in the last 72 hours" in msg
    with pytest.raises(ClientException) as info:
        sdk.chatapp_phone_number_register(
            m.ChatappPhoneNumberRegisterRequest(cust_space_id=world.tenant.appkey, phone_number=PHONE)
        )
    assert info.value.code == "PhoneNumber.RegisterLimitExceeded"
    world.clock.advance(hours=72, minutes=-5, seconds=-1)  # the first event is still inside
    assert "10 times" in world.fails("createClient", phone_number=PHONE)
    world.clock.advance(seconds=1)  # the window moves: the first event has left it, one slot is free
    world.ok("createClient", phone_number=PHONE)
    assert world.row()["register_status"] == 5


def test_the_simulator_keeps_the_pin_as_a_slow_salted_hash(world: World) -> None:
    """The two-step PIN the simulator holds (as Meta would) is an argon2 hash, never a plain or
    fast digest of six digits."""
    from sqlalchemy import select

    from numgate.db.tables import sandbox_phones

    world.verify()
    world.ok("createClient", phone_number=PHONE)

    async def stored(core: Any) -> str:
        async with core.db.read() as tx:
            return str(
                await tx.scalar(select(sandbox_phones.c.pin_hash).where(sandbox_phones.c.phone == PHONE))
            )

    pin_hash = world.srv.call(stored)
    assert pin_hash.startswith("$argon2id$") and "$m=" not in pin_hash[:10]
    assert len({world.srv.call(stored) for _ in range(2)}) == 1  # kept, not made again on reads
