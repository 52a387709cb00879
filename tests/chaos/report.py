"""A scenario's outcome: counted figures, failed checks, and notes worth reading."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tests.chaos.audit import Audit
from tests.chaos.lab import Lab, Run

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
