"""Scenario 6, the long run: `run` on a short interval against a live simulator with faults.

New calls keep ending (and so appearing) while the daemon runs. It must stay up the whole time,
its resident memory (VmRSS from /proc, sampled) must not grow, it must stop on SIGTERM within
shutdown_timeout, and a last pass without faults must leave every recording archived once.

Nothing here is timed by the wall clock alone: a pass under the storm takes from 2 s to well
over 15 s (each fault costs a retry wait, a 429 up to its Retry-After), and on a busy machine the
daemon's start-up (imports, RSS climbing from 0 to ~60 MB) can take several seconds. So the soak
runs at least `seconds`, and then until the daemon has ended two passes, and memory is measured
from the end of its first pass (the warm-up) over a window of its own length.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from archiver.simulator import Simulator
from tests.chaos.audit import audit, valid_recordings
from tests.chaos.lab import Lab, Proc
from tests.chaos.report import Report
from tests.chaos.storm import storm_switches
from tests.e2e.harness import Bucket

SHUTDOWN_TIMEOUT = 10.0


@dataclass(frozen=True)
class Soak:
    seconds: float = 20
    per_hour: float = 600  # a call ends every 6 s or so
    backlog: float = 5  # minutes of calls before the daemon starts
    bytes_per_second: int = 2000
    interval: str = "2s"
    fault_429: float = 0.05
    fault_5xx: float = 0.03
    fault_drop_headers: float = 0.02
    fault_drop_body: float = 0.02
    fault_truncate: float = 0.02
    fault_malformed_list: float = 0.03
    # "downloads" keeps cut and slow bodies off list responses, "all" cuts those too.
    body_fault_scope: str = "all"
    poison_each: int = 1
    # RSS growth allowed from the end of the warm-up (the daemon's first pass, so start-up and
    # first-use allocations are behind it) to the end, measured over at least three quarters
    # of `seconds`.
    max_growth_kb: int = 16 * 1024
    # How much longer than `seconds` to wait for the passes and the memory window before
    # calling the daemon stuck.
    patience: float = 120
    seed: int = 21


@dataclass
class _Memory:
    """The daemon's VmRSS over the soak: (seconds since the start, kB) every 0.25 s."""

    samples: list[tuple[float, int]] = field(default_factory=list)
    warm_from: float | None = None  # when the first pass ended


def soak(lab: Lab, params: Soak = Soak()) -> Report:
    p = params
    report = Report("soak")
    now = datetime.now(UTC).replace(microsecond=0)
    sim = lab.simulator(
        seed=p.seed,
        start=now - timedelta(minutes=p.backlog),
        end=now + timedelta(hours=3),
        per_hour=p.per_hour,
        bytes_per_second=p.bytes_per_second,
        **storm_switches(p),
    )
    bucket = lab.bucket()
    config = lab.config(
        "soak",
        sim,
        bucket,
        archive={"window": "10m", "lookback": "2h", "max_attempts": 2},
        schedule={"interval": p.interval, "shutdown_timeout": f"{SHUTDOWN_TIMEOUT:.0f}s"},
    )
    daemon = lab.spawn("run", config=config)
    window = p.seconds * 3 / 4  # the memory window, after the warm-up
    memory, soaked = _watch(daemon, p, window)
    report.check(daemon.alive(), "the daemon died during the soak")
    _check_it_kept_ticking(daemon, report, soaked)
    daemon.send(signal.SIGTERM)
    stopped = daemon.wait(SHUTDOWN_TIMEOUT + 20)
    report.clean_exit(stopped, (0,), "the daemon stopped by SIGTERM")
    report.check(
        stopped.seconds <= SHUTDOWN_TIMEOUT,
        f"SIGTERM took {stopped.seconds:.1f}s, shutdown_timeout is {SHUTDOWN_TIMEOUT:.0f}s",
    )
    _check_memory(memory, p, report, window)
    _last_pass_without_faults(lab, sim, bucket, config, report)
    report.close(lab)
    return report


