"""`status`: what the checkpoint says, as one JSON object or as text for a person."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime
from typing import Any, Protocol

from archiver.models import (
    PassResult,
    RecordingRow,
    RecordingState,
    SealedManifest,
    Watermark,
    format_time,
)


class StatusSource(Protocol):
    def watermark(self) -> Watermark: ...
    def counts(self) -> dict[RecordingState, int]: ...
    def last_pass(self, kind: str = "pass") -> PassResult | None: ...
    def recent_failures(self, limit: int = 10) -> list[RecordingRow]: ...
    def malformed_count(self) -> int: ...
    def audio_mismatch_count(self) -> int: ...
    def last_sealed_day(self) -> date | None: ...
    def conversation_count(self) -> int: ...
    def history_cursor(self) -> datetime | None: ...
    def manifests(self, *, unwritten: bool = False) -> list[SealedManifest]: ...
    def last_reconcile(self) -> dict[str, Any] | None: ...


def build_report(checkpoint: StatusSource, now: datetime, failures: int = 10) -> dict[str, Any]:
    watermark = checkpoint.watermark()
    counts = checkpoint.counts()
    lag = (now - watermark.position).total_seconds() if watermark.position else None
    return {
        "watermark": format_time(watermark.position) if watermark.position else None,
        "lag_seconds": round(lag, 3) if lag is not None else None,
        "archived": counts[RecordingState.ARCHIVED],
        "pending": counts[RecordingState.PENDING],
        "failed": counts[RecordingState.FAILED],
        "expired": counts[RecordingState.EXPIRED],
        "malformed_entries": checkpoint.malformed_count(),
        "audio_mismatches": checkpoint.audio_mismatch_count(),
        "last_sealed_day": _day(checkpoint.last_sealed_day()),
        "conversations": checkpoint.conversation_count(),
        "conversations_cursor": _time(checkpoint.history_cursor()),
        "manifests_unwritten": len(checkpoint.manifests(unwritten=True)),
        "last_pass": _result(checkpoint.last_pass("pass")),
        "last_backfill": _result(checkpoint.last_pass("backfill")),
        "last_reconcile": _reconcile(checkpoint.last_reconcile()),
        "recent_failures": [
            {
                "recording_id": row.recording.recording_id,
                "state": row.state,
                "reason": row.reason,
                "attempts": row.attempts,
                "started_at": format_time(row.recording.started_at),
                "updated_at": format_time(row.updated_at),
            }
            for row in checkpoint.recent_failures(failures)
        ],
    }


def _time(value: datetime | None) -> str | None:
    return format_time(value) if value else None


def _day(day: date | None) -> str | None:
    return day.isoformat() if day else None


def _reconcile(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The last reconciliation's period, times and counts by kind (its differences are
    `reconcile`'s own output)."""
    if report is None:
        return None
    kept = ("since", "until", "started_at", "finished_at", "listed", "counts", "unexplained")
    return {key: report.get(key) for key in kept}


def _result(result: PassResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    data = asdict(result)
    data["started_at"] = format_time(result.started_at)
    data["finished_at"] = format_time(result.finished_at)
    return data


def render_text(report: dict[str, Any]) -> str:
    lines = [
        f"watermark   {report['watermark'] or 'none (no pass has run)'}",
        f"lag         {_duration(report['lag_seconds'])}",
        f"archived    {report['archived']}",
        f"pending     {report['pending']}",
        f"failed      {report['failed']}"
        + ("   (dead-lettered: see below; `retry` puts them back)" if report["failed"] else ""),
        f"malformed   {report['malformed_entries']} list entries skipped",
    ]
    sealed = report["last_sealed_day"] or "none yet"
    if report["manifests_unwritten"]:
        sealed += f" ({report['manifests_unwritten']} manifest(s) kept, not yet written to S3)"
    lines.append(f"sealed      {sealed}")
    cursor = report["conversations_cursor"]
    lines.append(
        f"history     {report['conversations']} conversations exported"
        + (f", listed up to {cursor}" if cursor else "")
    )
    if report["audio_mismatches"]:
        lines.append(
            f"audio       {report['audio_mismatches']} archived with a length far from the list's"
            " (audio-mismatch: true)"
        )
    if report["expired"]:
        lines.append(f"expired     {report['expired']} past their retain-until, skipped")
    for label, key in (("last pass", "last_pass"), ("last backfill", "last_backfill")):
        result = report[key]
        if result:
            line = (
                f"{label:<11} {result['outcome']} at {result['finished_at']}: "
                f"{result['archived']} archived, {result['failed']} dead-lettered, "
                f"{result['listed']} listed"
            )
            if result["error"]:
                line += f" -- {result['error']}"
            lines.append(line)
        elif key == "last_pass":
            lines.append(f"{label:<11} none yet")
    lines += _reconcile_lines(report["last_reconcile"])
    if report["recent_failures"]:
        lines.append("recent failures:")
        for row in report["recent_failures"]:
            lines.append(
                f"  {row['recording_id']}  {row['state']:<8} {row['reason']}  "
                f"attempts={row['attempts']}  call at {row['started_at']}"
            )
    return "\n".join(lines)


def _reconcile_lines(last: dict[str, Any] | None) -> list[str]:
    if last is None:
        return []
    found = ", ".join(f"{n} {kind}" for kind, n in sorted(last["counts"].items()) if n)
    verdict = f"{last['unexplained']} unexplained" if last["unexplained"] else "all explained"
    return [
        f"reconciled  [{last['since']}, {last['until']}) at {last['finished_at']}: "
        f"{found or 'no differences'}" + (f" ({verdict})" if found else "")
    ]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours or days else []
    parts += [f"{minutes}m", f"{secs}s"]
    return "".join(parts)
