"""The archive pass: walk the watermark through windows, list, archive, advance.

The pass knows the Cradle client, the checkpoint and the S3 sink only through the small
protocols below, so tests can swap any of them. It fixes its horizon once, at its start, and the
watermark moves only after everything in the window it covers is archived or dead-lettered, in a
checkpoint transaction of its own after theirs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from archiver.audio import mismatched
from archiver.config import ArchiveConfig, AudioCheck
from archiver.conversations import Conversation
from archiver.errors import (
    ApiUnavailable,
    ArchiverError,
    FatalError,
    Interrupted,
    RecordingFailed,
)
from archiver.holds import HoldRule
from archiver.listing import OVERLAP, Listing, WindowLister
from archiver.models import (
    PassOutcome,
    PassResult,
    PutOutcome,
    PutResult,
    Recording,
    RecordingRow,
    RecordingState,
    StagedFile,
    Watermark,
    Window,
    format_time,
    utc_now,
    walk,
)
from archiver.retention import Expired, Lock, RetentionPolicy
from archiver.spool import Spool

log = structlog.get_logger(__name__)

OPEN_END = datetime(9999, 12, 31, tzinfo=UTC)
# With no checkpoint and no `archive.start`, the walk starts this far behind the horizon.
DEFAULT_START_BEHIND = timedelta(days=1)
LOGGED_ENTRY_CHARS = 300  # of a malformed entry in its log line (the checkpoint keeps more)
LOGGED_ERROR_CHARS = 500  # of an unexpected error's message in the recording's failure


class Source(Protocol):
    """The Cradle API, as the pass uses it."""

    def list_recordings(
        self, window: Window, listed_from: datetime, listed_until: datetime
    ) -> Listing: ...
    def download(self, recording: Recording, spool: Spool) -> StagedFile: ...


class History(Protocol):
    """The call history's export (export.py's CallHistory), as the pass drives it."""

    def list_window(self, window: Window, horizon: datetime) -> list[Conversation]: ...
    def list_once(self, window: Window, horizon: datetime) -> list[Conversation]: ...
    def export(self, window: Window, conversations: list[Conversation]) -> int: ...
    def catch_up(
        self,
        *,
        origin: datetime,
        until: datetime,
        horizon: datetime,
        rescan_from: datetime,
        width: timedelta,
    ) -> int: ...


class Store(Protocol):
    """Where recordings are kept (S3), as the pass uses it."""

    def key_for(self, recording: Recording) -> str: ...
    def put(
        self,
        recording: Recording,
        staged: StagedFile,
        lock: Lock | None = None,
        legal_hold: bool = False,
    ) -> PutResult: ...
    def set_legal_hold(self, key: str, on: bool) -> None: ...
    def abort_stale_uploads(self, ours: Callable[[str], bool]) -> int: ...


class Ledger(Protocol):
    """The part of the checkpoint the pass uses."""

    def watermark(self) -> Watermark: ...
    def get(self, recording_id: str) -> RecordingRow | None: ...
    def set_watermark(self, position: datetime) -> None: ...
    def add_listed(self, recordings: Iterable[Recording]) -> list[Recording]: ...
    def pending(
        self,
        *,
        until: datetime | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[RecordingRow]: ...
    def count_pending(
        self, *, until: datetime | None = None, since: datetime | None = None
    ) -> int: ...
    def mark_archived(
        self,
        recording_id: str,
        *,
        sha256: str,
        size: int,
        key: str,
        lock: Lock | None = None,
        audio_seconds: float | None = None,
        audio_mismatch: bool = False,
        version_id: str | None = None,
    ) -> None: ...
    def count_settled(self, *, since: datetime, until: datetime) -> int: ...
    def mark_expired(self, recording_id: str) -> None: ...
    def holds(self) -> list[HoldRule]: ...
    def record_failure(
        self, recording_id: str, reason: str, *, dead_letter: bool, max_attempts: int
    ) -> RecordingRow: ...
    def record_malformed(self, window: Window, reason: str, raw: str) -> None: ...
    def backfill_cursor(self, start: datetime, end: datetime) -> datetime | None: ...
    def set_backfill_cursor(self, start: datetime, end: datetime, cursor: datetime) -> None: ...
    def record_pass(self, result: PassResult) -> None: ...


class PassEvents(Protocol):
    """What a pass reports as it goes, for metrics and a progress display."""

    def archived(
        self, recording: Recording, size: int, download_seconds: float, upload_seconds: float | None
    ) -> None:
        """`upload_seconds` is None when S3 already had the object."""

    def failed(self, recording: Recording, reason: str) -> None:
        """A recording was dead-lettered."""

    def audio_mismatch(self, recording: Recording) -> None:
        """A body's audio is far from its listed duration."""

    def progress(self, progress: Progress) -> None:
        """A backfill moved on (a recording settled, a window listed)."""


