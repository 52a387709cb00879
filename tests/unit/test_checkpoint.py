"""The SQLite checkpoint, against real SQLite files in tmp_path.

`CHECKPOINT_SCALE_ROWS=1000000 pytest tests/unit/test_checkpoint.py -k scale -s` runs the scale
check at a million recordings instead of the default 100,000 and prints its figures.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from archiver.checkpoint import SCHEMA_VERSION, Checkpoint
from archiver.checkpoint import files as checkpoint_files
from archiver.checkpoint import recordings as checkpoint_recordings
from archiver.checkpoint import runs as checkpoint_runs
from archiver.checkpoint import schema as checkpoint_schema
from archiver.errors import CheckpointError, CheckpointLocked
from archiver.models import PassOutcome, PassResult, Recording, RecordingState, Watermark, Window

T0 = datetime(2024, 3, 1, tzinfo=UTC)
SHA = "ab" * 32


class FakeClock:
    """Each reading is one second later than the last, so update order is unambiguous."""

    def __init__(self, start: datetime = datetime(2025, 1, 1, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def recording(n: int, started_at: datetime | None = None) -> Recording:
    recording_id = str(uuid.UUID(int=n + 1))
    return Recording.from_api(
        {
            "url": f"https://api.cradle.io/api/v1/public/recordings/{recording_id}.mp3?source=api",
            "startedAt": (started_at or T0 + timedelta(minutes=n)).isoformat(),
            "durationSeconds": 60 + n % 600,
            "nature": "in",
            "cradleNumber": "+441234567890",
            "thirdPartyNumber": "+447700900123",
            "agent1": "first.agent@example.com",
        }
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cp(db_path: Path, clock: FakeClock) -> Iterator[Checkpoint]:
    with Checkpoint.open(db_path, clock=clock) as opened:
        yield opened


def truth(path: Path) -> dict[str, int]:
    """Counts by state straight from the rows, bypassing state_counts."""
    with sqlite3.connect(path) as conn:
        found = dict(conn.execute("SELECT state, count(*) FROM recordings GROUP BY state"))
    conn.close()
    return {state: found.get(state, 0) for state in ("pending", "archived", "failed", "expired")}


def raw_sql(path: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        with conn:
            return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- schema and files -------------------------------------------------------------------------


def test_new_checkpoint_has_the_current_schema(cp: Checkpoint, db_path: Path) -> None:
    assert raw_sql(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert raw_sql(db_path, "PRAGMA application_id") == [(checkpoint_schema.APPLICATION_ID,)]
    assert raw_sql(db_path, "PRAGMA journal_mode") == [("wal",)]
    assert cp.counts() == {"pending": 0, "archived": 0, "failed": 0, "expired": 0}
    assert cp.watermark() == Watermark()
    assert cp.path == db_path


@pytest.mark.parametrize("writer", [True, False])
def test_newer_schema_is_refused(db_path: Path, writer: bool) -> None:
    Checkpoint.open(db_path).close()
    raw_sql(db_path, f"PRAGMA user_version = {SCHEMA_VERSION + 98}")
    with pytest.raises(CheckpointError) as caught:
        Checkpoint.open(db_path, writer=writer)
    message = str(caught.value)
    assert f"schema version {SCHEMA_VERSION + 98}" in message
    assert "newer" in message
    assert str(db_path) in message


def test_migrate_refuses_a_newer_schema_itself(db_path: Path) -> None:
    Checkpoint.open(db_path).close()
    raw_sql(db_path, "PRAGMA user_version = 77")
    conn = sqlite3.connect(db_path, isolation_level=None)
    with pytest.raises(CheckpointError, match="schema version 77"):
        checkpoint_schema.migrate(conn, db_path)
    assert not conn.in_transaction
    conn.close()


def test_writer_upgrades_an_older_schema_and_reader_asks_for_it(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Checkpoint.open(db_path).close()
    step = SCHEMA_VERSION + 1
    migrations = {**checkpoint_schema.MIGRATIONS, step: "ALTER TABLE meta ADD COLUMN note TEXT;"}
    monkeypatch.setattr(checkpoint_schema, "MIGRATIONS", migrations)
    monkeypatch.setattr(checkpoint_schema, "SCHEMA_VERSION", step)

    with pytest.raises(CheckpointError) as caught:
        Checkpoint.open(db_path, writer=False)
    assert "run `cradle-archiver run`" in str(caught.value)

    Checkpoint.open(db_path).close()
    assert raw_sql(db_path, "PRAGMA user_version") == [(step,)]
    assert "note" in [row[1] for row in raw_sql(db_path, "PRAGMA table_info(meta)")]
    Checkpoint.open(db_path, writer=False).close()


def test_a_failed_migration_leaves_the_file_untouched(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Checkpoint.open(db_path).close()
    step = SCHEMA_VERSION + 1
    migrations = {**checkpoint_schema.MIGRATIONS, step: "CREATE TABLE x (a);\nNOT SQL AT ALL;"}
    monkeypatch.setattr(checkpoint_schema, "MIGRATIONS", migrations)
    monkeypatch.setattr(checkpoint_schema, "SCHEMA_VERSION", step)
    with pytest.raises(CheckpointError):
        Checkpoint.open(db_path)
    assert raw_sql(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert not raw_sql(db_path, "SELECT name FROM sqlite_master WHERE name = 'x'")


def test_other_sqlite_databases_and_other_files_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "other.db"
    raw_sql(foreign, "CREATE TABLE t (a)")
    with pytest.raises(CheckpointError, match="not a cradle-archiver checkpoint"):
        Checkpoint.open(foreign)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(CheckpointError, match="not a usable checkpoint"):
        Checkpoint.open(junk)


def test_missing_file_is_an_error_without_create(db_path: Path) -> None:
    for writer in (True, False):
        with pytest.raises(CheckpointError) as caught:
            Checkpoint.open(db_path, writer=writer, create=False)
        assert str(caught.value) == f"no checkpoint at {db_path} yet; run the archiver first"
    assert not db_path.exists()


def test_reader_may_create_when_asked(db_path: Path) -> None:
    with Checkpoint.open(db_path, writer=False, create=True) as reader:
        assert reader.counts()[RecordingState.PENDING] == 0
    assert not Path(f"{db_path}.lock").exists()


def test_files_are_private_whatever_the_umask(db_path: Path) -> None:
    previous = os.umask(0)
    try:
        with Checkpoint.open(db_path) as cp:
            cp.add_listed([recording(1)])
            with Checkpoint.open(db_path, writer=False) as reader:
                assert reader.counts()[RecordingState.PENDING] == 1
            assert mode(db_path.parent) == 0o700
            for name in (db_path, f"{db_path}-wal", f"{db_path}-shm", f"{db_path}.lock"):
                assert mode(name) == 0o600, name
    finally:
        os.umask(previous)


def test_writer_makes_an_existing_loose_file_private(db_path: Path) -> None:
    Checkpoint.open(db_path).close()
    os.chmod(db_path, 0o644)
    os.chmod(f"{db_path}.lock", 0o640)
    Checkpoint.open(db_path).close()
    assert mode(db_path) == 0o600
    assert mode(f"{db_path}.lock") == 0o600


# --- symbolic links are never followed --------------------------------------------------------


def precious(tmp_path: Path, name: str = "precious.txt") -> Path:
    """A file a planted link might point at; it must come through untouched."""
    target = tmp_path / name
    target.write_text("do not touch\n")
    target.chmod(0o644)
    return target


def assert_untouched(target: Path) -> None:
    assert target.read_text() == "do not touch\n"
    assert mode(target) == 0o644


def test_a_symlinked_lock_file_is_refused_and_its_target_left_alone(
    tmp_path: Path, db_path: Path
) -> None:
    db_path.parent.mkdir()
    target = precious(tmp_path)
    os.symlink(target, f"{db_path}.lock")
    with pytest.raises(CheckpointError) as caught:
        Checkpoint.open(db_path)
    assert str(caught.value) == (
        f"{db_path}.lock is a symbolic link; refusing to follow it"
        " (the checkpoint's files must be real files)"
    )
    assert caught.value.exit_code == CheckpointError.exit_code == 1
    assert_untouched(target)
    assert not db_path.exists()  # refused before anything was created


def test_a_dangling_lock_link_does_not_create_its_target(tmp_path: Path, db_path: Path) -> None:
    db_path.parent.mkdir()
    os.symlink(tmp_path / "created-through-the-link", f"{db_path}.lock")
    with pytest.raises(CheckpointError, match="is a symbolic link"):
        Checkpoint.open(db_path)
    assert not (tmp_path / "created-through-the-link").exists()


@pytest.mark.parametrize("writer", [True, False])
def test_a_symlinked_state_file_is_refused_and_not_made_private(
    tmp_path: Path, db_path: Path, writer: bool
) -> None:
    real = tmp_path / "elsewhere" / "state.db"
    Checkpoint.open(real).close()
    real.chmod(0o644)
    db_path.parent.mkdir()
    os.symlink(real, db_path)
    with pytest.raises(CheckpointError) as caught:
        Checkpoint.open(db_path, writer=writer, create=writer)
    assert f"{db_path} is a symbolic link; refusing to follow it" in str(caught.value)
    assert mode(real) == 0o644
    assert not Path(f"{db_path}.lock").exists()


@pytest.mark.parametrize("suffix", ["-wal", "-shm"])
def test_symlinked_sqlite_companions_are_refused(
    tmp_path: Path, db_path: Path, suffix: str
) -> None:
    Checkpoint.open(db_path).close()
    target = precious(tmp_path)
    Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    os.symlink(target, f"{db_path}{suffix}")
    for writer in (True, False):
        with pytest.raises(CheckpointError, match=f"{db_path}{suffix} is a symbolic link"):
            Checkpoint.open(db_path, writer=writer)
    assert_untouched(target)


def test_make_private_never_chmods_through_a_link(tmp_path: Path, db_path: Path) -> None:
    # A link that appears after open's check (the race the descriptor-based chmod closes).
    Checkpoint.open(db_path).close()
    target = precious(tmp_path)
    Path(f"{db_path}-wal").unlink(missing_ok=True)
    os.symlink(target, f"{db_path}-wal")
    with pytest.raises(CheckpointError, match="is a symbolic link"):
        checkpoint_files.make_private(db_path)
    assert_untouched(target)


def test_a_lock_file_that_is_not_a_regular_file_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir()
    os.mkfifo(f"{db_path}.lock")
    with pytest.raises(CheckpointError, match=r"\.lock is not a regular file"):
        Checkpoint.open(db_path)


def test_a_linked_state_directory_is_still_fine(tmp_path: Path) -> None:
    # Only the files themselves must be real: /var/lib/x -> /data/x is an ordinary deployment.
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "linked")
    with Checkpoint.open(tmp_path / "linked" / "state.db") as cp:
        cp.add_listed([recording(1)])
    assert (tmp_path / "real" / "state.db").is_file()


# --- one writer -------------------------------------------------------------------------------

HOLDER = """
import sys
from pathlib import Path
from archiver.checkpoint import Checkpoint
cp = Checkpoint.open(Path(sys.argv[1]))
print("locked", flush=True)
sys.stdin.read()
cp.close()
"""


def test_second_writer_process_is_refused_with_the_holders_pid(db_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(CheckpointLocked) as caught:
            Checkpoint.open(db_path)
        with Checkpoint.open(db_path, writer=False) as reader:
            assert reader.counts()[RecordingState.PENDING] == 0
    finally:
        holder.communicate("", timeout=30)
    assert str(caught.value) == (
        f"another cradle-archiver process (pid {holder.pid}) holds the checkpoint {db_path};"
        " stop it first"
    )
    assert caught.value.exit_code == 1
    Checkpoint.open(db_path).close()  # released when the holder exited


def test_second_writer_in_the_same_process_is_refused_until_close(db_path: Path) -> None:
    first = Checkpoint.open(db_path)
    with pytest.raises(CheckpointLocked, match=f"pid {os.getpid()}"):
        Checkpoint.open(db_path)
    first.close()
    first.close()
    Checkpoint.open(db_path).close()


def test_reader_works_beside_a_writer(cp: Checkpoint, db_path: Path) -> None:
    cp.add_listed([recording(1), recording(2)])
    cp.record_failure(recording(1).recording_id, "http_404", dead_letter=True, max_attempts=5)
    with Checkpoint.open(db_path, writer=False) as reader:
        assert reader.counts() == {"pending": 1, "archived": 0, "failed": 1, "expired": 0}
        assert reader.retry() == [recording(1).recording_id]  # `retry` writes as a reader
        cp.mark_archived(recording(2).recording_id, sha256=SHA, size=1, key="k")
        assert reader.counts() == {"pending": 1, "archived": 1, "failed": 0, "expired": 0}
    assert cp.counts() == {"pending": 1, "archived": 1, "failed": 0, "expired": 0}


def test_a_second_thread_can_read(cp: Checkpoint) -> None:
    cp.add_listed([recording(1)])
    seen: list[dict[RecordingState, int]] = []
    thread = threading.Thread(target=lambda: seen.append(cp.counts()))
    thread.start()
    thread.join()
    assert seen == [{"pending": 1, "archived": 0, "failed": 0, "expired": 0}]


# --- watermark --------------------------------------------------------------------------------


def test_watermark_round_trips_and_never_moves_backwards(db_path: Path) -> None:
    position = T0 + timedelta(hours=5, microseconds=123457)
    with Checkpoint.open(db_path) as cp:
        assert cp.watermark().is_zero
        cp.set_watermark(position)
        cp.set_watermark(position)  # staying put is fine
    with Checkpoint.open(db_path) as cp:
        assert cp.watermark() == Watermark(position)
        with pytest.raises(ValueError, match="never moves backwards"):
            cp.set_watermark(position - timedelta(microseconds=1))
        assert cp.watermark() == Watermark(position)
        cp.set_watermark(position + timedelta(hours=1))
        assert cp.watermark().position == position + timedelta(hours=1)


def test_naive_times_are_refused(cp: Checkpoint) -> None:
    with pytest.raises(ValueError, match="no time zone"):
        cp.set_watermark(datetime(2024, 1, 1))  # noqa: DTZ001  the naive time is the point


# --- recordings -------------------------------------------------------------------------------


def test_add_listed_returns_only_new_ids_and_keeps_existing_rows(
    cp: Checkpoint, clock: FakeClock
) -> None:
    first = [recording(1), recording(2)]
    assert cp.add_listed(first) == first
    cp.mark_archived(recording(1).recording_id, sha256=SHA, size=10, key="k1")
    before = cp.get(recording(1).recording_id)

    relisted = [recording(1), recording(2), recording(3), recording(3)]
    assert cp.add_listed(relisted) == [recording(3)]
    assert cp.add_listed(iter([])) == []

    assert cp.get(recording(1).recording_id) == before
    assert cp.counts() == {"pending": 2, "archived": 1, "failed": 0, "expired": 0}


def test_get_returns_the_stored_row(cp: Checkpoint) -> None:
    rec = recording(7, T0 + timedelta(seconds=1, milliseconds=250))
    cp.add_listed([rec])
    row = cp.get(rec.recording_id.upper())
    assert row is not None
    assert row.recording == rec
    assert (row.state, row.attempts, row.reason, row.sha256, row.size, row.key) == (
        "pending",
        0,
        None,
        None,
        None,
        None,
    )
    assert row.first_seen == row.updated_at == datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert cp.get(str(uuid.UUID(int=999_999))) is None


def test_pending_is_oldest_first_within_a_half_open_range(cp: Checkpoint) -> None:
    tie = T0 + timedelta(hours=1)
    recs = [recording(5, tie), recording(3, tie), recording(1, T0), recording(9, T0 + timedelta(2))]
    cp.add_listed(recs)
    cp.mark_archived(recording(9).recording_id, sha256=SHA, size=1, key="k")

    ids = [row.recording.recording_id for row in cp.pending()]
    assert ids == [recording(1).recording_id, recording(3).recording_id, recording(5).recording_id]
    assert [r.recording.recording_id for r in cp.pending(limit=1)] == ids[:1]
    assert [r.recording.recording_id for r in cp.pending(since=tie)] == ids[1:]
    assert [r.recording.recording_id for r in cp.pending(until=tie)] == ids[:1]
    assert cp.pending(since=tie, until=tie + timedelta(milliseconds=1))[0].recording == recs[1]
    assert cp.pending(since=T0, until=T0) == []
    assert cp.count_pending() == 3
    assert cp.count_pending(since=tie) == 2
    assert cp.count_pending(until=tie) == 1


def test_failures_count_up_and_dead_letter(cp: Checkpoint) -> None:
    rid = recording(1).recording_id
    cp.add_listed([recording(1), recording(2)])

    first = cp.record_failure(rid, "truncated", dead_letter=False, max_attempts=3)
    assert (first.state, first.attempts, first.reason) == ("pending", 1, "truncated")
    second = cp.record_failure(rid, "http_500", dead_letter=False, max_attempts=3)
    assert (second.state, second.attempts, second.reason) == ("pending", 2, "http_500")
    third = cp.record_failure(rid, "truncated", dead_letter=False, max_attempts=3)
    assert (third.state, third.attempts) == ("failed", 3)
    assert cp.get(rid) == third

    off_host = cp.record_failure(
        recording(2).recording_id, "off_host_url", dead_letter=True, max_attempts=5
    )
    assert (off_host.state, off_host.attempts, off_host.reason) == ("failed", 1, "off_host_url")
    assert cp.counts() == {"pending": 0, "archived": 0, "failed": 2, "expired": 0}
    assert cp.failed_ids() == sorted([rid, recording(2).recording_id])


def test_an_archived_recording_cannot_fail_and_unknown_ids_are_key_errors(cp: Checkpoint) -> None:
    rid = recording(1).recording_id
    cp.add_listed([recording(1)])
    cp.mark_archived(rid, sha256=SHA, size=5, key="cradle/k.mp3")
    cp.mark_archived(rid, sha256=SHA, size=5, key="cradle/k.mp3")  # idempotent
    with pytest.raises(ValueError, match="is archived"):
        cp.record_failure(rid, "conflict", dead_letter=True, max_attempts=5)
    with pytest.raises(ValueError, match="archived with sha256"):
        cp.mark_archived(rid, sha256="cd" * 32, size=5, key="cradle/k.mp3")
    with pytest.raises(KeyError):
        cp.mark_archived(recording(2).recording_id, sha256=SHA, size=5, key="k")
    with pytest.raises(KeyError):
        cp.record_failure(recording(2).recording_id, "x", dead_letter=False, max_attempts=5)
    row = cp.get(rid)
    assert row is not None
    assert (row.state, row.sha256, row.size, row.key) == ("archived", SHA, 5, "cradle/k.mp3")
    assert cp.counts() == {"pending": 0, "archived": 1, "failed": 0, "expired": 0}


def test_a_failed_recording_can_still_be_archived(cp: Checkpoint) -> None:
    rid = recording(1).recording_id
    cp.add_listed([recording(1)])
    cp.record_failure(rid, "conflict", dead_letter=True, max_attempts=5)
    cp.mark_archived(rid, sha256=SHA, size=5, key="k")
    assert cp.counts() == {"pending": 0, "archived": 1, "failed": 0, "expired": 0}
    assert cp.recent_failures() == []


def test_retry_puts_failed_back_to_pending(cp: Checkpoint) -> None:
    ids = [recording(n).recording_id for n in range(4)]
    cp.add_listed([recording(n) for n in range(4)])
    for rid in ids[:3]:
        cp.record_failure(rid, "http_404", dead_letter=True, max_attempts=5)
    cp.record_failure(ids[3], "truncated", dead_letter=False, max_attempts=5)

    unknown = str(uuid.UUID(int=424242))
    assert cp.retry([ids[0].upper(), ids[3], unknown, ids[0]]) == [ids[0]]
    row = cp.get(ids[0])
    assert row is not None and (row.state, row.attempts) == ("pending", 0)
    assert cp.retry() == sorted(ids[1:3])
    assert cp.retry() == []
    assert cp.counts() == {"pending": 4, "archived": 0, "failed": 0, "expired": 0}
    assert cp.failed_ids() == []


def test_recent_failures_are_troubled_recordings_newest_first(cp: Checkpoint) -> None:
    cp.add_listed([recording(n) for n in range(5)])
    ids = [recording(n).recording_id for n in range(5)]
    cp.record_failure(ids[0], "truncated", dead_letter=False, max_attempts=5)
    cp.record_failure(ids[1], "http_404", dead_letter=True, max_attempts=5)
    cp.record_failure(ids[2], "truncated", dead_letter=False, max_attempts=5)
    cp.mark_archived(ids[2], sha256=SHA, size=1, key="k")
    cp.record_failure(ids[3], "not_mp3", dead_letter=True, max_attempts=5)
    cp.retry([ids[3]])

    recent = cp.recent_failures()
    assert [row.recording.recording_id for row in recent] == [ids[1], ids[0]]
    assert [row.reason for row in recent] == ["http_404", "truncated"]
    assert len(cp.recent_failures(limit=1)) == 1


def test_counts_never_drift_over_a_random_history(db_path: Path) -> None:
    rng = random.Random(20240301)
    known: list[str] = []
    with Checkpoint.open(db_path, clock=FakeClock()) as cp:
        for step in range(1500):
            action = rng.random()
            try:
                if action < 0.3 or not known:
                    batch = [recording(rng.randrange(400)) for _ in range(rng.randrange(1, 6))]
                    known.extend(r.recording_id for r in cp.add_listed(batch))
                elif action < 0.55:
                    cp.mark_archived(rng.choice(known), sha256=SHA, size=1, key="k")
                elif action < 0.85:
                    cp.record_failure(
                        rng.choice(known),
                        rng.choice(["truncated", "http_500", "conflict"]),
                        dead_letter=rng.random() < 0.3,
                        max_attempts=rng.randrange(1, 4),
                    )
                elif action < 0.95:
                    cp.retry(rng.sample(known, min(len(known), 3)))
                else:
                    cp.retry()
            except ValueError:
                pass  # a failure for an archived recording: refused, nothing written
            assert cp.counts() == truth(db_path), f"drift at step {step}"
            assert cp.count_pending() == cp.counts()[RecordingState.PENDING]
            assert len(cp.failed_ids()) == cp.counts()[RecordingState.FAILED]


def test_a_rolled_back_write_leaves_counts_alone(cp: Checkpoint, db_path: Path) -> None:
    def poisoned() -> Iterator[Recording]:
        yield recording(1)
        yield recording(2)
        raise RuntimeError("the list call broke halfway")

    with pytest.raises(RuntimeError):
        cp.add_listed(poisoned())
    assert cp.counts() == truth(db_path) == {"pending": 0, "archived": 0, "failed": 0, "expired": 0}
    assert cp.get(recording(1).recording_id) is None


def test_counts_follow_hand_edits_in_the_sqlite3_shell(cp: Checkpoint, db_path: Path) -> None:
    cp.add_listed([recording(n) for n in range(10)])
    raw_sql(db_path, "UPDATE recordings SET state = 'failed', attempts = 1 WHERE id <= 3")
    raw_sql(db_path, "DELETE FROM recordings WHERE id IN (1, 9)")
    assert cp.counts() == truth(db_path) == {"pending": 6, "archived": 0, "failed": 2, "expired": 0}


# --- crash safety -----------------------------------------------------------------------------

WRITER_LOOP = """
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from archiver.checkpoint import Checkpoint
from archiver.models import Recording

