"""Scenario 5, bad config and a bad environment.

Each bad config exits 2 with one line naming the file and the key; a second instance exits 1;
401 and 403 stop the pass with a message about the credentials, and the daemon stays up and
tries again at the next interval without spinning; a bucket that refuses writes and a spool
directory that cannot be written fail with a clear message and exit 1, losing nothing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from archiver.simulator import Simulator
from tests.builders import toml
from tests.chaos.audit import audit, valid_recordings
from tests.chaos.lab import Lab, wait_for
from tests.chaos.report import Report
from tests.chaos.s3server import S3Process
from tests.e2e.harness import API_KEY, Bucket

# (section, key, bad value, what must be named); None as the value drops the key.
BAD_VALUES: list[tuple[str, str, Any, str]] = [
    ("cradle", "base_url", "ftp://api.example.com", "cradle.base_url"),
    ("cradle", "requests_per_second", 11, "cradle.requests_per_second"),
    ("cradle", "timeout", "0s", "cradle.timeout"),
    ("cradle", "id", None, "cradle.id"),
    ("s3", "bucket", "Not_A_Bucket", "s3.bucket"),
    ("s3", "sse", "DES", "s3.sse"),
    ("s3", "storage_class", "COLD", "s3.storage_class"),
    ("s3", "tags", "yes", "s3.tags"),
    ("s3", "prefix", "/calls/", "s3.prefix"),
    ("archive", "window", "soon", "archive.window"),
    ("archive", "max_attempts", 0, "archive.max_attempts"),
    ("archive", "start", "2024-01-01T00:00:00", "archive.start"),
    ("archive", "lookback", "6 hours", "archive.lookback"),
    ("schedule", "interval", "0s", "schedule.interval"),
    ("schedule", "shutdown_timeout", -5, "schedule.shutdown_timeout"),
    ("state", "path", 5, "state.path"),
    ("server", "listen", "nowhere", "server.listen"),
    ("backup", "enabled", True, "backup"),
]
# A credential of the wrong type: today reported twice, the second line wrongly saying "is empty".
BAD_CREDENTIAL_TYPES: list[tuple[str, str, Any, str]] = [
    ("cradle", "api_key", 12345, "cradle.api_key"),
    ("cradle", "id", 7, "cradle.id"),
]


def bad_configs(
    lab: Lab, cases: list[tuple[str, str, Any, str]] = BAD_VALUES, name: str = "bad config"
) -> Report:
    report = Report(name)
    workdir = lab.root / name.replace(" ", "-")
    workdir.mkdir(parents=True, exist_ok=True)
    lab.state_dirs.append(workdir)

    def case(index: int, section: str, key: str, value: Any, named: str) -> None:
        tables: dict[str, dict[str, Any]] = {
            "cradle": {"base_url": "http://127.0.0.1:9", "id": "x", "api_key": API_KEY},
            "s3": {"bucket": "chaos-config", "endpoint_url": lab.s3.url},
            "state": {"path": str(workdir / "state.db")},
            "server": {"listen": ""},
        }
        table = tables.setdefault(section, {})
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
        path = workdir / f"bad-{index}.toml"
        path.write_text(toml(tables))
        run = lab.cli("run", "--once", config=path, timeout=60)
        lines = run.stderr.strip().splitlines()
        report.check(
            run.returncode == 2 and len(lines) == 1 and str(path) in lines[0] and named in lines[0],
            f"{named} = {value!r}: exit {run.returncode}, expected 2 with one line naming "
            f"{path} and {named}; got {lines[:3]}",
        )

    broken = workdir / "broken.toml"
    broken.write_text("[cradle\nid = 'x'\n")
    with ThreadPoolExecutor(max_workers=3) as pool:
        for future in [pool.submit(case, i, *values) for i, values in enumerate(cases)]:
            future.result()
        syntax = pool.submit(lab.cli, "run", "--once", config=broken, timeout=60).result()
    lines = syntax.stderr.strip().splitlines()
    report.check(
        syntax.returncode == 2 and len(lines) == 1 and str(broken) in lines[0],
        f"a TOML syntax error: exit {syntax.returncode}, {lines[:3]}",
    )
    missing = lab.cli("run", "--once", config=workdir / "no-such.toml", timeout=60)
    report.check(
        missing.returncode == 2 and "no-such.toml" in missing.stderr,
        f"a missing config file: exit {missing.returncode}, {missing.stderr.strip()[:200]}",
    )
    report.figures["bad_configs"] += len(cases) + 2
    report.close(lab)
    return report


def second_instance(lab: Lab) -> Report:
    report = Report("second instance")
    sim = lab.simulator(hours=1, per_hour=10)
    bucket = lab.bucket()
    config = lab.config("second-instance", sim, bucket)
    first = lab.spawn("run", config=config)
    try:
        wait_for(lambda: first.saw("daemon.started") or not first.alive(), 30)
        report.check(first.alive(), "the first instance is not running")
        start = min(r.started_at for r in sim.recordings()).strftime("%Y-%m-%dT%H:%M:%SZ")
        for args in (("run", "--once"), ("run",), ("backfill", "--from", start)):
            second = lab.cli(*args, config=config, timeout=60)
            report.clean_exit(second, (1,), f"a second `{' '.join(args)}`")
            report.check(
                "holds the checkpoint" in second.stderr and str(first.pid) in second.stderr,
                f"the second `{' '.join(args)}` does not name the holder: {second.errors()}",
            )
    finally:
        first.send(signal.SIGTERM)
        run = first.wait(30)
    report.clean_exit(run, (0,), "the first instance stopped by SIGTERM")
    report.close(lab)
    return report


def refused_credentials(lab: Lab, watch: float = 7.0) -> Report:
    """401 and 403: a clear message and exit 1; the daemon backs off to its interval."""
    report = Report("refused credentials")
    _a_wrong_key_fails_with_a_message(lab, report)
    forbidden = lab.simulator(hours=1, per_hour=10, seed=12, forbid=True)
    bucket = lab.bucket()
    config = lab.config(
        "refused-403", forbidden, bucket, schedule={"interval": "2s", "shutdown_timeout": "10s"}
    )
    once = lab.cli("run", "--once", config=config, timeout=60)
    report.clean_exit(once, (1,), "run --once against 403")
    report.check(
        "credentials" in " ".join(once.errors()), f"no word about credentials: {once.errors()}"
    )
    _the_daemon_waits_out_a_forbidden_key(lab, report, forbidden, bucket, config, watch)
    report.close(lab)
    return report


def _a_wrong_key_fails_with_a_message(lab: Lab, report: Report) -> None:
    """A 401: exit 1, a word about credentials, and the wrong key printed nowhere."""
    sim = lab.simulator(hours=1, per_hour=10)
    bucket = lab.bucket()
    config = lab.config("refused-401", sim, bucket)
    wrong = "not-the-key-5c1d"
    for args in (("run", "--once"),):
        run = lab.cli(*args, config=config, CRADLE_API_KEY=wrong, timeout=60)
        report.clean_exit(run, (1,), f"`{' '.join(args)}` with a wrong key (401)")
        report.check(
            "credentials" in " ".join(run.errors()), f"no word about credentials: {run.errors()}"
        )
        report.check(wrong not in run.stdout + run.stderr, "the wrong key is printed")


def _the_daemon_waits_out_a_forbidden_key(
    lab: Lab, report: Report, forbidden: Simulator, bucket: Bucket, config: Path, watch: float
) -> None:
    """Under a 403 the daemon stays up, fails one pass an interval (no spinning), names the
    credentials; once the key is allowed it archives everything and stops cleanly."""
    forbidden.reset_stats()
    daemon = lab.spawn("run", config=config)
    time.sleep(watch)
    requests = forbidden.stats()["requests"]
    report.check(daemon.alive(), "the daemon died on 403")
    passes = [e for e in daemon.events() if e.get("event") == "daemon.pass_failed"]
    # One list call per pass: a pass at start, then one every 2 s.
    report.check(
        1 <= requests <= watch / 2 + 2,
        f"{requests} requests in {watch:.0f}s with a 2s interval: the daemon spins",
    )
    report.check(passes, "no daemon.pass_failed logged for the 403")
    report.check(
        all("credentials" in e.get("error", "") for e in passes),
        f"failed passes do not mention the credentials: {passes[:1]}",
    )
    report.note(f"403: {requests} requests and {len(passes)} failed passes in {watch:.0f}s")
    forbidden.set_faults(forbid=False)
    expected = valid_recordings(forbidden)
    done = wait_for(lambda: len(bucket.recording_keys()) >= len(expected), 60, 0.25)
    report.check(done, "after the key was allowed again the daemon did not archive everything")
    daemon.send(signal.SIGTERM)
    run = daemon.wait(30)
    report.clean_exit(run, (0,), "the daemon stopped by SIGTERM")
    report.add_audit(audit(bucket, forbidden, expected))


def denied_bucket(lab: Lab) -> Report:
    """A bucket whose policy refuses writes (moto IAM): exit 1 naming the refusal; nothing is
    marked archived or dead-lettered, and the next pass with write access completes."""
    report = Report("bucket denies writes")
    sim = lab.simulator(hours=1, per_hour=10, seed=13)
    bucket = lab.bucket()
    config = lab.config("denied", sim, bucket)
    keys = _read_only_keys(lab)
    moto = lab.s3
    assert isinstance(moto, S3Process), "a bucket policy is enforced by moto's IAM"
    moto.iam(True)
    try:
        run = lab.cli("run", "--once", config=config, timeout=120, **keys)
    finally:
        moto.iam(False)
    report.clean_exit(run, (1,), "run --once into a bucket that denies writes")
    message = " ".join(run.errors())
    report.check(
        "denied" in message and bucket.name in message,
        f"the message does not say the bucket denied the write: {run.errors()}",
    )
    report.note(f"its message: {run.errors()[:1]}")
    report.nothing_lost(lab, config, bucket, valid_recordings(sim))
    again = lab.cli("run", "--once", config=config)
    report.clean_exit(again, (0,), "run --once with write access")
    report.add_audit(audit(bucket, sim, valid_recordings(sim)))
    report.close(lab)
    return report


def unwritable_spool(lab: Lab) -> Report:
    """A spool directory that cannot be created (its parent is a regular file)."""
    report = Report("spool not writable")
    sim = lab.simulator(hours=1, per_hour=10, seed=14)
    bucket = lab.bucket()
    workdir = lab.root / "spool-file"
    workdir.mkdir(parents=True, exist_ok=True)
    blocker = workdir / "not-a-directory"
    blocker.write_text("a file where the spool's parent should be\n")
    spool = blocker / "spool"
    config = lab.config("spool-file", sim, bucket, state={"spool_dir": str(spool)})
    run = lab.cli("run", "--once", config=config)
    report.clean_exit(run, (1,), "run --once with a spool under a file")
    report.check(
        str(spool) in " ".join(run.errors()), f"the message does not name {spool}: {run.errors()}"
    )
    report.note(f"its message: {run.errors()[:1]}")
    report.nothing_lost(lab, config, bucket, valid_recordings(sim))
    good = lab.config("spool-file", sim, bucket, state={"spool_dir": str(workdir / "spool")})
    again = lab.cli("run", "--once", config=good)
    report.clean_exit(again, (0,), "run --once with a good spool")
    report.add_audit(audit(bucket, sim, valid_recordings(sim)))
    report.close(lab)
    return report


def full_spool(lab: Lab, size: str = "1m") -> Report | None:
    """A spool on a tiny filesystem that fills up in the middle of a download (ENOSPC).

    Needs `mount -t tmpfs` (root with CAP_SYS_ADMIN); None when it cannot be mounted."""
    report = Report("spool disk full")
    mountpoint = lab.root / "tiny-spool"
    mountpoint.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        return None
    try:
        # 30 s to 10 min calls at 8 kB/s: 240 kB to 4.8 MB, so a download soon outgrows 1 MB.
        sim = lab.simulator(hours=1, per_hour=12, seed=15, bytes_per_second=8000)
        bucket = lab.bucket()
        config = lab.config("spool-full", sim, bucket, state={"spool_dir": str(mountpoint)})
        run = lab.cli("run", "--once", config=config)
        report.clean_exit(run, (1,), "run --once with a full spool disk")
        report.check(
            str(mountpoint) in " ".join(run.errors()),
            f"the message does not name the spool {mountpoint}: {run.errors()}",
        )
        report.note(f"its message: {run.errors()[:1]}")
        report.nothing_lost(lab, config, bucket, valid_recordings(sim))
        leftovers = [p.name for p in mountpoint.iterdir()]
        report.note(f"left in the full spool after the failed pass: {leftovers}")
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)
    again = lab.cli("run", "--once", config=config)
    report.clean_exit(again, (0,), "run --once once the spool has room")
    report.add_audit(audit(bucket, sim, valid_recordings(sim)))
    report.close(lab)
    return report


def _read_only_keys(lab: Lab) -> dict[str, str]:
    """AWS keys of a moto IAM user who may read the bucket but not write to it."""
    import boto3

    iam = boto3.client("iam", endpoint_url=lab.s3.url, region_name="us-east-1")
    name = f"chaos-reader-{time.monotonic_ns()}"
    iam.create_user(UserName=name)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}
        ],
    }
    iam.put_user_policy(UserName=name, PolicyName="read", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }
