"""The archive pass with an in-memory source and store and a real checkpoint: no network."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from archiver.archive import ArchivePass
from archiver.checkpoint import Checkpoint
from archiver.config import ArchiveConfig, AudioCheck
from archiver.cradle import Listing
from archiver.errors import ApiUnavailable, AuthError, RecordingFailed, SinkUnavailable
from archiver.models import PassResult, Recording, RecordingRow, RecordingState, StagedFile, Window
from archiver.retention import Expired, Lock, LockMode, Period, RetentionPolicy
from archiver.spool import Spool
from tests.fakes import FakeStore

NOW = datetime(2024, 5, 2, 0, 0, tzinfo=UTC)
BASE = "https://api.cradle.io"


def make_recording(started_at: datetime, *, host: str = BASE) -> Recording:
    rid = str(uuid.uuid5(uuid.NAMESPACE_URL, started_at.isoformat() + host))
    return Recording(
        recording_id=rid,
        url=f"{host}/api/v1/public/recordings/{rid}.mp3?source=api",
        started_at=started_at,
        duration_seconds=60,
        nature="in",
        agent1="a@example.com",
    )


def body_of(recording: Recording) -> bytes:
    return b"ID3" + recording.recording_id.encode() * 10


@dataclass
class FakeSource:
    """The API: recordings by start time, listed with half-open bounds unless told otherwise."""

    recordings: list[Recording] = field(default_factory=list)
    failures: dict[str, list[Exception]] = field(default_factory=dict)
    list_failures: list[Exception] = field(default_factory=list)
    cap: int | None = None
    down_after: int | None = None  # list calls answered before the API goes away
    calls: list[tuple[datetime, datetime]] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)

    def list_recordings(
        self, window: Window, listed_from: datetime, listed_until: datetime
    ) -> Listing:
        if self.down_after is not None and len(self.calls) == self.down_after:
            raise ApiUnavailable("the API went away")
        self.calls.append((listed_from, listed_until))
        if self.list_failures:
            raise self.list_failures.pop(0)
        found = sorted(
            (r for r in self.recordings if listed_from <= r.started_at < listed_until),
            key=lambda r: r.started_at,
        )
        return Listing(window, found[: self.cap] if self.cap else found)

    def download(self, recording: Recording, spool: Spool) -> StagedFile:
        self.downloads.append(recording.recording_id)
        if not self.is_on_host(recording.url):
            raise RecordingFailed("off host", "off_host_url", permanent=True)
        queue = self.failures.get(recording.recording_id)
        if queue:
            raise queue.pop(0)
        with spool.receive(recording.recording_id) as receiver:
            receiver.write(body_of(recording))
            return receiver.commit()

    def is_on_host(self, url: str) -> bool:
        return url.startswith(BASE)


@dataclass
class Harness:
    tmp_path: Path
    source: FakeSource = field(default_factory=FakeSource)
    store: FakeStore = field(default_factory=FakeStore)
    now: datetime = NOW
    config: ArchiveConfig = field(
        default_factory=lambda: ArchiveConfig(
            start=NOW - timedelta(hours=6),
            settle_delay=timedelta(minutes=10),
            lookback=timedelta(hours=2),
        )
    )

    def __post_init__(self) -> None:
        self.checkpoint = Checkpoint.open(self.tmp_path / "state.db")

    def row(self, recording_id: str) -> RecordingRow:
        """The checkpoint's row for a recording the test knows was listed."""
        row = self.checkpoint.get(recording_id)
        assert row is not None, f"{recording_id} is not in the checkpoint"
        return row

    def position(self) -> datetime:
        """The watermark's position, once a pass has moved it."""
        position = self.checkpoint.watermark().position
        assert position is not None, "the watermark has not moved"
        return position

    def last_pass(self) -> PassResult:
        result = self.checkpoint.last_pass()
        assert result is not None, "no pass recorded"
        return result

    def new_pass(
        self, stop: threading.Event | None = None, retention: RetentionPolicy | None = None
    ) -> ArchivePass:
        return ArchivePass(
            self.config,
            self.source,
            self.checkpoint,
            self.store,
            Spool(self.tmp_path / "spool"),
            clock=lambda: self.now,
            stop=stop,
            retention=retention,
        )


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.checkpoint.close()


