"""What each run did: the passes' and reconciliations' results, and the backfills' cursors.

Results are kept PASS_HISTORY deep per kind: `status` shows the last, the rest help a
post-mortem. A backfill's cursor lets a killed backfill resume where it was.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from archiver.checkpoint.connection import Connection, from_micros, micros
from archiver.models import PassOutcome, PassResult

PASS_HISTORY = 100  # results kept per kind; status shows the last, the rest help a post-mortem


class Runs(Connection):
    """The `passes`, `reconciles` and `backfills` tables."""

    def backfill_cursor(self, start: datetime, end: datetime) -> datetime | None:
        sql = "SELECT cursor FROM backfills WHERE range_start = ? AND range_end = ?"
        rows = self._query(sql, micros(start), micros(end))
        return from_micros(rows[0][0]) if rows else None

    def set_backfill_cursor(self, start: datetime, end: datetime, cursor: datetime) -> None:
        if not start <= cursor <= end:
            raise ValueError(f"backfill cursor {cursor} is outside [{start}, {end}]")
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO backfills (range_start, range_end, cursor, updated_at)"
                " VALUES (?, ?, ?, ?)",
                (micros(start), micros(end), micros(cursor), self._now()),
            )

    def record_pass(self, result: PassResult) -> None:
        times = (micros(result.started_at), micros(result.finished_at))
        counts = (result.archived, result.failed, result.listed)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO passes (kind, started_at, finished_at, outcome, archived, failed,"
                " listed, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (result.kind, *times, result.outcome, *counts, result.error),
            )
            conn.execute(
                "DELETE FROM passes WHERE kind = ? AND id <= (SELECT id FROM passes WHERE kind = ?"
                " ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (result.kind, result.kind, PASS_HISTORY),
            )

    def last_pass(self, kind: str = "pass") -> PassResult | None:
        rows = self._query(
            "SELECT kind, started_at, finished_at, outcome, archived, failed, listed, error"
            " FROM passes WHERE kind = ? ORDER BY id DESC LIMIT 1",
            kind,
        )
        if not rows:
            return None
        kind, started, finished, outcome, *rest = rows[0]
        return PassResult(
            kind, from_micros(started), from_micros(finished), PassOutcome(outcome), *rest
        )

    def record_reconcile(
        self, started: datetime, finished: datetime, since: datetime, until: datetime, report: Any
    ) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO reconciles (started_at, finished_at, range_start, range_end, report)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    micros(started),
                    micros(finished),
                    micros(since),
                    micros(until),
                    json.dumps(report, sort_keys=True),
                ),
            )
            conn.execute(
                "DELETE FROM reconciles WHERE id <= (SELECT id FROM reconciles ORDER BY id DESC"
                " LIMIT 1 OFFSET ?)",
                (PASS_HISTORY,),
            )

    def last_reconcile(self) -> dict[str, Any] | None:
        """The last reconciliation's report, with its times, or None."""
        rows = self._query("SELECT * FROM reconciles ORDER BY id DESC LIMIT 1")
        if not rows:
            return None
        report: dict[str, Any] = json.loads(rows[0]["report"])
        return report

    def reconciled(self, since: datetime, until: datetime) -> bool:
        """Whether a kept reconciliation covered all of [since, until)."""
        sql = "SELECT 1 FROM reconciles WHERE range_start <= ? AND range_end >= ? LIMIT 1"
        return bool(self._query(sql, micros(since), micros(until)))
