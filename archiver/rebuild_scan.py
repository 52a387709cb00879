"""What the bucket says of a lost checkpoint: its rows, manifests, holds and watermark (and the
call history's export, rebuild_history.py).

`rebuild-state` (rebuild.py) reads it all here, then writes it to a new checkpoint. The parts
that turn what was read into rows, holds and a watermark are pure functions, tested alone; `scan`
does the reading: manifests first (one GET per manifest gives a day of rows), then one listing of
the day folders, then a HEAD per object no manifest lists, the audit trail's hold records and
the call history's parts, every request of a kind in parallel on a bounded pool.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

import structlog

from archiver import layout, manifest, trail
from archiver.config import Config
from archiver.errors import MalformedEntry
from archiver.holds import HoldRule
from archiver.manifest import Entry, Manifest, ManifestInvalid
from archiver.models import Recording, RecordingRow, RecordingState, SealedManifest, StoredObject
from archiver.rebuild_history import History, read_history
from archiver.retention import LockMode
from archiver.sink import BucketReader

log = structlog.get_logger(__name__)

WORKERS = 16  # HEADs and GETs in flight at once
BATCH = 1000  # keys handed to the workers at a time, so memory stays at a batch of futures
AUDIT_RECORD_LIMIT = 64 * 2**20  # a hold on a long period lists many recordings
HOLD_ACTIONS = {"-hold-add.json": True, "-hold-remove.json": False}
_OBJECT_KEY = re.compile(r"\d{4}/\d{2}/\d{2}/[^/]+\.mp3")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# The metadata names of the optional fields, and the list entry's (layout.object_metadata).
_OPTIONAL_FIELDS = {
    "agent2": "agent2",
    "cradle-number": "cradleNumber",
    "third-party-number": "thirdPartyNumber",
}

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Found:
    """Everything read from the bucket, before any of it is written to a checkpoint."""

    listed: dict[str, RecordingRow] = field(default_factory=dict)  # from manifests, by id
    unlisted: list[RecordingRow] = field(default_factory=list)  # from HEADs
    manifests: list[SealedManifest] = field(default_factory=list)
    holds: list[HoldRule] = field(default_factory=list)
    history: History = field(default_factory=History)  # the call history's export
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def rows(self) -> list[RecordingRow]:
        return [*self.listed.values(), *self.unlisted]

    def last_sealed_day(self) -> date | None:
        return max((m.day for m in self.manifests if m.supplement == 0), default=None)


# -- the pure parts: rows, holds and the watermark from what the bucket says -------------------


def archived_row(
    recording: Recording,
    *,
    key: str,
    sha256: str,
    size: int,
    now: datetime,
    version_id: str | None = None,
    lock_mode: str | None = None,
    retain_until: datetime | None = None,
    audio_seconds: float | None = None,
    manifest_sequence: int | None = None,
) -> RecordingRow:
    return RecordingRow(
        recording,
        RecordingState.ARCHIVED,
        attempts=0,
        reason=None,
        sha256=sha256,
        size=size,
        key=key,
        first_seen=now,
        updated_at=now,
        lock_mode=lock_mode,
        retain_until=retain_until,
        audio_seconds=audio_seconds,
        version_id=version_id,
        manifest_sequence=manifest_sequence,
    )


def row_from_entry(
    entry: Entry, sequence: int, mode: LockMode | None, now: datetime, prefix: str
) -> RecordingRow:
    """A manifest line as a checkpoint row; MalformedEntry or ValueError when its list entry
    does not name the same recording validly, or its key is not that recording's own: a
    rebuilt row's key is where `retention extend` and `hold` later write, so a planted line
    must not point them at any other object in the bucket."""
    recording = Recording.from_api(dict(entry.entry))
    if recording.recording_id != entry.id.lower():
        raise ValueError(f"its entry names {recording.recording_id}, not {entry.id}")
    if entry.key != layout.object_key(prefix, recording):
        raise ValueError(f"its key is not {layout.object_key(prefix, recording)}")
    return archived_row(
        recording,
        key=entry.key,
        sha256=entry.sha256,
        size=entry.size,
        now=now,
        version_id=entry.version_id,
        lock_mode=mode.value if mode is not None and entry.retain_until else None,
        retain_until=entry.retain_until,
        audio_seconds=entry.audio_seconds,
        manifest_sequence=sequence,
    )


def latest_listings(
    manifests: Iterable[tuple[SealedManifest, Manifest]], mode: LockMode | None, now: datetime
) -> tuple[dict[str, RecordingRow], list[str]]:
    """Each recording's row from the last manifest in the chain that lists it (a supplement
    supersedes the day's own), and the keys of lines unusable as rows (read back by a HEAD)."""
    rows: dict[str, RecordingRow] = {}
    unusable: list[str] = []
    for sealed, parsed in sorted(manifests, key=lambda pair: pair[0].sequence):
        prefix = sealed.key.rsplit(manifest.MANIFEST_DIR, 1)[0]  # the manifest's own prefix
        for entry in parsed.entries:
            try:
                rows[entry.id.lower()] = row_from_entry(entry, sealed.sequence, mode, now, prefix)
            except (MalformedEntry, ValueError) as exc:
                log.warning(
                    "rebuild.entry_unusable", manifest=sealed.key, id=entry.id, error=str(exc)
                )
                unusable.append(entry.key)
    return rows, unusable


