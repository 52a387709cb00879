"""The checkpoint's schema: every version's SQL, applied in order by `migrate`.

The schema carries its invariants: CHECK constraints keep impossible states out (an archived
recording without its sha256, a failed one never attempted), and the counts by state live in
`state_counts`, kept by triggers in the same transaction as every change to `recordings`, so
`counts()` reads three rows and cannot drift, not even after hand edits in the sqlite3 shell.
Migrations are an append-only list: step n turns a version n-1 file into version n, all steps in
one transaction, and a file newer than this code is refused rather than guessed at.

`prepare` and `migrate` read SCHEMA_VERSION and MIGRATIONS from this module when they run.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from archiver.errors import CheckpointError

SCHEMA_VERSION = 4
APPLICATION_ID = 0x43524441  # "CRDA": tells our files from other SQLite databases

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


def prepare(conn: sqlite3.Connection, path: Path, *, writer: bool, create: bool) -> None:
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
