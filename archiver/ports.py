"""The ports of the archive pass: the Cradle API, the call history, the store and the ledger,
each as the small protocol the pass uses, and what it reports as it goes.

The pass knows the Cradle client, the checkpoint and the S3 sink only through these, so a test
can swap any of them for a fake that keeps the same promises (the store's contract suite runs
against both the fake and S3). They hold no behaviour: only the shapes, and the events that go
nowhere when nobody listens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from archiver.conversations import Conversation
from archiver.holds import HoldRule
from archiver.listing import Listing
from archiver.models import (
    PassResult,
    PutResult,
    Recording,
    RecordingRow,
    StagedFile,
    Watermark,
    Window,
)
from archiver.retention import Lock
from archiver.spool import Spool


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