def spread(count: int, start: datetime, step: timedelta) -> list[Recording]:
    return [make_recording(start + i * step) for i in range(count)]


def test_a_pass_archives_everything_up_to_the_horizon_and_moves_the_watermark(h: Harness) -> None:
    h.source.recordings = spread(30, NOW - timedelta(hours=6), timedelta(minutes=12))
    result = h.new_pass().run()
    horizon = NOW - timedelta(minutes=10)
    due = [r for r in h.source.recordings if r.started_at < horizon]
    assert result.outcome == "ok" and result.archived == len(due)
    assert len(h.store.objects) == len(due)
    assert h.checkpoint.watermark().position == horizon
    assert h.checkpoint.counts() == {"archived": len(due), "pending": 0, "failed": 0, "expired": 0}
    assert all(until <= horizon for _, until in h.source.calls)


def test_a_second_pass_downloads_nothing(h: Harness) -> None:
    h.source.recordings = spread(10, NOW - timedelta(hours=5), timedelta(minutes=20))
    h.new_pass().run()
    before = len(h.source.downloads)
    h.new_pass().run()
    assert len(h.source.downloads) == before


def test_recordings_exactly_on_window_boundaries_are_archived_once(h: Harness) -> None:
    h.source.recordings = [make_recording(NOW - timedelta(hours=k)) for k in range(1, 6)]
    h.new_pass().run()
    assert len(h.store.objects) == 5
    assert sorted(h.source.downloads) == sorted(r.recording_id for r in h.source.recordings)


def test_late_arrivals_inside_the_lookback_are_caught(h: Harness) -> None:
    h.new_pass().run()
    late = make_recording(NOW - timedelta(hours=1, minutes=30))
    h.source.recordings.append(late)
    h.now += timedelta(minutes=5)
    h.new_pass().run()
    assert h.row(late.recording_id).state == "archived"


def test_a_full_window_is_split_until_it_fits(h: Harness) -> None:
    h.config = ArchiveConfig(
        start=NOW - timedelta(hours=2), split_threshold=4, settle_delay=timedelta(0)
    )
    h.source.cap = 4  # the API silently truncates at the threshold
    h.source.recordings = spread(20, NOW - timedelta(hours=2), timedelta(minutes=6))
    h.new_pass().run()
    assert h.checkpoint.counts()[RecordingState.ARCHIVED] == 20


def test_a_failed_list_call_holds_the_watermark(h: Harness) -> None:
    h.source.recordings = spread(6, NOW - timedelta(hours=6), timedelta(hours=1))
    h.source.list_failures = [ApiUnavailable("list failed 8 times")]
    with pytest.raises(ApiUnavailable):
        h.new_pass().run()
    assert h.checkpoint.watermark().position == NOW - timedelta(hours=6)
    assert h.last_pass().outcome == "failed"
    h.new_pass().run()
    assert h.checkpoint.counts()[RecordingState.ARCHIVED] == 6


def test_a_poison_recording_is_dead_lettered_after_max_attempts_and_the_walk_goes_on(
    h: Harness,
) -> None:
    h.source.recordings = spread(4, NOW - timedelta(hours=3), timedelta(minutes=30))
    poison = h.source.recordings[1].recording_id
    h.source.failures[poison] = [RecordingFailed("404", "http_404") for _ in range(10)]
    result = h.new_pass().run()
    row = h.row(poison)
    assert (row.state, row.reason, row.attempts) == ("failed", "http_404", 5)
    assert result.outcome == "dead_letters"
    assert h.checkpoint.watermark().position == NOW - timedelta(minutes=10)
    assert h.checkpoint.retry([poison]) == [poison]
    h.source.failures.clear()
    h.new_pass().run()
    assert h.row(poison).state == "archived"


