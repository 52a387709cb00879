"""Scenario 3, an S3 outage: the S3 server stops in the middle of a pass and comes back later.

The pass must fail cleanly (exit 1, one line naming S3), nothing may be marked archived that is
not in the bucket (`verify` exits 0), the watermark must not pass a recording that is not in
the bucket, and the next pass must complete. The daemon variant keeps `run` going through the
outage: it stays up and finishes the work by itself once S3 is back.

Each run gets an S3 server of its own, so stopping it disturbs no other scenario: moto's in a
process, or the one passed in (tests/e2e/test_seaweed_e2e.py passes SeaweedFS, whose process ends
and starts again on the same data directory).
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass

from tests.chaos.audit import audit, valid_recordings
from tests.chaos.lab import Lab, Proc, wait_for
from tests.chaos.report import Report
from tests.chaos.s3server import S3Process, S3Server
from tests.e2e.harness import Bucket


@dataclass(frozen=True)
class Outage:
    hours: float = 2
    per_hour: float = 20
    bytes_per_second: int = 2000
    large_fraction: float = 0.05
    # Stop S3 once this share of the recordings is in the bucket.
    stop_at: float = 0.3
    daemon: bool = False
    # The daemon variant: how long S3 stays down (one-shot runs: until the pass has failed).
    down_for: float = 25.0
    seed: int = 9
    # Bodies at this many bytes a second, so the recordings left when S3 stops take seconds,
    # not the blink a fast loopback gives them: else the pass may finish between the check
    # and the stop (seen once in a full run). None: as fast as the machine goes.
    bandwidth: int | None = None


def outage(lab: Lab, params: Outage = Outage(), s3: S3Server | None = None) -> Report:
    """`s3`: the server to stop and start, closed by the caller; by default a moto of its own."""
    p = params
    report = Report("s3 outage (daemon)" if p.daemon else "s3 outage")
    server = s3 if s3 is not None else S3Process()
    try:
        _outage(lab, p, report, server)
    finally:
        if s3 is None:
            server.close()
    report.close(lab)
    return report


def _outage(lab: Lab, p: Outage, report: Report, s3: S3Server) -> None:
    sim = lab.simulator(
        hours=p.hours,
        seed=p.seed,
        per_hour=p.per_hour,
        bytes_per_second=p.bytes_per_second,
        large_fraction=p.large_fraction,
        bandwidth=p.bandwidth,
    )
    bucket = lab.bucket(s3=s3)
    config = lab.config(
        "outage-daemon" if p.daemon else "outage",
        sim,
        bucket,
        s3={"multipart_threshold": "16MiB"},
        archive={"window": "20m"},
        schedule={"interval": "3s", "shutdown_timeout": "10s"},
    )
    expected = valid_recordings(sim)
    proc = lab.spawn(*(("run",) if p.daemon else ("run", "--once")), config=config)
    stopped = _stop_s3_midway(p, report, s3, proc, bucket, len(expected))
    if p.daemon:
        _daemon_rides_it_out(p, report, s3, proc, bucket, len(expected))
    else:
        _the_pass_fails_cleanly(report, s3, proc, stopped)
        report.nothing_lost(lab, config, bucket, expected)
        again = lab.cli("run", "--once", config=config)
        report.clean_exit(again, (0,), "run --once after the outage")
    verify = lab.cli("verify", config=config)
    report.clean_exit(verify, (0,), "verify after the outage")
    report.add_audit(audit(bucket, sim, expected))
    report.all_archived(lab, config, len(expected))


def _stop_s3_midway(
    p: Outage, report: Report, s3: S3Server, proc: Proc, bucket: Bucket, expected: int
) -> float:
    """Stops S3 once `p.stop_at` of the recordings are in the bucket; when it stopped."""
    threshold = max(1, int(expected * p.stop_at))
    reached = wait_for(lambda: len(bucket.recording_keys()) >= threshold or not proc.alive(), 120)
    report.check(reached and proc.alive(), "the pass ended before S3 could be stopped")
    s3.stop()
    stopped = time.monotonic()
    report.note(f"S3 stopped with {threshold}+ of {expected} recordings in the bucket")
    return stopped


def _daemon_rides_it_out(
    p: Outage, report: Report, s3: S3Server, proc: Proc, bucket: Bucket, expected: int
) -> None:
    """The daemon stays up through the outage, finishes the work once S3 is back, and stops
    cleanly on SIGTERM."""
    time.sleep(p.down_for)
    report.check(proc.alive(), "the daemon died during the S3 outage")
    s3.start()
    done = wait_for(lambda: len(bucket.recording_keys()) >= expected, 180, 0.5)
    report.check(done, "the daemon did not finish the work after S3 came back")
    time.sleep(1)
    report.check(proc.alive(), "the daemon is not running after the outage")
    failed = [e for e in proc.events() if e.get("event") == "daemon.pass_failed"]
    report.check(failed, "no pass failed during the outage")
    report.note(f"{len(failed)} passes failed during the outage, the daemon stayed up")
    proc.send(signal.SIGTERM)
    run = proc.wait(30)
    report.clean_exit(run, (0,), "the daemon stopped by SIGTERM")


def _the_pass_fails_cleanly(report: Report, s3: S3Server, proc: Proc, stopped: float) -> None:
    """`run --once` exits 1 with one line naming S3; then S3 comes back."""
    run = proc.wait(300)
    report.note(f"the pass failed {time.monotonic() - stopped:.1f}s after S3 stopped")
    report.clean_exit(run, (1,), "run --once during the outage")
    errors = run.errors()
    report.check(
        errors and "S3" in errors[0], f"the error does not say S3 is the problem: {errors}"
    )
    report.note(f"its message: {errors[:1]}")
    s3.start()
