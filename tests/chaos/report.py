"""A scenario's outcome: counted figures, failed checks, and notes worth reading."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from archiver.models import RecordingState
from archiver.simulator import SimRecording
from tests.chaos.audit import Audit, key_of
from tests.chaos.lab import Lab, Run
from tests.e2e.harness import Bucket

# Figures that must be zero, in the order the summary line shows them.
DUE_ZEROS = (
    "duplicates",
    "partial",
    "lost",
    "orphans",
    "stale_uploads",
    "violations",
    "leaks",
)


@dataclass
class Report:
    name: str
    figures: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, ok: object, message: str) -> bool:
        if not ok:
            self.problems.append(message)
        return bool(ok)

    def note(self, message: str) -> None:
        self.notes.append(message)

    def add_audit(self, audit: Audit, *, label: str = "") -> None:
        self.figures.update(audit.figures())
        where = f"{label}: " if label else ""
        for problem in audit.problems[:25]:
            self.problems.append(where + problem)
        if len(audit.problems) > 25:
            self.problems.append(f"{where}... and {len(audit.problems) - 25} more")
        if audit.stale_uploads:
            self.note(f"{where}{audit.stale_uploads} incomplete multipart uploads left in S3")
        self.check(
            audit.archived == audit.expected,
            f"{where}{audit.archived} of {audit.expected} recordings archived correctly",
        )

    def clean_exit(self, run: Run, codes: tuple[int, ...], what: str) -> bool:
        """The process ended with one of `codes`, and any error it printed is one clear line."""
        ok = self.check(
            run.returncode in codes,
            f"{what}: exit {run.returncode}, expected {' or '.join(map(str, codes))}\n"
            + run.tail(),
        )
        self.check(not run.crashed, f"{what}: a crash instead of a clear message: {run.errors()}")
        self.check(
            len(run.errors()) <= 1,
            f"{what}: {len(run.errors())} lines of error, expected one: {run.errors()[:5]}",
        )
        stray = run.stray()
        if stray:
            self.figures["stray_log_lines"] += len(stray)
            self.note(f"{what}: {len(stray)} non-JSON lines on stderr, first: {stray[0][:160]}")
        return ok

    def all_archived(self, lab: Lab, config: Path, expected: int) -> None:
        """The checkpoint counts every recording archived, and none in any other state."""
        with lab.checkpoint(config) as checkpoint:
            counts = checkpoint.counts()
        self.check(
            counts == {"pending": 0, "archived": expected, "failed": 0, "expired": 0},
            f"the checkpoint counts {counts} for {expected} recordings",
        )

    def nothing_lost(
        self, lab: Lab, config: Path, bucket: Bucket, expected: list[SimRecording]
    ) -> None:
        """After a failed pass: verify passes, the checkpoint claims nothing the bucket lacks,
        nothing was dead-lettered for it, and the watermark passed nothing unarchived."""
        verify = lab.cli("verify", config=config)
        self.clean_exit(verify, (0,), "verify right after the failed pass")
        present = set(bucket.recording_keys())
        with lab.checkpoint(config) as checkpoint:
            watermark = checkpoint.watermark().position
            claimed = {row.key for row in checkpoint.archived()}
            failed = checkpoint.counts()[RecordingState.FAILED]
        missing = sorted(claimed - present, key=str)
        self.check(not missing, f"archived in the checkpoint, not in S3: {missing}")
        self.check(failed == 0, f"{failed} recordings dead-lettered for it")
        passed = [
            key_of("calls/", rec)
            for rec in expected
            if watermark is not None
            and rec.started_at < watermark
            and key_of("calls/", rec) not in present
        ]
        self.check(not passed, f"the watermark {watermark} passed recordings not in S3: {passed}")
        self.note(
            f"after the failed pass: {len(claimed)} archived in the checkpoint, {len(present)} "
            f"objects in S3 (the difference is confirmed by the next pass), watermark {watermark}"
        )

    def close(self, lab: Lab) -> None:
        """Checks every scenario ends with: no secret anywhere, no credentials at the canary."""
        sightings = lab.secret_sightings()
        canary = lab.canary_credential_requests()
        self.figures["leaks"] += len(sightings) + canary
        self.check(not sightings, f"the API key appears in: {sightings}")
        self.check(canary == 0, f"{canary} requests to the canary carried credentials")
        loose = lab.loose_state_files()
        self.check(not loose, f"state files readable by others: {loose}")
        for sim in lab.simulators:
            stats = sim.stats()
            self.figures["violations"] += stats["violations"]
            if not stats["violations"]:
                continue
            what = (
                f"the simulator counted {stats['rate_violations']} rate and "
                f"{stats['in_flight_violations']} in-flight violations"
            )
            self.problems.append(what)
            self.problems += [lab.explain_violation(v) for v in stats["recent_violations"]]

    def summary(self) -> str:
        shown = ", ".join(f"{k} {v}" for k, v in sorted(self.figures.items()))
        verdict = "ok" if not self.problems else f"{len(self.problems)} failed checks"
        return f"{self.name}: {verdict} ({shown})"

    def explain(self) -> str:
        lines = [self.summary()]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  FAILED: {p}" for p in self.problems]
        return "\n".join(lines)