def test_a_transient_failure_is_retried_within_the_pass(h: Harness) -> None:
    h.source.recordings = [make_recording(NOW - timedelta(hours=2))]
    rid = h.source.recordings[0].recording_id
    h.source.failures[rid] = [RecordingFailed("html", "not_mp3")]
    h.new_pass().run()
    row = h.row(rid)
    assert (row.state, row.attempts) == ("archived", 1)


def test_an_off_host_url_is_dead_lettered_at_once(h: Harness) -> None:
    bad = make_recording(NOW - timedelta(hours=2), host="https://evil.example")
    h.source.recordings = [bad]
    h.new_pass().run()
    row = h.row(bad.recording_id)
    assert (row.state, row.reason, row.attempts) == ("failed", "off_host_url", 1)


def test_an_s3_outage_marks_nothing_archived_and_the_next_pass_completes(h: Harness) -> None:
    h.source.recordings = spread(6, NOW - timedelta(hours=5), timedelta(minutes=40))
    h.store.fail_next = 1
    with pytest.raises(SinkUnavailable):
        h.new_pass().run()
    archived_keys = {row.key for row in h.checkpoint.archived()}
    assert archived_keys <= set(h.store.objects)
    assert h.position() < NOW - timedelta(minutes=10)
    h.new_pass().run()
    assert h.checkpoint.counts() == {"archived": 6, "pending": 0, "failed": 0, "expired": 0}
    assert list((h.tmp_path / "spool").iterdir()) == []


def test_an_object_already_in_s3_after_a_crash_counts_as_archived(h: Harness) -> None:
    rec = make_recording(NOW - timedelta(hours=2))
    h.source.recordings = [rec]
    data = body_of(rec)
    h.store.objects[h.store.key_for(rec)] = (data, hashlib.sha256(data).hexdigest())
    h.new_pass().run()
    assert h.row(rec.recording_id).state == "archived"


def test_a_different_object_at_the_key_is_a_conflict_and_left_untouched(h: Harness) -> None:
    rec = make_recording(NOW - timedelta(hours=2))
    h.source.recordings = [rec]
    h.store.objects[h.store.key_for(rec)] = (b"ID3 other", "0" * 64)
    h.new_pass().run()
    row = h.row(rec.recording_id)
    assert (row.state, row.reason) == ("failed", "conflict")
    assert h.store.objects[h.store.key_for(rec)] == (b"ID3 other", "0" * 64)


def test_auth_failure_stops_the_pass(h: Harness) -> None:
    h.source.list_failures = [AuthError("refused")]
    with pytest.raises(AuthError):
        h.new_pass().run()
    assert h.last_pass().error == "refused"


def test_a_stop_request_ends_the_pass_between_recordings(h: Harness) -> None:
    from archiver.errors import Interrupted

    h.source.recordings = spread(5, NOW - timedelta(hours=3), timedelta(minutes=10))
    stop = threading.Event()
    stop.set()
    with pytest.raises(Interrupted):
        h.new_pass(stop).run()
    assert h.checkpoint.counts()[RecordingState.ARCHIVED] == 0


def test_backfill_does_not_move_the_watermark_and_resumes(h: Harness) -> None:
    h.source.recordings = spread(12, datetime(2024, 1, 1, tzinfo=UTC), timedelta(hours=1))
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 12, tzinfo=UTC)
    h.source.down_after = 6
    with pytest.raises(ApiUnavailable):
        h.new_pass().backfill(start, end)
    assert h.checkpoint.backfill_cursor(start, end) == start + timedelta(hours=6)
    h.source.down_after = None
    h.source.calls.clear()
    h.new_pass().backfill(start, end)
    assert len(h.source.calls) == 6  # it went on from the cursor, not from the start
    assert h.checkpoint.counts()[RecordingState.ARCHIVED] == 12
    assert h.checkpoint.watermark().is_zero
    assert h.checkpoint.backfill_cursor(start, end) == end
    h.new_pass().backfill(start, end)
    assert len(h.source.calls) == 6  # nothing left to list


