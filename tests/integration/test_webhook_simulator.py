"""The simulator's end-of-call webhooks into the real receiver over loopback: each live call
becomes one hint naming its conversation, its start, its duration and how many recordings it
has; a repeated webhook is a duplicate, not a second hint."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from archiver.hints import Hint, HintOutcome, HintQueue
from archiver.simulator import Simulator, SimulatorOptions
from archiver.webhook import Limits, WebhookReceiver

START = datetime(2024, 1, 1, tzinfo=UTC)
END = START + timedelta(hours=4)
STARTED = START + timedelta(hours=2)  # when the simulator starts: about half the calls are live
AFTER = END + timedelta(hours=3)  # every call has ended
TOKEN = "simulator-token-0123456789"
WAIT = 20.0


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Counted:
    """The outcomes the receiver and its queue count, and a wait on their total."""

    def __init__(self) -> None:
        self.seen: Counter[HintOutcome] = Counter()
        self._changed = threading.Condition()

    def __call__(self, outcome: HintOutcome) -> None:
        with self._changed:
            self.seen[outcome] += 1
            self._changed.notify_all()

    def wait_until(self, done: Callable[[Counter[HintOutcome]], bool]) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: done(self.seen), WAIT), self.seen


@pytest.fixture
def receiver() -> Iterator[tuple[WebhookReceiver, HintQueue, Counted]]:
    counted = Counted()
    queue = HintQueue(count=counted)
    # The simulator posts every webhook its clock jump passes at once: the per-address rate
    # is not what this test is about.
    limits = Limits(rate=1000.0, burst=1000.0)
    webhook = WebhookReceiver(("127.0.0.1", 0), TOKEN, queue, count=counted, limits=limits)
    webhook.start()
    yield webhook, queue, counted
    webhook.stop()


def drain(queue: HintQueue) -> list[Hint]:
    hints = []
    while (hint := queue.due(datetime.now(UTC))) is not None:
        hints.append(hint)
    return hints


def test_each_live_call_becomes_one_hint_with_what_the_worker_needs(
    receiver: tuple[WebhookReceiver, HintQueue, Counted],
) -> None:
    webhook, queue, counted = receiver
    clock = FakeClock(STARTED)
    url = f"http://127.0.0.1:{webhook.address[1]}/webhook/{TOKEN}"
    options = SimulatorOptions(
        seed=11,
        start=START,
        end=END,
        rps=1000,
        size=1024,
        clock=clock,
        webhook_url=url,
        webhook_repeat=0.3,
    )
    with Simulator(options) as sim:
        live = sorted(
            (c for c in sim.conversations() if c.ended_at > sim.started_at),
            key=lambda c: (c.ended_at, c.uuid),
        )
        assert len(live) > 5
        clock.now = AFTER
        # The sender counts a repeat before posting it twice, and posts one call at a time.
        counted.wait_until(
            lambda seen: (
                seen[HintOutcome.ACCEPTED] == len(live)
                and seen[HintOutcome.DUPLICATE] == sim.stats()["webhooks"]["repeated"]
            )
        )
        repeated = sim.stats()["webhooks"]["repeated"]
        assert sim.stats()["webhooks"]["failed"] == 0
    assert repeated > 0  # the switch rolled for some: the duplicates below are real
    assert counted.seen == {HintOutcome.ACCEPTED: len(live), HintOutcome.DUPLICATE: repeated}
    hints = drain(queue)
    assert [h.uuid for h in hints] == [c.uuid for c in live]
    for hint, call in zip(hints, live, strict=True):
        assert hint.started_at == call.started_at
        assert hint.recordings == len(call.recording_ids)
        assert hint.duration_seconds == call.entry_at(AFTER).get("durationSeconds")
        assert hint.window.start <= call.started_at < hint.window.end
    assert {h.recordings for h in hints} >= {0, 1}  # missed calls and recorded ones alike
