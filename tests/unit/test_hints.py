"""The hint queue and budget, on an injected clock: dedupe, the bound, the retry schedule, the
share of requests hints may take."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from archiver.hints import Hint, HintBudget, HintOutcome, HintQueue, parse_hint
from archiver.models import Window

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def hint(uuid: str, received_at: datetime = T0) -> Hint:
    return Hint(uuid, T0 - timedelta(minutes=2), 60.0, 1, received_at)


def seconds(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


def counting() -> tuple[Counter[HintOutcome], HintQueue]:
    seen: Counter[HintOutcome] = Counter()
    return seen, HintQueue(capacity=4, memory=3, count=lambda o: seen.update([o]))


def test_a_hint_is_retried_10s_30s_1m_2m_and_5m_after_its_first_try_then_expires() -> None:
    seen, queue = counting()
    queue.offer(hint("a"))
    tries = []
    now = seconds(3)  # the worker first gets to it 3 s after it arrived
    while (taken := queue.due(now)) is not None:
        tries.append((now - seconds(3)).total_seconds())
        due = queue.retry_later(taken, now)
        if due is None:
            break
        assert queue.due(due - timedelta(milliseconds=1)) is None  # not a moment early
        now = due
    assert tries == [0, 10, 30, 60, 120, 300]
    assert seen[HintOutcome.EXPIRED] == 1 and len(queue) == 0
    assert queue.offer(hint("a")) is HintOutcome.DUPLICATE  # expired is remembered


def test_a_busy_worker_goes_on_to_the_next_retry_instead_of_trying_twice_in_a_row() -> None:
    _, queue = counting()
    queue.offer(hint("a"))
    taken = queue.due(T0)
    assert taken is not None
    assert queue.retry_later(taken, seconds(65)) == seconds(120)  # 10 s, 30 s, 60 s passed
    assert queue.due(seconds(120)) == taken
    assert queue.retry_later(taken, seconds(301)) is None  # past the last one


def test_done_forgets_a_hint_and_remembers_its_uuid_for_a_while() -> None:
    seen, queue = counting()
    for uuid in "abcd":
        queue.offer(hint(uuid))
    for _ in "abcd":
        taken = queue.due(T0)
        assert taken is not None
        queue.done(taken)
    assert len(queue) == 0
    assert queue.offer(hint("d")) is HintOutcome.DUPLICATE
    assert queue.offer(hint("a")) is HintOutcome.ACCEPTED  # memory=3: the oldest was forgotten
    assert seen == {HintOutcome.ACCEPTED: 5, HintOutcome.DUPLICATE: 1}


def test_the_oldest_is_dropped_when_full_but_never_the_one_in_flight() -> None:
    seen, queue = counting()
    for uuid in "abcd":
        queue.offer(hint(uuid, seconds(ord(uuid))))
    in_flight = queue.due(seconds(200))
    assert in_flight is not None and in_flight.uuid == "a"
    queue.offer(hint("e", seconds(300)))
    queue.offer(hint("f", seconds(301)))
    assert seen[HintOutcome.DROPPED_FULL] == 2 and len(queue) == 4
    queue.done(in_flight)
    left = []
    while (taken := queue.due(seconds(400))) is not None:
        left.append(taken.uuid)
    assert left == ["d", "e", "f"]  # b and c, the oldest waiting, went
    assert queue.offer(hint("b")) is HintOutcome.ACCEPTED  # a dropped hint is not remembered


def test_due_gives_the_longest_due_first_and_a_waiting_retry_waits() -> None:
    _, queue = counting()
    queue.offer(hint("a", seconds(0)))
    first = queue.due(seconds(0))
    assert first is not None
    queue.retry_later(first, seconds(0))  # due again at 10 s
    queue.offer(hint("b", seconds(5)))
    queue.offer(hint("c", seconds(5)))
    order = [queue.due(seconds(20)) for _ in range(4)]
    assert [h.uuid if h else None for h in order] == ["b", "c", "a", None]  # all in flight


def test_the_queue_holds_its_bound_and_counts_every_offer_from_many_threads() -> None:
    seen: Counter[HintOutcome] = Counter()
    lock = threading.Lock()

    def count(outcome: HintOutcome) -> None:
        with lock:
            seen[outcome] += 1

    queue = HintQueue(capacity=100, count=count)

    def offer(thread: int) -> None:
        for i in range(500):
            queue.offer(hint(f"u{i % 300}-{thread % 4}"))  # 1,200 distinct uuids, each 2-3 times

    threads = [threading.Thread(target=offer, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(queue) == 100
    assert seen[HintOutcome.ACCEPTED] + seen[HintOutcome.DUPLICATE] == 8 * 500
    assert seen[HintOutcome.ACCEPTED] - seen[HintOutcome.DROPPED_FULL] == 100


def test_while_a_pass_runs_hints_take_at_most_a_fifth_of_the_requests() -> None:
    budget = HintBudget(share=0.2, burst=4)
    pass_requests = hint_requests = 0
    with budget.pass_running():
        for _ in range(1000):  # a pass catching up, a flood of hints waiting at every turn
            budget.charge_pass()
            pass_requests += 1
            while budget.allows_hint():
                budget.charge_hint(3)  # two list calls and a download
                hint_requests += 3
    assert hint_requests <= 0.25 * pass_requests + 4 + 3
    assert hint_requests >= 0.25 * pass_requests - 3  # the share is given, not just capped
    assert budget.allows_hint()  # between passes, only the rate limiter paces hints
    budget.charge_hint(1000)
    assert budget.allows_hint()


def test_a_new_pass_starts_with_a_burst_not_a_debt() -> None:
    budget = HintBudget(share=0.2, burst=4)
    with budget.pass_running():
        budget.charge_hint(50)
        assert not budget.allows_hint()
    with budget.pass_running():
        assert budget.allows_hint()


def test_a_hint_lists_two_seconds_around_its_start() -> None:
    parsed = parse_hint(b'{"uuid": "x", "startedAt": "2026-11-30T07:58:00.500Z"}', T0)
    assert parsed.window == Window(
        datetime(2026, 11, 30, 7, 57, 59, 500000, tzinfo=UTC),
        datetime(2026, 11, 30, 7, 58, 1, 500000, tzinfo=UTC),
    )


@pytest.mark.parametrize(("share", "burst"), [(0, 4), (1, 4), (-0.5, 4)])
def test_a_budget_share_must_be_a_fraction(share: float, burst: float) -> None:
    with pytest.raises(ValueError):
        HintBudget(share, burst)


def test_a_hint_with_a_duration_lists_on_to_the_call_s_end() -> None:
    body = b'{"uuid": "x", "startedAt": "2026-11-30T07:58:00Z", "durationSeconds": 300}'
    assert parse_hint(body, T0).window == Window(
        datetime(2026, 11, 30, 7, 57, 59, tzinfo=UTC),
        datetime(2026, 11, 30, 8, 3, 1, tzinfo=UTC),
    )


def test_a_forged_duration_buys_no_wider_window_than_four_hours() -> None:
    body = b'{"uuid": "x", "startedAt": "2026-11-30T07:58:00Z", "durationSeconds": 2678400}'
    window = parse_hint(body, T0).window
    assert window.end - window.start == timedelta(hours=4, seconds=2)