def test_malformed_entries_are_recorded(h: Harness) -> None:
    class Malformed(FakeSource):
        def list_recordings(
            self, window: Window, listed_from: datetime, listed_until: datetime
        ) -> Listing:
            return Listing(window, [], [("missing url", '{"startedAt": "x"}')])

    h.source = Malformed()
    h.new_pass().run()
    # Every window listed the same entry: one row, however often it was seen.
    assert h.checkpoint.malformed_count() == 1


def test_an_upload_s3_refuses_holds_the_watermark_until_the_next_pass(h: Harness) -> None:
    h.source.recordings = spread(4, NOW - timedelta(hours=5), timedelta(hours=1))
    refused = h.source.recordings[1]
    h.store.refuse[refused.recording_id] = RecordingFailed("BadDigest", "checksum_mismatch")
    h.new_pass().run()
    # Retried once more at the end of the pass, but the walk stopped at its window.
    row = h.row(refused.recording_id)
    assert (row.state, row.attempts, row.reason) == ("archived", 1, "checksum_mismatch")
    assert h.position() <= refused.started_at
    h.new_pass().run()
    assert h.row(refused.recording_id).state == "archived"
    assert h.checkpoint.watermark().position == NOW - timedelta(minutes=10)


def test_a_body_staged_by_a_killed_process_is_uploaded_without_a_download(h: Harness) -> None:
    rec = make_recording(NOW - timedelta(hours=2))
    h.source.recordings = [rec]
    h.checkpoint.add_listed([rec])  # listed by the process that was killed
    spool = h.tmp_path / "spool"
    spool.mkdir()
    (spool / f"{rec.recording_id}.mp3").write_bytes(body_of(rec))
    (spool / "half-done.part").write_bytes(b"ID3")
    h.new_pass().run()
    assert h.source.downloads == []
    assert h.row(rec.recording_id).state == "archived"
    assert h.store.objects[h.store.key_for(rec)][0] == body_of(rec)
    assert list(spool.iterdir()) == []


def test_bodies_of_recordings_no_longer_pending_are_cleared_at_start(h: Harness) -> None:
    rec = make_recording(NOW - timedelta(hours=2))
    h.source.recordings = [rec]
    h.new_pass().run()
    stray = h.tmp_path / "spool" / f"{rec.recording_id}.mp3"
    stray.write_bytes(body_of(rec))
    h.new_pass().run()
    assert not stray.exists()


def test_an_s3_outage_keeps_the_verified_downloads_for_the_next_pass(h: Harness) -> None:
    h.source.recordings = spread(3, NOW - timedelta(hours=3), timedelta(minutes=30))
    h.store.fail_next = 1
    with pytest.raises(SinkUnavailable):
        h.new_pass().run()
    fetched_before = set(h.source.downloads)
    h.new_pass().run()
    assert h.checkpoint.counts()[RecordingState.ARCHIVED] == 3
    # Every recording was downloaded exactly once across both passes.
    assert sorted(h.source.downloads) == sorted(r.recording_id for r in h.source.recordings)
    assert fetched_before


# -- hostile answers: a lying size, a bug on one recording ---------------------------------------


@dataclass
class LyingSource(FakeSource):
    """Every list claims far more than it returns (`size: 999999`)."""

    def list_recordings(
        self, window: Window, listed_from: datetime, listed_until: datetime
    ) -> Listing:
        found = super().list_recordings(window, listed_from, listed_until)
        return Listing(window, found.recordings, truncated=True)


