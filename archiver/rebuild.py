"""A lost checkpoint rebuilt from the bucket alone: `rebuild-state`, and `state.rebuild`.

The bucket outlives the machine, and it holds all that the checkpoint must know to go on without
downloading anything twice or skipping anything:

- Each archived recording. On a sealed day its manifest line says it all (key, version, sha256,
  size, retain-until, and the API's list entry that hold rules match on): one GET per manifest
  gives a day of rows, where the objects would cost a HEAD each. A later listing of the same id
  (a supplement) supersedes an earlier one. Only objects that no manifest lists (days not sealed
  yet, or archived since their day was sealed) are HEADed, in parallel, and read back from their
  metadata; those go back unsealed, so the next seal lists them.
- The manifests themselves, so the chain goes on at the next sequence after the last sealed day.
- The call history's export: each conversation's highest revision and its content's digest,
  read back from the parts, so windows listed again export only what changed; and its cursor,
  at the latest window a part was written for (rebuild_history.py).
- The legal holds, replayed from the audit trail's `hold-add` and `hold-remove` records in time
  order (each carries its rule exactly).
- Where the watermark goes: the end of the last sealed day (every day up to it is complete), or
  without manifests the latest started-at minus the lookback, whichever is later. Both err early
  and never later than the evidence: the walk then lists again what may already be archived, and
  dedupe by id makes that cost list calls, never downloads.

What the bucket cannot say: recordings that were pending or dead-lettered (never uploaded; a
`reconcile` over the period finds them) and a `retention extend` made after a day was sealed
(its manifest keeps the date first written; the object keeps the longer one, and a new `extend`
never shortens). A manifest lists each retain-until but not the lock's mode: the rows take
`retention.mode`, the mode this archiver writes with, rather than a HEAD per recording; an object
locked otherwise shows in `verify`. Objects read by a HEAD keep the mode S3 reports.

The new checkpoint is built in `<state>.rebuilding` under the real one's writer lock and linked
into place only when complete, so a kill midway leaves no checkpoint (the next start refuses or
rebuilds again), never a partial one that a pass would trust. An existing checkpoint is never
replaced: `--force` moves it (and its -wal and -shm) aside to `<state>.bak-<UTC time>` first.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path

import structlog

from archiver import trail
from archiver.checkpoint import Checkpoint, writer_lock
from archiver.config import Config, Rebuild
from archiver.errors import CheckpointError, UsageError
from archiver.holds import HoldRule
from archiver.models import Watermark, utc_now
from archiver.rebuild_scan import WORKERS, Found, origin_for, resting_place, scan
from archiver.sink import BucketReader, S3Sink
from archiver.sink.writer import CHECK_DIR

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RebuildReport:
    """What `rebuild-state` restored, and what it found that it could not use."""

    from_manifests: int
    from_objects: int
    manifests: int
    holds: tuple[HoldRule, ...]
    watermark: Watermark
    last_sealed_day: date | None
    conversations: int = 0  # the call history's conversations, at their highest revision
    parts: int = 0  # the call history's parts read back
    skipped: tuple[str, ...] = ()  # objects in the day folders that are no recording of ours
    missing: tuple[str, ...] = ()  # keys a manifest lists that the bucket does not hold
    unreadable: tuple[str, ...] = ()  # manifests, hold records, parts (or their lines) unread
    moved_aside: Path | None = None
    audit_key: str = ""

    @property
    def recordings(self) -> int:
        return self.from_manifests + self.from_objects

    def counts(self) -> dict[str, int]:
        return {
            "recordings": self.recordings,
            "from_manifests": self.from_manifests,
            "from_objects": self.from_objects,
            "manifests": self.manifests,
            "holds": len(self.holds),
            "conversations": self.conversations,
            "parts": self.parts,
            "skipped": len(self.skipped),
            "missing": len(self.missing),
            "unreadable": len(self.unreadable),
        }


# -- writing the checkpoint --------------------------------------------------------------------


def rebuild(
    config: Config,
    *,
    force: bool = False,
    arguments: Sequence[str] = ("rebuild-state",),
    clock: Callable[[], datetime] = utc_now,
    reader: BucketReader | None = None,
    store: trail.TrailStore | None = None,
    workers: int = WORKERS,
) -> RebuildReport:
    """Rebuild the checkpoint at `state.path` from the bucket; UsageError (exit 2) when one
    exists and `force` is not given."""
    path = config.state.path
    with writer_lock(path):
        if path.exists() and not force:
            raise UsageError(
                f"a checkpoint already exists at {path}; rebuild-state never replaces one. Run"
                f" `cradle-archiver rebuild-state --force` to move it aside to"
                f" {path.name}.bak-<UTC time> and rebuild"
            )
        started = clock()
        log.info("rebuild.started", bucket=config.s3.bucket, prefix=config.s3.prefix)
        reader = reader or BucketReader(config.s3, connections=workers)
        found = scan(reader, config, started, workers)
        moved = move_aside(path, started)
        building = _build(path, found, config, clock)
        report = _report(found, building, moved)
        action = trail.Action(
            action="rebuild-state",
            arguments=arguments,
            started_at=started,
            finished_at=clock(),
            counts=report.counts(),
        )
        store = store or S3Sink(config.s3)
        key = trail.record(store, config.s3.prefix, action, config.retention, clock())
        _put_in_place(building, path)
    log.info("rebuild.finished", watermark=str(report.watermark), **report.counts())
    return replace(report, audit_key=key)


def _build(path: Path, found: Found, config: Config, clock: Callable[[], datetime]) -> Path:
    """The new checkpoint, complete, beside where it goes."""
    building = path.with_name(path.name + ".rebuilding")
    _remove(building)  # what a killed rebuild left; the real path's lock keeps out any other
    with Checkpoint.open(building, clock=clock) as checkpoint:
        checkpoint.restore(found.rows())
        for sealed in found.manifests:
            checkpoint.restore_manifest(sealed)
        for rule in found.holds:
            checkpoint.add_hold(rule)
        checkpoint.restore_conversations(found.history.parts, found.history.latest.values())
        latest = max((row.recording.started_at for row in found.rows()), default=None)
        watermark = resting_place(found.last_sealed_day(), latest, config.archive.lookback)
        if watermark is not None:
            checkpoint.set_watermark(origin_for(found, watermark))  # sets the origin once
            checkpoint.set_watermark(watermark)
            cursor = found.history.cursor(watermark)
            if cursor is not None:
                checkpoint.set_history_cursor(cursor)
    return building


def _report(found: Found, building: Path, moved: Path | None) -> RebuildReport:
    with Checkpoint.open(building, writer=False, create=False) as checkpoint:
        watermark = checkpoint.watermark()
    return RebuildReport(
        from_manifests=len(found.listed),
        from_objects=len(found.unlisted),
        manifests=len(found.manifests),
        holds=tuple(found.holds),
        watermark=watermark,
        last_sealed_day=found.last_sealed_day(),
        conversations=len(found.history.latest),
        parts=len(found.history.parts),
        skipped=tuple(found.skipped),
        missing=tuple(found.missing),
        unreadable=tuple(found.unreadable),
        moved_aside=moved,
    )


def _files(path: Path) -> list[Path]:
    """The database and the files SQLite keeps beside it."""
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def move_aside(path: Path, now: datetime) -> Path | None:
    """Move the checkpoint at `path` (with its -wal and -shm, kept together so SQLite can open
    the copy) to `<name>.bak-<UTC time>`; None when there is nothing there."""
    present = [f for f in _files(path) if f.exists()]
    if not present:
        return None
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    backup = path.with_name(f"{path.name}.bak-{stamp}")
    number = 1
    while any(f.exists() for f in _files(backup)):
        number += 1
        backup = path.with_name(f"{path.name}.bak-{stamp}-{number}")
    for old, new in zip(_files(path), _files(backup), strict=True):
        if old.exists():
            old.rename(new)
    log.warning("rebuild.moved_aside", path=str(path), to=str(backup))
    return backup


def _put_in_place(building: Path, path: Path) -> None:
    """Link the finished checkpoint to its name (never over another file), then drop the
    building name."""
    for leftover in _files(building)[1:]:
        if leftover.exists():  # SQLite folds the WAL in and removes it when the file closes
            raise CheckpointError(f"{leftover} is still there after the rebuilt checkpoint closed")
    try:
        os.link(building, path)
    except FileExistsError:
        raise CheckpointError(f"{path} appeared during the rebuild; it was left as it is") from None
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    _remove(building)


def _remove(building: Path) -> None:
    for name in [*_files(building), building.with_name(building.name + ".lock")]:
        name.unlink(missing_ok=True)


# -- at start: a missing checkpoint is refused or rebuilt, never silently begun again ----------


def archive_evidence(reader: BucketReader) -> str | None:
    """The first object under the prefix that this archive wrote (recordings, manifests, audit
    records, conversations), or None for an empty prefix; `check`'s probes do not count."""
    probes = reader.prefix + CHECK_DIR
    for listed in reader.list(reader.prefix):
        if not listed.key.startswith(probes):
            return listed.key
    return None


def ensure_checkpoint(
    config: Config,
    *,
    clock: Callable[[], datetime] = utc_now,
    reader: BucketReader | None = None,
) -> RebuildReport | None:
    """Before `run` or `backfill` opens the checkpoint: when it is missing and the bucket already
    holds this archive, refuse (UsageError, exit 2) or rebuild it, as `state.rebuild` says.
    Starting afresh would put the watermark a day back and silently skip what lies between."""
    path = config.state.path
    if path.exists():
        return None
    reader = reader or BucketReader(config.s3, connections=WORKERS)
    evidence = archive_evidence(reader)
    if evidence is None:
        return None  # a fresh install
    if config.state.rebuild is Rebuild.REFUSE:
        raise UsageError(
            f"there is no checkpoint at {path}, but bucket {config.s3.bucket} already holds this"
            f" archive ({evidence}); starting afresh would skip what lies between. Run"
            f" `cradle-archiver rebuild-state` to rebuild the checkpoint from the bucket (or set"
            f' state.rebuild = "auto" in {config.source})'
        )
    log.warning("rebuild.auto", path=str(path), evidence=evidence)
    return rebuild(
        config, arguments=("rebuild-state", "(state.rebuild = auto)"), clock=clock, reader=reader
    )
