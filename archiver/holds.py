"""Legal holds: rules that select recordings, and what S3 must be told about each.

A litigation hold names recordings by id, by a phone number (the Cradle number or the third
party's), by an agent (agent1 or agent2), or by a period of calls. It is kept as a rule in the
checkpoint, not only applied: a recording that matches and is archived later is uploaded with
the hold on. Matching reads the checkpoint's copy of each recording's list entry, so it works
offline and never asks the API.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cached_property

from archiver.models import Recording, RecordingRow, format_time


class Selector(StrEnum):
    IDS = "ids"
    NUMBER = "number"
    AGENT = "agent"
    PERIOD = "period"


@dataclass(frozen=True)
class HoldRule:
    """One hold: what it selects, and why. `values` are ids, one number, one agent, or the
    two ends of the period (ISO 8601)."""

    selector: Selector
    values: tuple[str, ...]
    reason: str

    def matches(self, recording: Recording) -> bool:
        if self.selector is Selector.IDS:
            return recording.recording_id in self.values
        if self.selector is Selector.NUMBER:
            return self.values[0] in (recording.cradle_number, recording.third_party_number)
        if self.selector is Selector.AGENT:
            wanted = self.values[0].lower()
            return any(
                a is not None and a.lower() == wanted for a in (recording.agent1, recording.agent2)
            )
        start, end = self._period
        return start <= recording.started_at < end

    def bounds(self) -> tuple[datetime | None, datetime | None]:
        """The start times a period rule selects from and until; (None, None) for the others."""
        return self._period if self.selector is Selector.PERIOD else (None, None)

    @cached_property
    def _period(self) -> tuple[datetime, datetime]:
        # Parsed once per rule, not once per recording matched against it.
        start, end = (datetime.fromisoformat(v) for v in self.values)
        return start, end

    def describe(self) -> str:
        if self.selector is Selector.PERIOD:
            start, end = self._period
            return f"calls from {format_time(start)} until {format_time(end)}"
        if self.selector is Selector.IDS:
            return f"recordings {', '.join(self.values)}"
        return f"{self.selector.value} {self.values[0]}"


def period_rule(start: datetime, end: datetime, reason: str) -> HoldRule:
    return HoldRule(Selector.PERIOD, (start.isoformat(), end.isoformat()), reason)


def to_change(
    rule: HoldRule, archived: Iterable[RecordingRow], others: Sequence[HoldRule], *, adding: bool
) -> Iterator[RecordingRow]:
    """The archived recordings whose legal hold `hold add` sets or `hold remove` lifts: those
    `rule` matches, less, on removal, those another hold still in force wants held."""
    for row in archived:
        if not rule.matches(row.recording):
            continue
        if not adding and any(other.matches(row.recording) for other in others):
            continue
        yield row