class NullEvents:
    """PassEvents that go nowhere."""

    def archived(
        self, recording: Recording, size: int, download_seconds: float, upload_seconds: float | None
    ) -> None:
        pass

    def failed(self, recording: Recording, reason: str) -> None:
        pass

    def audio_mismatch(self, recording: Recording) -> None:
        pass

    def progress(self, progress: Progress) -> None:
        pass


@dataclass
class Tally:
    """What this pass did, for its result and for progress display."""

    listed: int = 0
    queued: int = 0  # new recordings this run found to archive
    archived: int = 0
    failed: int = 0
    bytes: int = 0
    windows: int = 0
    expired: int = 0  # past their retain-until: skipped, or archived unlocked
    conversations: int = 0  # conversation revisions exported


@dataclass(frozen=True)
class Upload:
    recording: Recording
    staged: StagedFile
    lock: Lock | None
    legal_hold: bool
    future: Future[tuple[PutResult, float]]  # and the upload's seconds
    download_seconds: float  # retries included


@dataclass(frozen=True)
class Progress:
    """A snapshot for the backfill progress display: recordings done of those listed so far,
    and how far through [start, end) the listing has got."""

    done: int
    queued: int
    bytes: int
    start: datetime
    cursor: datetime
    end: datetime

    @property
    def fraction(self) -> float:
        span = (self.end - self.start).total_seconds()
        return 1.0 if span <= 0 else min(1.0, (self.cursor - self.start).total_seconds() / span)


