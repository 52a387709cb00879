"""Value types shared by every module: recordings, windows, the watermark, time helpers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from archiver.errors import MalformedEntry

NATURES = frozenset({"in", "out", "team"})
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def parse_time(text: str) -> datetime:
    """Parse an ISO 8601 time; a naive one is rejected rather than guessed."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"not a time: {text!r}")
    value = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    if value.tzinfo is None:
        raise ValueError(f"time without a zone: {text!r} (write it in UTC, e.g. {text}Z)")
    return value.astimezone(UTC)


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
    duration_seconds: int
    nature: str
    agent1: str
    agent2: str | None = None
    cradle_number: str | None = None
    third_party_number: str | None = None

    @classmethod
    def from_api(cls, entry: Any) -> Recording:
        """Validate one list entry; raise MalformedEntry naming the field that is wrong."""
        if not isinstance(entry, dict):
            raise MalformedEntry(f"entry is a {type(entry).__name__}, not an object")
        url = entry.get("url")
        if not isinstance(url, str) or not url:
            raise MalformedEntry("missing url")
        recording_id = recording_id_from_url(url)
        try:
            started_at = parse_time(entry.get("startedAt"))  # type: ignore[arg-type]
        except (ValueError, TypeError) as exc:
            raise MalformedEntry(f"invalid startedAt: {entry.get('startedAt')!r}") from exc
        duration = entry.get("durationSeconds", 0)
        if isinstance(duration, bool) or not isinstance(duration, int | float) or duration < 0:
            raise MalformedEntry(f"invalid durationSeconds: {duration!r}")
        nature = entry.get("nature")
        if nature not in NATURES:
            raise MalformedEntry(f"invalid nature: {nature!r}")
        agent1 = entry.get("agent1")
        if not isinstance(agent1, str):
            raise MalformedEntry("missing agent1")
        return cls(
            recording_id=recording_id,
            url=url,
            started_at=started_at,
            duration_seconds=int(duration),
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
            "durationSeconds": self.duration_seconds,
            "nature": self.nature,
            "agent1": self.agent1,
        }
        for key, value in (
            ("agent2", self.agent2),
            ("cradleNumber", self.cradle_number),
            ("thirdPartyNumber", self.third_party_number),
        ):
            if value is not None:
                entry[key] = value
        return entry


def _optional_str(entry: dict[str, Any], key: str) -> str | None:
    value = entry.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedEntry(f"invalid {key}: {value!r}")
    return value


def recording_id_from_url(url: str) -> str:
    """The UUID in the url's last path segment, before `.mp3`."""
    segment = urlsplit(url).path.rsplit("/", 1)[-1]
    stem = segment[:-4] if segment.lower().endswith(".mp3") else segment
    if not _UUID.match(stem):
        raise MalformedEntry(f"url has no recording id: {url!r}")
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


@dataclass(frozen=True)
class PassResult:
    """What one archive pass (or backfill run) did, kept in the checkpoint for `status`."""

    kind: str  # "pass" or "backfill"
    started_at: datetime
    finished_at: datetime
    outcome: str  # "ok", "dead_letters" or "failed"
    archived: int = 0
    failed: int = 0
    listed: int = 0
    error: str = ""
