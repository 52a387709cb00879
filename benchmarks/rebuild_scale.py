"""`rebuild-state` over 100,000 archived recordings: the target is under 2 minutes.

    python -m benchmarks.rebuild_scale [--objects 100000] [--unsealed 1000] [--fresh] [--strict]

The bucket lives on SeaweedFS (`weed mini`, a real store, tests/seaweed.py) on loopback. It is
filled once the way the archiver fills it, straight through boto3 (64 PUTs in flight, bodies of a
few bytes: the rebuild never reads a recording's body): `--objects` recordings with the
archiver's metadata over 100 days, one manifest per day listing its recordings, and a few hold
records in the audit trail. The last `--unsealed` of them lie on a day after the last sealed one,
listed by no manifest, so the rebuild HEADs each of those as it would on a live archive. The
filled store is kept under benchmarks/.cache/ and started again on the same data next time
(`--fresh` fills it anew); only the rebuild is timed: the real CLI, `cradle-archiver
rebuild-state`, as a child process, fork to exit.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from archiver import layout, manifest, trail
from archiver.checkpoint import Checkpoint
from archiver.holds import HoldRule, Selector
from archiver.models import Recording, RecordingState
from benchmarks.harness import PREFIX, ROOT, child_env
from tests import seaweed
from tests.builders import write_toml

CACHE = Path(__file__).resolve().parent / ".cache"
BUILDER_VERSION = 1  # bump when what is put in the bucket changes
BUCKET = "rebuild-bench"
DAYS = 100
FIRST_DAY = datetime(2024, 1, 1, tzinfo=UTC)
PUTS_IN_FLIGHT = 64
TARGET_SECONDS = 120.0
AGENTS = ("alice@example.com", "bob@example.com", "carol@example.com")


def recordings(total: int, unsealed: int) -> Iterator[Recording]:
    """`total - unsealed` calls spread over DAYS days, then `unsealed` on the day after."""
    sealed = total - unsealed
    per_day = max(1, -(-sealed // DAYS))
    for n in range(total):
        day = n // per_day if n < sealed else DAYS
        started = FIRST_DAY + timedelta(days=day, seconds=(n % per_day) * 60 % 86_000 + n % 60)
        yield Recording.from_api(
            {
                "url": f"http://sim.bench/api/v1/public/recordings/{uuid.UUID(int=n + 1)}.mp3",
                "startedAt": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "durationSeconds": 30 + n % 600,
                "nature": ("in", "out")[n % 2],
                "agent1": AGENTS[n % len(AGENTS)],
                "cradleNumber": "+4930123456",
                "thirdPartyNumber": f"+44207{n:07d}",
            }
        )


def fill(client: Any, total: int, unsealed: int) -> None:
    """Every object, then each day's manifest, then the hold records."""
    client.create_bucket(Bucket=BUCKET)
    by_day: dict[Any, list[manifest.Entry]] = {}

    def put(recording: Recording) -> manifest.Entry:
        body = f"ID3 {recording.recording_id}".encode()
        sha = hashlib.sha256(body).hexdigest()
        key = layout.object_key(PREFIX, recording)
        client.put_object(
            Bucket=BUCKET, Key=key, Body=body, Metadata=layout.object_metadata(recording, sha)
        )
        return manifest.Entry(
            id=recording.recording_id,
            key=key,
            version_id=None,
            sha256=sha,
            size=len(body),
            started_at=recording.started_at,
            duration_seconds=recording.duration_seconds,
            audio_seconds=None,
            retain_until=None,
            entry=recording.to_api(),
        )

    with ThreadPoolExecutor(PUTS_IN_FLIGHT) as pool:
        for done, entry in enumerate(pool.map(put, recordings(total, unsealed)), start=1):
            if entry.started_at < FIRST_DAY + timedelta(days=DAYS):
                by_day.setdefault(entry.started_at.date(), []).append(entry)
            if done % 10_000 == 0:
                _progress(f"{done:,} objects put")
    previous = None
    for sequence, day in enumerate(sorted(by_day), start=1):
        sealed = manifest.Manifest(day, 0, sequence, previous, tuple(by_day[day]))
        key = manifest.manifest_key(PREFIX, day)
        body = sealed.body()
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
        previous = manifest.Link(key, manifest.digest(body))
    for n, agent in enumerate(AGENTS):
        rule = HoldRule(Selector.AGENT, (agent,), f"case {n}")
        at = FIRST_DAY + timedelta(days=DAYS, seconds=n)
        done_action = trail.Action("hold-add", ["hold", "add"], at, at, rule=rule.to_record())
        client.put_object(
            Bucket=BUCKET, Key=trail.key_for(PREFIX, done_action), Body=trail.body_of(done_action)
        )


def measure(total: int, unsealed: int, fresh: bool) -> dict[str, Any]:
    root = CACHE / f"rebuild-{total}-{unsealed}-b{BUILDER_VERSION}"
    complete = root / "complete"
    if fresh or not complete.exists():
        shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    with seaweed.running(root) as store:
        filled = None
        if not complete.exists():
            _progress(f"filling SeaweedFS with {total:,} objects (once; kept in {root})")
            started = time.monotonic()
            fill(store.client(max_pool_connections=PUTS_IN_FLIGHT), total, unsealed)
            filled = time.monotonic() - started
            complete.touch()
        work = root / "run"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        config = write_toml(
            work / "config.toml",
            {
                "s3": {"bucket": BUCKET, "endpoint_url": store.url, "prefix": PREFIX},
                "archive": {"lookback": "6h"},
                "state": {"path": str(work / "state.db")},
            },
        )
        _progress("rebuild-state")
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "archiver", "--config", str(config), "rebuild-state"],
            capture_output=True,
            text=True,
            env=child_env(),
            cwd=ROOT,
            check=False,
        )
        seconds = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"rebuild-state failed ({result.returncode}): {result.stderr[-2000:]}")
    with Checkpoint.open(work / "state.db", writer=False, create=False) as checkpoint:
        archived = checkpoint.counts()[RecordingState.ARCHIVED]
        holds = len(checkpoint.holds())
        manifests = len(checkpoint.manifests())
    return {
        "objects": total,
        "unsealed": unsealed,
        "rebuild_seconds": round(seconds, 2),
        "archived": archived,
        "manifests": manifests,
        "holds": holds,
        "fill_seconds": round(filled, 1) if filled is not None else None,
        "printed": result.stdout.strip(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rebuild_scale")
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--unsealed", type=int, default=1_000)
    parser.add_argument("--fresh", action="store_true", help="fill the store anew")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args(argv)
    found = measure(args.objects, args.unsealed, args.fresh)
    met = found["rebuild_seconds"] < TARGET_SECONDS and found["archived"] == args.objects
    fill_note = f", filled in {found['fill_seconds']} s" if found["fill_seconds"] else ""
    print(
        f"rebuild-state: {found['archived']:,} of {args.objects:,} recordings restored"
        f" ({args.objects - args.unsealed:,} from {found['manifests']} manifests,"
        f" {args.unsealed:,} by HEAD), {found['holds']} holds,"
        f" in {found['rebuild_seconds']:.1f} s (target < {TARGET_SECONDS:.0f} s:"
        f" {'met' if met else 'MISSED'}); SeaweedFS on loopback{fill_note}"
    )
    print(f"  it printed: {found['printed']}")
    if found["archived"] != args.objects:
        return 1  # a wrong rebuild fails whatever the time
    return 1 if args.strict and not met else 0


def _progress(message: str) -> None:
    print(f"bench: {message} ...", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
