"""Reconciliation with an in-memory API and bucket and a real checkpoint: no network."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from archiver.checkpoint import Checkpoint
from archiver.config import ArchiveConfig
from archiver.conversations import Conversation, Revision
from archiver.cradle import ConversationListing, Listing
from archiver.errors import ApiUnavailable, Interrupted, UsageError
from archiver.layout import object_key
from archiver.metrics import GaugeState, Metrics
from archiver.models import Recording, RecordingState, StoredObject, Window
from archiver.reconcile import Kind, Reconciler, Reconciliation, due_day, render_text
from archiver.retention import Lock, RetentionPolicy
from archiver.sink.reader import ListedObject
from archiver.status import build_report
from archiver.status import render_text as render_status
from tests.fakes import FakeStore

NOW = datetime(2024, 5, 3, 12, 0, tzinfo=UTC)
DAY = datetime(2024, 5, 1, tzinfo=UTC)
PREFIX = "calls/"


def make_recording(started_at: datetime) -> Recording:
    rid = str(uuid.uuid5(uuid.NAMESPACE_URL, started_at.isoformat()))
    return Recording(
        recording_id=rid,
        url=f"https://api.cradle.io/api/v1/public/recordings/{rid}.mp3?source=api",
        started_at=started_at,
        duration_seconds=60,
        nature="in",
        agent1="a@example.com",
    )


@dataclass
class Api:
    """The list calls: recordings (and conversations) by start time, half-open bounds, at
    most `cap` recordings an answer."""

    recordings: list[Recording] = field(default_factory=list)
    cap: int | None = None
    calls: list[tuple[datetime, datetime]] = field(default_factory=list)
    down: bool = False
    conversations: list[Conversation] = field(default_factory=list)
    conversation_calls: list[tuple[datetime, datetime]] = field(default_factory=list)

    def list_recordings(
        self, window: Window, listed_from: datetime, listed_until: datetime
    ) -> Listing:
        if self.down:
            raise ApiUnavailable("the API went away")
        self.calls.append((listed_from, listed_until))
        found = sorted(
            (r for r in self.recordings if listed_from <= r.started_at < listed_until),
            key=lambda r: r.started_at,
        )
        return Listing(window, found[: self.cap] if self.cap else found)

    def list_conversations(
        self, window: Window, listed_from: datetime, listed_until: datetime
    ) -> ConversationListing:
        if self.down:
            raise ApiUnavailable("the API went away")
        self.conversation_calls.append((listed_from, listed_until))
        found = [c for c in self.conversations if listed_from <= c.started_at < listed_until]
        return ConversationListing(window, found)


@dataclass
class Bucket(FakeStore):
    """FakeStore read as BucketReader reads: HEADs with metadata, listings by prefix, and the
    audit trail's write-once objects."""

    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    listed: list[str] = field(default_factory=list)  # prefixes asked for
    written: dict[str, bytes] = field(default_factory=dict)

    def head(self, key: str, version_id: str | None = None) -> StoredObject | None:
        stored = super().head(key)
        if stored is None:
            return None
        return StoredObject(
            stored.key, stored.size, stored.sha256, None, metadata=self.metadata.get(key, {})
        )

    def list(self, prefix: str) -> Iterator[ListedObject]:
        self.listed.append(prefix)
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield ListedObject(key, len(self.objects[key][0]), None)

    def write_once(
        self, key: str, body: bytes, content_type: str, lock: Lock | None = None
    ) -> str | None:
        self.written[key] = body
        return None

    def store(self, recording: Recording) -> str:
        body = recording.recording_id.encode()
        key = object_key(self.prefix, recording)
        self.objects[key] = (body, hashlib.sha256(body).hexdigest())
        return key


