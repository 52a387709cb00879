"""The checkpoint at 1,000,000 recordings: `status` time, dedupe look-ups, file size.

The file is built once and cached under `benchmarks/.cache/` (rebuilt when the schema version or
this builder changes). It is built the way a daemon's file grows, in batches of 10,000 in time
order: `Checkpoint.add_listed` (the real API, one transaction per batch) lists a batch as
pending, then one direct-SQL transaction per batch marks it archived with the same UPDATE that
`Checkpoint.mark_archived` runs (the API's one transaction per recording would take minutes
for a million). The last batch stays partly pending, and 100 recordings are dead-lettered
through `Checkpoint.record_failure`, so `status` has failures to show.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from archiver import layout
from archiver.checkpoint import SCHEMA_VERSION, Checkpoint
from archiver.models import PassOutcome, PassResult, Recording, utc_now
from archiver.status import build_report
from benchmarks.harness import ROOT, child_env

CACHE = Path(__file__).resolve().parent / ".cache"
BUILDER_VERSION = 1  # bump when the rows built here change
BATCH = 10_000
PENDING = 1_000
FAILED = 100
FIRST_CALL = datetime(2023, 1, 1, tzinfo=UTC)
NUMBERS = ("+14152125161", "+442071838750", "+6498879333", "+61291234567")

# The look-ups a pass makes at scale; each must use an index, never scan the table.
LOOKUPS = {
    "dedupe, get, mark_archived": "SELECT id FROM recordings WHERE recording_id = 'x'",
    "pending": "SELECT * FROM recordings WHERE state = 'pending' AND started_at >= 0"
    " AND started_at < 1 ORDER BY started_at, recording_id LIMIT -1",
    "count_pending": "SELECT count(*) FROM recordings WHERE state = 'pending'"
    " AND started_at >= 0 AND started_at < 1",
    "recent_failures": "SELECT * FROM recordings WHERE state <> 'archived' AND attempts > 0"
    " ORDER BY updated_at DESC, id DESC LIMIT 10",
    "archived (verify)": "SELECT * FROM recordings WHERE state = 'archived' AND started_at >= 0"
    " AND started_at < 1 AND (started_at, id) > (0, 0) ORDER BY started_at, id LIMIT 1000",
}


def cached_checkpoint(total: int) -> tuple[Path, float | None]:
    """The cached file for `total` recordings, built now if missing; (path, build seconds)."""
    path = CACHE / f"checkpoint-{total}-s{SCHEMA_VERSION}-b{BUILDER_VERSION}.db"
    if path.exists():
        return path, None
    CACHE.mkdir(exist_ok=True)
    building = path.with_name(path.name + ".building")
    for stale in CACHE.glob(building.name + "*"):
        stale.unlink()
    started = time.monotonic()
    _build(building, total)
    building.rename(path)
    return path, time.monotonic() - started


def _build(path: Path, total: int) -> None:
    rng = random.Random(20240601)
    spacing = timedelta(days=730) / total  # two years of calls
    checkpoint = Checkpoint.open(path)
    try:
        for first in range(0, total, BATCH):
            batch = [_recording(rng, FIRST_CALL + spacing * i) for i in range(first, first + BATCH)]
            batch = batch[: total - first]
            checkpoint.add_listed(batch)
            keep_pending = PENDING if first + BATCH >= total else 0
            _mark_archived(path, batch[: len(batch) - keep_pending], rng)
        pending = checkpoint.pending()
        for row in pending[:FAILED]:
            recording_id = row.recording.recording_id
            checkpoint.record_failure(recording_id, "http_404", dead_letter=True, max_attempts=5)
        end = utc_now()
        checkpoint.record_pass(
            PassResult("pass", end - timedelta(minutes=1), end, PassOutcome.OK, 900)
        )
        checkpoint.set_watermark(FIRST_CALL + spacing * total)
    finally:
        checkpoint.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _recording(rng: random.Random, started_at: datetime) -> Recording:
    recording_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    nature = rng.choice(("in", "in", "out", "out", "team"))
    external = nature != "team"
    return Recording(
        recording_id=recording_id,
        url=f"https://api.cradle.io/api/v1/public/recordings/{recording_id}.mp3?source=api",
        started_at=started_at.replace(microsecond=0),
        duration_seconds=30 + int(570 * rng.random() ** 2),
        nature=nature,
        agent1=f"agent{rng.randint(1, 40)}@example.com",
        agent2=f"agent{rng.randint(1, 40)}@example.com" if not external else None,
        cradle_number=rng.choice(NUMBERS) if external else None,
        third_party_number=f"+1{rng.randint(201, 989)}{rng.randint(0, 9_999_999):07d}"
        if external
        else None,
    )


def _mark_archived(path: Path, batch: list[Recording], rng: random.Random) -> None:
    now = int(time.time() * 1_000_000)
    values = [
        (
            hashlib.sha256(rng.randbytes(16)).hexdigest(),
            rng.randint(200_000, 10_000_000),
            layout.object_key("cradle/", recording),
            now,
            recording.recording_id,
        )
        for recording in batch
    ]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "UPDATE recordings SET state = 'archived', sha256 = ?, size = ?, key = ?,"
            " updated_at = ? WHERE recording_id = ?",
            values,
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def measure(total: int, workdir: Path) -> dict[str, Any]:
    path, built = cached_checkpoint(total)
    config = workdir / "status.toml"
    config.write_text(
        f'[cradle]\nbase_url = "http://127.0.0.1:9"\n[s3]\nbucket = "unused"\n'
        f"[state]\npath = {json.dumps(str(path))}\n"
    )
    cli: list[float] = []
    counts: dict[str, Any] = {}
    for _ in range(5):
        started = time.monotonic()
        done = subprocess.run(
            [*_cli(), "--config", str(config), "status", "--json"],
            capture_output=True,
            text=True,
            env=child_env(),
            cwd=ROOT,
            check=True,
        )
        cli.append(time.monotonic() - started)
        counts = json.loads(done.stdout)
    in_process, open_and_report = [], []
    for _ in range(5):
        started = time.monotonic()
        with Checkpoint.open(path, writer=False, create=False) as checkpoint:
            opened = time.monotonic()
            build_report(checkpoint, utc_now())
            finished = time.monotonic()
        in_process.append(finished - opened)
        open_and_report.append(finished - started)
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return {
        "path": str(path),
        "built_seconds": None if built is None else round(built, 1),
        "recordings": total,
        "status_json": {k: counts.get(k) for k in ("archived", "pending", "failed")},
        "status_cli_seconds": round(statistics.median(cli), 3),
        "status_cli_runs": [round(t, 3) for t in cli],
        "build_report_seconds": round(statistics.median(in_process), 4),
        "open_and_report_seconds": round(statistics.median(open_and_report), 4),
        "dedupe_1000_known_seconds": round(_dedupe_time(path, total), 4),
        "file_bytes": size,
        "bytes_per_recording": round(size / total, 1),
        "freelist_pages": _pragma(path, "freelist_count"),
        "lookups": _plans(path),
    }


def _cli() -> list[str]:
    """The installed `cradle-archiver` console script, as an operator runs it."""
    script = Path(sys.executable).parent / "cradle-archiver"
    return [str(script)] if script.exists() else [sys.executable, "-m", "archiver"]


def _dedupe_time(path: Path, total: int) -> float:
    """`add_listed` of 1,000 recordings already in the file: what a lookback rescan costs."""
    with Checkpoint.open(path, writer=False, create=False) as checkpoint:
        known = [row.recording for row in checkpoint.pending(limit=PENDING)]
    with Checkpoint.open(path) as checkpoint:
        started = time.monotonic()
        added = checkpoint.add_listed(known)
        seconds = time.monotonic() - started
    if added:
        raise RuntimeError(f"add_listed added {len(added)} recordings it already had")
    return seconds


def _pragma(path: Path, name: str) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute(f"PRAGMA {name}").fetchone()[0])
    finally:
        conn.close()


def _plans(path: Path) -> dict[str, dict[str, Any]]:
    """EXPLAIN QUERY PLAN of each look-up: indexed unless a step scans the recordings table."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        found = {}
        for name, sql in LOOKUPS.items():
            steps = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
            scans = [s for s in steps if s.startswith("SCAN recordings") and "USING" not in s]
            found[name] = {"plan": steps, "indexed": not scans}
        return found
    finally:
        conn.close()
