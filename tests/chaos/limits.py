"""Edges the big scenarios only brush against, each forced here so its outcome is certain.

- jitter: requests reach the server's rate gate 0..50 ms late (network jitter); the server
  must still count no violation (guarantee 4 is "as the server measures it").
- slow stop: SIGTERM while a slow body trickles in must still end the process within
  shutdown_timeout (SPEC: abandon an in-flight download if needed).
- JSON logs: with `--log-format json`, every line on stderr is a JSON event or the one-line
  error, including what libraries log, so a log shipper never chokes.
"""

from __future__ import annotations

import signal
import time

from tests.chaos.audit import audit, valid_recordings
from tests.chaos.lab import Lab, wait_for
from tests.chaos.report import Report


def jitter(
    lab: Lab, arrival_jitter: float = 0.05, hours: float = 2, per_hour: float = 30
) -> Report:
    report = Report("network jitter")
    sim = lab.simulator(
        hours=hours, per_hour=per_hour, bytes_per_second=5, arrival_jitter=arrival_jitter
    )
    bucket = lab.bucket()
    config = lab.config("jitter", sim, bucket)
    run = lab.cli("run", "--once", config=config)
    report.clean_exit(run, (0,), "run --once under network jitter")
    report.add_audit(audit(bucket, sim, valid_recordings(sim)))
    stats = sim.stats()
    report.note(f"{stats['requests']} requests, arrivals up to {arrival_jitter}s late")
    # The point of this scenario, whatever the lab tolerates elsewhere.
    report.check(not stats["violations"], f"{stats['violations']} violations under jitter")
    report.close(lab)
    return report


def slow_stop(lab: Lab, command: tuple[str, ...] = ("backfill",), timeout: float = 2.0) -> Report:
    report = Report(f"SIGTERM during a slow download ({command[0]})")
    sim = lab.simulator(
        hours=1, per_hour=6, bytes_per_second=20_000, slow_body=1.0, slow_bytes_per_second=50_000
    )
    bucket = lab.bucket()
    config = lab.config("slow-stop", sim, bucket, schedule={"shutdown_timeout": f"{timeout:.0f}s"})
    if command[0] == "backfill":
        start = min(r.started_at for r in sim.recordings()).strftime("%Y-%m-%dT%H:%M:%SZ")
        command = ("backfill", "--from", start)
    proc = lab.spawn(*command, config=config)
    started = wait_for(lambda: sim.stats()["requests_by_kind"]["download"] or not proc.alive(), 60)
    report.check(started and proc.alive(), "no download began")
    time.sleep(1.5)
    proc.send(signal.SIGTERM)
    run = proc.wait(120)
    report.note(f"exit {run.returncode} {run.seconds:.1f}s after SIGTERM")
    report.clean_exit(run, (0,), f"{command[0]} stopped by SIGTERM mid-download")
    report.check(
        run.seconds <= timeout,
        f"{command[0]} took {run.seconds:.1f}s to stop, shutdown_timeout is {timeout:.0f}s",
    )
    verify = lab.cli("verify", config=config)
    report.clean_exit(verify, (0,), "verify after the stop")
    report.check(not bucket.multipart_uploads(), "a multipart upload was left behind")
    report.close(lab)
    return report


def json_log_lines(lab: Lab) -> Report:
    """The daemon on a 1 s interval whose pass outlasts it (a slow body), then SIGTERM."""
    report = Report("JSON log lines")
    sim = lab.simulator(
        hours=1, per_hour=6, bytes_per_second=4000, slow_body=1.0, slow_bytes_per_second=100_000
    )
    bucket = lab.bucket()
    config = lab.config(
        "json-lines", sim, bucket, schedule={"interval": "1s", "shutdown_timeout": "10s"}
    )
    daemon = lab.spawn("run", config=config)
    # Started, not slept on: a SIGTERM before the handlers are set would kill it with -15.
    started = wait_for(lambda: daemon.saw("daemon.started") or not daemon.alive(), 60)
    report.check(bool(started) and daemon.alive(), "the daemon died or never started")
    time.sleep(2)  # a few 1 s intervals, the pass still on its slow body
    daemon.send(signal.SIGTERM)
    run = daemon.wait(30)
    report.clean_exit(run, (0,), "the daemon stopped by SIGTERM")
    stray = run.stray()
    report.check(not stray, f"{len(stray)} lines on stderr are not JSON, e.g. {stray[:2]}")
    report.close(lab)
    return report
