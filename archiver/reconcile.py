"""`reconcile`: the API, the checkpoint and the bucket held side by side for a period.

The pass trusts what it has seen: a recording the API starts listing after its window and the
lookback were listed is never seen, and an object deleted from the bucket stays "archived" in the
checkpoint. Reconciling lists the period again, exactly as the pass lists (the same WindowLister:
overlap, splitting, the one rate limiter), and compares three sources, each difference a `Kind`
with its explanation:

- the API against the checkpoint: what was never seen is queued as pending (the next pass
  archives it, below the watermark too: the pass archives every pending recording up to its
  horizon); what is archived but no longer listed is reported;
- the checkpoint against the bucket: an archived recording whose object is gone goes back to
  pending (and, once archived again, into a supplement manifest); an object under the period's
  day folders that the checkpoint does not know is reported, never touched;
- the checkpoint alone: dead-lettered recordings, with their reasons;
- the conversations against the recordings: every recording a conversation names must be
  archived (reconcile_history.py).

It walks the period a UTC day at a time, so memory holds one day's ids whatever the period, and
the bucket is listed per day folder (one listing, not a HEAD per recording; a HEAD confirms each
absence before anything is requeued). Dead letters and recordings gone from the API are explained
(the archive is as complete as it can be); the other kinds are not, and make the exit code 3.
The result is kept in the checkpoint (for `status` and the metrics) and in the audit trail.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import structlog

from archiver import layout, trail
from archiver.config import ArchiveConfig
from archiver.differences import Difference, Kind
from archiver.errors import Interrupted, UsageError
from archiver.listing import Lister, WindowLister
from archiver.models import (
    Recording,
    RecordingRow,
    RecordingState,
    StoredObject,
    Window,
    format_time,
    parse_time,
    utc_now,
    walk,
)
from archiver.reconcile_history import HistoryCheck, HistoryLedger, HistorySource
from archiver.retention import RetentionPolicy
from archiver.sink.reader import ListedObject

log = structlog.get_logger(__name__)

ACTION = "reconcile"
# Differences kept in the checkpoint's copy of a report: `status` and every metrics scrape read
# it, so a bucket lost whole must not make that a megabyte of JSON. The CLI prints them all.
KEPT_DIFFERENCES = 1000
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Reconciliation:
    """One reconciliation's result."""

    since: datetime
    until: datetime
    started_at: datetime
    finished_at: datetime
    listed: int  # recordings the API listed in [since, until)
    differences: tuple[Difference, ...]
    conversations: int = 0  # conversations checked (listed, or exported earlier) in the period

    def counts(self) -> dict[str, int]:
        """Differences by kind, every kind present (0 included)."""
        counts = dict.fromkeys((kind.value for kind in Kind), 0)
        for difference in self.differences:
            counts[difference.kind.value] += 1
        return counts

    @property
    def unexplained(self) -> int:
        return sum(1 for d in self.differences if not d.kind.explained)

    def to_dict(self, max_differences: int | None = None) -> dict[str, Any]:
        shown = self.differences[:max_differences]
        return {
            "since": format_time(self.since),
            "until": format_time(self.until),
            "started_at": format_time(self.started_at),
            "finished_at": format_time(self.finished_at),
            "listed": self.listed,
            "conversations": self.conversations,
            "counts": self.counts(),
            "unexplained": self.unexplained,
            "differences": [d.to_dict() for d in shown],
            "differences_left_out": len(self.differences) - len(shown),
        }


class Source(Lister, HistorySource, Protocol):
    """The Cradle API's two list calls."""


