"""The call history: conversations as the API lists them, checked, and exported as JSON Lines.

A conversation is kept as the API gave it (the export is the record, not our reading of it), but
only after the fields we rely on are checked like any hostile input: a string `uuid`, a
`startedAt` from 2000 to a day after now, and `recordings` (when present) a list. Its `revision`
counts the distinct contents seen for its uuid: the first is 1, and one listed again later with
other content (a status settled, a user added) is written again as the next revision.

A window's new revisions go into one part per UTC day of their `startedAt`, under Hive-style
partitions, gzip JSON Lines: `{prefix}conversations/year=YYYY/month=MM/day=DD/part-{window start,
YYYYMMDDTHHMMSSZ}-{first 12 hex of the part's SHA-256}.jsonl.gz`. Each line is the conversation
plus `schema_version` (1), `revision` and `archived_at`. Athena, DuckDB and Spark read that
layout as a table partitioned by year, month and day (docs/athena.md).

This module is pure; exporting windows (what is new, kept and written once) is export.py's.
`read_part` reads a part back (`rebuild-state`): a line minus the three fields the export adds is
the API's object again, so its digest is the one the exporter kept.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from archiver.errors import MalformedEntry
from archiver.models import Window, checked_started_at, format_time, recording_id_from_url

SCHEMA_VERSION = 1
EXPORT_DIR = "conversations/"
EXPORT_FIELDS = ("schema_version", "revision", "archived_at")  # what a line adds to the object
MAX_UUID_CHARS = 100
MAX_LINE_BYTES = 16 * 2**20  # far over any conversation; a longer line ends the read
MAX_PART_BYTES = 256 * 2**20  # unpacked: an hour of ten calls a second is some 70 MB
_SAFE_UUID = re.compile(r"^[A-Za-z0-9._:-]+$")
_PART_DAY = re.compile(r"/year=(\d{4})/month=(\d{2})/day=(\d{2})/part-[^/]*$")
_PART_WINDOW = re.compile(r"/part-(\d{8}T\d{6}Z)-[^/]*$")


@dataclass(frozen=True)
class Conversation:
    """One entry of `GET /conversations`, checked; `raw` is the entry itself."""

    uuid: str
    started_at: datetime
    raw: Mapping[str, Any]
    recording_ids: tuple[str, ...] = ()  # ids of the recording urls it names (readable ones)

    @classmethod
    def from_api(cls, entry: Any, *, now: datetime) -> Conversation:
        if not isinstance(entry, dict):
            raise MalformedEntry(f"conversation is a {type(entry).__name__}, not an object")
        uuid = checked_uuid(entry.get("uuid"))
        try:
            started_at = checked_started_at(entry.get("startedAt"), now)
        except MalformedEntry as exc:
            raise MalformedEntry(f"conversation {uuid}: {exc}") from None
        recordings = entry.get("recordings", [])
        if recordings is None:
            recordings = []
        if not isinstance(recordings, list):
            raise MalformedEntry(f"conversation {uuid}: recordings is not a list")
        try:
            canonical(entry)
        except (ValueError, TypeError) as exc:  # a lone surrogate, a NaN: not storable as JSON
            raise MalformedEntry(f"conversation {uuid}: not storable as JSON ({exc})") from exc
        return cls(uuid, started_at, entry, tuple(_recording_ids(recordings)))

    @property
    def digest(self) -> str:
        """Of the content as the API gave it: a change of any field is a new revision."""
        return hashlib.sha256(canonical(self.raw)).hexdigest()


@dataclass(frozen=True)
class Revision:
    """A conversation's content to export, with its revision number."""

    conversation: Conversation
    revision: int


@dataclass(frozen=True)
class Exported:
    """What the checkpoint keeps of a conversation's latest exported revision (not its content:
    `rebuild-state` holds one per uuid of the whole history in memory)."""

    uuid: str
    revision: int
    digest: str
    started_at: datetime
    recording_ids: tuple[str, ...]
    part: str  # the key of the part that holds it

    @classmethod
    def of(cls, revision: Revision, part: str) -> Exported:
        conversation = revision.conversation
        return cls(
            conversation.uuid,
            revision.revision,
            conversation.digest,
            conversation.started_at,
            conversation.recording_ids,
            part,
        )


@dataclass(frozen=True)
class Part:
    """One gzip JSON Lines object of exported revisions."""

    key: str
    day: date
    body: bytes  # gzip
    revisions: tuple[Revision, ...] = field(default_factory=tuple)


