"""Scenario 2, crash safety: a backfill killed at many seeded random moments, restarted at once
each time (as systemd's `Restart=` does), must end with every recording exactly once and correct.

SIGKILL: no partial or orphan objects, at most one re-download per kill (a download the server
completed more than once), and no rate-rule violation across the kill/restart boundary as the
server counts it. SIGTERM: the same, and every stop is a clean exit 0 within shutdown_timeout.

A kill can also be aimed at a multipart upload in progress (`multipart_kills`): moto is polled
for an upload begun and not completed, and the process is killed the moment one shows.
"""

from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from archiver.errors import CheckpointError
from archiver.models import RecordingState
from archiver.simulator import SimRecording, Simulator
from tests.chaos.audit import audit, valid_recordings
from tests.chaos.lab import Lab, Proc, Run, wait_for
from tests.chaos.report import Report
from tests.e2e.harness import Bucket

SHUTDOWN_TIMEOUT = 10.0
# The large recordings (20 MB) go up as multipart uploads, the rest as single PUTs.
MULTIPART_THRESHOLD = "16MiB"


@dataclass(frozen=True)
class Crash:
    hours: float = 3
    per_hour: float = 30
    bytes_per_second: int = 4000  # 30 s to 10 min calls: 0.1 to 2.4 MB, a few long ones more
    large_fraction: float = 0.03  # these get 20 MB: multipart uploads (above 16 MiB)
    kills: int = 5
    multipart_kills: int = 0
    # Kills aimed at the pipeline's worst moment: one recording still uploading (multipart)
    # while the next has been downloaded whole. Both are lost unless staged copies survive.
    pipeline_kills: int = 0
    # The bound on re-downloads (downloads the server completed more than once) per stop.
    redownloads_per_stop: int = 1
    signum: int = signal.SIGKILL
    max_delay: float = 4.0  # a kill comes 0.2 .. max_delay s after the (re)start
    seed: int = 3


@dataclass(frozen=True)
class _Backfill:
    """What a crash scenario runs again and again: one backfill, its simulator and bucket."""

    lab: Lab
    sim: Simulator
    bucket: Bucket
    config: Path
    args: tuple[str, ...]


def crash(lab: Lab, params: Crash = Crash(), name: str = "") -> Report:
    term = params.signum == signal.SIGTERM
    report = Report(name or ("sigterm" if term else "sigkill"))
    backfill = _set_up(lab, params, report.name)
    expected = valid_recordings(backfill.sim)
    report.note(
        f"{len(expected)} recordings, {sum(r.size for r in expected) / 2**20:.0f} MiB, "
        f"{sum(r.size >= 16 * 2**20 for r in expected)} of them multipart"
    )
    stop_seconds = _stop_repeatedly(backfill, params, report)
    final = lab.cli(*backfill.args, config=backfill.config, timeout=900)
    report.clean_exit(final, (0,), "the last backfill")
    if stop_seconds:
        slowest, mean = max(stop_seconds), sum(stop_seconds) / len(stop_seconds)
        report.note(f"SIGTERM to exit: max {slowest:.2f}s, mean {mean:.2f}s")
    _check_outcome(backfill, params, report, expected)
    report.close(lab)
    return report