def row_from_object(stored: StoredObject, base_url: str, now: datetime) -> RecordingRow:
    """An object's HEAD as a checkpoint row, from the metadata the archiver wrote
    (layout.object_metadata); ValueError or MalformedEntry when it is no recording of ours."""
    metadata = {k.lower(): layout.decode_metadata_value(v) for k, v in stored.metadata.items()}
    recording_id = layout.recording_id_from_key(stored.key)
    if recording_id is None or metadata.get("recording-id", "").lower() != recording_id:
        raise ValueError("its recording-id metadata does not match its key")
    sha256 = metadata.get("sha256", "")
    if not _SHA256.fullmatch(sha256):
        raise ValueError("no sha256 metadata")
    entry: dict[str, Any] = {
        "url": f"{base_url.rstrip('/')}/api/v1/public/recordings/{recording_id}.mp3",
        "startedAt": metadata.get("started-at"),
        "nature": metadata.get("nature"),
        "agent1": metadata.get("agent1"),
    }
    if "duration-seconds" in metadata:
        entry["durationSeconds"] = float(metadata["duration-seconds"])
    for name, api_name in _OPTIONAL_FIELDS.items():
        if name in metadata:
            entry[api_name] = metadata[name]
    audio = metadata.get("audio-seconds")
    return archived_row(
        Recording.from_api(entry),
        key=stored.key,
        sha256=sha256,
        size=stored.size,
        now=now,
        version_id=stored.version_id,
        lock_mode=stored.lock_mode.lower() if stored.lock_mode else None,
        retain_until=stored.retain_until,
        audio_seconds=float(audio) if audio else None,
    )


def replay_holds(records: Iterable[tuple[str, bool, Any]]) -> tuple[list[HoldRule], list[str]]:
    """The holds in force after the trail's records `(key, adding, document)`, replayed in
    key (time) order; and the keys of records that hold no readable rule."""
    active: dict[tuple[str, tuple[str, ...]], HoldRule] = {}
    unreadable = []
    for key, adding, document in sorted(records, key=lambda record: record[0]):
        try:
            rule = HoldRule.from_record(
                document.get("rule") if isinstance(document, dict) else None
            )
        except ValueError as exc:
            log.warning("rebuild.hold_unreadable", key=key, error=str(exc))
            unreadable.append(key)
            continue
        selects = (rule.selector.value, rule.values)
        if adding:
            active.setdefault(selects, rule)  # as the checkpoint does: the first reason stays
        else:
            active.pop(selects, None)
    return list(active.values()), unreadable


def resting_place(
    last_sealed_day: date | None, latest_started: datetime | None, lookback: timedelta
) -> datetime | None:
    """Where the watermark goes: the end of the last sealed day; without manifests, the latest
    started-at minus the lookback; None when the bucket holds neither. Never later: days after
    the last sealed one may hold recordings that were pending when the checkpoint was lost, and
    they are found only if the walk lists those days again (a day sealed while sealing lagged
    would otherwise be sealed as holding nothing more)."""
    if last_sealed_day is not None:
        return manifest.day_bounds(last_sealed_day)[1]
    return latest_started - lookback if latest_started is not None else None


def origin_for(found: Found, watermark: datetime) -> datetime:
    """Where the walk is taken to have begun (the first day the sealer seals, empty ones too):
    the first sealed day, or the day of the earliest recording, or the watermark if earlier."""
    days = [m.day for m in found.manifests]
    days += [row.recording.started_at.date() for row in found.rows()]
    return min([watermark, *(manifest.day_bounds(day)[0] for day in days)])


# -- reading the bucket ------------------------------------------------------------------------


