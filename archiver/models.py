"""Value types shared by every module: recordings, windows, the watermark, time helpers."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

from archiver.errors import MalformedEntry

NATURES = frozenset({"in", "out", "team"})
# A call cannot have started before this, nor more than FUTURE_SLACK after now: such a date is
# garbage, and one far in the future would sit pending forever, never reached by the horizon.
EARLIEST_START = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)
MAX_DURATION_SECONDS = 31 * 24 * 3600
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def parse_time(text: str) -> datetime:
    """Parse an ISO 8601 time; a naive one is rejected rather than guessed."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"not a time: {text!r}")
    value = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    if value.tzinfo is None:
        raise ValueError(f"time without a zone: {text!r} (write it in UTC, e.g. {text}Z)")
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValueError(f"time out of range: {text!r}") from exc


def format_time(value: datetime) -> str:
    """The API's own format: milliseconds and a Z, e.g. 2022-06-01T00:00:00.000Z."""
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Recording:
    """One entry of `GET /recordings`, validated."""

    recording_id: str
    url: str
    started_at: datetime
    duration_seconds: int | None  # None when the API left it out
    nature: str
    agent1: str
    agent2: str | None = None
    cradle_number: str | None = None
    third_party_number: str | None = None

    @classmethod
    def from_api(cls, entry: Any, *, now: datetime | None = None) -> Recording:
        """Validate one list entry completely, so nothing downstream can trip on it; raise
        MalformedEntry naming the field that is wrong. With `now`, a `startedAt` more than
        FUTURE_SLACK after it is malformed too (a list answer is judged when it arrives; an entry
        read back from the checkpoint was judged then, so it passes no `now`)."""
        if not isinstance(entry, dict):
            raise MalformedEntry(f"entry is a {type(entry).__name__}, not an object")
        url = entry.get("url")
        if not isinstance(url, str) or not url:
            raise MalformedEntry("missing url")
        _require_text(url, "url")
        recording_id = recording_id_from_url(url)
        started_at = checked_started_at(entry.get("startedAt"), now)
        duration = entry.get("durationSeconds")
        if duration is not None and (
            isinstance(duration, bool)
            or not isinstance(duration, int | float)
            or not math.isfinite(duration)
            or not 0 <= duration <= MAX_DURATION_SECONDS
        ):
            raise MalformedEntry(f"invalid durationSeconds: {_shown(duration)}")
        nature = entry.get("nature")
        if not isinstance(nature, str) or nature not in NATURES:
            raise MalformedEntry(f"invalid nature: {_shown(nature)}")
        agent1 = entry.get("agent1")
        if not isinstance(agent1, str):
            raise MalformedEntry("missing agent1")
        _require_text(agent1, "agent1")
        return cls(
            recording_id=recording_id,
            url=url,
            started_at=started_at,
            duration_seconds=None if duration is None else int(duration),
            nature=nature,
            agent1=agent1,
            agent2=_optional_str(entry, "agent2"),
            cradle_number=_optional_str(entry, "cradleNumber"),
            third_party_number=_optional_str(entry, "thirdPartyNumber"),
        )

    def to_api(self) -> dict[str, Any]:
        """The entry in the API's own shape, for storing in the checkpoint."""
        entry: dict[str, Any] = {
            "url": self.url,
            "startedAt": self.started_at.strftime("%Y-%m-%dT%H:%M:%SZ")
            if self.started_at.microsecond == 0
            else format_time(self.started_at),
            "nature": self.nature,
            "agent1": self.agent1,
        }
        for key, value in (
            ("durationSeconds", self.duration_seconds),
            ("agent2", self.agent2),
            ("cradleNumber", self.cradle_number),
            ("thirdPartyNumber", self.third_party_number),
        ):
            if value is not None:
                entry[key] = value
        return entry


def checked_started_at(value: Any, now: datetime | None, *, quote: bool = True) -> datetime:
    """A call's `startedAt` (a list entry's, a conversation's, a webhook's), or MalformedEntry:
    an ISO 8601 time from EARLIEST_START to FUTURE_SLACK after `now` (no upper bound without
    `now`). `quote=False` leaves the value out of the message (a webhook's is the sender's)."""
    shown = f" {_shown(value)}" if quote else ""
    try:
        if not isinstance(value, str):
            raise TypeError("not a string")
        started_at = parse_time(value)
    except (ValueError, TypeError) as exc:
        raise MalformedEntry(
            f"invalid startedAt:{shown}" if quote else "invalid startedAt"
        ) from exc
    latest = datetime.max.replace(tzinfo=UTC) if now is None else now + FUTURE_SLACK
    if not EARLIEST_START <= started_at <= latest:
        raise MalformedEntry(
            f"startedAt{shown} out of range: before {EARLIEST_START:%Y-%m-%d} or more than"
            f" {FUTURE_SLACK.days} day after now"
        )
    return started_at


def _optional_str(entry: dict[str, Any], key: str) -> str | None:
    value = entry.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedEntry(f"invalid {key}: {_shown(value)}")
    _require_text(value, key)
    return value


def _require_text(value: str, key: str) -> None:
    """JSON may carry a lone surrogate (`"\\ud800"`), which no UTF-8 file, database or header
    can hold: refused here, or the checkpoint would fail on the whole window."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MalformedEntry(f"invalid {key}: not text (a lone surrogate at {exc.start})") from exc


def _shown(value: Any, limit: int = 100) -> str:
    """A hostile value in an error message: repr'd and cut, never a flood."""
    text = repr(value) if not isinstance(value, dict | list) else f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "…"