@dataclass
class World:
    checkpoint: Checkpoint
    api: Api = field(default_factory=Api)
    bucket: Bucket = field(default_factory=lambda: Bucket(prefix=PREFIX))
    config: ArchiveConfig = field(
        default_factory=lambda: ArchiveConfig(window=timedelta(hours=6), split_threshold=500)
    )
    stop: threading.Event = field(default_factory=threading.Event)

    def archive(self, recording: Recording, *, in_bucket: bool = True) -> None:
        """Listed, archived, and (unless told) in the bucket."""
        self.api.recordings.append(recording)
        self.checkpoint.add_listed([recording])
        key = self.bucket.store(recording)
        self.checkpoint.mark_archived(
            recording.recording_id, sha256=self.bucket.objects[key][1], size=36, key=key
        )
        if not in_bucket:
            del self.bucket.objects[key]

    def reconcile(
        self,
        since: datetime = DAY,
        until: datetime = DAY + timedelta(days=1),
        *,
        conversations: bool = True,
    ) -> Reconciliation:
        reconciler = Reconciler(
            self.config,
            self.api,
            self.checkpoint,
            self.bucket,
            self.bucket,
            prefix=PREFIX,
            retention=RetentionPolicy(),
            clock=lambda: NOW,
            stop=self.stop,
            conversations=conversations,
        )
        return reconciler.run(since, until)

    def state(self, recording: Recording) -> RecordingState | None:
        row = self.checkpoint.get(recording.recording_id)
        return None if row is None else row.state


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with Checkpoint.open(tmp_path / "state.db", clock=lambda: NOW) as checkpoint:
        yield World(checkpoint)


def at(hours: float) -> datetime:
    return DAY + timedelta(hours=hours)


def kinds(result: Reconciliation) -> dict[str, Kind]:
    return {d.recording_id or d.key: d.kind for d in result.differences}


def test_every_kind_of_difference_is_found_explained_and_acted_on(world: World) -> None:
    kept, deleted, gone = (make_recording(at(h)) for h in (1, 2, 3))
    world.archive(kept)
    world.archive(deleted, in_bucket=False)
    world.archive(gone)
    world.api.recordings.remove(gone)  # deleted at Cradle since
    late = make_recording(at(4))
    world.api.recordings.append(late)
    poison = make_recording(at(5))
    world.api.recordings.append(poison)
    world.checkpoint.add_listed([poison])
    world.checkpoint.record_failure(
        poison.recording_id, "http_404", dead_letter=True, max_attempts=5
    )
    stray = f"{PREFIX}2024/05/01/notes.txt"
    world.bucket.objects[stray] = (b"x", "0" * 64)

    result = world.reconcile()

    assert kinds(result) == {
        late.recording_id: Kind.MISSING_IN_CHECKPOINT,
        deleted.recording_id: Kind.MISSING_IN_BUCKET,
        stray: Kind.UNKNOWN_IN_BUCKET,
        gone.recording_id: Kind.GONE_FROM_API,
        poison.recording_id: Kind.DEAD_LETTERED,
    }
    assert result.unexplained == 3
    assert all(d.explanation for d in result.differences)
    dead = next(d for d in result.differences if d.kind is Kind.DEAD_LETTERED)
    assert "http_404" in dead.explanation
    # queued and requeued: the next pass archives both
    assert world.state(late) is RecordingState.PENDING
    assert world.state(deleted) is RecordingState.PENDING
    assert world.state(gone) is RecordingState.ARCHIVED
    assert result.listed == 4
    *lines, summary = render_text(result).splitlines()
    assert len(lines) == 5 and lines[0].startswith(f"missing_in_checkpoint  {PREFIX}2024/05/01/")
    assert summary.endswith(
        "4 listed by the API; 1 missing_in_checkpoint, 1 missing_in_bucket, 1 unknown_in_bucket,"
        " 1 dead_lettered, 1 gone_from_api; 3 unexplained"
    )


def test_the_result_is_kept_and_written_to_the_audit_trail(world: World) -> None:
    world.api.recordings.append(make_recording(at(4)))
    result = world.reconcile()
    kept = world.checkpoint.last_reconcile()
    assert kept is not None
    assert kept["counts"] == result.counts() and kept["counts"]["missing_in_checkpoint"] == 1
    assert world.checkpoint.reconciled(DAY, DAY + timedelta(days=1))
    assert not world.checkpoint.reconciled(DAY, DAY + timedelta(days=2))
    [(key, body)] = world.bucket.written.items()
    assert key.startswith(f"{PREFIX}audit/2024/05/03/") and key.endswith("-reconcile.json")
    record = json.loads(body)
    assert record["action"] == "reconcile"
    assert record["counts"]["missing_in_checkpoint"] == 1
    assert record["recordings"] == [world.api.recordings[0].recording_id]
    assert record["command"][1:] == [
        "reconcile", "--from", "2024-05-01T00:00:00.000Z", "--until", "2024-05-02T00:00:00.000Z"
    ]  # fmt: skip


