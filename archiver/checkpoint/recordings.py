"""The watermark and every recording seen: what became of each, and the counts by state.

The watermark never moves backwards (`set_watermark` refuses a step back). Each recording's state
changes in one transaction with its counts (schema.py's triggers). Malformed list entries are
kept too, once each however often they are listed, as evidence.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from archiver.checkpoint.connection import Connection, bounds, from_micros, micros
from archiver.errors import CheckpointError, MalformedEntry
from archiver.models import (
    Recording,
    RecordingRow,
    RecordingState,
    Watermark,
    Window,
)
from archiver.retention import Lock

STATES = tuple(RecordingState)
MAX_RAW_CHARS = 10_000  # a malformed entry is kept as evidence, not archived
STREAM_PAGE = 1000  # rows per read in archived(), so a long verify never pins an old snapshot


class Recordings(Connection):
    """The watermark, the recordings and the malformed entries set aside."""

    def watermark(self) -> Watermark:
        rows = self._query("SELECT value FROM meta WHERE key = 'watermark'")
        return Watermark(from_micros(rows[0][0]) if rows else None)

    def set_watermark(self, position: datetime) -> None:
        new = micros(position)
        with self._write() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'watermark'").fetchone()
            if row is not None and new < row[0]:
                raise ValueError(
                    f"the watermark never moves backwards: it is at {from_micros(row[0]).isoformat()},"
                    f" asked for {position.isoformat()}"
                )
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('watermark', ?)", (new,))
            # Where the walk began: the first day the manifests seal, empty days included.
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('origin', ?)", (new,))

    def origin(self) -> datetime | None:
        """Where the watermark first stood (None before the first pass)."""
        rows = self._query("SELECT value FROM meta WHERE key = 'origin'")
        return from_micros(rows[0][0]) if rows else None

    def add_listed(self, recordings: Iterable[Recording]) -> list[Recording]:
        now = self._now()
        added = []
        with self._write() as conn:
            for recording in recordings:
                # started_at in whole milliseconds, as the stored entry keeps it (to_api).
                values = (recording.recording_id, micros(recording.started_at) // 1000 * 1000)
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
        return recording_row(rows[0]) if rows else None

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
            *bounds(since, until),
            -1 if limit is None else limit,
        )
        return [recording_row(row) for row in rows]

    def count_pending(self, *, until: datetime | None = None, since: datetime | None = None) -> int:
        if since is None and until is None:
            return self.counts()[
                RecordingState.PENDING
            ]  # O(1), where walking the index is O(pending)
        sql = "SELECT count(*) FROM recordings WHERE state = 'pending' AND started_at >= ?"
        return int(self._query(sql + " AND started_at < ?", *bounds(since, until))[0][0])

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
            row = require(conn, recording_id)
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
                    micros(lock.retain_until) if lock else None,
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
                    micros(lock.retain_until),
                    self._now(),
                    recording_id.lower(),
                ),
            )

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
            row = require(conn, recording_id)
            if row["state"] == RecordingState.ARCHIVED:
                raise ValueError(f"{recording_id} is archived; a failure cannot undo that")
            updated = conn.execute(
                "UPDATE recordings SET attempts = attempts + 1, reason = ?, updated_at = ?,"
                " state = CASE WHEN ? OR attempts + 1 >= ? THEN 'failed' ELSE state END"
                " WHERE id = ? RETURNING *",
                (reason, self._now(), dead_letter, max_attempts, row["id"]),
            ).fetchall()
        return recording_row(updated[0])

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
                (raw[:MAX_RAW_CHARS], reason, micros(window.start), micros(window.end), now, now),
            )

    def audio_mismatch_count(self) -> int:
        sql = "SELECT count(*) FROM recordings WHERE audio_mismatch = 1"
        return int(self._query(sql)[0][0])

    def malformed_count(self) -> int:
        return int(self._query("SELECT count(*) FROM malformed")[0][0])

    def counts(self) -> dict[RecordingState, int]:
        found = {row["state"]: row["n"] for row in self._query("SELECT * FROM state_counts")}
        return {state: int(found.get(state, 0)) for state in STATES}

    def recent_failures(self, limit: int = 10) -> list[RecordingRow]:
        rows = self._query(
            "SELECT * FROM recordings WHERE state <> 'archived' AND attempts > 0"
            " ORDER BY updated_at DESC, id DESC LIMIT ?",
            limit,
        )
        return [recording_row(row) for row in rows]

    def archived(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[RecordingRow]:
        """In start-time order, a page per short read, holding no snapshot between pages."""
        low, high = bounds(since, until)
        after = (low, -1)
        while True:
            rows = self._query(
                "SELECT * FROM recordings WHERE state = 'archived' AND started_at >= ?"
                " AND started_at < ? AND (started_at, id) > (?, ?) ORDER BY started_at, id LIMIT ?",
                *(after[0], high, *after, STREAM_PAGE),
            )
            yield from (recording_row(row) for row in rows)
            if len(rows) < STREAM_PAGE:
                return
            after = (rows[-1]["started_at"], rows[-1]["id"])

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
                        micros(r.started_at) // 1000 * 1000,
                        row.sha256,
                        row.size,
                        row.key,
                        now,
                        now,
                        entry,
                        row.lock_mode,
                        micros(row.retain_until) if row.retain_until else None,
                        row.audio_seconds,
                        row.version_id,
                        row.manifest_sequence,
                    ),
                ).rowcount
        return added

    def failed_ids(self) -> list[str]:
        # Sorted here: ORDER BY would tempt the planner to walk the whole recording_id index.
        rows = self._query(
            "SELECT recording_id FROM recordings"
            " WHERE state = 'failed' AND state <> 'archived' AND attempts > 0"
        )
        return sorted(row[0] for row in rows)


def require(conn: sqlite3.Connection, recording_id: str) -> sqlite3.Row:
    sql = "SELECT * FROM recordings WHERE recording_id = ?"
    row: sqlite3.Row | None = conn.execute(sql, (recording_id.lower(),)).fetchone()
    if row is None:
        raise KeyError(f"recording {recording_id} is not in the checkpoint")
    return row


def recording_row(row: sqlite3.Row) -> RecordingRow:
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
        first_seen=from_micros(row["first_seen"]),
        updated_at=from_micros(row["updated_at"]),
        lock_mode=row["lock_mode"],
        retain_until=from_micros(row["retain_until"]) if row["retain_until"] is not None else None,
        audio_seconds=row["audio_seconds"],
        manifest_sequence=row["manifest_seq"],
    )
    return RecordingRow(recording, **fields)
