"""Archiving a pass's pending recordings, one at a time: download and verify, upload, record.

The next recording downloads while the previous one uploads, with one upload in flight, so at
most two files are staged and the Cradle API still sees one request at a time. A recording's
trouble costs it an attempt, never the pass: a refused body, a conflict at its key or a bug is
recorded against that recording alone (dead-lettered at `max_attempts`, or at once when it can
never succeed), while an unwell API (ApiUnavailable) or a fatal error stops the pass with the
recording's staged body kept, verified, for the next one. A staged body is discarded only after
the checkpoint records the object, so a kill anywhere leaves nothing lost and nothing twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime

import structlog

from archiver.audio import mismatched
from archiver.config import ArchiveConfig, AudioCheck
from archiver.errors import ApiUnavailable, FatalError, RecordingFailed
from archiver.models import (
    PutOutcome,
    PutResult,
    Recording,
    RecordingRow,
    RecordingState,
    StagedFile,
    format_time,
)
from archiver.ports import Ledger, PassEvents, Source, Store
from archiver.retention import Expired, Lock, RetentionPolicy
from archiver.spool import Spool

log = structlog.get_logger(__name__)

LOGGED_ERROR_CHARS = 500  # of an unexpected error's message in the recording's failure


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


@dataclass
class RecordingArchiver:
    """The per-recording work of one pass. The pass owns it and shares its `tally`; `check_stop`
    raises Interrupted when a shutdown is asked for, and `report` shows the pass's progress."""

    config: ArchiveConfig
    source: Source
    ledger: Ledger
    store: Store
    spool: Spool
    clock: Callable[[], datetime]
    events: PassEvents
    retention: RetentionPolicy
    audio_check: AudioCheck
    tally: Tally
    check_stop: Callable[[], None]
    report: Callable[[], None]
    archived_ids: list[str] = field(default_factory=list)

    def archive(self, rows: list[RecordingRow]) -> None:
        """Archive `rows` in order; the next one downloads while the previous one uploads (one
        upload in flight, so at most two files are staged)."""
        if not rows:
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload") as uploads:
            in_flight: Upload | None = None
            try:
                for row in rows:
                    self.check_stop()
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
        self.report()
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
            self.report()
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