def test_a_clean_period_has_no_differences(world: World) -> None:
    for hours in (0, 6, 23.9):
        world.archive(make_recording(at(hours)))
    tomorrow = make_recording(at(24))  # dead-lettered, but on another day
    world.checkpoint.add_listed([tomorrow])
    world.checkpoint.record_failure(tomorrow.recording_id, "x", dead_letter=True, max_attempts=5)
    result = world.reconcile()
    assert (result.differences, result.unexplained, result.listed) == ((), 0, 3)
    assert render_text(result).splitlines() == [
        "reconciled [2024-05-01T00:00:00.000Z, 2024-05-02T00:00:00.000Z): 3 listed by the API;"
        " no differences"
    ]


def test_what_the_pass_would_not_count_is_no_difference(world: World) -> None:
    # A pending recording whose object is already there (a crash after its upload), and an
    # object of the same day folder outside the period: neither is unknown.
    crashed = make_recording(at(2))
    world.api.recordings.append(crashed)
    world.checkpoint.add_listed([crashed])
    world.bucket.store(crashed)
    outside = make_recording(at(20))
    key = world.bucket.store(outside)
    world.bucket.metadata[key] = {"started-at": "2024-05-01T20:00:00.000Z"}
    assert world.reconcile(at(0), at(12)).differences == ()


def test_a_missing_object_is_confirmed_by_a_head_before_it_is_requeued(world: World) -> None:
    recording = make_recording(at(1))
    world.archive(recording)

    class Stale(Bucket):  # the listing misses it; the HEAD finds it
        def list(self, prefix: str) -> Iterator[ListedObject]:
            return iter(())

    world.bucket = Stale(prefix=PREFIX, objects=world.bucket.objects)
    assert world.reconcile().differences == ()
    assert world.state(recording) is RecordingState.ARCHIVED


def test_reconcile_lists_as_the_pass_does_splitting_a_full_window(world: World) -> None:
    world.api.cap = 4
    world.config = ArchiveConfig(window=timedelta(hours=6), split_threshold=4)
    recordings = [make_recording(at(1 + m / 60)) for m in range(10)]
    world.api.recordings.extend(recordings)
    result = world.reconcile()
    assert result.counts()["missing_in_checkpoint"] == 10
    assert all(world.state(r) is RecordingState.PENDING for r in recordings)


def test_a_period_is_reconciled_a_day_at_a_time_and_stops_at_the_horizon(world: World) -> None:
    result = world.reconcile(at(20), NOW + timedelta(days=5))
    assert world.bucket.listed == [f"{PREFIX}2024/05/{d:02d}/" for d in (1, 2, 3)]
    horizon = NOW - world.config.settle_delay
    assert result.until == horizon
    assert max(until for _, until in world.api.calls + world.api.conversation_calls) <= horizon
    with pytest.raises(UsageError) as raised:
        world.reconcile(horizon, horizon + timedelta(days=1))
    assert "horizon" in str(raised.value)


def test_an_api_failure_records_nothing(world: World) -> None:
    world.api.down = True
    with pytest.raises(ApiUnavailable):
        world.reconcile()
    assert world.checkpoint.last_reconcile() is None
    assert world.bucket.written == {}


def test_a_stop_request_ends_it(world: World) -> None:
    world.stop.set()
    with pytest.raises(Interrupted):
        world.reconcile()
    assert world.checkpoint.last_reconcile() is None


