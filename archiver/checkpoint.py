"""The SQLite checkpoint: the watermark, every recording seen, and what became of it.

The only module that imports sqlite3. One file in WAL mode; one writer at a time (an exclusive
flock on `<path>.lock`); short-lived readers (`status`, `verify`, `retry`) beside it, kept safe by
SQLite's locking and a 5 s busy timeout. Every write is one `BEGIN IMMEDIATE` transaction, so a
kill at any instant leaves the state of the last commit.

Durability is `synchronous=NORMAL`. In WAL mode a commit survives the process being killed (its
frames are in the WAL, in the OS page cache). Only a power loss or kernel crash can undo commits,
and then always the most recent ones, never one in the middle: WAL recovery stops at the first
frame whose chained checksum fails. That returns the archiver to a state it has already been in,
and every step from there is safe to redo: a recording back at pending is found in S3 by the
conditional write or HEAD (guarantee 2); a watermark back in time re-lists windows whose
recordings `add_listed` dedupes. A later commit (the watermark) never outlives an earlier one it
depends on (the recordings it covers), which is what guarantee 1 needs. FULL would add an fsync
per recording and buy nothing more.

Counts by state live in `state_counts`, kept by triggers in the same transaction as every change
to `recordings`: `counts()` reads three rows and cannot drift, not even after hand edits in the
sqlite3 shell. Times are integer microseconds since the epoch, UTC.

Its files (the database, `-wal`, `-shm` and `.lock`) are never reached through a symbolic link:
the writer truncates the lock file, writes its pid into it and makes every file 0600, so a link
planted at one of those names would have it do that to whatever file the link points at. We open
them with O_NOFOLLOW and check the names SQLite opens itself (it cannot be told not to follow)
just before it does; the directory is the archiver's own (0700), so nothing swaps one in between.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from archiver.errors import CheckpointError, CheckpointLocked, MalformedEntry
from archiver.holds import HoldRule, Selector
from archiver.models import (
    PassOutcome,
    PassResult,
    Recording,
    RecordingRow,
    RecordingState,
    SealedManifest,
    Watermark,
    Window,
    utc_now,
)
from archiver.retention import Lock

if TYPE_CHECKING:
    from archiver.conversations import Exported

SCHEMA_VERSION = 4
APPLICATION_ID = 0x43524441  # "CRDA": tells our files from other SQLite databases
STATES = tuple(RecordingState)
BUSY_TIMEOUT_SECONDS = 5.0
PASS_HISTORY = 100  # results kept per kind; status shows the last, the rest help a post-mortem
MAX_RAW_CHARS = 10_000  # a malformed entry is kept as evidence, not archived
STREAM_PAGE = 1000  # rows per read in archived(), so a long verify never pins an old snapshot

Clock = Callable[[], datetime]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LOWEST, _HIGHEST = -(2**63), 2**63 - 1
_MICROS_PER_DAY = 86_400_000_000

# "Troubled" recordings (failed at least once, not archived) have their own small index. The CHECKs
# make every failed recording troubled, so queries for failed ones repeat the index's terms.
# The triggers that keep `state_counts`; every version that rebuilds `recordings` makes them again.
_COUNT_TRIGGERS = """
CREATE TRIGGER recordings_counted_insert AFTER INSERT ON recordings BEGIN
    UPDATE state_counts SET n = n + 1 WHERE state = NEW.state;
END;
CREATE TRIGGER recordings_counted_update AFTER UPDATE OF state ON recordings
WHEN OLD.state <> NEW.state BEGIN
    UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
    UPDATE state_counts SET n = n + 1 WHERE state = NEW.state;
END;
CREATE TRIGGER recordings_counted_delete AFTER DELETE ON recordings BEGIN
    UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
END;
"""
_SCHEMA_V1 = (
    """
CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE recordings (
    id INTEGER PRIMARY KEY,
    recording_id TEXT NOT NULL UNIQUE,
    started_at INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'archived', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    reason TEXT, sha256 TEXT, size INTEGER, key TEXT,
    first_seen INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    entry TEXT NOT NULL,  -- the list entry, Recording.to_api()
    CHECK (state <> 'failed' OR attempts > 0),
    CHECK (state <> 'archived' OR (sha256 IS NOT NULL AND size IS NOT NULL AND key IS NOT NULL))
);
CREATE INDEX recordings_pending ON recordings (started_at, recording_id) WHERE state = 'pending';
CREATE INDEX recordings_archived ON recordings (started_at) WHERE state = 'archived';
CREATE INDEX recordings_troubled ON recordings (updated_at)
    WHERE state <> 'archived' AND attempts > 0;
CREATE TABLE state_counts (state TEXT PRIMARY KEY NOT NULL, n INTEGER NOT NULL CHECK (n >= 0))
    WITHOUT ROWID;