def scan(reader: BucketReader, config: Config, now: datetime, workers: int = WORKERS) -> Found:
    """Read what the bucket holds of this archive: manifests, objects, holds."""
    found = Found()
    prefix = config.s3.prefix
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rebuild") as pool:
        parsed = _read_manifests(reader, prefix, pool, found, now)
        found.manifests = [sealed for sealed, _ in parsed]
        found.listed, _ = latest_listings(parsed, config.retention.mode, now)
        log.info("rebuild.manifests_read", manifests=len(parsed), recordings=len(found.listed))
        objects = {
            o.key for o in reader.list(prefix) if _OBJECT_KEY.fullmatch(o.key[len(prefix) :])
        }
        listed_keys = {row.key for row in found.listed.values() if row.key is not None}
        found.missing = sorted(listed_keys - objects)
        for key in found.missing:
            log.warning("rebuild.listed_missing", key=key)
        # An unusable line's object is among these, unless a later listing of it was usable.
        unlisted = sorted(objects - listed_keys)
        log.info("rebuild.objects_listed", objects=len(objects), to_head=len(unlisted))
        for key, row in zip(
            unlisted, _map(pool, _header(reader, config, now), unlisted), strict=True
        ):
            if isinstance(row, RecordingRow):
                found.unlisted.append(row)
            else:
                log.warning("rebuild.object_skipped", key=key, error=row)
                found.skipped.append(key)
        found.holds, unreadable = _read_holds(reader, prefix, pool)
        found.unreadable += unreadable
        found.history = read_history(reader, prefix, pool, now)
        found.unreadable += found.history.unreadable
    return found


def _read_manifests(
    reader: BucketReader, prefix: str, pool: ThreadPoolExecutor, found: Found, now: datetime
) -> list[tuple[SealedManifest, Manifest]]:
    keys = [
        listed.key
        for listed in reader.list(prefix + manifest.MANIFEST_DIR)
        if (name := manifest.parse_key(prefix, listed.key)) is not None and name.kind == "jsonl"
    ]
    bodies = _map(pool, lambda key: reader.read(key, manifest.MAX_MANIFEST_BYTES), keys)
    parsed = []
    for key, body in zip(keys, bodies, strict=True):
        try:
            if body is None:
                raise ManifestInvalid("gone between the listing and the read")
            one = manifest.parse(body)
            named = manifest.parse_key(prefix, key)
            if named is None or (one.day, one.supplement) != (named.day, named.supplement):
                raise ManifestInvalid("its header names another day than its key")
            if manifest.day_bounds(one.day)[1] > now:
                raise ManifestInvalid(f"it seals {one.day}, a day not over yet")
        except ManifestInvalid as exc:
            log.error("rebuild.manifest_unreadable", key=key, error=str(exc))
            found.unreadable.append(key)
            continue
        sealed = SealedManifest(
            sequence=one.sequence,
            day=one.day,
            supplement=one.supplement,
            key=key,
            sha256=manifest.digest(body),
            count=len(one.entries),
            body=None,  # written: the checkpoint keeps bytes only until S3 has them
        )
        parsed.append((sealed, one))
    return parsed


def _header(
    reader: BucketReader, config: Config, now: datetime
) -> Callable[[str], RecordingRow | str]:
    """What the workers run per unlisted object: its row, or why it is none."""

    def head(key: str) -> RecordingRow | str:
        stored = reader.head(key)
        if stored is None:
            return "gone between the listing and the HEAD"
        try:
            return row_from_object(stored, config.cradle.base_url, now)
        except (MalformedEntry, ValueError) as exc:
            return str(exc)

    return head


def _read_holds(
    reader: BucketReader, prefix: str, pool: ThreadPoolExecutor
) -> tuple[list[HoldRule], list[str]]:
    wanted = []
    for listed in reader.list(prefix + trail.AUDIT_DIR):
        for suffix, adding in HOLD_ACTIONS.items():
            if listed.key.endswith(suffix):
                wanted.append((listed.key, adding))
    bodies = _map(pool, lambda pair: reader.read(pair[0], AUDIT_RECORD_LIMIT), wanted)
    records = []
    for (key, adding), body in zip(wanted, bodies, strict=True):
        try:
            document = json.loads(body or b"")
        except (ValueError, RecursionError):
            document = None
        records.append((key, adding, document))
    return replay_holds(records)


def _map(pool: ThreadPoolExecutor, work: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """`work` over `items` on the pool, in order, a batch at a time; the first error raises."""
    results: list[R] = []
    for start in range(0, len(items), BATCH):
        results += pool.map(work, items[start : start + BATCH])
    return results