def test_status_shows_the_last_reconciliation(world: World) -> None:
    world.api.recordings.append(make_recording(at(4)))
    world.reconcile()
    report = build_report(world.checkpoint, NOW)
    last = report["last_reconcile"]
    assert (last["since"], last["until"]) == (
        "2024-05-01T00:00:00.000Z",
        "2024-05-02T00:00:00.000Z",
    )
    assert last["counts"]["missing_in_checkpoint"] == 1 and last["unexplained"] == 1
    assert "reconciled  [2024-05-01T00:00:00.000Z" in render_status(report)
    assert "1 missing_in_checkpoint (1 unexplained)" in render_status(report)


def test_the_differences_gauge_has_one_series_per_kind() -> None:
    counts = {kind.value: 0 for kind in Kind} | {"missing_in_bucket": 2}
    metrics = Metrics(lambda: GaugeState(None, {}, reconcile=counts))
    text = metrics.exposition().decode()
    assert 'cradle_archiver_reconcile_differences{kind="missing_in_bucket"} 2.0' in text
    assert text.count("cradle_archiver_reconcile_differences{") == len(Kind)
    never = Metrics(lambda: GaugeState(None, {})).exposition().decode()
    assert "cradle_archiver_reconcile_differences{" not in never  # no reconciliation yet


@pytest.mark.parametrize(
    ("sealed", "reconciled", "due"),
    [
        (None, False, False),  # nothing sealed yet
        (date(2024, 5, 1), False, False),  # yesterday not sealed yet
        (date(2024, 5, 2), False, True),
        (date(2024, 5, 2), True, False),  # done already today
    ],
)
def test_the_daily_reconciliation_is_yesterday_once_sealed_and_once_only(
    sealed: date | None, reconciled: bool, due: bool
) -> None:
    asked: list[tuple[datetime, datetime]] = []

    def done(since: datetime, until: datetime) -> bool:
        asked.append((since, until))
        return reconciled

    day = due_day(NOW, sealed, done)
    yesterday = Window(datetime(2024, 5, 2, tzinfo=UTC), datetime(2024, 5, 3, tzinfo=UTC))
    assert day == (yesterday if due else None)
    assert all(period == (yesterday.start, yesterday.end) for period in asked)


# -- conversations ⇄ recordings --------------------------------------------------------------


def make_conversation(started_at: datetime, *recordings: Recording | str) -> Conversation:
    """A conversation naming these recordings (a bare id: a recording nobody lists)."""
    ids = [r if isinstance(r, str) else r.recording_id for r in recordings]
    entry = {
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{started_at.isoformat()}{ids}")),
        "startedAt": started_at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "nature": "in",
        "status": "successful" if ids else "missed",
        "recordings": [
            {"url": f"https://api.cradle.io/api/v1/public/recordings/{rid}.mp3"} for rid in ids
        ],
    }
    return Conversation.from_api(entry, now=NOW)


def missing(result: Reconciliation) -> dict[str, tuple[str | None, str]]:
    """conversation uuid -> (recording id, key) of each conversation_recording_missing."""
    return {
        d.conversation or "": (d.recording_id, d.key)
        for d in result.differences
        if d.kind is Kind.CONVERSATION_RECORDING_MISSING
    }