class Ledger(HistoryLedger, Protocol):
    """The part of the checkpoint reconciling uses."""

    def get(self, recording_id: str) -> RecordingRow | None: ...
    def add_listed(self, recordings: Iterable[Recording]) -> list[Recording]: ...
    def archived(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[RecordingRow]: ...
    def failed_ids(self) -> list[str]: ...
    def requeue(self, recording_id: str) -> bool: ...
    def record_malformed(self, window: Window, reason: str, raw: str) -> None: ...
    def record_reconcile(
        self, started: datetime, finished: datetime, since: datetime, until: datetime, report: Any
    ) -> None: ...


class Bucket(Protocol):
    """The bucket, read (BucketReader)."""

    def head(self, key: str, version_id: str | None = None) -> StoredObject | None: ...
    def list(self, prefix: str) -> Iterator[ListedObject]: ...


class Reconciler:
    def __init__(
        self,
        config: ArchiveConfig,
        source: Source,
        ledger: Ledger,
        bucket: Bucket,
        trail_store: trail.TrailStore,
        *,
        prefix: str,
        retention: RetentionPolicy,
        clock: Callable[[], datetime] = utc_now,
        stop: threading.Event | None = None,
        conversations: bool = True,
    ) -> None:
        """`conversations`: also hold the call history against the recordings."""
        self.config = config
        self.ledger = ledger
        self.bucket = bucket
        self.trail_store = trail_store
        self.prefix = prefix
        self.retention = retention
        self.clock = clock
        self.stop = stop or threading.Event()
        self.lister = WindowLister(source.list_recordings, config, self._check_stop)
        self.history = (
            HistoryCheck(source, ledger, config, self._check_stop, prefix=prefix)
            if conversations
            else None
        )

    def run(self, since: datetime, until: datetime) -> Reconciliation:
        """Reconcile [since, until) (up to the horizon), keep the result and write its audit
        record. Raises on an API or S3 failure, with nothing recorded as reconciled."""
        started = self.clock()
        horizon = started - self.config.settle_delay
        until = min(until, horizon)
        if until <= since:
            raise UsageError(
                f"reconcile: {format_time(since)} is not before the horizon"
                f" ({format_time(horizon)}, now - archive.settle_delay): nothing there is settled"
            )
        log.info("reconcile.started", since=format_time(since), until=format_time(until))
        period = Window(since, until)
        listed, conversations, differences = 0, 0, []
        for day_start in _days(since, until):
            day = Window(max(since, day_start), min(until, day_start + DAY))
            day_listed, day_differences = self._reconcile_day(day, horizon)
            day_conversations, history_differences = self._reconcile_history(
                day, horizon, period, day_differences
            )
            listed += day_listed
            conversations += day_conversations
            differences += day_differences + history_differences
        # Once for the period: the checkpoint's dead letters are few, the days may be many.
        differences += self._dead_lettered(period)
        result = Reconciliation(
            since, until, started, self.clock(), listed, tuple(differences), conversations
        )
        self.ledger.record_reconcile(
            started, result.finished_at, since, until, result.to_dict(KEPT_DIFFERENCES)
        )
        self._record_in_trail(result)
        log.info(
            "reconcile.finished",
            listed=listed,
            conversations=conversations,
            unexplained=result.unexplained,
            **result.counts(),
        )
        return result

    # -- one day ---------------------------------------------------------------------------

    def _reconcile_day(self, day: Window, horizon: datetime) -> tuple[int, list[Difference]]:
        listed = self._list(day, horizon)
        differences = self._never_seen(listed)  # first: what it queues is known from here on
        archived = list(self.ledger.archived(since=day.start, until=day.end))
        keys = self._bucket_keys(day)
        differences += self._missing_in_bucket(archived, keys)
        differences += self._unknown_in_bucket(day, keys)
        differences += self._gone_from_api(archived, listed)
        return len(listed), differences

    def _reconcile_history(
        self, day: Window, horizon: datetime, period: Window, found: Sequence[Difference]
    ) -> tuple[int, list[Difference]]:
        """Conversations ⇄ recordings for the day, after the recordings' own comparisons (what
        they queued or requeued is named once, by them)."""
        if self.history is None:
            return 0, []
        named = {d.recording_id for d in found if d.recording_id is not None}
        return self.history.differences(day, horizon, period, named)

    def _list(self, day: Window, horizon: datetime) -> dict[str, Recording]:
        """What the API lists in `day`, listed as the pass lists (the overlap reaches past the
        day's ends; only the day's own recordings are compared)."""
        found: dict[str, Recording] = {}
        for window in walk(day.start, day.end, self.config.window):
            for leaf, listing in self.lister.leaves(window, horizon):
                for reason, raw in listing.malformed:
                    log.error("entry.malformed", window=str(leaf), reason=reason, entry=raw[:300])
                    self.ledger.record_malformed(leaf, reason, raw)
                for recording in listing.recordings:
                    if day.start <= recording.started_at < day.end:
                        found[recording.recording_id] = recording
        return found

    def _never_seen(self, listed: dict[str, Recording]) -> list[Difference]:
        ordered = sorted(listed.values(), key=lambda r: (r.started_at, r.recording_id))
        differences = []
        for recording in self.ledger.add_listed(ordered):
            key = layout.object_key(self.prefix, recording)
            log.warning(
                "reconcile.missing_in_checkpoint", recording_id=recording.recording_id, key=key
            )
            differences.append(
                Difference(
                    Kind.MISSING_IN_CHECKPOINT,
                    key,
                    recording.recording_id,
                    recording.started_at,
                    "the API lists it, but no pass ever saw it (it appeared after its window and"
                    " the lookback were listed); queued as pending: the next pass archives it",
                )
            )
        return differences

    def _bucket_keys(self, day: Window) -> set[str]:
        self._check_stop()
        return {listed.key for listed in self.bucket.list(f"{self.prefix}{day.start:%Y/%m/%d}/")}

    def _missing_in_bucket(
        self, archived: Sequence[RecordingRow], keys: set[str]
    ) -> list[Difference]:
        differences = []
        for row in archived:
            key = row.key or layout.object_key(self.prefix, row.recording)
            # The listing says absent; a HEAD makes sure before anything is changed.
            if key in keys or self.bucket.head(key) is not None:
                continue
            recording_id = row.recording.recording_id
            requeued = self.ledger.requeue(recording_id)
            log.error("reconcile.missing_in_bucket", recording_id=recording_id, key=key)
            differences.append(
                Difference(
                    Kind.MISSING_IN_BUCKET,
                    key,
                    recording_id,
                    row.recording.started_at,
                    f"archived (sha256 {row.sha256}, {row.size} bytes) but S3 has no object at"
                    " its key: deleted or lost since; "
                    + (
                        "set back to pending: the next pass archives it again"
                        if requeued
                        else "no longer archived in the checkpoint, left as it is"
                    ),
                )
            )
        return differences

    def _unknown_in_bucket(self, day: Window, keys: set[str]) -> list[Difference]:
        differences = []
        for key in sorted(keys):
            recording_id = layout.recording_id_from_key(key)
            row = self.ledger.get(recording_id) if recording_id else None
            if row is not None and key == (
                row.key or layout.object_key(self.prefix, row.recording)
            ):
                continue  # ours (a pending one's object: a crash after its upload, found next pass)
            started_at = self._started_at(key)
            if started_at is not None and not day.start <= started_at < day.end:
                continue  # the folder's other hours, outside the period
            log.warning("reconcile.unknown_in_bucket", key=key, recording_id=recording_id)
            differences.append(
                Difference(
                    Kind.UNKNOWN_IN_BUCKET,
                    key,
                    recording_id,
                    started_at,
                    (
                        "an object under the archive's day folders that the checkpoint does not"
                        " know: written by something else, or by an archiver whose checkpoint was"
                        " lost (see rebuild-state); left untouched"
                        if recording_id
                        else "an object under the archive's day folders whose name is no"
                        " recording's: written by something else; left untouched"
                    ),
                )
            )
        return differences

    def _started_at(self, key: str) -> datetime | None:
        """The call time an object's own metadata gives, if it has any."""
        stored = self.bucket.head(key)
        text = stored.metadata.get("started-at") if stored else None
        try:
            return parse_time(text) if text else None
        except ValueError:
            return None

    def _gone_from_api(
        self, archived: Sequence[RecordingRow], listed: dict[str, Recording]
    ) -> list[Difference]:
        differences = []
        for row in archived:
            recording_id = row.recording.recording_id
            if recording_id in listed:
                continue
            key = row.key or layout.object_key(self.prefix, row.recording)
            log.info("reconcile.gone_from_api", recording_id=recording_id, key=key)
            differences.append(
                Difference(
                    Kind.GONE_FROM_API,
                    key,
                    recording_id,
                    row.recording.started_at,
                    "archived, but the API no longer lists it (deleted at Cradle since); the"
                    " archive keeps its copy",
                )
            )
        return differences

    def _dead_lettered(self, period: Window) -> list[Difference]:
        differences = []
        for recording_id in self.ledger.failed_ids():
            row = self.ledger.get(recording_id)
            if row is None or row.state is not RecordingState.FAILED:
                continue
            recording = row.recording
            if not period.start <= recording.started_at < period.end:
                continue
            differences.append(
                Difference(
                    Kind.DEAD_LETTERED,
                    layout.object_key(self.prefix, recording),
                    recording_id,
                    recording.started_at,
                    f"dead-lettered after {row.attempts} attempt(s): {row.reason}; `retry` puts"
                    " it back to pending",
                )
            )
        return differences

    # -- bookkeeping -----------------------------------------------------------------------

    def _record_in_trail(self, result: Reconciliation) -> str:
        action = trail.Action(
            action=ACTION,
            arguments=(
                ACTION,
                "--from",
                format_time(result.since),
                "--until",
                format_time(result.until),
            ),
            started_at=result.started_at,
            finished_at=result.finished_at,
            counts={
                "listed": result.listed,
                "conversations": result.conversations,
                "unexplained": result.unexplained,
                **result.counts(),
            },
            recordings=sorted({d.recording_id or d.key for d in result.differences}),
        )
        return trail.record(self.trail_store, self.prefix, action, self.retention, self.clock())

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Interrupted("shutdown asked for")


def _days(since: datetime, until: datetime) -> Iterator[datetime]:
    """The UTC midnights starting each day that [since, until) touches."""
    day = since.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    while day < until:
        yield day
        day += DAY


def render_text(result: Reconciliation) -> str:
    """One line per difference, then a summary line."""
    lines = [f"{d.kind.value:<22} {d.key}  {d.explanation}" for d in result.differences]
    counts = ", ".join(f"{n} {kind}" for kind, n in result.counts().items() if n)
    verdict = f"{result.unexplained} unexplained" if result.unexplained else "all explained"
    checked = f", {result.conversations} conversations checked" if result.conversations else ""
    lines.append(
        f"reconciled {Window(result.since, result.until)}: {result.listed} listed by the API"
        f"{checked}; " + (f"{counts}; {verdict}" if counts else "no differences")
    )
    return "\n".join(lines)


def due_day(
    now: datetime, last_sealed: date | None, reconciled: Callable[[datetime, datetime], bool]
) -> Window | None:
    """The daily reconciliation's day: yesterday (UTC), once its manifest is written (so the
    lookback is past it too) and while no reconciliation of it is recorded; else None."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = Window(today - DAY, today)
    if last_sealed is None or last_sealed < yesterday.start.date():
        return None
    return None if reconciled(yesterday.start, yesterday.end) else yesterday