def checked_uuid(value: Any) -> str:
    """A conversation's uuid (from a list or a webhook), lower-cased: a string of at most
    MAX_UUID_CHARS uuid-ish characters, so it is safe in a log line, a key and a query."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_UUID_CHARS:
        raise MalformedEntry("conversation has no usable uuid")
    if not _SAFE_UUID.match(value):
        raise MalformedEntry("conversation uuid has characters a uuid has not")
    return value.lower()


def canonical(value: Any) -> bytes:
    """One byte string per JSON value: sorted keys, no spaces, UTF-8, NaN refused."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def parts(
    prefix: str, window: Window, revisions: Iterable[Revision], archived_at: datetime
) -> list[Part]:
    """The window's revisions as one part per UTC day of their `startedAt`, lines in uuid order."""
    by_day: dict[date, list[Revision]] = {}
    for revision in revisions:
        by_day.setdefault(revision.conversation.started_at.astimezone(UTC).date(), []).append(
            revision
        )
    built = []
    for day, group in sorted(by_day.items()):
        group.sort(key=lambda r: (r.conversation.uuid, r.revision))
        lines = b"".join(_line(r, archived_at) for r in group)
        # mtime 0: the same lines always give the same bytes (and so the same key).
        body = gzip.compress(lines, compresslevel=6, mtime=0)
        built.append(Part(part_key(prefix, window, day, body), day, body, tuple(group)))
    return built


def part_key(prefix: str, window: Window, day: date, body: bytes) -> str:
    stamp = window.start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    short = hashlib.sha256(body).hexdigest()[:12]
    return f"{prefix}{EXPORT_DIR}year={day:%Y}/month={day:%m}/day={day:%d}/part-{stamp}-{short}.jsonl.gz"


def part_window(key: str) -> datetime | None:
    """The start of the window whose listing wrote the part (None for a key of another shape)."""
    match = _PART_WINDOW.search(key)
    if match is None:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def part_day(key: str) -> date | None:
    """The day a part's key partitions it under (None for a key of another shape)."""
    match = _PART_DAY.search(key)
    if match is None:
        return None
    try:
        return date(*(int(group) for group in match.groups()))
    except ValueError:
        return None


def read_part(body: bytes, *, now: datetime) -> tuple[list[Revision], list[str]]:
    """The revisions a part holds, and what could not be read of it: a line each ("line 3:
    why"), or the rest of the part (not gzip, cut short, a line past MAX_LINE_BYTES). The lines
    read before such an end still count: they prove what the part holds."""
    revisions: list[Revision] = []
    problems: list[str] = []
    number = read = 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(body)) as lines:
            while line := lines.readline(MAX_LINE_BYTES + 1):
                number += 1
                read += len(line)
                if len(line) > MAX_LINE_BYTES:
                    problems.append(f"line {number} is over {MAX_LINE_BYTES} bytes; not read on")
                    break
                if read > MAX_PART_BYTES:  # a gzip bomb: a few MB that inflate without end
                    problems.append(f"over {MAX_PART_BYTES} bytes unpacked at line {number}")
                    break
                try:
                    revisions.append(read_line(line, now=now))
                except (MalformedEntry, ValueError, RecursionError) as exc:  # nested too deep
                    problems.append(f"line {number}: {exc}")
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        problems.append(f"not readable as gzip after line {number}: {exc}")
    return revisions, problems


def read_line(line: bytes, *, now: datetime) -> Revision:
    """One exported line back as the revision it records; MalformedEntry or ValueError."""
    exported = json.loads(line)
    if not isinstance(exported, dict):
        raise MalformedEntry(f"line is a {type(exported).__name__}, not an object")
    version = exported.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:  # not `true`, not 1.0
        raise MalformedEntry(f"schema_version is not {SCHEMA_VERSION}")
    revision = exported.get("revision")
    if type(revision) is not int or not 1 <= revision < 2**63:  # what the checkpoint holds
        raise MalformedEntry("revision is not a positive integer below 2**63")
    raw = {name: value for name, value in exported.items() if name not in EXPORT_FIELDS}
    return Revision(Conversation.from_api(raw, now=now), revision)


def _line(revision: Revision, archived_at: datetime) -> bytes:
    exported = dict(revision.conversation.raw)
    exported.update(
        schema_version=SCHEMA_VERSION,
        revision=revision.revision,
        archived_at=format_time(archived_at),
    )
    return canonical(exported) + b"\n"


def _recording_ids(recordings: list[Any]) -> Iterable[str]:
    """The ids of the recording urls a conversation names; an unreadable one is skipped (the
    conversation is still kept as given, and reconcile reports the recording it cannot find)."""
    for item in recordings:
        url = item.get("url") if isinstance(item, dict) else None
        if isinstance(url, str):
            try:
                yield recording_id_from_url(url)
            except MalformedEntry:
                continue
