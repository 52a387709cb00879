"""`make bench`: every scenario, side by side in one run, then the table and results.json.

    python -m benchmarks [--only small,large,memory,checkpoint] [--strict]

Loopback only: the simulator runs in this process, moto's S3 server in a child, and each
archiver (the real CLI), naive peer and download-only client in a child of its own. Logs of
the last run are kept in benchmarks/.cache/last-run/.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from benchmarks import checkpoint_scale, scenarios
from benchmarks.harness import MotoServer
from benchmarks.report import (
    MB,
    Row,
    Section,
    megabytes,
    objects,
    ratio,
    render,
    seconds,
    targets,
)
from benchmarks.scenarios import Bench, Outcome

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
RUN_DIR = HERE / ".cache" / "last-run"
CHECKPOINT_ROWS = 1_000_000
SCENARIOS = ("small", "large", "memory", "checkpoint")


def main(argv: list[str] | None = None) -> int:
    chosen, strict = _arguments(argv)
    # The simulator logs through structlog in this process; the table owns stdout.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir(parents=True)

    started = time.monotonic()
    raw, sections = run_scenarios(chosen)
    machine = describe_machine(time.monotonic() - started)
    checked = targets(sections)
    missed = [t for t in checked if not t["met"]]
    preamble = [
        f"cradle-archiver benchmark: {machine['date']}, {machine['cpus']} CPUs, "
        f"Python {machine['python']}, loopback, {machine['seconds']:.0f} s",
    ]
    print(render(sections, preamble, [*NOTES, _verdict(checked, missed)]))
    RESULTS.write_text(
        json.dumps({"machine": machine, "targets": checked, "results": _jsonable(raw)}, indent=2)
        + "\n"
    )
    failed_runs = [o.who for o in _outcomes(raw) if not o.ok]
    if failed_runs:
        print(f"runs that failed or archived wrongly: {', '.join(failed_runs)} (logs in {RUN_DIR})")
        return 1
    return 1 if strict and missed else 0


def _arguments(argv: list[str] | None) -> tuple[list[str], bool]:
    """The scenarios chosen, in the order given, and whether a missed target fails the run."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    chosen = [s for s in args.only.split(",") if s]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario {unknown[0]}; choose from {', '.join(SCENARIOS)}")
    return chosen, args.strict


def run_scenarios(chosen: list[str]) -> tuple[dict[str, Any], list[Section]]:
    """Each chosen scenario's raw figures by name, and its section of the table; the ones that
    archive share one moto server."""
    raw: dict[str, Any] = {}
    sections: list[Section] = []
    if {"small", "large", "memory"} & set(chosen):
        with MotoServer(RUN_DIR / "moto.log") as moto:
            bench = Bench(moto, RUN_DIR)
            if "small" in chosen:
                _progress("small recordings: archiver, then the naive peer")
                raw["small"] = scenarios.small_recordings(bench)
                sections.append(small_section(raw["small"]))
            if "large" in chosen:
                _progress("large recordings: download-only, archiver, naive peer")
                raw["large"] = scenarios.large_recordings(bench)
                sections.append(large_section(raw["large"]))
            if "memory" in chosen:
                _progress("memory: 1 MB and 100 MB, archiver and naive peer")
                raw["memory"] = scenarios.memory(bench)
                sections.append(memory_section(raw["memory"]))
    if "checkpoint" in chosen:
        _progress(f"checkpoint at {CHECKPOINT_ROWS:,} recordings (built once, then cached)")
        raw["checkpoint"] = checkpoint_scale.measure(CHECKPOINT_ROWS, RUN_DIR)
        sections.append(checkpoint_section(raw["checkpoint"]))
    return raw, sections


def describe_machine(elapsed: float) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(elapsed, 1),
    }


NOTES = [
    "wall: fork to exit of the child process. active: first request start the simulator saw to",
    "  exit (no Python start-up, no limiter start-up quiet second); bounds compare with it.",
    "starts/s: (requests - 1) / (last start - first start), read off the simulator's request",
    "  counter every 20 ms. dl-only: the archiver's own Cradle client downloading, no uploads.",
    "peak RSS: ru_maxrss of each child from wait4 (its own VmHWM). MB = 10^6 bytes.",
]


def small_section(found: dict[str, Any]) -> Section:
    spec, a, n = found["spec"], found["archiver"], found["naive"]
    bound = found["bound_seconds"]
    limit = spec["rate"]
    title = (
        f"1. small recordings: {spec['recordings']} x {spec['size'] // 1000} KB, "
        f"{spec['latency'] * 1000:.0f} ms latency, {a.requests} requests"
    )
    rate_share = ratio(a.rate, limit)
    return Section(
        title,
        [
            Row(
                "request starts/s",
                _num(a.rate),
                _num(n.rate),
                f"{limit:.2f} limit",
                f"{rate_share:.1%} of limit" if rate_share else "-",
                f">= {0.95 * limit:.2f}",
                a.rate is not None and a.rate >= 0.95 * limit,
            ),
            Row(
                "active time, s",
                seconds(a.active),
                seconds(n.active),
                f"{bound:.2f}",
                f"{_x(ratio(a.active, bound))} bound; naive {_x(ratio(n.active, a.active))}",
            ),
            Row("wall time, s", seconds(a.run.wall), seconds(n.run.wall)),
            Row(
                "violations (simulator)",
                str(a.violations),
                str(n.violations),
                target="0",
                met=a.violations == 0,
            ),
            Row("objects correct in S3", objects(a), objects(n), target="all", met=a.ok),
        ],
    )


