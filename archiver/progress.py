"""The backfill's progress: a one-line bar on a terminal, periodic log events otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

import structlog

from archiver.archive import Progress

log = structlog.get_logger(__name__)
WIDTH = 24


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def human_seconds(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class ProgressDisplay:
    """Fed by ArchivePass's on_progress; redraws at most every `every` seconds."""

    def __init__(
        self,
        stream: TextIO,
        *,
        interactive: bool,
        clock: Callable[[], float] = time.monotonic,
        every: float | None = None,
    ) -> None:
        self.stream = stream
        self.interactive = interactive
        self.clock = clock
        self.every = every if every is not None else (0.2 if interactive else 10.0)
        self.started = clock()
        self._last = float("-inf")
        self._latest: Progress | None = None

    def __call__(self, progress: Progress) -> None:
        self._latest = progress
        now = self.clock()
        if now - self._last >= self.every:
            self._last = now
            self._show(progress, now)

    def line(self, progress: Progress, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        fraction = progress.fraction
        filled = int(WIDTH * fraction)
        rate = progress.bytes / elapsed
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else None
        return (
            f"[{'#' * filled}{'.' * (WIDTH - filled)}] {fraction:4.0%}  "
            f"{progress.done}/{progress.queued} recordings  {human_bytes(progress.bytes)}  "
            f"{human_bytes(rate)}/s  ETA {human_seconds(eta) if eta is not None else '?'}"
        )

    def _show(self, progress: Progress, now: float) -> None:
        if self.interactive:
            self.stream.write("\r" + self.line(progress, now) + "\x1b[K")
            self.stream.flush()
        else:
            log.info(
                "backfill.progress",
                done=progress.done,
                queued=progress.queued,
                bytes=progress.bytes,
                cursor=progress.cursor.isoformat(),
                percent=round(100 * progress.fraction, 1),
            )

    def close(self) -> None:
        """Draw the final state and end the line, so the summary starts on its own."""
        if self._latest is not None:
            self._show(self._latest, self.clock())
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()