INSERT INTO state_counts VALUES ('pending', 0), ('archived', 0), ('failed', 0);
"""
    + _COUNT_TRIGGERS
    + """CREATE TABLE malformed (
    id INTEGER PRIMARY KEY, raw TEXT NOT NULL UNIQUE, reason TEXT NOT NULL,
    window_start INTEGER NOT NULL, window_end INTEGER NOT NULL,
    first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, times_seen INTEGER NOT NULL
);
CREATE TABLE backfills (
    range_start INTEGER NOT NULL, range_end INTEGER NOT NULL, cursor INTEGER NOT NULL,
    updated_at INTEGER NOT NULL, PRIMARY KEY (range_start, range_end)
) WITHOUT ROWID;
CREATE TABLE passes (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, started_at INTEGER NOT NULL,
    finished_at INTEGER NOT NULL, outcome TEXT NOT NULL, archived INTEGER NOT NULL,
    failed INTEGER NOT NULL, listed INTEGER NOT NULL, error TEXT NOT NULL
);
CREATE INDEX passes_kind ON passes (kind, id);
"""
)
# Version 2: the terminal state `expired` (retention.expired = "skip"), what an archived
# recording was locked with and how long its audio walked, and the legal holds' rules. SQLite
# cannot change a CHECK in place, so the table is rebuilt (its indexes and triggers go with it
# and are made again).
_SCHEMA_V2 = """
CREATE TABLE recordings_v2 (
    id INTEGER PRIMARY KEY,
    recording_id TEXT NOT NULL UNIQUE,
    started_at INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'archived', 'failed', 'expired')),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    reason TEXT, sha256 TEXT, size INTEGER, key TEXT,
    first_seen INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    entry TEXT NOT NULL,  -- the list entry, Recording.to_api()
    lock_mode TEXT, retain_until INTEGER, audio_seconds REAL,
    audio_mismatch INTEGER NOT NULL DEFAULT 0 CHECK (audio_mismatch IN (0, 1)),
    CHECK (state <> 'failed' OR attempts > 0),
    CHECK (state <> 'archived' OR (sha256 IS NOT NULL AND size IS NOT NULL AND key IS NOT NULL))
);
INSERT INTO recordings_v2 (id, recording_id, started_at, state, attempts, reason, sha256, size,
    key, first_seen, updated_at, entry)
    SELECT id, recording_id, started_at, state, attempts, reason, sha256, size, key, first_seen,
    updated_at, entry FROM recordings;
DROP TABLE recordings;
ALTER TABLE recordings_v2 RENAME TO recordings;
CREATE INDEX recordings_pending ON recordings (started_at, recording_id) WHERE state = 'pending';
CREATE INDEX recordings_archived ON recordings (started_at) WHERE state = 'archived';
CREATE INDEX recordings_troubled ON recordings (updated_at)
    WHERE state <> 'archived' AND attempts > 0;
CREATE INDEX recordings_audio_mismatch ON recordings (audio_mismatch) WHERE audio_mismatch = 1;
INSERT INTO state_counts VALUES ('expired', 0);
CREATE TABLE holds (
    id INTEGER PRIMARY KEY, selector TEXT NOT NULL, selection TEXT NOT NULL,  -- a JSON array
    reason TEXT NOT NULL, created_at INTEGER NOT NULL, UNIQUE (selector, selection)
);
"""
_SCHEMA_V2 += _COUNT_TRIGGERS
# Version 3: each object's version id, and the manifests that seal each day (a recording's
# `manifest_seq` is the manifest listing it; NULL while its day, or a supplement, is unsealed).
# A manifest's bytes are kept until S3 confirms the write, so a kill in between writes the same
# bytes again. The reconciliations' results, for `status`.
_SCHEMA_V3 = """
ALTER TABLE recordings ADD COLUMN version_id TEXT;
ALTER TABLE recordings ADD COLUMN manifest_seq INTEGER;
CREATE INDEX recordings_unsealed ON recordings (started_at)
    WHERE state = 'archived' AND manifest_seq IS NULL;