def recording_id_from_url(url: str) -> str:
    """The UUID in the url's last path segment, before `.mp3`.

    Split by hand rather than by a url parser: this is only a name, never where a request goes
    (urls.py decides that), and a parser may raise on a hostile url (`http://[x/`).
    """
    path = url.split("#", 1)[0].split("?", 1)[0]
    segment = path.rsplit("/", 1)[-1]
    stem = segment[:-4] if segment.lower().endswith(".mp3") else segment
    if not _UUID.match(stem):
        raise MalformedEntry(f"url has no recording id: {_shown(url)}")
    return stem.lower()


@dataclass(frozen=True, order=True)
class Window:
    """A half-open interval [start, end) of call start times."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"empty window {self.start} .. {self.end}")

    @property
    def width(self) -> timedelta:
        return self.end - self.start

    def halves(self) -> tuple[Window, Window]:
        middle = self.start + (self.end - self.start) / 2
        middle = middle.replace(microsecond=(middle.microsecond // 1000) * 1000)
        return Window(self.start, middle), Window(middle, self.end)

    def __str__(self) -> str:
        return f"[{format_time(self.start)}, {format_time(self.end)})"


def walk(start: datetime, end: datetime, step: timedelta) -> list[Window]:
    """Consecutive windows of `step` covering [start, end); the last may be shorter."""
    windows = []
    cursor = start
    while cursor < end:
        nxt = min(cursor + step, end)
        windows.append(Window(cursor, nxt))
        cursor = nxt
    return windows


@dataclass(frozen=True)
class Watermark:
    """Every window ending at or before `position` has been listed and fully archived."""

    position: datetime | None = None

    @property
    def is_zero(self) -> bool:
        return self.position is None

    def __str__(self) -> str:
        return "none" if self.position is None else format_time(self.position)


@dataclass(frozen=True)
class StagedFile:
    """A downloaded, verified recording body waiting in the spool directory for upload."""

    path: Path
    size: int
    sha256: str  # hex
    audio_seconds: float | None = None  # the MPEG frames walked as the body streamed
    audio_mismatch: bool = False  # far from durationSeconds, kept under audio.check = "warn"


class RecordingState(StrEnum):
    """Where a recording stands in the checkpoint."""

    PENDING = "pending"
    ARCHIVED = "archived"
    FAILED = "failed"  # dead-lettered: `retry` puts it back to pending
    EXPIRED = "expired"  # past its retain-until before it was archived, and skipped


class PassOutcome(StrEnum):
    OK = "ok"
    DEAD_LETTERS = "dead_letters"  # finished, but some recordings are dead-lettered
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self in (PassOutcome.OK, PassOutcome.DEAD_LETTERS)


class PutOutcome(StrEnum):
    CREATED = "created"
    ALREADY_PRESENT = "already_present"  # the same body is there: a crash after an upload
    CONFLICT = "conflict"  # a different body (or one of unknown origin) is there, left untouched


@dataclass(frozen=True)
class StoredObject:
    """An object at a key, as far as a HEAD (or our own write) tells."""

    key: str
    size: int
    sha256: str | None
    recording_id: str | None
    lock_mode: str | None = None  # S3's spelling: "GOVERNANCE" or "COMPLIANCE"
    retain_until: datetime | None = None
    # What S3 reports beyond the object's content, left out of equality: the same recording's
    # object is the same whichever version or checksum form a store shows of it.
    version_id: str | None = field(default=None, compare=False)  # None without versioning
    # S3's own ChecksumSHA256, as it gives it: base64 of the body's digest, or of the parts'
    # digests with a "-N" suffix for a multipart object (a composite that only its parts prove).
    checksum_sha256: str | None = field(default=None, compare=False)
    metadata: Mapping[str, str] = field(default_factory=dict, compare=False)  # x-amz-meta-*
    legal_hold: bool | None = None  # None when the HEAD did not say


class PutResult(NamedTuple):
    """What a store did with a recording; unpacks as `outcome, stored`."""

    outcome: PutOutcome
    stored: StoredObject


@dataclass(frozen=True)
class RecordingRow:
    """A recording as the checkpoint keeps it."""

    recording: Recording
    state: RecordingState
    attempts: int
    reason: str | None  # the last failure's, kept after a retry or a later success
    sha256: str | None
    size: int | None
    key: str | None
    first_seen: datetime
    updated_at: datetime
    lock_mode: str | None = None  # "governance" or "compliance", as written
    retain_until: datetime | None = None
    audio_seconds: float | None = None
    version_id: str | None = None  # the object's version, on a versioned bucket
    manifest_sequence: int | None = None  # the manifest that lists it, once its day is sealed


@dataclass(frozen=True)
class SealedManifest:
    """A manifest as the checkpoint keeps it: written to S3 once `written`."""

    sequence: int
    day: date
    supplement: int
    key: str
    sha256: str
    count: int
    body: bytes | None  # kept only until the write is confirmed, so a kill repeats the same bytes

    @property
    def written(self) -> bool:
        return self.body is None


@dataclass(frozen=True)
class PassResult:
    """What one archive pass (or backfill run) did, kept in the checkpoint for `status`."""

    kind: str  # "pass" or "backfill"
    started_at: datetime
    finished_at: datetime
    outcome: PassOutcome
    archived: int = 0
    failed: int = 0
    listed: int = 0
    error: str = ""