def _watch(daemon: Proc, p: Soak, window: float) -> tuple[_Memory, float]:
    """Samples the daemon's memory until it has run `p.seconds`, ended two passes (one of
    them whole) and been measured over `window` after its first; or until patience runs out
    or it dies. The samples, and how long the soak lasted."""
    memory = _Memory()
    began = time.monotonic()
    while True:
        rss = daemon.rss_kb()
        if rss is None:
            break
        elapsed = time.monotonic() - began
        memory.samples.append((elapsed, rss))
        ok, failing = daemon.count("pass.finished"), daemon.count("daemon.pass_failed")
        if memory.warm_from is None and ok + failing >= 1:
            memory.warm_from = elapsed
        if (
            elapsed >= p.seconds
            and ok >= 1
            and ok + failing >= 2
            and memory.warm_from is not None
            and elapsed - memory.warm_from >= window
        ) or elapsed >= p.seconds + p.patience:
            break
        time.sleep(0.25)
    return memory, time.monotonic() - began


def _check_it_kept_ticking(daemon: Proc, report: Report, soaked: float) -> None:
    """Passes end (some may fail under the storm, then the next interval tries again) and at
    least one gets through."""
    events = daemon.events()
    finished = sum(e.get("event") == "pass.finished" for e in events)
    failed = [e.get("error", "") for e in events if e.get("event") == "daemon.pass_failed"]
    report.check(
        finished >= 1 and finished + len(failed) >= 2,
        f"{finished} passes finished and {len(failed)} failed in {soaked:.0f}s",
    )
    report.figures["failed_passes"] += len(failed)
    report.note(
        f"{finished} passes finished and {len(failed)} failed in {soaked:.0f}s"
        + (f"; failures: {sorted(set(failed))[:3]}" if failed else "")
    )


def _check_memory(memory: _Memory, p: Soak, report: Report, window: float) -> None:
    """VmRSS grew at most `p.max_growth_kb` from the end of the first pass, over `window`."""
    warm_from = memory.warm_from
    warm = [rss for t, rss in memory.samples if warm_from is not None and t >= warm_from]
    measured = (
        memory.samples[-1][0] - warm_from if warm_from is not None and memory.samples else 0.0
    )
    if not report.check(
        len(warm) >= 2 and measured >= window,
        f"too few memory samples: {len(warm)} over {measured:.1f}s after the first pass "
        f"(want {window:.1f}s)",
    ):
        return
    first, last, peak = warm[0], warm[-1], max(warm)
    growth = last - first
    report.figures["rss_first_kb"] = first
    report.figures["rss_last_kb"] = last
    report.figures["rss_max_kb"] = peak
    report.figures["rss_growth_kb"] = growth
    report.note(
        f"VmRSS after warm-up (first pass ended at {warm_from:.1f}s) {first} kB, last {last} kB, "
        f"max {peak} kB, growth {growth} kB over {len(warm)} samples in {measured:.1f}s"
    )
    report.check(growth <= p.max_growth_kb, f"VmRSS grew {growth} kB (allowed {p.max_growth_kb})")


def _last_pass_without_faults(
    lab: Lab, sim: Simulator, bucket: Bucket, config: Path, report: Report
) -> None:
    """Faults off, one `run --once`: every recording that had ended by then is archived once."""
    sim.set_faults(
        fault_429=0.0,
        fault_5xx=0.0,
        fault_drop_headers=0.0,
        fault_drop_body=0.0,
        fault_truncate=0.0,
        fault_malformed_list=0.0,
    )
    last_pass = datetime.now(UTC)
    final = lab.cli("run", "--once", config=config)
    report.clean_exit(final, (0, 3), "the last pass")
    # Recordings that appeared while the last pass ran may or may not be in; the rest must.
    cutoff = last_pass - timedelta(seconds=2)
    expected = [r for r in valid_recordings(sim) if r.visible_at <= cutoff]
    tolerate = [r.recording_id for r in valid_recordings(sim) if r.visible_at > cutoff]
    report.add_audit(audit(bucket, sim, expected, tolerate=tolerate))
    report.note(f"{len(expected)} recordings had ended by the last pass, {len(tolerate)} since")
