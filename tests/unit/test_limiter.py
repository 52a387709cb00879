"""The limiter's timing logic, on a fake clock: no test here sleeps."""

from __future__ import annotations

import itertools
import random

import pytest

from archiver.limiter import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def run(
    limiter: RateLimiter, clock: FakeClock, count: int, latency: float = 0.0, rest: float = 0.0
) -> list[float]:
    """Serial requests: start, `latency` until the response arrives, `rest` of body and work."""
    starts = []
    for _ in range(count):
        limiter.acquire()
        starts.append(clock.now)
        clock.now += latency
        limiter.arrived()
        clock.now += rest
    return starts


def most_in_any_second(times: list[float]) -> int:
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


def limiter_on(clock: FakeClock, rate: float = 10, **options: float) -> RateLimiter:
    return RateLimiter(rate, clock=clock, sleep=clock.sleep, **{"startup_quiet": 0.0, **options})


def test_first_request_waits_out_a_crashed_predecessors_last_second() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    assert run(limiter, clock, 1) == [101.0]


def test_no_one_second_window_holds_more_than_the_rate_and_the_budget_is_used() -> None:
    clock = FakeClock()
    starts = run(limiter_on(clock), clock, 200)
    assert most_in_any_second(starts) == 10
    assert 200 / (starts[-1] - starts[0]) > 9.9


def test_with_latency_the_window_counts_from_the_responses() -> None:
    clock = FakeClock()
    starts = run(limiter_on(clock), clock, 200, latency=0.03)
    # Each start is a second (plus margin) after the response of the request ten before it.
    assert all(b - a >= 1.035 - 1e-9 for a, b in zip(starts, starts[10:], strict=False))
    assert 199 / (starts[-1] - starts[0]) > 9.5


def test_a_late_arrival_cannot_crowd_a_second_at_the_server() -> None:
    """Arrivals are only bounded by the responses: whatever each one's delay within that bound,
    no one-second window at the server holds more than the rate."""
    rng = random.Random(7)
    clock = FakeClock()
    limiter = limiter_on(clock)
    arrivals = []
    for _ in range(300):
        limiter.acquire()
        latency = rng.choice([0.001, 0.002, 0.08, 0.3])
        arrivals.append(clock.now + latency * rng.random())  # anywhere before the response
        clock.now += latency
        limiter.arrived()
    assert most_in_any_second(sorted(arrivals)) <= 10


def test_slow_responses_cost_no_extra_wait() -> None:
    clock = FakeClock()
    run(limiter_on(clock), clock, 20, latency=0.05, rest=0.25)
    assert clock.slept == []


def test_fast_responses_are_spaced_by_start_not_by_finish() -> None:
    clock = FakeClock()
    starts = run(limiter_on(clock, rate=5), clock, 3, rest=0.05)
    assert [round(b - a, 6) for a, b in itertools.pairwise(starts)] == [0.2, 0.2]


def test_a_pause_holds_every_request_until_its_deadline() -> None:
    clock = FakeClock()
    limiter = limiter_on(clock)
    run(limiter, clock, 1)
    limiter.pause_for(7.5)
    run(limiter, clock, 1)
    assert clock.now == pytest.approx(107.5)


def test_a_fractional_rate_allows_its_whole_part_per_second() -> None:
    clock = FakeClock()
    starts = run(limiter_on(clock, rate=2.5), clock, 30)
    assert most_in_any_second(starts) == 2


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)