def large_section(found: dict[str, Any]) -> Section:
    spec, a, n, d = found["spec"], found["archiver"], found["naive"], found["download_only"]
    computed = found["computed_bound_seconds"]
    title = (
        f"2. large recordings: {spec['recordings']} x {spec['size'] // MB} MB, "
        f"{spec['bandwidth'] // MB} MB/s bandwidth cap, {spec['latency'] * 1000:.0f} ms latency; "
        f"median of {spec['repeats']} runs"
    )
    share = ratio(a.active, d.active)
    return Section(
        title,
        [
            Row(
                "active time, s",
                seconds(a.active),
                seconds(n.active),
                f"{seconds(d.active)} dl-only",
                f"{_x(share)} dl-only; naive {_x(ratio(n.active, a.active))}",
                "<= 1.10x dl-only",
                share is not None and share <= 1.10,
            ),
            Row(
                "  each run (archiver / dl-only), s",
                " ".join(seconds(o.active) for o in found["archiver_runs"]),
                bound=" ".join(seconds(o.active) for o in found["download_only_runs"]),
            ),
            Row(
                "  vs computed sum(size/bw + latency)",
                bound=f"{computed:.2f}",
                ratio=f"{_x(ratio(a.active, computed))} computed",
            ),
            Row(
                "wall time, s",
                seconds(a.run.wall),
                seconds(n.run.wall),
                f"{seconds(d.run.wall)} dl-only",
            ),
            Row(
                "peak RSS, MB",
                megabytes(a.run.peak_rss),
                megabytes(n.run.peak_rss),
                f"{megabytes(d.run.peak_rss)} dl-only",
            ),
            Row(
                "violations (simulator)",
                str(a.violations),
                str(n.violations),
                str(d.violations),
                target="0",
                met=a.violations == 0,
            ),
            Row("objects correct in S3", objects(a), objects(n), target="all", met=a.ok),
        ],
    )


def memory_section(found: dict[str, Any]) -> Section:
    a1, a100 = found["archiver_small"], found["archiver_large"]
    n1, n100 = found["naive_small"], found["naive_large"]
    growth = a100.run.peak_rss - a1.run.peak_rss
    naive_growth = n100.run.peak_rss - n1.run.peak_rss
    return Section(
        "3. memory: one recording, no bandwidth cap, whole-process peak RSS",
        [
            Row("peak RSS, 1 x 1 MB, MB", megabytes(a1.run.peak_rss), megabytes(n1.run.peak_rss)),
            Row(
                "peak RSS, 1 x 100 MB, MB",
                megabytes(a100.run.peak_rss),
                megabytes(n100.run.peak_rss),
                target="< 80",
                met=a100.run.peak_rss < 80 * MB,
            ),
            Row(
                "growth 1 MB -> 100 MB, MB",
                megabytes(growth),
                megabytes(naive_growth),
                target="<= 10",
                met=growth <= 10 * MB,
            ),
            Row(
                "objects correct in S3",
                f"{objects(a1)}, {objects(a100)}",
                f"{objects(n1)}, {objects(n100)}",
                target="all",
                met=a1.ok and a100.ok,
            ),
        ],
    )


def checkpoint_section(found: dict[str, Any]) -> Section:
    counts = found["status_json"]
    lookups = found["lookups"]
    indexed = sum(1 for plan in lookups.values() if plan["indexed"])
    built = found["built_seconds"]
    title = (
        f"4. checkpoint: {found['recordings']:,} recordings ({counts['archived']:,} archived, "
        f"{counts['pending']:,} pending, {counts['failed']:,} failed); "
        + (f"built in {built:.0f} s" if built is not None else "cached file")
    )
    return Section(
        title,
        [
            Row(
                "status --json, CLI process, s",
                f"{found['status_cli_seconds']:.3f}",
                target="< 1",
                met=found["status_cli_seconds"] < 1.0,
            ),
            Row("status.build_report in process, s", f"{found['build_report_seconds']:.4f}"),
            Row(
                "add_listed of 1,000 known (dedupe), s", f"{found['dedupe_1000_known_seconds']:.4f}"
            ),
            Row(
                "look-ups using an index",
                f"{indexed}/{len(lookups)}",
                target="all",
                met=indexed == len(lookups),
            ),
            Row(
                "file size per recording, bytes",
                f"{found['bytes_per_recording']:.0f}",
                target="< 1024",
                met=found["bytes_per_recording"] < 1024,
            ),
        ],
    )


def _verdict(checked: list[dict[str, Any]], missed: list[dict[str, Any]]) -> str:
    if not missed:
        return f"all {len(checked)} targets met"
    names = "; ".join(f"{t['figure'].strip()} ({t['archiver']} vs {t['target']})" for t in missed)
    return f"{len(checked) - len(missed)}/{len(checked)} targets met; missed: {names}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _outcomes(raw: dict[str, Any]) -> list[Outcome]:
    found = []
    for scenario in raw.values():
        for value in scenario.values():
            found += value if isinstance(value, list) else [value]
    return [o for o in found if isinstance(o, Outcome)]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Outcome):
        return value.figures()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _progress(message: str) -> None:
    print(f"bench: {message} ...", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