def test_a_lying_size_costs_three_list_calls_a_window_not_a_split_to_seconds(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h.source = LyingSource()
    h.config = ArchiveConfig(
        start=NOW - timedelta(hours=2), settle_delay=timedelta(0), lookback=timedelta(0)
    )
    h.source.recordings = [make_recording(NOW - timedelta(minutes=m)) for m in (100, 70, 30, 5)]
    result = h.new_pass().run()
    assert result.outcome == "ok" and result.archived == 4
    # two windows, each listed once and then as two halves that add nothing
    assert len(h.source.calls) == 2 * 3
    assert h.checkpoint.watermark().position == NOW


def test_a_half_full_by_count_is_split_further_even_when_the_parent_looked_complete(
    h: Harness,
) -> None:
    # All eight calls are in the first quarter hour: the parent and its first half list the
    # same four (the API's cap); only splitting that half further finds the rest.
    h.source.cap = 4
    h.config = ArchiveConfig(
        start=NOW - timedelta(hours=1),
        settle_delay=timedelta(0),
        lookback=timedelta(0),
        split_threshold=4,
    )
    h.source.recordings = [
        make_recording(NOW - timedelta(hours=1) + timedelta(minutes=m)) for m in range(8)
    ]
    result = h.new_pass().run()
    assert result.archived == 8


def test_the_split_depth_is_bounded(h: Harness) -> None:
    h.source = LyingSource()
    h.source.cap = 2
    h.config = ArchiveConfig(
        start=NOW - timedelta(days=400),
        window=timedelta(days=400),
        settle_delay=timedelta(0),
        lookback=timedelta(0),
        split_threshold=2,
    )
    # Two calls a second apart, so every window that holds them lists as full by count.
    h.source.recordings = [make_recording(NOW - timedelta(days=1, seconds=s)) for s in (0, 1)]
    h.new_pass().run()
    # 400 days halve to one second after 25 levels; the depth bound stops at 16. Each level on
    # the way down lists two halves, and the empty one's two halves show it was complete.
    assert len(h.source.calls) <= 1 + 4 * 16


@dataclass
class BuggySource(FakeSource):
    """A download that trips on something nobody foresaw."""

    buggy: set[str] = field(default_factory=set)

    def download(self, recording: Recording, spool: Spool) -> StagedFile:
        if recording.recording_id in self.buggy:
            raise ZeroDivisionError("division by zero")
        return super().download(recording, spool)


def test_an_unexpected_error_fails_that_recording_only(h: Harness) -> None:
    h.source = BuggySource()
    h.config = ArchiveConfig(
        start=NOW - timedelta(hours=2), settle_delay=timedelta(0), max_attempts=2
    )
    h.source.recordings = [make_recording(NOW - timedelta(minutes=m)) for m in (90, 60, 30)]
    h.source.buggy = {h.source.recordings[1].recording_id}
    result = h.new_pass().run()
    assert result.archived == 2 and result.failed == 1
    row = h.row(h.source.recordings[1].recording_id)
    assert row.state == "failed" and row.reason == "internal_error"
    assert row.attempts == 2
    assert h.checkpoint.watermark().position == NOW


def test_an_unexpected_error_from_the_store_fails_that_recording_only(h: Harness) -> None:
    h.config = ArchiveConfig(
        start=NOW - timedelta(hours=2), settle_delay=timedelta(0), max_attempts=1
    )
    h.source.recordings = [make_recording(NOW - timedelta(minutes=m)) for m in (90, 30)]
    h.store.refuse[h.source.recordings[0].recording_id] = TypeError("a botocore surprise")
    result = h.new_pass().run()
    assert result.archived == 1 and result.failed == 1
    row = h.row(h.source.recordings[0].recording_id)
    assert row.reason == "internal_error"
    assert not list((h.tmp_path / "spool").glob("*.mp3"))


# -- retention: locks dated from the call, and recordings already past their date ---------------


def retention_harness(h: Harness, expired: Expired) -> RetentionPolicy:
    h.config = ArchiveConfig(
        start=NOW - timedelta(days=800), window=timedelta(days=100), settle_delay=timedelta(0)
    )
    h.source.recordings = [
        make_recording(NOW - timedelta(days=700)),  # past a one-year lock already
        make_recording(NOW - timedelta(days=10)),
    ]
    return RetentionPolicy(LockMode.GOVERNANCE, Period(years=1), expired)


def test_each_object_is_locked_until_its_own_call_plus_the_period(h: Harness) -> None:
    policy = retention_harness(h, Expired.ARCHIVE)
    archive_pass = h.new_pass(retention=policy)
    result = archive_pass.run()
    old, new = h.source.recordings
    assert result.archived == 2
    key = h.store.key_for(new)
    assert h.store.locks[key] == Lock(LockMode.GOVERNANCE, new.started_at.replace(year=2025))
    # Already past its date: archived, but S3 refuses a lock in the past.
    assert h.store.key_for(old) in h.store.objects and h.store.key_for(old) not in h.store.locks
    assert archive_pass.tally.expired == 1
    row = h.row(new.recording_id)
    assert row.state == "archived"


def test_with_expired_skip_an_old_recording_is_never_downloaded_and_ends_expired(
    h: Harness,
) -> None:
    policy = retention_harness(h, Expired.SKIP)
    archive_pass = h.new_pass(retention=policy)
    result = archive_pass.run()
    old, new = h.source.recordings
    assert result.archived == 1 and archive_pass.tally.expired == 1
    assert h.source.downloads == [new.recording_id]
    row = h.row(old.recording_id)
    assert row.state == "expired"
    assert h.checkpoint.counts()[RecordingState.EXPIRED] == 1
    assert h.checkpoint.watermark().position == NOW
    h.new_pass(retention=policy).run()  # terminal: never tried again
    assert h.source.downloads == [new.recording_id]


def test_verify_reports_an_object_locked_short_of_what_was_written(h: Harness) -> None:
    from archiver.app import verify

    policy = retention_harness(h, Expired.ARCHIVE)
    h.new_pass(retention=policy).run()
    assert verify(h.checkpoint, h.store, None, None).problems == 0
    _, new = h.source.recordings
    key = h.store.key_for(new)
    lock = h.store.locks[key]
    h.store.locks[key] = Lock(lock.mode, lock.retain_until - timedelta(days=1))
    report = verify(h.checkpoint, h.store, None, None)
    assert report.wrong_lock == [key] and report.problems == 1
    h.store.locks[key] = Lock(LockMode.GOVERNANCE, lock.retain_until + timedelta(days=700))
    assert verify(h.checkpoint, h.store, None, None).problems == 0  # extended: fine


# -- audio checked against the list ----------------------------------------------------------


@dataclass
class ShortAudioSource(FakeSource):
    """Bodies whose walked audio is 10 s, whatever the list says."""

    def download(self, recording: Recording, spool: Spool) -> StagedFile:
        return replace(super().download(recording, spool), audio_seconds=10.0)


@pytest.mark.parametrize("check", [AudioCheck.WARN, AudioCheck.FAIL, AudioCheck.OFF])
def test_audio_far_from_the_listed_duration_follows_audio_check(
    h: Harness, check: AudioCheck
) -> None:
    h.source = ShortAudioSource()
    h.config = ArchiveConfig(
        start=NOW - timedelta(hours=1), settle_delay=timedelta(0), max_attempts=2
    )
    near, far = (
        make_recording(NOW - timedelta(minutes=40)),
        make_recording(NOW - timedelta(minutes=20)),
    )
    h.source.recordings = [replace(near, duration_seconds=11), replace(far, duration_seconds=60)]
    archive_pass = ArchivePass(
        h.config,
        h.source,
        h.checkpoint,
        h.store,
        Spool(h.tmp_path / "spool"),
        clock=lambda: h.now,
        audio_check=check,
    )
    result = archive_pass.run()
    far_row = h.row(far.recording_id)
    if check is AudioCheck.FAIL:
        assert (result.archived, result.failed) == (1, 1)
        assert (far_row.state, far_row.reason, far_row.attempts) == ("failed", "audio_mismatch", 2)
    else:
        assert result.archived == 2 and far_row.audio_seconds == 10.0
        mismatches = h.checkpoint.audio_mismatch_count()
        assert mismatches == (1 if check is AudioCheck.WARN else 0)
