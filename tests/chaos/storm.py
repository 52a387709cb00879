"""Scenario 1, the mixed storm: every Cradle-side fault at once, plus poison and bad entries.

Every valid recording must end archived exactly once with the right bytes and metadata, the
server must count no rate-rule violation, each poison recording must be dead-lettered with its
reason and never reach the bucket, and `run --once` must exit 3 while any are dead-lettered.
`retry --all` then `run --once` tries them again, with their attempts counted anew.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archiver.models import RecordingState
from tests.chaos.audit import audit, valid_recordings
from tests.chaos.lab import Lab, Run, wait_for
from tests.chaos.report import Report
from tests.e2e.harness import API_KEY, Bucket

REASONS = {
    "html": "not_mp3",
    "404": "http_404",
    "offhost": "off_host_url",
    "redirect": "off_host_url",
}


@dataclass(frozen=True)
class Storm:
    hours: float = 3
    per_hour: float = 20
    bytes_per_second: int = 1000
    fault_429: float = 0.10
    fault_5xx: float = 0.05
    fault_drop_headers: float = 0.03
    fault_drop_body: float = 0.03
    fault_truncate: float = 0.03
    fault_malformed_list: float = 0.05
    slow_body: float = 0.0
    poison_each: int = 1
    bad_entries: int = 4
    max_attempts: int = 3
    window: str = "1h"
    # "downloads" keeps cut and slow bodies off list responses, "all" cuts those too.
    body_fault_scope: str = "all"
    # How many `run --once` may fail (exit 1, one clear line) before one finishes: a storm can
    # outlast a request's retries, and the next pass (or cron run) must then finish the work.
    passes: int = 1
    seed: int = 7
    # Light runs have too few requests for every fault kind to fire every time.
    require_every_fault: bool = False


def storm_switches(p: Any) -> dict[str, Any]:
    """The simulator's switches for a mixed storm (faults of every kind, one recording of each
    poison kind), from a Storm or a Soak."""
    return {
        "fault_429": p.fault_429,
        "retry_after": "mixed",
        "fault_5xx": p.fault_5xx,
        "fault_drop_headers": p.fault_drop_headers,
        "fault_drop_body": p.fault_drop_body,
        "fault_truncate": p.fault_truncate,
        "fault_malformed_list": p.fault_malformed_list,
        "body_fault_scope": p.body_fault_scope,
        **{f"poison_{kind}": p.poison_each for kind in ("html", "offhost", "redirect", "404")},
    }


def storm(lab: Lab, params: Storm = Storm(), name: str = "storm") -> Report:
    report = Report(name)
    p = params
    sim = lab.simulator(
        hours=p.hours,
        seed=p.seed,
        per_hour=p.per_hour,
        bytes_per_second=p.bytes_per_second,
        **storm_switches(p),
        slow_body=p.slow_body,
        slow_bytes_per_second=200_000,
        bad_entries=p.bad_entries,
    )
    bucket = lab.bucket()
    config = lab.config(
        name, sim, bucket, archive={"max_attempts": p.max_attempts, "window": p.window}
    )
    poison = {rec.recording_id: rec.poison for rec in sim.recordings() if rec.poison}

    first = run_passes(lab, report, config, p.passes, "first run --once")
    report.check(
        first is not None and first.returncode == 3,
        "run --once must exit 3 while recordings are dead-lettered",
    )
    _check_every_fault_fired(p, report, sim.stats())
    first_attempts = _check_dead_letters(lab, config, p, report, poison)
    report.add_audit(audit(bucket, sim, valid_recordings(sim)))
    _check_status_shows_every_reason(lab, config, report)

    versions_before = _versions(bucket)
    retry = lab.cli("retry", "--all", config=config)
    report.check(
        retry.returncode == 0 and f"{len(poison)} recordings put back" in retry.stdout,
        f"retry --all: {retry.tail()}",
    )
    again = run_passes(lab, report, config, p.passes, "run --once after retry")
    report.check(
        again is not None and again.returncode == 3,
        "run --once after retry --all must exit 3 again (the poison fails again)",
    )
    _check_attempts_counted_anew(lab, config, report, poison, first_attempts)
    report.check(_versions(bucket) == versions_before, "the second pass changed the bucket")
    report.figures["dead_lettered"] += len(poison)
    report.close(lab)
    return report


def _check_every_fault_fired(p: Storm, report: Report, stats: dict[str, Any]) -> None:
    """Each fault switched on fired at least once (a failed check, or a note in light runs)."""
    report.note(f"faults injected: {stats['faults']}, requests {stats['requests']}")
    wanted_faults = {
        "429": p.fault_429,
        "5xx": p.fault_5xx,
        "drop_headers": p.fault_drop_headers,
        "drop_body": p.fault_drop_body,
        "truncate": p.fault_truncate,
        "malformed_list": p.fault_malformed_list,
    }
    for kind, rate in wanted_faults.items():
        if rate and not stats["faults"][kind]:
            message = f"no {kind} fault fired in {stats['requests']} requests"
            if p.require_every_fault:
                report.check(False, message)
            else:
                report.note(message)


def _check_dead_letters(
    lab: Lab, config: Path, p: Storm, report: Report, poison: dict[str, str]
) -> dict[str, int]:
    """Each poison recording dead-lettered with its reason, and only those; nothing pending;
    every bad entry recorded as malformed. The attempts each poison recording took."""
    with lab.checkpoint(config) as checkpoint:
        rows = {i: checkpoint.get(i) for i in poison}
        counts = checkpoint.counts()
        malformed = checkpoint.malformed_count()
    first_attempts = {}
    for recording_id, kind in poison.items():
        row = rows[recording_id]
        if row is None:
            report.check(False, f"poison {kind} {recording_id} never listed")
            continue
        first_attempts[recording_id] = row.attempts
        report.check(
            row.state == "failed" and row.reason == REASONS[kind],
            f"poison {kind}: {row.state} with reason {row.reason}, expected failed with "
            f"{REASONS[kind]}",
        )
    pending, failed = counts[RecordingState.PENDING], counts[RecordingState.FAILED]
    report.check(pending == 0, f"{pending} recordings still pending")
    report.check(
        failed == len(poison), f"{failed} dead-lettered, expected the {len(poison)} poison ones"
    )
    report.check(
        malformed == p.bad_entries,
        f"{malformed} malformed entries recorded, the simulator lists {p.bad_entries}",
    )
    return first_attempts


def _check_status_shows_every_reason(lab: Lab, config: Path, report: Report) -> None:
    status = lab.cli("status", config=config)
    report.check(status.returncode == 0, f"status failed: {status.tail()}")
    report.check(
        all(kind_reason in status.stdout for kind_reason in set(REASONS.values())),
        f"status does not show every dead-letter reason:\n{status.stdout}",
    )
    report.check(API_KEY not in status.stdout, "status shows the API key")


def _check_attempts_counted_anew(
    lab: Lab,
    config: Path,
    report: Report,
    poison: dict[str, str],
    first_attempts: dict[str, int],
) -> None:
    """After `retry --all` and a pass: each poison recording failed again, with as many
    attempts as the first time."""
    with lab.checkpoint(config) as checkpoint:
        for recording_id, kind in poison.items():
            row = checkpoint.get(recording_id)
            if row is None or recording_id not in first_attempts:
                continue
            report.check(
                row.state == "failed" and row.reason == REASONS[kind],
                f"poison {kind} after retry: {row.state} with reason {row.reason}",
            )
            report.check(
                row.attempts == first_attempts[recording_id],
                f"poison {kind} after retry has {row.attempts} attempts, expected "
                f"{first_attempts[recording_id]} counted anew",
            )


def run_passes(lab: Lab, report: Report, config: Path, passes: int, what: str) -> Run | None:
    """`run --once` until one finishes (exit 0 or 3), at most `passes` times."""
    run = None
    for attempt in range(1, passes + 1):
        run = lab.cli("run", "--once", "--log-level", "debug", config=config)
        label = f"{what} (pass {attempt})"
        report.clean_exit(run, (0, 1, 3) if attempt < passes else (0, 3), label)
        if run.returncode != 1:
            break
        report.figures["failed_passes"] += 1
        report.note(f"{label} failed cleanly: {run.errors()}")
    return run


def cut_lists(lab: Lab, seed: int = 5) -> Report:
    """A list response cut short, by a reset mid-body and then by a body shorter than its
    Content-Length, is retried like any transient failure: the pass neither crashes nor stops.

    The cuts are switched on for the first list call only and off as soon as the simulator has
    served them (the client is then in its retry backoff), so the outcome does not depend on
    which requests the dice pick.
    """
    report = Report("cut lists")
    sim = lab.simulator(hours=1, seed=seed, per_hour=6, bytes_per_second=200, fault_drop_body=1.0)
    bucket = lab.bucket()
    config = lab.config("cut-lists", sim, bucket)
    proc = lab.spawn("run", "--once", config=config)
    served = wait_for(lambda: sim.stats()["faults"]["drop_body"] or not proc.alive(), 30, 0.005)
    sim.set_faults(fault_drop_body=0.0, fault_truncate=1.0)
    report.check(served and sim.stats()["faults"]["drop_body"], "no list call was cut")
    wait_for(lambda: sim.stats()["faults"]["truncate"] or not proc.alive(), 30, 0.005)
    sim.set_faults(fault_truncate=0.0)
    run = proc.wait(120)
    report.note(f"faults served: {sim.stats()['faults']}")
    report.clean_exit(run, (0,), "run --once with cut list bodies")
    report.add_audit(audit(bucket, sim, valid_recordings(sim)))
    report.close(lab)
    return report


def _versions(bucket: Bucket) -> list[tuple[str, str]]:
    """Every version of every recording object (not the audit trail, which `retry` adds to)."""
    found = []
    for page in bucket.client.get_paginator("list_object_versions").paginate(Bucket=bucket.name):
        found += [(v["Key"], v["VersionId"]) for v in page.get("Versions", [])]
    return sorted(item for item in found if item[0].endswith(".mp3"))