class ArchivePass:
    def __init__(
        self,
        config: ArchiveConfig,
        source: Source,
        ledger: Ledger,
        store: Store,
        spool: Spool,
        *,
        clock: Callable[[], datetime] = utc_now,
        stop: threading.Event | None = None,
        events: PassEvents | None = None,
        retention: RetentionPolicy | None = None,
        audio_check: AudioCheck = AudioCheck.WARN,
        history: History | None = None,
        interlude: Callable[[], object] | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.ledger = ledger
        self.store = store
        self.spool = spool
        self.clock = clock
        self.stop = stop or threading.Event()
        self.events: PassEvents = events or NullEvents()
        self.retention = retention or RetentionPolicy()
        self.audio_check = audio_check
        self.history = history
        # Between two windows (nothing in flight): where webhook hints get their turn.
        self.interlude = interlude or (lambda: None)
        self.tally = Tally()
        self.archived_ids: list[str] = []
        self._span: tuple[datetime, datetime, datetime] | None = None

    # -- entry points ----------------------------------------------------------------------

    def run(self) -> PassResult:
        """One daemon pass: catch up to the horizon, rescan the lookback, retry what is due."""
        return self._guarded("pass", self._run)

    def backfill(self, start: datetime, until: datetime | None = None) -> PassResult:
        """Archive [start, until) without moving the daemon's watermark; resumable."""
        return self._guarded("backfill", lambda horizon: self._backfill(start, until, horizon))

    def horizon(self) -> datetime:
        now = self.clock() - self.config.settle_delay
        return now.replace(microsecond=(now.microsecond // 1000) * 1000)

    def _now(self) -> datetime:
        now = self.clock()
        return now.replace(microsecond=(now.microsecond // 1000) * 1000)

    # -- the walks -------------------------------------------------------------------------

    def _run(self, horizon: datetime) -> None:
        watermark = self.ledger.watermark()
        start = watermark.position or self.config.start or (horizon - DEFAULT_START_BEHIND)
        if watermark.is_zero:
            # Persist the starting point now: recomputing it next pass would skip what lies between.
            self.ledger.set_watermark(start)
        log.info("pass.started", watermark=str(watermark), horizon=str(Watermark(horizon)))
        for window in walk(start, horizon, self.config.window):
            self._list(window, horizon)
            self._archive(until=window.end)
            if not self._advance(window):
                break
            self.interlude()
        rescan_end = min(start, horizon)
        for window in walk(horizon - self.config.lookback, rescan_end, self.config.window):
            self._list(window, horizon)
            self.interlude()
        self._archive(until=horizon)
        self._catch_up_history(start, horizon)

    def _backfill(self, start: datetime, until: datetime | None, horizon: datetime) -> None:
        # A backfill "up to the horizon" is one job however far the horizon has moved since.
        key = (start, until or OPEN_END)
        end = min(until or horizon, horizon)
        cursor = self.ledger.backfill_cursor(*key) or start
        log.info(
            "backfill.started",
            start=str(Watermark(start)),
            end=str(Watermark(end)),
            cursor=str(Watermark(cursor)),
        )
        self._span = (start, cursor, end)
        for window in walk(cursor, end, self.config.window):
            self._list(window, horizon)
            conversations = self._list_history(window, horizon)
            self._report()
            self._archive(until=window.end, since=start - OVERLAP)
            if self.history is not None:
                # A backfill is one job run by hand: a failure here fails it, before its cursor
                # moves, and running it again lists this window again.
                self.tally.conversations += self.history.export(window, conversations)
            self.ledger.set_backfill_cursor(*key, window.end)
            self._span = (start, window.end, end)
            self._report()
        # Stragglers from an earlier, interrupted run of the same backfill.
        self._archive(until=end, since=start - OVERLAP)

    # -- listing ---------------------------------------------------------------------------

    def _list(self, window: Window, horizon: datetime) -> None:
        """List a window (split while it looks full) and record every new recording as pending."""
        for leaf, listing in WindowLister(
            self.source.list_recordings, self.config, self._check_stop
        ).leaves(window, horizon):
            self._record(leaf, listing)

    def _list_history(self, window: Window, horizon: datetime) -> list[Conversation]:
        """The window's conversations, listed beside its recordings (none when not exported)."""
        return [] if self.history is None else self.history.list_window(window, horizon)

    def _catch_up_history(self, start: datetime, horizon: datetime) -> None:
        """The call history, on its own cursor up to the watermark: a failing `/conversations`
        (an outage, a key without access to it) is logged and caught up on by a later pass,
        and never holds up the recordings."""
        position = self.ledger.watermark().position
        if self.history is None or position is None:
            return
        try:
            self.tally.conversations += self.history.catch_up(
                origin=start,
                until=position,
                horizon=horizon,
                rescan_from=horizon - self.config.lookback,
                width=self.config.window,
            )
        except Interrupted:
            raise
        except ArchiverError as exc:
            log.error("conversations.export_failed", error=str(exc), error_type=type(exc).__name__)

    def _record(self, window: Window, listing: Listing) -> None:
        for reason, raw in listing.malformed:
            log.error(
                "entry.malformed", window=str(window), reason=reason, entry=raw[:LOGGED_ENTRY_CHARS]
            )
            self.ledger.record_malformed(window, reason, raw)
        new = self.ledger.add_listed(listing.recordings)
        self.tally.listed += len(listing.recordings)
        self.tally.queued += len(new)
        self.tally.windows += 1
        if new:
            log.info("window.new_recordings", window=str(window), new=len(new))

    # -- archiving -------------------------------------------------------------------------

    def _archive(self, *, until: datetime, since: datetime | None = None) -> None:
        """Archive every pending recording in range, oldest first."""
        self._archive_rows(self.ledger.pending(until=until, since=since))

    def _archive_rows(self, rows: list[RecordingRow]) -> None:
        """Archive `rows` in order; the next one downloads while the previous one uploads (one
        upload in flight, so at most two files are staged)."""
        if not rows:
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload") as uploads:
            in_flight: Upload | None = None
            try:
                for row in rows:
                    self._check_stop()
                    if self._skipped_as_expired(row.recording):
                        continue
                    fetch_started = time.monotonic()
                    staged = self._fetch(row)
                    download_seconds = time.monotonic() - fetch_started
                    previous, in_flight = in_flight, None
                    if previous is not None:
                        # On failure the new download stays staged, verified, for the next pass.
                        self._settle(previous)
                    if staged is not None:
                        lock = self._lock_for(row.recording)
                        held = self._held(row.recording)
                        future = uploads.submit(self._upload, row.recording, staged, lock, held)
                        in_flight = Upload(
                            row.recording, staged, lock, held, future, download_seconds
                        )
                previous, in_flight = in_flight, None
                if previous is not None:
                    self._settle(previous)
            finally:
                if in_flight is not None:
                    # The pass is failing: still record the upload if it landed.
                    try:
                        self._settle(in_flight)
                    except Exception as exc:  # the first error is the one raised
                        log.warning(
                            "upload.abandoned",
                            recording_id=in_flight.recording.recording_id,
                            error=str(exc),
                        )

    def _fetch(self, row: RecordingRow) -> StagedFile | None:
        """Download and verify one recording, retrying a failed attempt until max_attempts."""
        recording = row.recording
        kept = self.spool.kept(recording.recording_id)
        if kept is not None:
            # Verified by an earlier process that stopped before recording it; no re-download.
            log.info("recording.restaged", recording_id=recording.recording_id, bytes=kept.size)
        while True:
            try:
                staged = kept or self.source.download(recording, self.spool)
                kept = None
                return self._checked_audio(recording, staged)
            except RecordingFailed as exc:
                if self._failed(recording, exc.reason, str(exc), dead_letter=exc.permanent):
                    return None
            except ApiUnavailable as exc:
                # Counted, so a recording the API always fails on is dead-lettered in the end
                # instead of holding the watermark forever; but the pass stops: the API is unwell.
                self._failed(recording, exc.reason, str(exc), dead_letter=False)
                raise
            except FatalError:
                raise
            except Exception as exc:
                # A bug, or an input nobody foresaw: it costs this recording an attempt, never
                # the pass, and the traceback is logged for whoever fixes it.
                if self._internal_error(recording, exc):
                    return None

    def _checked_audio(self, recording: Recording, staged: StagedFile) -> StagedFile:
        """The walked audio length against `durationSeconds`, per `audio.check`."""
        if (
            self.audio_check is AudioCheck.OFF
            or staged.audio_seconds is None
            or not mismatched(recording.duration_seconds, staged.audio_seconds)
        ):
            return staged
        message = (
            f"the body holds {staged.audio_seconds:.1f}s of audio, the list says"
            f" {recording.duration_seconds}s"
        )
        log.warning(
            "recording.audio_mismatch",
            recording_id=recording.recording_id,
            audio_seconds=round(staged.audio_seconds, 1),
            duration_seconds=recording.duration_seconds,
            action=self.audio_check.value,
        )
        self.events.audio_mismatch(recording)
        if self.audio_check is AudioCheck.FAIL:
            self.spool.discard(staged)
            raise RecordingFailed(message, "audio_mismatch")
        return replace(staged, audio_mismatch=True)

    def _skipped_as_expired(self, recording: Recording) -> bool:
        """With `retention.expired = "skip"`, a recording already past its retain-until is not
        downloaded: it ends in the terminal state `expired`."""
        policy = self.retention
        if policy.expired is not Expired.SKIP:
            return False
        if not policy.is_expired(recording.started_at, self.clock()):
            return False
        self.ledger.mark_expired(recording.recording_id)
        self._expired(recording, "skipped")
        return True

    def _lock_for(self, recording: Recording) -> Lock | None:
        policy = self.retention
        lock = policy.lock_for(recording.started_at, self.clock())
        if lock is None and policy.mode is not None:
            # Past its date with `expired = "archive"`: kept, but S3 refuses a lock in the past.
            self._expired(recording, "archived unlocked")
        return lock

    def _expired(self, recording: Recording, action: str) -> None:
        self.tally.expired += 1
        log.warning(
            "recording.expired",
            recording_id=recording.recording_id,
            retain_until=format_time(self.retention.retain_until(recording.started_at)),
            action=action,
        )

    def _held(self, recording: Recording) -> bool:
        """A hold rule matches: the object is written with the legal hold on."""
        return any(rule.matches(recording) for rule in self.ledger.holds())

    def _upload(
        self, recording: Recording, staged: StagedFile, lock: Lock | None, legal_hold: bool
    ) -> tuple[PutResult, float]:
        started = time.monotonic()
        result = self.store.put(recording, staged, lock, legal_hold)
        return result, time.monotonic() - started

    def _settle(self, upload: Upload) -> None:
        """What became of an upload, recorded: archived, a conflict, or a failed attempt."""
        recording, staged = upload.recording, upload.staged
        try:
            (outcome, stored), seconds = upload.future.result()
        except RecordingFailed as exc:
            # S3 refused this one body (a checksum mismatch, a changed staging file, metadata
            # it will not take): an attempt, retried by the next pass unless permanent.
            self.spool.discard(staged)
            self._failed(recording, exc.reason, str(exc), dead_letter=exc.permanent)
            return
        except FatalError:
            raise
        except Exception as exc:
            self.spool.discard(staged)
            self._internal_error(recording, exc)
            return
        # Any other error propagates and the staged file stays, verified, for the next pass.
        key = self.store.key_for(recording)
        if outcome is PutOutcome.CONFLICT:
            self._failed(
                recording,
                "conflict",
                f"another object is at {key} (sha256 {stored.sha256}, ours {staged.sha256})",
                dead_letter=True,
            )
            self.spool.discard(staged)
            return
        created = outcome is PutOutcome.CREATED
        self._archived(upload, key, seconds if created else None, stored.version_id)

    def _archived(
        self, upload: Upload, key: str, upload_seconds: float | None, version_id: str | None
    ) -> None:
        """The object is in S3 (written now, or found there: `upload_seconds` None)."""
        recording, staged = upload.recording, upload.staged
        self.ledger.mark_archived(
            recording.recording_id,
            sha256=staged.sha256,
            size=staged.size,
            key=key,
            lock=upload.lock,
            audio_seconds=staged.audio_seconds,
            audio_mismatch=staged.audio_mismatch,
            version_id=version_id,
        )
        if not upload.legal_hold and self._held(recording):
            # A `hold add` ran between this upload's start and the line above, and so did not
            # see it archived: the hold it asks for is set here instead.
            self.store.set_legal_hold(key, True)
            log.info("recording.held", recording_id=recording.recording_id, key=key)
        # Only now: a kill before this line leaves the body staged for the next process.
        self.spool.discard(staged)
        self.tally.archived += 1
        self.archived_ids.append(recording.recording_id)
        self.tally.bytes += staged.size
        self.events.archived(recording, staged.size, upload.download_seconds, upload_seconds)
        self._report()
        log.info(
            "recording.archived",
            recording_id=recording.recording_id,
            key=key,
            bytes=staged.size,
            sha256=staged.sha256,
            upload_seconds=None if upload_seconds is None else round(upload_seconds, 3),
            already_present=upload_seconds is None,
        )

    def _failed(
        self, recording: Recording, reason: str, message: str, *, dead_letter: bool
    ) -> bool:
        """Record a failed attempt; True when the recording is now dead-lettered."""
        row = self.ledger.record_failure(
            recording.recording_id,
            reason,
            dead_letter=dead_letter,
            max_attempts=self.config.max_attempts,
        )
        dead = row.state is RecordingState.FAILED
        log.warning(
            "recording.failed",
            recording_id=recording.recording_id,
            reason=reason,
            error=message,
            attempt=row.attempts,
            dead_lettered=dead,
        )
        if dead:
            self.tally.failed += 1
            self.events.failed(recording, reason)
            self._report()
        return dead

    def _internal_error(self, recording: Recording, exc: Exception) -> bool:
        log.error(
            "recording.internal_error",
            recording_id=recording.recording_id,
            error_type=type(exc).__name__,
            exc_info=exc,
        )
        message = f"internal error: {type(exc).__name__}: {exc}"
        return self._failed(
            recording, "internal_error", message[:LOGGED_ERROR_CHARS], dead_letter=False
        )

    def _advance(self, window: Window) -> bool:
        """Move the watermark past `window` if nothing before its end is still pending."""
        left = self.ledger.count_pending(until=window.end)
        if left:
            # An upload S3 refused leaves its recording pending for the next pass; the
            # watermark waits rather than pass unarchived work.
            log.warning("watermark.held", window=str(window), pending=left)
            return False
        self.ledger.set_watermark(window.end)
        log.info("watermark.advanced", watermark=str(Watermark(window.end)))
        return True

    def _report(self) -> None:
        if self._span is None:  # a daemon pass has no span to show progress through
            return
        t = self.tally
        self.events.progress(Progress(t.archived + t.failed, t.queued, t.bytes, *self._span))

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Interrupted("shutdown asked for")

    # -- bookkeeping -----------------------------------------------------------------------

    def _guarded(self, kind: str, body: Callable[[datetime], None]) -> PassResult:
        started = self.clock()
        horizon = self.horizon()
        self.spool.prepare(keep=self._still_pending)
        error = ""
        try:
            self.store.abort_stale_uploads(
                lambda recording_id: self.ledger.get(recording_id) is not None
            )
            body(horizon)
        except Exception as exc:
            error = str(exc) or type(exc).__name__
            outcome = (
                PassOutcome.INTERRUPTED if isinstance(exc, Interrupted) else PassOutcome.FAILED
            )
            result = self._result(kind, started, outcome, error)
            self.ledger.record_pass(result)
            log.error(
                f"{kind}.failed", error=error, error_type=type(exc).__name__, **vars(self.tally)
            )
            raise
        outcome = PassOutcome.DEAD_LETTERS if self.tally.failed else PassOutcome.OK
        result = self._result(kind, started, outcome, error)
        self.ledger.record_pass(result)
        log.info(
            f"{kind}.finished",
            outcome=outcome,
            seconds=round((result.finished_at - started).total_seconds(), 3),
            **vars(self.tally),
        )
        return result

    def _result(self, kind: str, started: datetime, outcome: PassOutcome, error: str) -> PassResult:
        t = self.tally
        return PassResult(
            kind, started, self.clock(), outcome, t.archived, t.failed, t.listed, error
        )

    def _still_pending(self, recording_id: str) -> bool:
        row = self.ledger.get(recording_id)
        return row is not None and row.state is RecordingState.PENDING