def _set_up(lab: Lab, p: Crash, name: str) -> _Backfill:
    sim = lab.simulator(
        hours=p.hours,
        seed=p.seed,
        per_hour=p.per_hour,
        bytes_per_second=p.bytes_per_second,
        large_fraction=p.large_fraction,
    )
    bucket = lab.bucket()
    config = lab.config(
        name,
        sim,
        bucket,
        s3={"multipart_threshold": MULTIPART_THRESHOLD},
        schedule={"shutdown_timeout": f"{SHUTDOWN_TIMEOUT:.0f}s"},
    )
    start = min(r.started_at for r in sim.recordings()) - timedelta(minutes=1)
    args = ("backfill", "--from", start.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return _Backfill(lab, sim, bucket, config, args)


def _stop_figure(p: Crash) -> str:
    return "sigterms" if p.signum == signal.SIGTERM else "kills"


def _stop_repeatedly(backfill: _Backfill, p: Crash, report: Report) -> list[float]:
    """Starts the backfill and stops it, over and over, until every stop is spent or it
    finishes first; the seconds each SIGTERM took to end the process."""
    rng = random.Random(p.seed)
    total = p.kills + p.multipart_kills + p.pipeline_kills
    aims = ["multipart"] * p.multipart_kills + ["pipeline"] * p.pipeline_kills
    # Early in the run, while large recordings are still ahead to aim at.
    early = range(min(total, 2 * len(aims)))
    aimed = dict(zip(rng.sample(early, len(aims)), aims, strict=True))
    stop_seconds: list[float] = []
    for index in range(total):
        proc = backfill.lab.spawn(*backfill.args, config=backfill.config)
        _wait_for_the_moment(backfill, proc, aimed.get(index), p, rng, report, index)
        if not proc.alive():
            run = proc.wait(5)
            report.clean_exit(run, (0,), f"backfill {index} (finished before its kill)")
            break
        proc.send(p.signum)
        run = proc.wait(SHUTDOWN_TIMEOUT + 20)
        if run.returncode == -p.signum and any(
            e.get("event") == "backfill.finished" for e in run.events
        ):
            # The work was done and the interpreter exiting, past its signal handlers.
            report.note(f"stop {index} reached the backfill as it exited after finishing")
            break
        report.figures[_stop_figure(p)] += 1
        if p.signum == signal.SIGTERM:
            stop_seconds.append(run.seconds)
        _check_stopped(run, p, report, index)
    else:
        return stop_seconds  # every stop spent on a running backfill
    report.note(f"the backfill finished after {report.figures[_stop_figure(p)]} stops")
    return stop_seconds


def _wait_for_the_moment(
    backfill: _Backfill,
    proc: Proc,
    aim: str | None,
    p: Crash,
    rng: random.Random,
    report: Report,
    index: int,
) -> None:
    """Until the moment the stop is aimed at, or a random one shortly after the start."""
    if aim is not None:
        if aim == "pipeline":
            hit = _at_pipeline_moment(
                backfill.lab, proc, backfill.bucket, backfill.sim, backfill.config
            )
        else:
            hit = _at_multipart_upload(proc, backfill.bucket)
        if not hit:
            report.note(f"kill {index}: the backfill finished before its moment came")
        return
    if p.signum == signal.SIGTERM:
        started = wait_for(lambda: proc.saw("backfill.started") or not proc.alive(), 30)
        report.check(started, "the backfill never logged backfill.started")
    _sleep_while_alive(proc, rng.uniform(0.2, p.max_delay))


def _check_stopped(run: Run, p: Crash, report: Report, index: int) -> None:
    if p.signum != signal.SIGTERM:
        report.check(run.returncode == -signal.SIGKILL, f"kill {index}: exit {run.returncode}")
        return
    report.clean_exit(run, (0,), f"backfill stopped by SIGTERM {index}")
    report.check(
        run.seconds <= SHUTDOWN_TIMEOUT,
        f"SIGTERM {index}: took {run.seconds:.1f}s to exit, shutdown_timeout is "
        f"{SHUTDOWN_TIMEOUT:.0f}s",
    )


def _check_outcome(
    backfill: _Backfill, p: Crash, report: Report, expected: list[SimRecording]
) -> None:
    """Every recording exactly once and correct, re-downloads within the bound, the
    checkpoint's counts right, and the spool empty."""
    report.add_audit(audit(backfill.bucket, backfill.sim, expected))
    stats = backfill.sim.stats()
    completed = stats["downloads_completed"]
    report.figures["redownloads"] += max(0, completed - len(expected))
    stops = report.figures[_stop_figure(p)]
    report.check(
        completed - len(expected) <= stops * p.redownloads_per_stop,
        f"{completed} downloads completed for {len(expected)} recordings: "
        f"{completed - len(expected)} re-downloads for {stops} stops",
    )
    report.note(
        f"downloads completed {completed}, started {stats['requests_by_kind']['download']}, "
        f"for {len(expected)} recordings"
    )
    report.all_archived(backfill.lab, backfill.config, len(expected))
    spool = list((Path(backfill.config).parent / "spool").glob("*"))
    report.check(not spool, f"files left in the spool: {[s.name for s in spool]}")


def _sleep_while_alive(proc: Proc, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while proc.alive() and time.monotonic() < deadline:
        time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))


def _at_multipart_upload(proc: Proc, bucket: Bucket, timeout: float = 120) -> bool:
    """Wait until S3 shows a multipart upload begun and not finished, or the process ends."""
    seen_before = {u["UploadId"] for u in bucket.multipart_uploads()}
    deadline = time.monotonic() + timeout
    while proc.alive() and time.monotonic() < deadline:
        if {u["UploadId"] for u in bucket.multipart_uploads()} - seen_before:
            return True
        time.sleep(0.01)
    return False


def _at_pipeline_moment(
    lab: Lab, proc: Proc, bucket: Bucket, sim: Simulator, config: Path, timeout: float = 120
) -> bool:
    """Wait until two recordings are downloaded whole and neither is marked archived, while a
    multipart upload is open: the previous one uploading, the next one staged."""

    def unmarked() -> int:
        archived = 0
        if (config.parent / "state.db").exists():
            try:
                with lab.checkpoint(config) as checkpoint:
                    archived = checkpoint.counts()[RecordingState.ARCHIVED]
            except CheckpointError:  # created but not yet migrated by the process starting
                return 0
        return sim.stats()["downloads_completed"] - archived

    # Earlier kills shift the count (a re-download adds one, a reused staged copy takes one
    # away): measure from the lowest value seen, when nothing was in flight.
    baseline = unmarked()
    seen_before = {u["UploadId"] for u in bucket.multipart_uploads()}
    deadline = time.monotonic() + timeout
    while proc.alive() and time.monotonic() < deadline:
        now = unmarked()
        baseline = min(baseline, now)
        if now - baseline >= 2 and (
            {u["UploadId"] for u in bucket.multipart_uploads()} - seen_before
        ):
            return True
        time.sleep(0.002)
    return False
