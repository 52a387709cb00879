"""The limiter's timing logic, on a fake clock: no test here sleeps."""

from __future__ import annotations

import itertools

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


def starts(limiter: RateLimiter, clock: FakeClock, count: int, work: float = 0.0) -> list[float]:
    times = []
    for _ in range(count):
        limiter.acquire()
        times.append(clock.now)
        clock.now += work
    return times


def most_in_any_second(times: list[float]) -> int:
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


def test_first_request_waits_out_a_crashed_predecessors_last_second() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    assert starts(limiter, clock, 1) == [101.0]


def test_no_one_second_window_holds_more_than_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep, startup_quiet=0)
    times = starts(limiter, clock, 200)
    assert most_in_any_second(times) == 10
    # ...and the budget is used: 200 starts take 200 intervals, not more.
    assert times[-1] - times[0] == pytest.approx(199 * 1.02 / 10)


def test_slow_responses_cost_no_extra_wait() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep, startup_quiet=0)
    starts(limiter, clock, 20, work=0.25)
    assert clock.slept == []


def test_fast_responses_are_spaced_by_start_not_by_finish() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock, sleep=clock.sleep, startup_quiet=0)
    times = starts(limiter, clock, 3, work=0.05)
    assert [round(b - a, 6) for a, b in itertools.pairwise(times)] == [0.204, 0.204]


def test_a_pause_holds_every_request_until_its_deadline() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep, startup_quiet=0)
    limiter.acquire()
    limiter.pause_for(7.5)
    limiter.acquire()
    assert clock.now == pytest.approx(107.5)


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)
