"""Webhook hints served by the pass's own worker: the real pass, checkpoint and queue, an
in-memory API and bucket, and a clock the test moves (no sleeping)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from archiver.archive import ArchivePass
from archiver.conversations import Conversation
from archiver.errors import ApiUnavailable
from archiver.hint_worker import HintPass, HintWorker
from archiver.hints import Hint, HintBudget, HintOutcome, HintQueue
from archiver.models import RecordingState, Window
from archiver.spool import Spool
from tests.unit.test_archive import NOW, Harness, make_recording


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.checkpoint.close()


P = TypeVar("P", bound=ArchivePass)


class World:
    def __init__(self, h: Harness) -> None:
        self.h = h
        self.counted: list[HintOutcome] = []
        self.observed: list[float] = []
        self.queue = HintQueue(count=self.counted.append)
        self.budget = HintBudget()
        self.worker = HintWorker(
            self.queue,
            self.budget,
            lambda hint: self.new_pass(HintPass).serve(hint),
            count=self.counted.append,
            observe=self.observed.append,
            clock=lambda: self.h.now,
        )

    def new_pass(self, kind: type[P] = ArchivePass) -> P:  # type: ignore[assignment]
        h = self.h
        return kind(
            h.config,
            h.source,
            h.checkpoint,
            h.store,
            Spool(h.tmp_path / "spool"),
            clock=lambda: h.now,
            interlude=self.worker.work,
        )

    def hint(self, started_at: datetime, recordings: int | None = 1) -> Hint:
        hint = Hint("c-1", started_at, 60, recordings, received_at=self.h.now)
        assert self.queue.offer(hint) is HintOutcome.ACCEPTED
        return hint


def test_a_hint_archives_a_call_at_once_without_moving_the_watermark(h: Harness) -> None:
    world = World(h)
    h.new_pass().run()  # the watermark now stands at the horizon, ten minutes ago
    watermark = h.position()
    fresh = make_recording(NOW - timedelta(minutes=2))  # newer than the horizon
    h.source.recordings.append(fresh)
    world.hint(fresh.started_at)
    h.now += timedelta(seconds=3)

    assert world.worker.work() == 1

    assert h.row(fresh.recording_id).state is RecordingState.ARCHIVED
    assert h.position() == watermark
    assert world.counted.count(HintOutcome.ARCHIVED) == 1
    assert world.observed == [3.0]
    assert len(world.queue) == 0  # done: what it announced is archived
    # The hint listed the call's window only: a second either side of its 60 seconds.
    assert h.source.calls[-1][0] == fresh.started_at - timedelta(seconds=2)


def test_a_hint_early_for_its_recording_is_tried_again_on_the_schedule(h: Harness) -> None:
    world = World(h)
    h.new_pass().run()
    late = make_recording(NOW - timedelta(minutes=1))
    world.hint(late.started_at)

    world.worker.work()  # not listed yet: nothing archived, the hint waits
    assert h.checkpoint.get(late.recording_id) is None and len(world.queue) == 1
    h.now += timedelta(seconds=5)
    assert world.worker.work() == 0  # not due before 10 s
    h.source.recordings.append(late)
    h.now += timedelta(seconds=5)
    assert world.worker.work() == 1

    assert h.row(late.recording_id).state is RecordingState.ARCHIVED
    assert len(world.queue) == 0


def test_a_forged_hint_costs_a_few_list_calls_and_then_is_dropped(h: Harness) -> None:
    world = World(h)
    h.new_pass().run()
    calls = len(h.source.calls)
    world.hint(NOW - timedelta(minutes=3))
    for seconds in (0, 10, 30, 60, 120, 300):
        h.now = NOW + timedelta(seconds=seconds)
        world.worker.work()

    assert len(h.store.objects) == 0 and len(world.queue) == 0
    assert HintOutcome.EXPIRED in world.counted
    assert len(h.source.calls) - calls == 6  # one list call a try, six tries


def test_while_a_pass_runs_hints_get_at_most_their_share_of_the_requests(h: Harness) -> None:
    world = World(h)
    h.source.recordings = [make_recording(NOW - timedelta(hours=5, minutes=m)) for m in range(40)]
    for n in range(40):  # a flood of hints, each one list call for nothing
        world.queue.offer(Hint(f"f-{n}", NOW - timedelta(hours=1), 0, 0, received_at=h.now))
    before = len(h.source.calls)

    # Every request is charged to whoever makes it, as the Archiver's response hook does.
    list_recordings, download = h.source.list_recordings, h.source.download

    def charged_list(*args: Any) -> Any:
        world.worker.charge()
        return list_recordings(*args)

    def charged_download(*args: Any) -> Any:
        world.worker.charge()
        return download(*args)

    h.source.list_recordings = charged_list  # type: ignore[method-assign,assignment]
    h.source.download = charged_download  # type: ignore[method-assign,assignment]

    with world.budget.pass_running():
        world.new_pass().run()

    # A hint's call spans its 2-second window plus the one-second overlap each side.
    hint_calls = [c for c in h.source.calls[before:] if c[1] - c[0] == timedelta(seconds=4)]
    pass_requests = len(h.source.calls[before:]) - len(hint_calls) + len(h.source.downloads)
    # 20 %: a quarter of a request per pass request, plus the burst of 4.
    assert 0 < len(hint_calls) <= pass_requests / 4 + 4
    assert h.checkpoint.counts()[RecordingState.ARCHIVED] == 40  # the sweep was not starved


class FailingHistory:
    """A `/conversations` that refuses every call (an outage, a key without access to it)."""

    def list_window(self, window: Window, horizon: datetime) -> list[Conversation]:
        raise ApiUnavailable("conversations call refused: 403")

    list_once = list_window

    def export(self, window: Window, conversations: list[Conversation]) -> int:
        return 0

    def catch_up(self, **kwargs: Any) -> int:
        raise ApiUnavailable("conversations call refused: 403")


def test_a_failing_call_history_never_holds_up_the_recordings(h: Harness) -> None:
    h.source.recordings = [make_recording(NOW - timedelta(hours=3))]
    sweep = ArchivePass(
        h.config,
        h.source,
        h.checkpoint,
        h.store,
        Spool(h.tmp_path / "spool"),
        clock=lambda: h.now,
        history=FailingHistory(),
    )

    result = sweep.run()

    assert result.outcome == "ok" and result.archived == 1
    assert h.position() == NOW - timedelta(minutes=10)
