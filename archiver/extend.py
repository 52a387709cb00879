"""`retention extend`: move the Object Lock of archived recordings on, never back.

MiFID II keeps order-related calls 5 years, and 7 when the regulator asks: the firm extends the
locks already written. Each recording's new date is its own call's start plus the new period
(or one fixed date); one already locked as long or longer is left alone, since S3 would refuse
to shorten a COMPLIANCE lock anyway and a GOVERNANCE one must not be shortened by us.

Progress is the checkpoint itself: each extended recording's new retain-until is recorded as
soon as S3 has it, so a run killed midway, run again, skips what is done.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from archiver.errors import Interrupted
from archiver.models import RecordingRow, format_time
from archiver.retention import Lock, LockMode, Period

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Target:
    """Where locks should reach: each call's start plus `period`, or one fixed date."""

    period: Period | None = None
    until_date: datetime | None = None

    def for_call(self, started_at: datetime) -> datetime:
        if self.period is not None:
            return self.period.after(started_at)
        assert self.until_date is not None  # the CLI gives exactly one of the two
        return self.until_date


@dataclass
class Extension:
    """What a run did (or, dry, would do)."""

    checked: int = 0
    extended: int = 0
    already_later: int = 0
    earliest: datetime | None = None  # the new dates, from and to
    latest: datetime | None = None
    recordings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "checked": self.checked,
            "extended": self.extended,
            "already_later": self.already_later,
        }

    def _saw(self, until: datetime) -> None:
        self.earliest = until if self.earliest is None else min(self.earliest, until)
        self.latest = until if self.latest is None else max(self.latest, until)


def extend(
    rows: Iterable[RecordingRow],
    target: Target,
    mode: LockMode,
    apply: Callable[[RecordingRow, Lock], None] | None,
    stop: threading.Event | None = None,
) -> Extension:
    """Extend each row's lock to `target`; with `apply` None, only count (a dry run)."""
    done = Extension()
    for row in rows:
        if stop is not None and stop.is_set():
            raise Interrupted("shutdown asked for; run it again to go on")
        done.checked += 1
        until = target.for_call(row.recording.started_at)
        if row.retain_until is not None and row.retain_until >= until:
            done.already_later += 1
            continue
        done._saw(until)
        if apply is not None:
            apply(row, Lock(mode, until))
            log.info(
                "retention.extended",
                recording_id=row.recording.recording_id,
                retain_until=format_time(until),
            )
        done.extended += 1
        done.recordings.append(row.recording.recording_id)
    return done
