"""Daily manifests: what a sealed UTC day holds, as bytes a third party can check.

A manifest is JSON Lines: a header line, then one line per recording of the day in id order.
Each header names the previous manifest by key and by the SHA-256 of its exact bytes, and
carries a `sequence` over the whole archive, so the manifests form one chain (as CloudTrail's
digest files do): editing, deleting or reordering any of them breaks a link that `audit` finds.

The bytes are a function of the content alone (sorted keys, no timestamps), so a run killed
between writing a manifest and recording it writes the same bytes at the same key again.

Beside each manifest: `<name>.sha256`, in `sha256sum` format with paths relative to the prefix,
listing the day's recordings and the manifest itself (so `sha256sum -c` over a copy, or `rclone
checksum sha256` against the bucket, checks them all); and with a signing key `<name>.jsonl.sig`,
the Ed25519 signature of the manifest's bytes in base64.

This module is pure: building, reading and naming manifests. Sealing days (`seal.py`) and
verifying a chain (`audit.py`) use it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from archiver.models import format_time

SCHEMA = "cradle-archiver.manifest/1"
MANIFEST_DIR = "manifests/"
MAX_MANIFEST_BYTES = 1 << 30  # a day of 10 calls a second is ~300 MB; a reader refuses more
_NAME = re.compile(r"^(\d{4})/(\d{2})/(\d{2})(?:\.(\d+))?\.(jsonl|sha256|jsonl\.sig)$")


class ManifestInvalid(ValueError):
    """Bytes that are not a manifest of ours; the message says which line and why."""


@dataclass(frozen=True)
class Link:
    """The previous manifest in the chain: its key and the hex SHA-256 of its bytes."""

    key: str
    sha256: str


@dataclass(frozen=True)
class Entry:
    """One recording as a manifest lists it."""

    id: str
    key: str
    version_id: str | None
    sha256: str
    size: int
    started_at: datetime
    duration_seconds: float | None
    audio_seconds: float | None
    retain_until: datetime | None
    # The list entry the API gave (as the checkpoint keeps it): what `rebuild-state` restores and
    # what hold rules match on (agents, numbers).
    entry: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "version_id": self.version_id,
            "sha256": self.sha256,
            "size": self.size,
            "started_at": format_time(self.started_at),
            "duration_seconds": self.duration_seconds,
            "audio_seconds": self.audio_seconds,
            "retain_until": format_time(self.retain_until) if self.retain_until else None,
            "entry": dict(self.entry),
        }

    @classmethod
    def from_json(cls, line: Any) -> Entry:
        if not isinstance(line, dict):
            raise ValueError("not an object")
        return cls(
            id=_text(line, "id"),
            key=_text(line, "key"),
            version_id=_optional_text(line, "version_id"),
            sha256=_sha256(line.get("sha256"), "sha256"),
            size=_count(line, "size"),
            started_at=_time(line.get("started_at"), "started_at"),
            duration_seconds=_optional_number(line, "duration_seconds"),
            audio_seconds=_optional_number(line, "audio_seconds"),
            retain_until=(
                _time(line["retain_until"], "retain_until") if line.get("retain_until") else None
            ),
            entry=_object(line, "entry"),
        )


@dataclass(frozen=True)
class Manifest:
    """One day's manifest (`supplement` 0) or a supplement to it (1, 2, ...)."""

    day: date
    supplement: int
    sequence: int
    previous: Link | None
    entries: tuple[Entry, ...]

    def body(self) -> bytes:
        """The manifest's bytes: the same content always gives the same bytes."""
        header = {
            "schema": SCHEMA,
            "day": self.day.isoformat(),
            "supplement": self.supplement,
            "sequence": self.sequence,
            "previous": (
                {"key": self.previous.key, "sha256": self.previous.sha256}
                if self.previous
                else None
            ),
            "count": len(self.entries),
        }
        lines = [header] + [e.to_json() for e in sorted(self.entries, key=lambda e: e.id)]
        return b"".join(_line(line) for line in lines)

    def latest_retain_until(self) -> datetime | None:
        dates = [e.retain_until for e in self.entries if e.retain_until is not None]
        return max(dates) if dates else None


