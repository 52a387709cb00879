"""The transfer scenarios: each runs this archiver (the real CLI), the naive peer and, where it is
the bound, the download-only client, one after the other against the same simulator and S3.

Times, all from the benchmark's monotonic clock:
- wall: from just before the child is forked to just after it is reaped (Python start-up,
  imports, the limiter's 1 s start-up quiet period, the work, and exit).
- active: from the first request start the simulator saw (see `RequestWatch`) to the child's
  exit; this is the figure compared with a bound, since neither start-up nor the deliberate
  quiet second is throughput.
- request span: from the first to the last request start the simulator saw; request starts per
  second are `(requests - 1) / span`, the rate over the intervals actually measured.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archiver.simulator import Simulator
from benchmarks.harness import (
    API_KEY,
    CRADLE_ID,
    MotoServer,
    Period,
    RequestWatch,
    expected_digests,
    iso,
    object_digests,
    start_simulator,
    write_config,
)
from benchmarks.rss import ChildRun, run_child

_runs = itertools.count()


@dataclass(frozen=True)
class Outcome:
    """One child's run as the simulator and S3 saw it."""

    who: str
    run: ChildRun
    requests: int
    violations: int
    by_kind: dict[str, int]
    first: float | None
    last: float | None
    archived_ok: int | None  # objects in S3 with the right sha256; None when not uploading
    expected: int

    @property
    def request_span(self) -> float | None:
        if self.first is None or self.last is None or self.last <= self.first:
            return None
        return self.last - self.first

    @property
    def rate(self) -> float | None:
        span = self.request_span
        return (self.requests - 1) / span if span else None

    @property
    def active(self) -> float | None:
        return None if self.first is None else self.run.exited - self.first

    @property
    def ok(self) -> bool:
        uploaded = self.archived_ok is None or self.archived_ok == self.expected
        return self.run.returncode == 0 and uploaded

    def figures(self) -> dict[str, Any]:
        return {
            "returncode": self.run.returncode,
            "wall_seconds": round(self.run.wall, 3),
            "active_seconds": _round(self.active),
            "request_span_seconds": _round(self.request_span),
            "request_starts_per_second": _round(self.rate),
            "requests": self.requests,
            "requests_by_kind": self.by_kind,
            "violations": self.violations,
            "peak_rss_bytes": self.run.peak_rss,
            "objects_correct": self.archived_ok,
            "objects_expected": self.expected,
            "log": str(self.run.stderr),
        }


class Bench:
    """Runs children against one S3 server, each with a fresh bucket and state directory."""

    def __init__(self, moto: MotoServer, workdir: Path) -> None:
        self.moto = moto
        self.workdir = workdir

    def archiver(self, sim: Simulator, period: Period) -> Outcome:
        def argv(directory: Path, bucket: str) -> list[str]:
            config = write_config(directory, sim, self.moto.endpoint, bucket)
            return [
                *(sys.executable, "-m", "archiver", "--log-format", "json"),
                *("--config", str(config), "backfill"),
                *("--from", iso(period.start), "--until", iso(period.end)),
            ]

        return self._measure("archiver", sim, argv, upload=True)

    def naive(self, sim: Simulator, period: Period) -> Outcome:
        def argv(directory: Path, bucket: str) -> list[str]:
            return [
                *(sys.executable, "-m", "benchmarks.naive"),
                *("--base-url", sim.base_url, "--id", CRADLE_ID),
                *("--from", iso(period.start), "--until", iso(period.end)),
                *("--bucket", bucket, "--endpoint", self.moto.endpoint),
            ]

        return self._measure("naive", sim, argv, upload=True)

    def download_only(self, sim: Simulator, period: Period) -> Outcome:
        def argv(directory: Path, bucket: str) -> list[str]:
            config = write_config(directory, sim, self.moto.endpoint, bucket)
            return [
                *(sys.executable, "-m", "benchmarks.download_only", "--config", str(config)),
                *("--from", iso(period.start), "--until", iso(period.end)),
            ]

        return self._measure("download-only", sim, argv, upload=False)

    def _measure(self, who: str, sim: Simulator, argv: Any, *, upload: bool) -> Outcome:
        number = next(_runs)
        directory = self.workdir / f"{number:02d}-{who}"
        directory.mkdir(parents=True)
        bucket = self.moto.new_bucket(f"bench-{number:02d}-{who}")
        watch = RequestWatch(sim).start()
        try:
            run = run_child(argv(directory, bucket), directory / who, CRADLE_API_KEY=API_KEY)
        finally:
            traffic = watch.stop()
        expected = expected_digests(sim)
        archived_ok = None
        if upload:
            found = object_digests(self.moto.client(), bucket)
            archived_ok = sum(1 for key, digest in expected.items() if found.get(key) == digest)
        self.moto.drop_bucket(bucket)
        return Outcome(
            who,
            run,
            traffic["requests"],
            traffic["violations"],
            traffic["by_kind"],
            watch.first,
            watch.last,
            archived_ok,
            len(expected),
        )


