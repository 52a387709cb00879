"""The backfill progress display, on a fake clock."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from archiver.archive import Progress
from archiver.progress import ProgressDisplay, human_bytes, human_seconds

START = datetime(2024, 1, 1, tzinfo=UTC)


def snapshot(done: int, hours: int) -> Progress:
    return Progress(
        done,
        40,
        done * 1_000_000,
        START,
        START + timedelta(hours=hours),
        START + timedelta(hours=10),
    )


def test_the_bar_shows_done_of_queued_bytes_rate_and_eta() -> None:
    now = [0.0]
    stream = io.StringIO()
    display = ProgressDisplay(stream, interactive=True, clock=lambda: now[0])
    now[0] = 10.0
    display(snapshot(20, 5))
    line = stream.getvalue()
    assert line.startswith("\r[############............]  50%")
    assert (
        "20/40 recordings" in line
        and "20.0 MB" in line
        and "2.0 MB/s" in line
        and "ETA 0m10s" in line
    )


def test_redraws_are_throttled_and_close_ends_the_line() -> None:
    now = [0.0]
    stream = io.StringIO()
    display = ProgressDisplay(stream, interactive=True, clock=lambda: now[0])
    display(snapshot(1, 1))
    display(snapshot(2, 1))
    assert stream.getvalue().count("\r") == 1
    display.close()
    assert stream.getvalue().endswith("\n") and "2/40" in stream.getvalue()


def test_without_a_terminal_nothing_is_drawn() -> None:
    stream = io.StringIO()
    display = ProgressDisplay(stream, interactive=False, clock=lambda: 0.0)
    display(snapshot(1, 1))
    display.close()
    assert stream.getvalue() == ""


def test_human_units() -> None:
    assert human_bytes(999) == "999 B" and human_bytes(1_500_000) == "1.5 MB"
    assert human_seconds(75) == "1m15s" and human_seconds(7300) == "2h01m"