def parse(body: bytes) -> Manifest:
    """A manifest's bytes read back, checked line by line (ManifestInvalid names the line)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestInvalid(f"not UTF-8: {exc}") from None
    if not text.endswith("\n"):
        raise ManifestInvalid("does not end with a newline (cut short?)")
    lines = text[:-1].split("\n")
    header = _header(lines[0])
    entries = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            entries.append(Entry.from_json(json.loads(line)))
        except (ValueError, RecursionError) as exc:
            raise ManifestInvalid(f"line {number}: {exc}") from None
    if len(entries) != header["count"]:
        raise ManifestInvalid(f"the header counts {header['count']} entries, {len(entries)} follow")
    ids = [e.id for e in entries]
    if ids != sorted(ids) or len(set(ids)) != len(ids):
        raise ManifestInvalid("entries are not in strictly ascending id order")
    return Manifest(
        day=header["day"],
        supplement=header["supplement"],
        sequence=header["sequence"],
        previous=header["previous"],
        entries=tuple(entries),
    )


def _header(line: str) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise ManifestInvalid(f"line 1: {exc}") from None
    if not isinstance(header, dict) or header.get("schema") != SCHEMA:
        raise ManifestInvalid(f"line 1: not a {SCHEMA} header")
    try:
        previous = header.get("previous")
        return {
            "day": date.fromisoformat(_text(header, "day")),
            "supplement": _count(header, "supplement"),
            "sequence": _count(header, "sequence"),
            "count": _count(header, "count"),
            "previous": (
                Link(_text(previous, "key"), _sha256(previous.get("sha256"), "previous.sha256"))
                if isinstance(previous, dict)
                else None
            ),
        }
    except ValueError as exc:
        raise ManifestInvalid(f"line 1: {exc}") from None


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def manifest_key(prefix: str, day: date, supplement: int = 0) -> str:
    """`{prefix}manifests/YYYY/MM/DD.jsonl`, or `DD.{n}.jsonl` for supplement n."""
    part = f".{supplement}" if supplement else ""
    return f"{prefix}{MANIFEST_DIR}{day:%Y/%m/%d}{part}.jsonl"


def checksum_key(key: str) -> str:
    return key.removesuffix(".jsonl") + ".sha256"


def signature_key(key: str) -> str:
    return key + ".sig"


@dataclass(frozen=True)
class ManifestName:
    """What a key under `{prefix}manifests/` names."""

    day: date
    supplement: int
    kind: str  # "jsonl", "sha256" or "jsonl.sig"


def parse_key(prefix: str, key: str) -> ManifestName | None:
    """The day, supplement and kind a manifest-area key names, or None for any other key."""
    if not key.startswith(prefix + MANIFEST_DIR):
        return None
    match = _NAME.match(key[len(prefix + MANIFEST_DIR) :])
    if match is None:
        return None
    year, month, day, supplement, kind = match.groups()
    try:
        return ManifestName(date(int(year), int(month), int(day)), int(supplement or 0), kind)
    except ValueError:
        return None


def checksum_file(prefix: str, key: str, body: bytes, entries: Iterable[Entry]) -> bytes:
    """The `.sha256` beside a manifest: `sha256sum` lines for the recordings and the manifest,
    paths relative to the prefix (`sha256sum -c` in a copy of the prefix checks them all)."""
    lines = [
        f"{e.sha256}  {_relative(prefix, e.key)}\n" for e in sorted(entries, key=lambda e: e.id)
    ]
    lines.append(f"{digest(body)}  {_relative(prefix, key)}\n")
    return "".join(lines).encode()


def parse_checksum_file(body: bytes) -> dict[str, str]:
    """`sha256sum` lines as {relative path: hex digest}; ManifestInvalid on any other line."""
    sums = {}
    for number, line in enumerate(body.decode("utf-8", "replace").splitlines(), start=1):
        hexdigest, sep, path = line.partition("  ")
        if not sep or not re.fullmatch(r"[0-9a-f]{64}", hexdigest) or not path:
            raise ManifestInvalid(f"line {number} is not `<sha256>  <path>`")
        sums[path] = hexdigest
    return sums


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _relative(prefix: str, key: str) -> str:
    return key[len(prefix) :] if key.startswith(prefix) else key


def _line(value: Any) -> bytes:
    return (
        json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
    ).encode()


def _text(line: Any, name: str) -> str:
    value = line.get(name) if isinstance(line, dict) else None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} is missing or not a string")
    return _storable(value, name)


def _object(line: dict[str, Any], name: str) -> dict[str, Any]:
    value = line.get(name, {})
    if not isinstance(value, dict):
        raise ValueError(f"{name} is not an object")
    return value


def _optional_text(line: dict[str, Any], name: str) -> str | None:
    value = line.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} is not a string")
    return None if value is None else _storable(value, name)


def _storable(value: str, name: str) -> str:
    """Text a database, a header and a key can hold: no lone surrogate (JSON allows one)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} is not text (a lone surrogate)") from None
    return value


def _sha256(value: Any, name: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"{name} is not a lower-case hex SHA-256")
    return value


def _count(line: dict[str, Any], name: str) -> int:
    value = line.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ValueError(f"{name} is not a whole number below 2**63")
    return value


def _optional_number(line: dict[str, Any], name: str) -> float | None:
    value = line.get(name)
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
    ):
        raise ValueError(f"{name} is not a finite number")
    return value


def _time(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{name} is not a time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} is not an ISO 8601 time: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{name} has no time zone")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # year 1 an hour east of UTC, say
        raise ValueError(f"{name} is out of range: {value[:40]!r}") from None
