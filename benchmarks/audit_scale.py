"""`audit` over 10,000 recordings on a local SeaweedFS, checksum-only (no --read-data).

    python -m benchmarks.audit_scale [--objects 10000] [--strict]

The archive is written straight with boto3 (not through the simulator and a pass, which would
take far longer than what is measured): a versioned bucket, `--objects` small bodies under one
day's folder, each with the `sha256` metadata and the `ChecksumSHA256` the archiver gives, and
the day's manifest and `.sha256` built by archiver/manifest.py from the versions S3 returned.
Then the real CLI audits it as a child process, timed from fork to exit (Python's start-up
included), and must find every object matching, each proven by S3's checksum. Target: < 60 s.
SeaweedFS (tests/seaweed.py, the `weed` of the test extra) is the store: a real one, which keeps
and serves checksums and versions as S3 does.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from archiver import manifest
from archiver.manifest import Entry, Manifest
from benchmarks.harness import PREFIX, ROOT, child_env
from tests import seaweed

DAY = date(2026, 1, 15)
TARGET_SECONDS = 60.0
BUCKET = "audit-bench"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.audit_scale")
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="audit-bench-"))
    try:
        with seaweed.running(folder) as server:
            built = build_archive(server.client(), args.objects)
            found = measure(server.url, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"audit of {args.objects:,} recordings (SeaweedFS, checksum only): "
        f"{found['seconds']:.1f} s wall, {args.objects / found['seconds']:,.0f} objects/s "
        f"(target < {TARGET_SECONDS:.0f} s); archive built in {built:.1f} s"
    )
    print(f"  summary {found['summary']}, verified by {found['verification']}")
    clean = found["clean"] and found["verification"].get("checksum") == args.objects
    if not clean:
        print("  the audit did not find every object matching by S3's checksum: see above")
        return 1
    return 1 if args.strict and found["seconds"] >= TARGET_SECONDS else 0


def build_archive(s3: Any, count: int) -> float:
    """`count` recordings of DAY and their manifest; the seconds it took."""
    started = time.monotonic()
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    with ThreadPoolExecutor(max_workers=16) as pool:
        entries = list(pool.map(lambda n: put_recording(s3, n), range(count)))
    sealed = Manifest(DAY, 0, 1, None, tuple(entries))
    key = manifest.manifest_key(PREFIX, DAY)
    body = sealed.body()
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    sums = manifest.checksum_file(PREFIX, key, body, entries)
    s3.put_object(Bucket=BUCKET, Key=manifest.checksum_key(key), Body=sums)
    return time.monotonic() - started


def put_recording(s3: Any, number: int) -> Entry:
    recording_id = f"00000000-0000-4000-8000-{number:012d}"
    key = f"{PREFIX}{DAY:%Y/%m/%d}/{recording_id}.mp3"
    body = hashlib.sha256(recording_id.encode()).digest() * 32  # 1 KiB, distinct per recording
    digest = hashlib.sha256(body).digest()
    put = s3.put_object(
        Bucket=BUCKET,
        Key=key,
        Body=body,
        ContentType="audio/mpeg",
        Metadata={"sha256": digest.hex(), "recording-id": recording_id},
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=base64.b64encode(digest).decode(),
    )
    started = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC) + timedelta(seconds=number)
    return Entry(
        id=recording_id,
        key=key,
        version_id=put.get("VersionId"),
        sha256=digest.hex(),
        size=len(body),
        started_at=started,
        duration_seconds=60.0,
        audio_seconds=60.0,
        retain_until=None,
    )


def measure(endpoint: str, folder: Path) -> dict[str, Any]:
    """The CLI's audit, timed from fork to exit; its report's figures."""
    report = folder / "audit.json"
    command = [sys.executable, "-m", "archiver", "--log-format", "json", "audit"]
    command += ["--bucket", BUCKET, "--endpoint-url", endpoint, "--prefix", PREFIX]
    env = child_env()
    env.pop("AWS_SESSION_TOKEN", None)  # SeaweedFS refuses a session token (tests/seaweed.py)
    started = time.monotonic()
    ran = subprocess.run(
        [*command, "--report", str(report)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    seconds = time.monotonic() - started
    if ran.returncode not in (0, 3):
        raise RuntimeError(f"audit exited {ran.returncode}: {ran.stderr[-2000:]}")
    found = json.loads(report.read_text())
    return {
        "seconds": seconds,
        "clean": found["clean"],
        "summary": found["summary"],
        "verification": found["verification"],
    }


if __name__ == "__main__":
    sys.exit(main())