def test_every_recording_a_conversation_names_must_be_archived(world: World) -> None:
    archived, pending, late, poison = (make_recording(at(h)) for h in (1, 2, 3, 4))
    world.archive(archived)
    world.api.recordings += [pending, late, poison]
    world.checkpoint.add_listed([pending, poison])
    world.checkpoint.record_failure(
        poison.recording_id, "http_404", dead_letter=True, max_attempts=5
    )
    unlisted = str(uuid.uuid4())
    fine = make_conversation(at(1), archived)
    missed = make_conversation(at(1.5))  # no recording: a missed call, normal
    waiting = make_conversation(at(2), pending)
    named_elsewhere = [make_conversation(at(3), late), make_conversation(at(4), poison)]
    nowhere = make_conversation(at(5), unlisted)
    world.api.conversations += [fine, missed, waiting, *named_elsewhere, nowhere]

    result = world.reconcile()

    assert missing(result) == {
        waiting.uuid: (pending.recording_id, object_key(PREFIX, pending)),
        nowhere.uuid: (unlisted, f"{PREFIX}2024/05/01/{unlisted}.mp3"),
    }
    # The late one is queued (missing_in_checkpoint), the poison one dead-lettered: named once.
    assert kinds(result)[late.recording_id] is Kind.MISSING_IN_CHECKPOINT
    assert kinds(result)[poison.recording_id] is Kind.DEAD_LETTERED
    assert result.counts()["conversation_recording_missing"] == 2
    assert result.unexplained == 3 and not Kind.CONVERSATION_RECORDING_MISSING.explained
    assert result.conversations == 6
    by_conversation = {d.conversation: d for d in result.differences if d.conversation}
    assert "pending" in by_conversation[waiting.uuid].explanation
    assert "does not know it" in by_conversation[nowhere.uuid].explanation
    assert by_conversation[nowhere.uuid].to_dict()["conversation"] == nowhere.uuid
    assert result.to_dict()["conversations"] == 6
    summary = render_text(result).splitlines()[-1]
    assert "4 listed by the API, 6 conversations checked;" in summary
    assert "2 conversation_recording_missing" in summary


def test_conversations_are_listed_as_the_recordings_are(world: World) -> None:
    world.config = ArchiveConfig(window=timedelta(hours=6), split_threshold=4)
    world.api.conversations += [make_conversation(at(1 + m / 60)) for m in range(10)]
    world.api.conversations.append(make_conversation(at(24), str(uuid.uuid4())))  # the next day
    result = world.reconcile()
    # Split while full, like the recordings' list, and only the day's own compared.
    assert len(world.api.calls) == 4 and len(world.api.conversation_calls) > 4
    second = timedelta(seconds=1)
    assert world.api.conversation_calls[0] == world.api.calls[0] == (DAY - second, at(6) + second)
    assert (result.conversations, result.differences) == (10, ())


def test_a_conversation_only_the_checkpoint_exported_is_checked_too(world: World) -> None:
    # Exported when the API listed it; gone from the API since, its recording never archived.
    unlisted = str(uuid.uuid4())
    exported = make_conversation(at(7), unlisted)
    world.checkpoint.add_conversation_part("k", b"", [Revision(exported, 1)])
    result = world.reconcile()
    [difference] = result.differences
    assert (difference.conversation, difference.recording_id) == (exported.uuid, unlisted)
    assert difference.started_at is None and str(exported.uuid) in difference.explanation
    assert result.conversations == 1


def test_a_dead_letter_outside_the_period_is_named_by_its_conversation(world: World) -> None:
    # A transfer's second leg after midnight, dead-lettered; the period is the first day only.
    second_leg = make_recording(at(24.1))
    world.api.recordings.append(second_leg)
    world.checkpoint.add_listed([second_leg])
    world.checkpoint.record_failure(
        second_leg.recording_id, "off_host_url", dead_letter=True, max_attempts=5
    )
    world.api.conversations.append(make_conversation(at(23.9), second_leg))
    [difference] = world.reconcile().differences
    assert difference.kind is Kind.CONVERSATION_RECORDING_MISSING
    assert difference.key == object_key(PREFIX, second_leg)
    assert "off_host_url" in difference.explanation and "retry" in difference.explanation


def test_without_conversations_the_history_is_not_listed(world: World) -> None:
    world.api.conversations.append(make_conversation(at(1), str(uuid.uuid4())))
    result = world.reconcile(conversations=False)
    assert (world.api.conversation_calls, result.conversations, result.differences) == ([], 0, ())


def test_status_and_the_gauge_show_conversation_recordings_missing(world: World) -> None:
    world.api.conversations.append(make_conversation(at(1), str(uuid.uuid4())))
    world.reconcile()
    report = build_report(world.checkpoint, NOW)
    assert "1 conversation_recording_missing (1 unexplained)" in render_status(report)
    counts = report["last_reconcile"]["counts"]
    text = Metrics(lambda: GaugeState(None, {}, reconcile=counts)).exposition().decode()
    assert (
        'cradle_archiver_reconcile_differences{kind="conversation_recording_missing"} 1.0' in text
    )