@dataclass(frozen=True)
class Small:
    recordings: int = 300
    size: int = 100_000
    latency: float = 0.030
    rate: float = 10.0


def small_recordings(bench: Bench, spec: Small = Small()) -> dict[str, Any]:
    hours = 3
    period = Period.hours_back(hours)
    sim = start_simulator(
        period, per_hour=spec.recordings // hours, size=spec.size, latency=spec.latency
    )
    try:
        archiver = bench.archiver(sim, period)
        naive = bench.naive(sim, period)
    finally:
        sim.stop()
    requests = archiver.requests
    return {
        "spec": vars(spec),
        "archiver": archiver,
        "naive": naive,
        "bound_seconds": max(requests / spec.rate, requests * spec.latency),
    }


@dataclass(frozen=True)
class Large:
    recordings: int = 8
    size: int = 50_000_000
    bandwidth: int = 50_000_000
    latency: float = 0.030
    repeats: int = 3  # archiver and download-only runs, alternated; the medians are reported


def large_recordings(bench: Bench, spec: Large = Large()) -> dict[str, Any]:
    """Upload time varies from run to run (moto competes with the simulator and the archiver
    for two cores), so the archiver and the download-only client each run `repeats` times,
    alternately, and the run with the median active time stands for each."""
    period = Period.hours_back(1)
    sim = start_simulator(
        period,
        per_hour=spec.recordings,
        size=spec.size,
        latency=spec.latency,
        bandwidth=spec.bandwidth,
    )
    download_only: list[Outcome] = []
    archiver: list[Outcome] = []
    try:
        for _ in range(spec.repeats):
            download_only.append(bench.download_only(sim, period))
            archiver.append(bench.archiver(sim, period))
        naive = bench.naive(sim, period)
    finally:
        sim.stop()
    median_archiver = _median(archiver)
    lists = median_archiver.by_kind.get("list", 1)
    computed = spec.recordings * (spec.size / spec.bandwidth + spec.latency) + lists * spec.latency
    return {
        "spec": vars(spec),
        "archiver": median_archiver,
        "naive": naive,
        "download_only": _median(download_only),
        "computed_bound_seconds": computed,
        "archiver_runs": archiver,
        "download_only_runs": download_only,
    }


def _median(outcomes: list[Outcome]) -> Outcome:
    ranked = sorted(outcomes, key=lambda o: float("inf") if o.active is None else o.active)
    return ranked[(len(ranked) - 1) // 2]


@dataclass(frozen=True)
class Memory:
    small_size: int = 1_000_000
    large_size: int = 100_000_000


def memory(bench: Bench, spec: Memory = Memory()) -> dict[str, Any]:
    found: dict[str, Any] = {"spec": vars(spec)}
    for label, size in (("small", spec.small_size), ("large", spec.large_size)):
        period = Period.hours_back(1)
        sim = start_simulator(period, per_hour=1, size=size)
        try:
            found[f"archiver_{label}"] = bench.archiver(sim, period)
            found[f"naive_{label}"] = bench.naive(sim, period)
        finally:
            sim.stop()
    return found


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
