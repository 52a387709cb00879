"""Run one child process and read its own peak RSS.

`os.wait4` reaps the child and returns the resource usage of that child alone; on Linux its
`ru_maxrss` is the process's peak resident set (VmHWM) in KiB. Unlike
`getrusage(RUSAGE_CHILDREN)`, which is the largest of every child reaped so far, it cannot be
polluted by an earlier, bigger child, so each figure is clean.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import ROOT, child_env


@dataclass(frozen=True)
class ChildRun:
    returncode: int
    spawned: float  # time.monotonic() just before the fork
    exited: float  # time.monotonic() just after the child was reaped
    peak_rss: int  # bytes
    stdout: Path
    stderr: Path

    @property
    def wall(self) -> float:
        return self.exited - self.spawned

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")


def run_child(
    argv: Sequence[str], log_stem: Path, *, timeout: float = 600.0, **env: str
) -> ChildRun:
    """Run `argv` from the repo root with fake AWS credentials (plus `env`); output to files."""
    stdout, stderr = log_stem.with_suffix(".out"), log_stem.with_suffix(".err")
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        spawned = time.monotonic()
        process = subprocess.Popen(
            argv, stdout=out, stderr=err, env={**child_env(), **env}, cwd=ROOT
        )
    killer = threading.Timer(timeout, process.kill)
    killer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    except BaseException:  # interrupted: leave no child behind
        process.kill()
        process.wait()
        raise
    finally:
        killer.cancel()
    exited = time.monotonic()
    process.returncode = os.waitstatus_to_exitcode(status)  # so Popen never waits on it again
    return ChildRun(process.returncode, spawned, exited, usage.ru_maxrss * 1024, stdout, stderr)