start = datetime(2024, 3, 1, tzinfo=UTC)
cp = Checkpoint.open(Path(sys.argv[1]))
hour = int(sys.argv[2])
while True:
    window = start + timedelta(hours=hour)
    batch = [
        Recording.from_api({
            "url": f"https://api.cradle.io/api/v1/public/recordings/{n:08d}-0000-4000-8000-"
                   f"{hour:012d}.mp3",
            "startedAt": (window + timedelta(seconds=n)).isoformat(),
            "durationSeconds": 30, "nature": "out", "agent1": "a",
        })
        for n in range(100)
    ]
    cp.add_listed(batch)
    for n, rec in enumerate(batch):
        if n % 7 == 0:
            cp.record_failure(rec.recording_id, "http_404", dead_letter=True, max_attempts=5)
        else:
            cp.mark_archived(rec.recording_id, sha256="ab" * 32, size=n, key=rec.recording_id)
    cp.set_watermark(window + timedelta(hours=1))
    print(hour, flush=True)
    hour += 1
"""


def test_kill_9_in_a_writer_loop_leaves_a_consistent_checkpoint(db_path: Path) -> None:
    rng = random.Random(9)
    hour = 0
    for _ in range(5):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER_LOOP, str(db_path), str(hour)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        for _ in range(3):
            child.stdout.readline()
        time.sleep(rng.uniform(0, 0.05))  # land anywhere inside the next batch
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()

        with Checkpoint.open(db_path) as cp:  # the lock died with the process
            assert raw_sql(db_path, "PRAGMA integrity_check") == [("ok",)]
            assert cp.counts() == truth(db_path)
            watermark = cp.watermark().position
            assert watermark is not None
            # Nothing the watermark covers is left pending: it was written after its batch.
            assert cp.count_pending(until=watermark) == 0
            hour = int((watermark - T0) / timedelta(hours=1))
    assert hour >= 15


# --- malformed entries, backfills, passes -----------------------------------------------------


def test_malformed_entries_are_kept_once_each(cp: Checkpoint, db_path: Path) -> None:
    window = Window(T0, T0 + timedelta(hours=1))
    later = Window(T0 + timedelta(minutes=5), T0 + timedelta(hours=1, minutes=5))
    assert cp.malformed_count() == 0
    cp.record_malformed(window, "missing url", '{"startedAt": "x"}')
    cp.record_malformed(later, "missing url", '{"startedAt": "x"}')
    cp.record_malformed(window, "invalid nature", '{"nature": 1}')
    cp.record_malformed(window, "huge", "x" * 50_000)
    assert cp.malformed_count() == 3
    rows = raw_sql(db_path, "SELECT times_seen, length(raw) FROM malformed ORDER BY id")
    assert rows == [(2, 18), (1, 13), (1, checkpoint_recordings.MAX_RAW_CHARS)]


def test_backfill_cursor_is_kept_per_range(cp: Checkpoint) -> None:
    start, end = T0, T0 + timedelta(days=2)
    assert cp.backfill_cursor(start, end) is None
    cp.set_backfill_cursor(start, end, start + timedelta(hours=3))
    cp.set_backfill_cursor(start, end, start + timedelta(hours=4))
    cp.set_backfill_cursor(start, end + timedelta(days=1), start + timedelta(hours=1))
    assert cp.backfill_cursor(start, end) == start + timedelta(hours=4)
    assert cp.backfill_cursor(start, end + timedelta(days=1)) == start + timedelta(hours=1)
    with pytest.raises(ValueError, match="outside"):
        cp.set_backfill_cursor(start, end, end + timedelta(seconds=1))


def test_pass_results_round_trip_per_kind(cp: Checkpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint_runs, "PASS_HISTORY", 3)
    assert cp.last_pass() is None
    for n in range(6):
        cp.record_pass(
            PassResult("pass", T0, T0 + timedelta(seconds=n), PassOutcome.OK, archived=n)
        )
    backfill = PassResult(
        "backfill", T0, T0 + timedelta(minutes=1), PassOutcome.FAILED, 1, 2, 3, "S3 unreachable"
    )
    cp.record_pass(backfill)
    assert cp.last_pass() == PassResult(
        "pass", T0, T0 + timedelta(seconds=5), PassOutcome.OK, archived=5
    )
    assert cp.last_pass("backfill") == backfill
    kept = raw_sql(cp.path, "SELECT count(*) FROM passes WHERE kind = 'pass'")
    assert kept == [(3,)]


# --- verify's stream --------------------------------------------------------------------------


def test_archived_streams_in_start_order_a_page_at_a_time(
    cp: Checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint_recordings, "STREAM_PAGE", 3)
    tie = T0 + timedelta(hours=2)
    recs = [recording(n, tie if n % 2 else T0 + timedelta(hours=n)) for n in range(11)]
    cp.add_listed(recs)
    for rec in recs[:10]:
        cp.mark_archived(rec.recording_id, sha256=SHA, size=1, key=rec.recording_id)

    stream = cp.archived()
    first = next(stream)
    cp.mark_archived(recs[10].recording_id, sha256=SHA, size=1, key="k")  # no lock is held
    rows = [first, *stream]
    assert len(rows) == 11
    starts = [row.recording.started_at for row in rows]
    assert starts == sorted(starts)
    assert len({row.recording.recording_id for row in rows}) == 11
    assert all(row.state == "archived" for row in rows)

    window = list(cp.archived(since=tie, until=tie + timedelta(hours=3)))
    expected = [r for r in recs if tie <= r.started_at < tie + timedelta(hours=3)]
    assert sorted(row.recording.recording_id for row in window) == sorted(
        r.recording_id for r in expected
    )


# --- indexes and scale ------------------------------------------------------------------------

FULL_SCAN_OK = ("recordings_pending", "recordings_archived", "recordings_troubled")


def query_plans(cp: Checkpoint, db_path: Path, calls: Callable[[], object]) -> list[str]:
    """Every plan step SQLite chose for the statements `calls` ran."""
    statements: list[str] = []
    cp._conn.set_trace_callback(statements.append)
    try:
        calls()
    finally:
        cp._conn.set_trace_callback(None)
    conn = sqlite3.connect(db_path)
    steps = [
        row[3]
        for sql in statements
        if sql.lstrip().upper().startswith(("SELECT", "UPDATE"))
        for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")
    ]
    conn.close()
    return steps


def status_queries(cp: Checkpoint) -> None:
    cp.watermark()
    cp.counts()
    cp.count_pending()
    cp.count_pending(until=T0 + timedelta(days=1))
    cp.pending(limit=10)
    cp.recent_failures(10)
    cp.failed_ids()
    cp.last_pass()
    cp.malformed_count()
    cp.get(recording(3).recording_id)
    next(cp.archived(since=T0 + timedelta(days=1)), None)


def assert_no_full_scan(steps: list[str]) -> None:
    for step in steps:
        if step.startswith("SCAN recordings"):
            assert any(name in step for name in FULL_SCAN_OK), step


def test_hot_queries_use_indexes(cp: Checkpoint, db_path: Path) -> None:
    cp.add_listed([recording(n) for n in range(50)])
    assert_no_full_scan(query_plans(cp, db_path, lambda: status_queries(cp)))
    assert_no_full_scan(query_plans(cp, db_path, cp.retry))


def populate(db_path: Path, rows: int) -> None:
    """`rows` realistic recordings: 90% archived, 9% pending, 1% dead-lettered."""
    batch = 10_000
    with Checkpoint.open(db_path) as cp:
        for first in range(0, rows, batch):
            recs = [
                recording(n, T0 + timedelta(seconds=37 * n))
                for n in range(first, min(first + batch, rows))
            ]
            cp.add_listed(recs)
        cp.set_watermark(T0 + timedelta(seconds=37 * rows))
    raw_sql(
        db_path,
        "UPDATE recordings SET state = 'archived', sha256 = lower(hex(randomblob(32))),"
        " size = 1000000 + id, key = 'cradle/2024/03/01/' || recording_id || '.mp3'"
        " WHERE id % 100 < 90",
    )
    raw_sql(
        db_path,
        "UPDATE recordings SET state = 'failed', attempts = 5, reason = 'truncated'"
        " WHERE id % 100 = 99",
    )


def test_scale(tmp_path: Path) -> None:
    rows = int(os.environ.get("CHECKPOINT_SCALE_ROWS", "100000"))
    db_path = tmp_path / "state.db"
    began = time.perf_counter()
    populate(db_path, rows)
    built = time.perf_counter() - began

    with Checkpoint.open(db_path) as cp:
        began = time.perf_counter()
        counts = cp.counts()
        counts_seconds = time.perf_counter() - began
        began = time.perf_counter()
        status_queries(cp)
        status_seconds = time.perf_counter() - began
        assert counts == truth(db_path)
        assert counts[RecordingState.ARCHIVED] == rows * 90 // 100
        assert_no_full_scan(query_plans(cp, db_path, lambda: status_queries(cp)))

        sample = [recording(n).recording_id for n in range(98, rows, 100)][:1000]
        began = time.perf_counter()
        for rid in sample:
            cp.mark_archived(rid, sha256=SHA, size=1, key="k")
        per_mark = (time.perf_counter() - began) / len(sample)
    raw_sql(db_path, "PRAGMA wal_checkpoint(TRUNCATE)")
    size = db_path.stat().st_size
    print(
        f"\n{rows} recordings: built in {built:.1f} s; counts() {counts_seconds * 1e3:.3f} ms;"
        f" status queries {status_seconds * 1e3:.1f} ms; mark_archived {per_mark * 1e6:.0f} us;"
        f" file {size / 1e6:.1f} MB = {size / rows:.0f} bytes per recording"
    )
    assert counts_seconds < 0.05
    assert status_seconds < 1.0
    assert size / rows < 1024


def test_a_version_1_checkpoint_is_upgraded_in_place_keeping_every_row_and_count(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint_schema, "SCHEMA_VERSION", 1)
    with Checkpoint.open(db_path) as old:
        first, second = recording(1), recording(2)
        old.add_listed([first, second])
    raw_sql(
        db_path,
        "UPDATE recordings SET state = 'archived', sha256 = 'ab', size = 1, key = 'k'"
        " WHERE recording_id = ?",
        first.recording_id,
    )
    assert raw_sql(db_path, "PRAGMA user_version") == [(1,)]
    monkeypatch.undo()
    with Checkpoint.open(db_path) as cp:
        assert raw_sql(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        assert cp.counts() == {"pending": 1, "archived": 1, "failed": 0, "expired": 0}
        cp.mark_expired(second.recording_id)
        assert cp.counts() == {"pending": 0, "archived": 1, "failed": 0, "expired": 1}
        row = cp.get(second.recording_id)
        assert row is not None and row.state == "expired"
        assert cp.pending() == []
