"""`status`: the report from a real checkpoint, as JSON keys and as text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from archiver.checkpoint import Checkpoint
from archiver.models import PassOutcome, PassResult, Recording
from archiver.status import build_report, render_text

NOW = datetime(2024, 5, 2, tzinfo=UTC)


def recording(i: int) -> Recording:
    rid = f"00000000-0000-0000-0000-{i:012d}"
    return Recording(
        rid,
        f"https://api.cradle.io/api/v1/public/recordings/{rid}.mp3",
        NOW - timedelta(hours=i),
        5,
        "in",
        "a@x",
    )


def test_report_counts_lag_last_pass_and_failures(tmp_path: Path) -> None:
    with Checkpoint.open(tmp_path / "s.db", clock=lambda: NOW) as checkpoint:
        checkpoint.set_watermark(NOW - timedelta(minutes=15))
        checkpoint.add_listed([recording(i) for i in range(1, 5)])
        checkpoint.mark_archived(recording(1).recording_id, sha256="a" * 64, size=10, key="k1")
        checkpoint.record_failure(
            recording(2).recording_id, "http_404", dead_letter=False, max_attempts=1
        )
        checkpoint.record_pass(
            PassResult("pass", NOW - timedelta(minutes=1), NOW, PassOutcome.DEAD_LETTERS, 1, 1, 4)
        )
        report = build_report(checkpoint, NOW)
    assert report["watermark"] == "2024-05-01T23:45:00.000Z"
    assert report["lag_seconds"] == 900
    assert (report["archived"], report["pending"], report["failed"]) == (1, 2, 1)
    assert report["last_pass"]["outcome"] == "dead_letters"
    assert report["recent_failures"][0]["reason"] == "http_404"
    text = render_text(report)
    assert "lag         15m0s" in text and "http_404" in text and "retry" in text


def test_an_empty_checkpoint_reports_no_watermark(tmp_path: Path) -> None:
    with Checkpoint.open(tmp_path / "s.db") as checkpoint:
        report = build_report(checkpoint, NOW)
    assert report["watermark"] is None and report["lag_seconds"] is None
    assert "none (no pass has run)" in render_text(report)
