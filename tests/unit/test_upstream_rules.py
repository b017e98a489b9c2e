"""Pure rules of the upstream layer: the vendors' signatures against their published vectors,
the health trip and cool-down, and what the cache keeps."""

from __future__ import annotations

from numgate.numbers.providers import Dial, DialResponse, Live, Tri
from numgate.upstreams.adapters.hlr_lookups import digest
from numgate.upstreams.adapters.twilio_voice import signature
from numgate.upstreams.cache import decode, encode, worth_keeping
from numgate.upstreams.health import COOL_FIRST_S, COOL_MAX_S, TRIP_AFTER, Health

Y, N, U = Tri.YES, Tri.NO, Tri.UNKNOWN


def test_twilio_signature_matches_the_published_vector() -> None:
    params = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ]
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert signature("12345", url, list(reversed(params))) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert signature("12346", url, params) != "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_hlr_lookups_digest_matches_the_published_vector() -> None:
    got = digest("hlr-secret-value", "/hlr-lookup", "1790000000", "post", b'{"msisdn":"+491788735000"}')
    assert got == "997fc8db45a0ac1c0e8ecc70bb2de21de9967b3c3c8ae50803aece5962aec6c8"


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_health_trips_after_failures_in_a_row_and_cools_down_longer_each_time() -> None:
    clock = Clock()
    h = Health(clock)
    for _ in range(TRIP_AFTER - 1):
        h.record(False, 10.0)
    assert not h.cooling()
    h.record(False, 10.0)
    assert h.cooling() and h.snapshot()["cooling_for_s"] == COOL_FIRST_S
    clock.t = COOL_FIRST_S + 0.1
    assert not h.cooling()  # a probe may go
    h.record(False, 10.0)  # and fails: twice as long
    assert h.snapshot()["cooling_for_s"] == 2 * COOL_FIRST_S
    clock.t += 2 * COOL_FIRST_S + 0.1
    h.record(True, 5.0)  # an answer clears it all
    assert not h.cooling() and h.failures_in_a_row == 0
    for _ in range(50):
        h.record(False, 10.0)
        clock.t += 1000
    assert h.snapshot()["cooling_for_s"] <= COOL_MAX_S


def test_one_failed_batch_counts_each_number() -> None:
    h = Health(Clock())
    h.record(False, 100.0, n=TRIP_AFTER)  # one call for five numbers failed
    assert h.cooling()


def test_the_cache_keeps_what_was_learnt_and_round_trips_it() -> None:
    live = Live(Y, N, U, Y, "Airtel Nigeria", "621", "20")
    dial = Dial(Y, N, DialResponse.VOICEMAIL)
    assert decode(encode(live)) == live and decode(encode(dial)) == dial
    assert worth_keeping(live) and worth_keeping(dial)
    assert not worth_keeping(Live(U, U, U, U, "", "", ""))  # nothing learnt: asked again next time
    assert not worth_keeping(Dial(U, N, DialResponse.OTHERS))