CREATE TABLE manifests (
    sequence INTEGER PRIMARY KEY CHECK (sequence > 0),
    day INTEGER NOT NULL, supplement INTEGER NOT NULL CHECK (supplement >= 0),
    key TEXT NOT NULL UNIQUE, sha256 TEXT NOT NULL, count INTEGER NOT NULL,
    body BLOB, created_at INTEGER NOT NULL, written_at INTEGER,
    UNIQUE (day, supplement),
    CHECK ((body IS NULL) = (written_at IS NOT NULL))
);
CREATE TABLE reconciles (
    id INTEGER PRIMARY KEY, started_at INTEGER NOT NULL, finished_at INTEGER NOT NULL,
    range_start INTEGER NOT NULL, range_end INTEGER NOT NULL,
    report TEXT NOT NULL  -- the JSON report: counts by kind and the differences
);
"""
# Version 4: the call history's export. Each conversation's latest revision and the digest of its
# content (a change is the next revision), and the parts written: a part's bytes are kept, with
# the revisions it holds recorded, before S3 gets it, so a kill writes the same bytes again.
_SCHEMA_V4 = """
CREATE TABLE conversations (
    uuid TEXT PRIMARY KEY NOT NULL, revision INTEGER NOT NULL CHECK (revision > 0),
    digest TEXT NOT NULL, started_at INTEGER NOT NULL,
    recording_ids TEXT NOT NULL,  -- a JSON array: the recordings it names
    part TEXT NOT NULL, updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX conversations_started ON conversations (started_at);
CREATE TABLE conversation_parts (
    key TEXT PRIMARY KEY NOT NULL, body BLOB, revisions INTEGER NOT NULL,
    created_at INTEGER NOT NULL, written_at INTEGER,
    CHECK ((body IS NULL) = (written_at IS NOT NULL))
) WITHOUT ROWID;
CREATE INDEX conversation_parts_unwritten ON conversation_parts (created_at)
    WHERE body IS NOT NULL;
"""
# Step n turns a version n-1 file into version n; append steps, never edit a released one.
MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _SCHEMA_V3, 4: _SCHEMA_V4}
_NOT_OURS = "{} is an SQLite database, not a cradle-archiver checkpoint"
_LINK = "{} is a symbolic link; refusing to follow it (the checkpoint's files must be real files)"


class Checkpoint:
    """The archiver's durable state; open it with `Checkpoint.open`."""

    def __init__(
        self, path: Path, conn: sqlite3.Connection, lock_fd: int | None, clock: Clock
    ) -> None:
        self.path = path
        self._conn = conn
        self._lock_fd = lock_fd
        self._clock = clock
        self._mutex = threading.RLock()  # the connection may be shared with a reader thread

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        writer: bool = True,
        create: bool = True,
        clock: Clock = utc_now,
    ) -> Checkpoint:
        path = Path(path)
        _refuse_links(path)
        if not create and not path.exists():
            raise CheckpointError(f"no checkpoint at {path} yet; run the archiver first")
        lock_fd = None
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock_fd = _take_lock(path) if writer else None
            if create:
                # Made here, not by SQLite, so it is 0600 from its first instant; SQLite gives
                # the -wal and -shm files the database file's mode.
                os.close(_open_file(str(path), os.O_RDONLY | os.O_CREAT))
            if writer:
                _make_private(path)
            return cls(path, _connect(path, writer=writer, create=create), lock_fd, clock)
        except BaseException as exc:
            if lock_fd is not None:
                os.close(lock_fd)
            if isinstance(exc, OSError):
                raise CheckpointError(f"cannot open the checkpoint {path}: {exc}") from exc
            raise

    def close(self) -> None:
        """Close the file and release the writer's lock; safe to call twice."""
        with self._mutex:
            self._conn.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # closing the descriptor drops the flock
                self._lock_fd = None

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def watermark(self) -> Watermark:
        rows = self._query("SELECT value FROM meta WHERE key = 'watermark'")
        return Watermark(_time(rows[0][0]) if rows else None)

    def set_watermark(self, position: datetime) -> None:
        new = _micros(position)
        with self._write() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'watermark'").fetchone()
            if row is not None and new < row[0]:
                raise ValueError(
                    f"the watermark never moves backwards: it is at {_time(row[0]).isoformat()},"
                    f" asked for {position.isoformat()}"
                )
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('watermark', ?)", (new,))
            # Where the walk began: the first day the manifests seal, empty days included.
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('origin', ?)", (new,))

    def origin(self) -> datetime | None:
        """Where the watermark first stood (None before the first pass)."""
        rows = self._query("SELECT value FROM meta WHERE key = 'origin'")
        return _time(rows[0][0]) if rows else None

    def add_listed(self, recordings: Iterable[Recording]) -> list[Recording]:
        now = self._now()
        added = []
        with self._write() as conn:
            for recording in recordings:
                # started_at in whole milliseconds, as the stored entry keeps it (to_api).
                values = (recording.recording_id, _micros(recording.started_at) // 1000 * 1000)
                entry = json.dumps(recording.to_api(), separators=(",", ":"), ensure_ascii=False)
                if conn.execute(
                    "INSERT INTO recordings (recording_id, started_at, first_seen, updated_at,"
                    " entry) VALUES (?, ?, ?, ?, ?) ON CONFLICT (recording_id) DO NOTHING",
                    (*values, now, now, entry),
                ).rowcount:
                    added.append(recording)
        return added

    def get(self, recording_id: str) -> RecordingRow | None:
        rows = self._query("SELECT * FROM recordings WHERE recording_id = ?", recording_id.lower())
        return _row(rows[0]) if rows else None

    def pending(
        self,
        *,
        until: datetime | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[RecordingRow]:
        rows = self._query(
            "SELECT * FROM recordings WHERE state = 'pending' AND started_at >= ?"
            " AND started_at < ? ORDER BY started_at, recording_id LIMIT ?",
            *_bounds(since, until),
            -1 if limit is None else limit,
        )
        return [_row(row) for row in rows]

    def count_pending(self, *, until: datetime | None = None, since: datetime | None = None) -> int:
        if since is None and until is None:
            return self.counts()[
                RecordingState.PENDING
            ]  # O(1), where walking the index is O(pending)
        sql = "SELECT count(*) FROM recordings WHERE state = 'pending' AND started_at >= ?"
        return int(self._query(sql + " AND started_at < ?", *_bounds(since, until))[0][0])

    def count_settled(self, *, since: datetime, until: datetime) -> int:
        """Recordings in [since, until) that are no longer pending (archived, dead-lettered or
        expired): what a webhook hint without a conversation to go by waits for."""
        sql = "SELECT count(*) FROM recordings WHERE state <> 'pending' AND started_at >= ?"
        return int(self._query(sql + " AND started_at < ?", *_bounds(since, until))[0][0])

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
    ) -> None:
        """Idempotent; archived again with a different sha256 is a bug and raises ValueError."""
        with self._write() as conn:
            row = _require(conn, recording_id)
            if row["state"] == RecordingState.ARCHIVED:
                if row["sha256"] != sha256:
                    raise ValueError(f"{recording_id} is archived with sha256 {row['sha256']}")
                return
            conn.execute(
                "UPDATE recordings SET state = 'archived', sha256 = ?, size = ?, key = ?,"
                " lock_mode = ?, retain_until = ?, audio_seconds = ?, audio_mismatch = ?,"
                " version_id = ?, updated_at = ? WHERE id = ?",
                (
                    sha256,
                    size,
                    key,
                    lock.mode.value if lock else None,
                    _micros(lock.retain_until) if lock else None,
                    audio_seconds,
                    int(audio_mismatch),
                    version_id,
                    self._now(),
                    row["id"],
                ),
            )

    def set_lock(self, recording_id: str, lock: Lock) -> None:
        """What an archived recording is locked with now (`retention extend` moved it on).
        Recorded per recording as it is done, so a run killed midway resumes where it was."""
        with self._write() as conn:
            conn.execute(
                "UPDATE recordings SET lock_mode = ?, retain_until = ?, updated_at = ?"
                " WHERE recording_id = ? AND state = 'archived'",
                (
                    lock.mode.value,
                    _micros(lock.retain_until),
                    self._now(),
                    recording_id.lower(),
                ),
            )

    def add_hold(self, rule: HoldRule) -> bool:
        """Keep a hold rule; False when one selecting the same recordings is kept already."""
        with self._write() as conn:
            added = conn.execute(
                "INSERT INTO holds (selector, selection, reason, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (selector, selection) DO NOTHING",
                (rule.selector.value, json.dumps(rule.values), rule.reason, self._now()),
            ).rowcount
        return bool(added)

    def remove_hold(self, rule: HoldRule) -> bool:
        """Drop the rule selecting what `rule` selects; False when there was none."""
        with self._write() as conn:
            removed = conn.execute(
                "DELETE FROM holds WHERE selector = ? AND selection = ?",
                (rule.selector.value, json.dumps(rule.values)),
            ).rowcount
        return bool(removed)

    def holds(self) -> list[HoldRule]:
        rows = self._query("SELECT selector, selection, reason FROM holds ORDER BY id")
        return [HoldRule(Selector(row[0]), tuple(json.loads(row[1])), row[2]) for row in rows]

    def mark_expired(self, recording_id: str) -> None:
        """Past its retain-until before it was archived, with `retention.expired = "skip"`:
        terminal, never downloaded, never retried."""
        with self._write() as conn:
            conn.execute(
                "UPDATE recordings SET state = 'expired', reason = 'expired', updated_at = ?"
                " WHERE recording_id = ? AND state = 'pending'",
                (self._now(), recording_id.lower()),
            )

    def record_failure(
        self, recording_id: str, reason: str, *, dead_letter: bool, max_attempts: int
    ) -> RecordingRow:
        """Count a failed attempt; an archived recording is never turned back (ValueError)."""
        with self._write() as conn:
            row = _require(conn, recording_id)
            if row["state"] == RecordingState.ARCHIVED:
                raise ValueError(f"{recording_id} is archived; a failure cannot undo that")
            updated = conn.execute(
                "UPDATE recordings SET attempts = attempts + 1, reason = ?, updated_at = ?,"
                " state = CASE WHEN ? OR attempts + 1 >= ? THEN 'failed' ELSE state END"
                " WHERE id = ? RETURNING *",
                (reason, self._now(), dead_letter, max_attempts, row["id"]),
            ).fetchall()
        return _row(updated[0])

    def retry(self, recording_ids: Sequence[str] | None = None) -> list[str]:
        """Failed -> pending with attempts 0; returns the ids changed, in lower case."""
        now = self._now()
        with self._write() as conn:
            if recording_ids is None:
                rows = conn.execute(
                    "UPDATE recordings SET state = 'pending', attempts = 0, updated_at = ?"
                    " WHERE state = 'failed' AND state <> 'archived' AND attempts > 0"
                    " RETURNING recording_id",
                    (now,),
                ).fetchall()
                return sorted(row[0] for row in rows)
            wanted = dict.fromkeys(i.lower() for i in recording_ids)
            sql = "UPDATE recordings SET state = 'pending', attempts = 0, updated_at = ?"
            sql += " WHERE recording_id = ? AND state = 'failed'"
            return [i for i in wanted if conn.execute(sql, (now, i)).rowcount]

    def record_malformed(self, window: Window, reason: str, raw: str) -> None:
        """One row per distinct entry, however often the lookback lists it again."""
        now = self._now()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO malformed (raw, reason, window_start, window_end, first_seen,"
                " last_seen, times_seen) VALUES (?, ?, ?, ?, ?, ?, 1) ON CONFLICT (raw) DO UPDATE"
                " SET reason = excluded.reason, window_start = excluded.window_start,"
                " window_end = excluded.window_end, last_seen = excluded.last_seen,"
                " times_seen = times_seen + 1",
                (raw[:MAX_RAW_CHARS], reason, _micros(window.start), _micros(window.end), now, now),
            )

    def audio_mismatch_count(self) -> int:
        sql = "SELECT count(*) FROM recordings WHERE audio_mismatch = 1"
        return int(self._query(sql)[0][0])

    def malformed_count(self) -> int:
        return int(self._query("SELECT count(*) FROM malformed")[0][0])

    def backfill_cursor(self, start: datetime, end: datetime) -> datetime | None:
        sql = "SELECT cursor FROM backfills WHERE range_start = ? AND range_end = ?"
        rows = self._query(sql, _micros(start), _micros(end))
        return _time(rows[0][0]) if rows else None

    def set_backfill_cursor(self, start: datetime, end: datetime, cursor: datetime) -> None:
        if not start <= cursor <= end:
            raise ValueError(f"backfill cursor {cursor} is outside [{start}, {end}]")
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO backfills (range_start, range_end, cursor, updated_at)"
                " VALUES (?, ?, ?, ?)",
                (_micros(start), _micros(end), _micros(cursor), self._now()),
            )

    def record_pass(self, result: PassResult) -> None:
        times = (_micros(result.started_at), _micros(result.finished_at))
        counts = (result.archived, result.failed, result.listed)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO passes (kind, started_at, finished_at, outcome, archived, failed,"
                " listed, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (result.kind, *times, result.outcome, *counts, result.error),
            )
            conn.execute(
                "DELETE FROM passes WHERE kind = ? AND id <= (SELECT id FROM passes WHERE kind = ?"
                " ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (result.kind, result.kind, PASS_HISTORY),
            )

    def last_pass(self, kind: str = "pass") -> PassResult | None:
        rows = self._query(
            "SELECT kind, started_at, finished_at, outcome, archived, failed, listed, error"
            " FROM passes WHERE kind = ? ORDER BY id DESC LIMIT 1",
            kind,
        )
        if not rows:
            return None
        kind, started, finished, outcome, *rest = rows[0]
        return PassResult(kind, _time(started), _time(finished), PassOutcome(outcome), *rest)

    def counts(self) -> dict[RecordingState, int]:
        found = {row["state"]: row["n"] for row in self._query("SELECT * FROM state_counts")}
        return {state: int(found.get(state, 0)) for state in STATES}

    def recent_failures(self, limit: int = 10) -> list[RecordingRow]:
        rows = self._query(
            "SELECT * FROM recordings WHERE state <> 'archived' AND attempts > 0"
            " ORDER BY updated_at DESC, id DESC LIMIT ?",
            limit,
        )
        return [_row(row) for row in rows]

    def archived(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[RecordingRow]:
        """In start-time order, a page per short read, holding no snapshot between pages."""
        low, high = _bounds(since, until)
        after = (low, -1)
        while True:
            rows = self._query(
                "SELECT * FROM recordings WHERE state = 'archived' AND started_at >= ?"
                " AND started_at < ? AND (started_at, id) > (?, ?) ORDER BY started_at, id LIMIT ?",
                *(after[0], high, *after, STREAM_PAGE),
            )
            yield from (_row(row) for row in rows)
            if len(rows) < STREAM_PAGE:
                return
            after = (rows[-1]["started_at"], rows[-1]["id"])

    # -- manifests ---------------------------------------------------------------------------

    def manifests(self, *, unwritten: bool = False) -> list[SealedManifest]:
        """Every manifest in chain order (only those whose write is unconfirmed, if asked)."""
        where = " WHERE body IS NOT NULL" if unwritten else ""
        rows = self._query(f"SELECT * FROM manifests{where} ORDER BY sequence")  # noqa: S608
        return [_manifest(row) for row in rows]

    def last_manifest(self) -> SealedManifest | None:
        rows = self._query("SELECT * FROM manifests ORDER BY sequence DESC LIMIT 1")
        return _manifest(rows[0]) if rows else None

    def manifest_count(self, day: date) -> int:
        """How many manifests (the day's own and its supplements) seal `day` so far."""
        sql = "SELECT count(*) FROM manifests WHERE day = ?"
        return int(self._query(sql, _micros(_day_start(day)))[0][0])

    def last_sealed_day(self) -> date | None:
        """The latest day whose own manifest is written."""
        sql = "SELECT max(day) FROM manifests WHERE supplement = 0 AND body IS NULL"
        value = self._query(sql)[0][0]
        return None if value is None else _time(value).date()

    def unsealed(self, since: datetime, until: datetime) -> list[RecordingRow]:
        """Archived recordings in [since, until) that no manifest lists yet, in id order."""
        rows = self._query(
            "SELECT * FROM recordings WHERE state = 'archived' AND manifest_seq IS NULL"
            " AND started_at >= ? AND started_at < ? ORDER BY recording_id",
            _micros(since),
            _micros(until),
        )
        return [_row(row) for row in rows]

    def unsealed_days(self, until: datetime) -> list[date]:
        """The days before `until` with archived recordings no manifest lists yet."""
        rows = self._query(
            "SELECT DISTINCT started_at / ? FROM recordings WHERE state = 'archived'"
            " AND manifest_seq IS NULL AND started_at < ?",
            _MICROS_PER_DAY,
            _micros(until),
        )
        return sorted((_EPOCH + timedelta(days=row[0])).date() for row in rows)

    def add_manifest(self, manifest: SealedManifest, recording_ids: Sequence[str]) -> None:
        """Keep a manifest about to be written, and mark what it lists, in one transaction."""
        if manifest.body is None:
            raise ValueError("a manifest is kept with its bytes until its write is confirmed")
        with self._write() as conn:
            conn.execute(
                "INSERT INTO manifests (sequence, day, supplement, key, sha256, count, body,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    manifest.sequence,
                    _micros(_day_start(manifest.day)),
                    manifest.supplement,
                    manifest.key,
                    manifest.sha256,
                    manifest.count,
                    manifest.body,
                    self._now(),
                ),
            )
            for recording_id in recording_ids:
                if not conn.execute(
                    "UPDATE recordings SET manifest_seq = ? WHERE recording_id = ?"
                    " AND state = 'archived' AND manifest_seq IS NULL",
                    (manifest.sequence, recording_id),
                ).rowcount:
                    raise ValueError(f"{recording_id} is not archived and unsealed")

    def manifest_written(self, sequence: int) -> None:
        """S3 holds the manifest: its bytes are no longer needed here."""
        with self._write() as conn:
            conn.execute(
                "UPDATE manifests SET body = NULL, written_at = ? WHERE sequence = ?"
                " AND body IS NOT NULL",
                (self._now(), sequence),
            )

    # -- the call history ----------------------------------------------------------------------

    def conversation_revisions(self, uuids: Iterable[str]) -> dict[str, tuple[int, str]]:
        """uuid -> (latest revision exported, digest of its content), for those known."""
        found: dict[str, tuple[int, str]] = {}
        wanted = list(dict.fromkeys(uuids))
        for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._query(
                f"SELECT uuid, revision, digest FROM conversations WHERE uuid IN ({marks})",  # noqa: S608
                *chunk,
            )
            found.update({row[0]: (row[1], row[2]) for row in rows})
        return found

    def add_conversation_part(self, key: str, body: bytes, revisions: Sequence[Any]) -> None:
        """Keep a part about to be written and record the revisions it holds, in one
        transaction. `revisions` are `conversations.Revision`s."""
        now = self._now()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO conversation_parts (key, body, revisions, created_at)"
                " VALUES (?, ?, ?, ?)",
                (key, body, len(revisions), now),
            )
            for revision in revisions:
                conversation = revision.conversation
                conn.execute(
                    "INSERT INTO conversations (uuid, revision, digest, started_at, recording_ids,"
                    " part, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uuid) DO UPDATE"
                    " SET revision = excluded.revision, digest = excluded.digest,"
                    " started_at = excluded.started_at, recording_ids = excluded.recording_ids,"
                    " part = excluded.part, updated_at = excluded.updated_at"
                    " WHERE excluded.revision > conversations.revision",
                    (
                        conversation.uuid,
                        revision.revision,
                        conversation.digest,
                        _micros(conversation.started_at),
                        json.dumps(list(conversation.recording_ids)),
                        key,
                        now,
                    ),
                )

    def unwritten_parts(self) -> list[tuple[str, bytes]]:
        rows = self._query(
            "SELECT key, body FROM conversation_parts WHERE body IS NOT NULL ORDER BY created_at"
        )
        return [(row[0], bytes(row[1])) for row in rows]

    def part_written(self, key: str) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE conversation_parts SET body = NULL, written_at = ? WHERE key = ?"
                " AND body IS NOT NULL",
                (self._now(), key),
            )

    def conversation_count(self) -> int:
        return int(self._query("SELECT count(*) FROM conversations")[0][0])

    def conversations_between(self, since: datetime, until: datetime) -> dict[str, list[str]]:
        """uuid -> the recording ids it names, for conversations started in [since, until)."""
        rows = self._query(
            "SELECT uuid, recording_ids FROM conversations WHERE started_at >= ?"
            " AND started_at < ?",
            _micros(since),
            _micros(until),
        )
        return {row[0]: json.loads(row[1]) for row in rows}

    # -- reconciliation and rebuild -----------------------------------------------------------

    def record_reconcile(
        self, started: datetime, finished: datetime, since: datetime, until: datetime, report: Any
    ) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO reconciles (started_at, finished_at, range_start, range_end, report)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    _micros(started),
                    _micros(finished),
                    _micros(since),
                    _micros(until),
                    json.dumps(report, sort_keys=True),
                ),
            )
            conn.execute(
                "DELETE FROM reconciles WHERE id <= (SELECT id FROM reconciles ORDER BY id DESC"
                " LIMIT 1 OFFSET ?)",
                (PASS_HISTORY,),
            )

    def last_reconcile(self) -> dict[str, Any] | None:
        """The last reconciliation's report, with its times, or None."""
        rows = self._query("SELECT * FROM reconciles ORDER BY id DESC LIMIT 1")
        if not rows:
            return None
        report: dict[str, Any] = json.loads(rows[0]["report"])
        return report

    def reconciled(self, since: datetime, until: datetime) -> bool:
        """Whether a kept reconciliation covered all of [since, until)."""
        sql = "SELECT 1 FROM reconciles WHERE range_start <= ? AND range_end >= ? LIMIT 1"
        return bool(self._query(sql, _micros(since), _micros(until)))

    def requeue(self, recording_id: str) -> bool:
        """An archived recording whose object is gone from S3 goes back to pending, to be
        archived again (and listed by a supplement). False when it was not archived."""
        with self._write() as conn:
            return bool(
                conn.execute(
                    "UPDATE recordings SET state = 'pending', attempts = 0, manifest_seq = NULL,"
                    " reason = 'missing_in_bucket', updated_at = ? WHERE recording_id = ?"
                    " AND state = 'archived'",
                    (self._now(), recording_id.lower()),
                ).rowcount
            )

    def restore(self, rows: Iterable[RecordingRow]) -> int:
        """Put archived recordings back as `rebuild-state` found them in the bucket, in one
        transaction; those already kept are left as they are. Returns how many were added."""
        now = self._now()
        added = 0
        with self._write() as conn:
            for row in rows:
                r = row.recording
                entry = json.dumps(r.to_api(), separators=(",", ":"), ensure_ascii=False)
                added += conn.execute(
                    "INSERT INTO recordings (recording_id, started_at, state, sha256, size, key,"
                    " first_seen, updated_at, entry, lock_mode, retain_until, audio_seconds,"
                    " version_id, manifest_seq) VALUES (?, ?, 'archived', ?, ?, ?, ?, ?, ?, ?, ?,"
                    " ?, ?, ?) ON CONFLICT (recording_id) DO NOTHING",
                    (
                        r.recording_id,
                        _micros(r.started_at) // 1000 * 1000,
                        row.sha256,
                        row.size,
                        row.key,
                        now,
                        now,
                        entry,
                        row.lock_mode,
                        _micros(row.retain_until) if row.retain_until else None,
                        row.audio_seconds,
                        row.version_id,
                        row.manifest_sequence,
                    ),
                ).rowcount
        return added

    def restore_manifest(self, manifest: SealedManifest) -> None:
        """Keep a manifest found written in the bucket (`rebuild-state`)."""
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO manifests (sequence, day, supplement, key, sha256, count,"
                " body, created_at, written_at) VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                (
                    manifest.sequence,
                    _micros(_day_start(manifest.day)),
                    manifest.supplement,
                    manifest.key,
                    manifest.sha256,
                    manifest.count,
                    self._now(),
                    self._now(),
                ),
            )

    def restore_conversations(self, parts: Mapping[str, int], latest: Iterable[Exported]) -> int:
        """Keep the call history's export as `rebuild-state` read it back, in one transaction:
        each part (key -> revisions it holds) as written, and each conversation's highest
        revision, so a re-listed window exports only what changed. Returns how many
        conversations were restored."""
        now = self._now()
        restored = 0
        with self._write() as conn:
            for key, count in parts.items():
                conn.execute(
                    "INSERT OR IGNORE INTO conversation_parts (key, body, revisions, created_at,"
                    " written_at) VALUES (?, NULL, ?, ?, ?)",
                    (key, count, now, now),
                )
            for exported in latest:
                restored += conn.execute(
                    "INSERT INTO conversations (uuid, revision, digest, started_at, recording_ids,"
                    " part, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uuid) DO UPDATE"
                    " SET revision = excluded.revision, digest = excluded.digest,"
                    " started_at = excluded.started_at, recording_ids = excluded.recording_ids,"
                    " part = excluded.part, updated_at = excluded.updated_at"
                    " WHERE excluded.revision > conversations.revision",
                    (
                        exported.uuid,
                        exported.revision,
                        exported.digest,
                        _micros(exported.started_at),
                        json.dumps(list(exported.recording_ids)),
                        exported.part,
                        now,
                    ),
                ).rowcount
        return restored

    def failed_ids(self) -> list[str]:
        # Sorted here: ORDER BY would tempt the planner to walk the whole recording_id index.
        rows = self._query(
            "SELECT recording_id FROM recordings"
            " WHERE state = 'failed' AND state <> 'archived' AND attempts > 0"
        )
        return sorted(row[0] for row in rows)

    def _now(self) -> int:
        return _micros(self._clock())

    def _query(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        with self._mutex:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise CheckpointError(f"checkpoint {self.path}: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front: a deferred transaction that upgrades later can
        # fail with SQLITE_BUSY at once instead of waiting out the busy timeout.
        with self._mutex:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise CheckpointError(f"checkpoint {self.path}: {exc}") from exc


@contextmanager
def writer_lock(path: Path) -> Iterator[None]:
    """The writer's lock on the checkpoint at `path` alone, without opening the database (which
    may be missing or unreadable): `rebuild-state` holds it while it moves a checkpoint aside and
    puts a rebuilt one in its place, so no archiver opens the path meanwhile."""
    path = Path(path)
    _refuse_links(path)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = _take_lock(path)
    except OSError as exc:
        raise CheckpointError(f"cannot lock the checkpoint {path}: {exc}") from exc
    try:
        yield
    finally:
        os.close(fd)


def _take_lock(path: Path) -> int:
    fd = _open_file(f"{path}.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        raise CheckpointLocked(
            f"another cradle-archiver process (pid {holder if holder.isdigit() else 'unknown'})"
            f" holds the checkpoint {path}; stop it first"
        ) from None
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _make_private(path: Path) -> None:
    """The state is readable by its owner only (guarantee 6), even a file copied in by hand."""
    for name in (str(path), f"{path}-wal", f"{path}-shm"):
        try:
            fd = _open_file(name, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:  # through the descriptor: a chmod by name would follow a link put there since
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)


def _refuse_links(path: Path) -> None:
    for name in (str(path), f"{path}-wal", f"{path}-shm", f"{path}.lock"):
        if os.path.islink(name):
            raise CheckpointError(_LINK.format(name))


def _open_file(name: str, flags: int) -> int:
    """Open (or create, 0600) one of the checkpoint's files: never through a link, never a FIFO
    or device (O_NONBLOCK: opening a FIFO must not hang before we can look at it)."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError:
        if os.path.islink(name):  # O_NOFOLLOW's ELOOP (EMLINK on some BSDs)
            raise CheckpointError(_LINK.format(name)) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CheckpointError(f"{name} is not a regular file; refusing to use it")
    return fd


def _connect(path: Path, *, writer: bool, create: bool) -> sqlite3.Connection:
    try:
        # mode=rw: SQLite must never create the file itself, with whatever mode the umask gives.
        conn = sqlite3.connect(
            f"file:{quote(str(path.absolute()))}?mode=rw",
            uri=True,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        raise CheckpointError(f"cannot open the checkpoint {path}: {exc}") from exc
    try:
        conn.row_factory = sqlite3.Row
        _prepare(conn, path, writer=writer, create=create)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.Error):
            raise CheckpointError(f"{path} is not a usable checkpoint: {exc}") from exc
        raise
    return conn


def _prepare(conn: sqlite3.Connection, path: Path, *, writer: bool, create: bool) -> None:
    version = _check_version(conn, path)
    if version == 0 and not (writer or create):
        raise CheckpointError(f"no checkpoint at {path} yet; run the archiver first")
    if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise CheckpointError(_NOT_OURS.format(path))
    if version > 0 and conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
        raise CheckpointError(_NOT_OURS.format(path))
    if 0 < version < SCHEMA_VERSION and not writer:
        raise CheckpointError(
            f"the checkpoint {path} has schema version {version}; run `cradle-archiver run`"
            f" once to upgrade it to version {SCHEMA_VERSION}"
        )
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if mode != "wal" and conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
        raise CheckpointError(f"{path}: SQLite cannot use WAL there; use a local filesystem")
    conn.execute("PRAGMA synchronous = NORMAL")
    if version < SCHEMA_VERSION:
        migrate(conn, path)


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to SCHEMA_VERSION in one transaction; refuse a newer one."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the write lock: another process may have migrated meanwhile.
        for step in range(_check_version(conn, path) + 1, SCHEMA_VERSION + 1):
            statement = ""
            for line in MIGRATIONS[step].splitlines(keepends=True):
                statement += line  # split where SQLite would: trigger bodies hold semicolons
                if sqlite3.complete_statement(statement):
                    conn.execute(statement)
                    statement = ""
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID:d}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _check_version(conn: sqlite3.Connection, path: Path) -> int:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise CheckpointError(
            f"the checkpoint {path} has schema version {version}, newer than the {SCHEMA_VERSION}"
            " this cradle-archiver understands; upgrade cradle-archiver to use it"
        )
    return version


def _require(conn: sqlite3.Connection, recording_id: str) -> sqlite3.Row:
    sql = "SELECT * FROM recordings WHERE recording_id = ?"
    row: sqlite3.Row | None = conn.execute(sql, (recording_id.lower(),)).fetchone()
    if row is None:
        raise KeyError(f"recording {recording_id} is not in the checkpoint")
    return row


def _row(row: sqlite3.Row) -> RecordingRow:
    try:
        recording = Recording.from_api(json.loads(row["entry"]))
    except (ValueError, MalformedEntry) as exc:
        raise CheckpointError(f"{row['recording_id']}: unreadable stored entry: {exc}") from exc
    names = (
        "state",
        "attempts",
        "reason",
        "sha256",
        "size",
        "key",
        "first_seen",
        "updated_at",
        "version_id",
    )
    fields: dict[str, Any] = {name: row[name] for name in names}
    fields.update(
        state=RecordingState(row["state"]),
        first_seen=_time(row["first_seen"]),
        updated_at=_time(row["updated_at"]),
        lock_mode=row["lock_mode"],
        retain_until=_time(row["retain_until"]) if row["retain_until"] is not None else None,
        audio_seconds=row["audio_seconds"],
        manifest_sequence=row["manifest_seq"],
    )
    return RecordingRow(recording, **fields)


def _manifest(row: sqlite3.Row) -> SealedManifest:
    return SealedManifest(
        sequence=row["sequence"],
        day=_time(row["day"]).date(),
        supplement=row["supplement"],
        key=row["key"],
        sha256=row["sha256"],
        count=row["count"],
        body=None if row["body"] is None else bytes(row["body"]),
    )


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _micros(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone; the checkpoint stores UTC times")
    return (value - _EPOCH) // timedelta(microseconds=1)


def _time(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _bounds(since: datetime | None, until: datetime | None) -> tuple[int, int]:
    low = _LOWEST if since is None else _micros(since)
    return low, _HIGHEST if until is None else _micros(until)
