"""`make chaos`: the heavy versions of every chaos scenario, then one line of figures.

    python -m tests.chaos [--only NAME ...] [--keep] [--list]

Ends with e.g. `archived 1391/1391 duplicates 0 partial 0 lost 0 ... kills 28 redownloads 24`
and exits 1 when a figure that must be zero is not, when re-downloads exceed the stops that
caused them, or when any scenario failed a check (all are listed above the line).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import structlog

from tests.chaos import crash, credentials, environment, limits, outage, soak, storm
from tests.chaos.lab import Lab
from tests.chaos.report import DUE_ZEROS, Report
from tests.chaos.s3server import S3Process

Scenario = Callable[[Lab], Report | None]

SCENARIOS: dict[str, Scenario] = {
    "storm": lambda lab: storm.storm(
        lab,
        storm.Storm(
            hours=6,
            per_hour=25,
            fault_429=0.12,
            fault_5xx=0.06,
            fault_drop_headers=0.04,
            fault_drop_body=0.04,
            fault_truncate=0.04,
            fault_malformed_list=0.15,
            window="20m",
            slow_body=0.02,
            poison_each=3,
            bad_entries=12,
            passes=6,
            require_every_fault=True,
        ),
    ),
    "cut-lists": storm.cut_lists,
    "sigkill": lambda lab: crash.crash(
        lab,
        crash.Crash(
            hours=10,
            per_hour=90,
            bytes_per_second=1000,
            large_fraction=0.02,
            kills=22,
            multipart_kills=3,
            pipeline_kills=3,
            max_delay=5.0,
            seed=2024,
        ),
    ),
    "sigterm": lambda lab: crash.crash(
        lab,
        crash.Crash(
            hours=4,
            per_hour=60,
            bytes_per_second=2000,
            large_fraction=0.03,
            kills=10,
            signum=signal.SIGTERM,
            seed=7,
        ),
    ),
    "outage": lambda lab: outage.outage(lab, outage.Outage(hours=3, per_hour=30)),
    "outage-daemon": lambda lab: outage.outage(
        lab, outage.Outage(hours=2, per_hour=30, daemon=True, down_for=25)
    ),
    "credentials": credentials.credentials,
    "aws-secrets": credentials.aws_secrets,
    "bad-config": environment.bad_configs,
    "bad-credential-type": lambda lab: environment.bad_configs(
        lab, environment.BAD_CREDENTIAL_TYPES, "bad credential type"
    ),
    "second-instance": environment.second_instance,
    "refused-credentials": environment.refused_credentials,
    "denied-bucket": environment.denied_bucket,
    "unwritable-spool": environment.unwritable_spool,
    "full-spool": environment.full_spool,
    "jitter": limits.jitter,
    "slow-stop-backfill": limits.slow_stop,
    "slow-stop-run-once": lambda lab: limits.slow_stop(lab, ("run", "--once")),
    "json-log-lines": limits.json_log_lines,
    "soak": lambda lab: soak.soak(
        lab,
        soak.Soak(seconds=120, per_hour=900, backlog=10, fault_429=0.08, fault_5xx=0.05),
    ),
}


def figures_line(reports: list[Report]) -> tuple[str, bool]:
    """The summary line, and whether every figure that must be zero is."""
    total: Counter[str] = Counter()
    for report in reports:
        total.update(report.figures)
    stops = total["kills"] + total["sigterms"]
    parts = [f"archived {total['archived']}/{total['expected']}"]
    parts += [f"{name} {total[name]}" for name in DUE_ZEROS]
    parts += [f"kills {total['kills']}", f"sigterms {total['sigterms']}"]
    parts += [f"redownloads {total['redownloads']}"]
    if "rss_growth_kb" in total:
        parts.append(f"rss_growth_kb {total['rss_growth_kb']}")
    failed = sum(len(r.problems) for r in reports)
    parts.append(f"failed_checks {failed}")
    ok = (
        total["archived"] == total["expected"]
        and all(total[name] == 0 for name in DUE_ZEROS)
        and total["redownloads"] <= stops
        and failed == 0
    )
    return " ".join(parts), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), metavar="NAME")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(SCENARIOS))
        return 0
    root = Path(tempfile.mkdtemp(prefix="cradle-chaos-"))
    print(f"chaos: working in {root}", flush=True)
    began = time.monotonic()
    with open(root / "simulator.log", "w") as simulator_log:
        log_simulators_to(simulator_log)
        reports = run_scenarios(args.only or list(SCENARIOS), root)
    line, ok = figures_line(reports)
    print(f"chaos: {len(reports)} scenarios in {time.monotonic() - began:.0f}s")
    if ok and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"chaos: logs kept in {root}")
    print(line)
    return 0 if ok else 1


def log_simulators_to(file: TextIO) -> None:
    """The in-process simulators log here, not over the report."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file),
    )


def run_scenarios(names: list[str], root: Path) -> list[Report]:
    """Each scenario in a lab of its own under `root`, all on one moto S3 process; a report
    each (none for a scenario not possible here), printed as it ends."""
    reports: list[Report] = []
    s3 = S3Process()
    try:
        for name in names:
            started = time.monotonic()
            report = run_scenario(name, root, s3)
            if report is None:
                print(f"{name}: skipped (not possible here)", flush=True)
                continue
            reports.append(report)
            print(f"{report.explain()}\n  ({time.monotonic() - started:.0f}s)", flush=True)
    finally:
        s3.close()
    return reports


def run_scenario(name: str, root: Path, s3: S3Process) -> Report | None:
    with Lab.open(root / name, s3) as lab:
        try:
            return SCENARIOS[name](lab)
        except Exception as exc:  # one broken scenario must not hide the others
            report = Report(name)
            report.check(False, f"the scenario itself failed: {exc!r}")
            return report


if __name__ == "__main__":
    sys.exit(main())
