"""A receiver's pace: slow start, additive growth (past a handful of connections one step per
STEP_EVERY_S), halving on strain (once a round), pauses with back-off after failures in a row —
over an injected clock."""

from __future__ import annotations

from numgate.delivery.pacing import CEILING_S, FREE_UP_TO, PAUSE_AFTER, START, STEP_EVERY_S, Pacer, Result


def run_round(p: Pacer, now: float, result: Result = Result.OK, ms: float = 10.0) -> int:
    """Start as many as there is room for, then end them all; how many ran."""
    n = p.room(now)
    for _ in range(n):
        p.started()
    for _ in range(n):
        p.finished(result, ms, now)
    return n


def grow(p: Pacer, rounds: int, start: float = 0.0, ms: float = 10.0) -> float:
    """Rounds of answers, one every STEP_EVERY_S seconds from ``start``; the time after them."""
    for k in range(rounds):
        run_round(p, start + k * STEP_EVERY_S, ms=ms)
    return start + rounds * STEP_EVERY_S


def test_slow_start_then_additive_growth_up_to_the_maximum() -> None:
    p = Pacer(max_limit=64, now=0.0)
    assert p.room(0.0) == START
    sizes = [run_round(p, t * 0.01) for t in range(4)]
    assert sizes == [2, 4, 4, 4]  # doubles each round up to a handful, then waits
    assert p.limit == FREE_UP_TO
    limits = []
    for k in range(1, 6):  # past a handful: one doubling per STEP_EVERY_S
        run_round(p, k * STEP_EVERY_S)
        limits.append(p.limit)
    assert limits == [8, 16, 32, 64, 64]  # never past NUMGATE_CALLBACK_CONCURRENCY
    assert p.room(10.0) == 64


def test_a_fast_receiver_does_not_outgrow_the_second_a_dropped_connection_takes_to_show() -> None:
    """A 1 ms receiver answers hundreds of rounds in the second before the kernel retries a
    connection its full listen backlog dropped: the limit grows one step in that time, no more."""
    p = Pacer(max_limit=64, now=0.0)
    for t in range(1000):
        run_round(p, t * 0.001, ms=1.0)
    assert p.limit == FREE_UP_TO
    for t in range(1000):
        run_round(p, 1.0 + t * 0.001, ms=1.0)
    assert p.limit == 2 * FREE_UP_TO  # one step, at 1.5 s


def test_strain_halves_once_a_round_and_growth_turns_additive() -> None:
    p = Pacer(max_limit=64, now=0.0)
    now = grow(p, 4)
    assert p.limit == 32
    for _ in range(3):  # three time-outs in one round: one signal
        p.started()
        p.finished(Result.STRAIN, 10.0, now)
    assert p.limit == 16
    before = p.limit
    run_round(p, now + STEP_EVERY_S)
    assert p.limit == before + 1  # now one more connection a step, not double


def test_an_answer_far_slower_than_usual_is_strain() -> None:
    p = Pacer(max_limit=64, now=0.0)
    for t in range(4):
        run_round(p, t * 0.01, ms=5.0)
    limit = p.limit
    p.started()
    p.finished(Result.OK, 1000.0, 1.0)  # a dropped connection the kernel retried a second later
    assert p.limit == limit / 2


def test_failures_in_a_row_pause_with_growing_back_off() -> None:
    p = Pacer(max_limit=8, now=0.0)
    waits = []
    now = 0.0
    for _ in range(4):
        for _ in range(PAUSE_AFTER):
            while p.room(now) == 0:
                now += 0.01
            p.started()
            p.finished(Result.FAILED, 10.0, now)
        assert p.paused(now) and p.room(now) == 0
        waits.append(round(p.paused_until - now, 3))
        now = p.paused_until
        assert p.room(now) == 1  # then one probe at a time
    assert waits == [1.0, 2.0, 4.0, 8.0]
    p.started()
    p.finished(Result.OK, 10.0, now)  # the receiver is back: no more back-off
    assert p.pauses == 0 and not p.paused(now)


def test_state_reports_rate_and_latency() -> None:
    p = Pacer(max_limit=4, now=0.0)
    for ms in (10.0, 20.0, 30.0):
        p.started()
        p.finished(Result.OK, ms, 0.0)
    p.started()
    p.finished(Result.FAILED, 5.0, 0.0)
    s = p.state(0.0)
    assert (s.success_rate, s.p50_ms, s.attempts, s.in_flight) == (0.75, 20.0, 4, 0)


def test_a_strained_level_becomes_a_ceiling_for_a_while() -> None:
    p = Pacer(max_limit=64, now=0.0)
    now = grow(p, 4, ms=2.0)  # limit 32
    levels = [p.started() for _ in range(8)]
    for level in levels[:7]:
        p.finished(Result.OK, 2.0, now, level=level)
    # the eighth connection at once waited a second: the receiver takes seven
    p.finished(Result.OK, 1000.0, now, level=levels[7])
    assert p.ceiling == 7
    grow(p, 10, start=now + 0.01, ms=2.0)
    assert p.limit <= 7  # it no longer grows into the second-long stall
    grow(p, 10, start=now + CEILING_S + 1, ms=2.0)
    assert p.limit > 7  # later it probes above it again


def test_late_but_delivered_answers_never_pause_the_receiver() -> None:
    p = Pacer(max_limit=64, now=0.0)
    for t in range(5):
        run_round(p, t * 0.01, ms=2.0)
    for _ in range(3 * PAUSE_AFTER):
        level = p.started()
        p.finished(Result.OK, 1500.0, 1.0, level=level)
    assert p.room(1.0) > 0 and p.state(1.0).paused_for_s == 0


def test_a_burst_of_failures_in_flight_together_is_one_pause() -> None:
    p = Pacer(max_limit=64, now=0.0)
    for t in range(5):
        run_round(p, t * 0.01)
    levels = [p.started() for _ in range(28)]
    for level in levels:  # 28 refused at once
        p.finished(Result.STRAIN, 5.0, 1.0, level=level)
    assert p.state(1.0).paused_for_s == 1.0  # the first pause, not the fifth doubling
