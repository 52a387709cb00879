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
from typing import Any

from archiver.models import Recording, RecordingRow, format_time


class Selector(StrEnum):
    IDS = "ids"
    NUMBER = "number"
    AGENT = "agent"
    PERIOD = "period"


# How many values each kind of rule holds (ids: any number, at least one).
_VALUES = {Selector.NUMBER: 1, Selector.AGENT: 1, Selector.PERIOD: 2}


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

    def to_record(self) -> dict[str, Any]:
        """The rule as the audit trail keeps it: readable (`selects`) and exact (`selector`,
        `values`), so `rebuild-state` can restore it from the trail without parsing prose."""
        return {
            "selects": self.describe(),
            "reason": self.reason,
            "selector": self.selector.value,
            "values": list(self.values),
        }

    @classmethod
    def from_record(cls, record: Any) -> HoldRule:
        """A rule read back from an audit record; ValueError when it does not hold one."""
        if not isinstance(record, dict):
            raise ValueError("no rule in the record")
        values, reason = record.get("values"), record.get("reason")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError("the rule has no `values` list (written before rules were kept)")
        if not isinstance(reason, str):
            raise ValueError("the rule has no reason")
        rule = cls(Selector(str(record.get("selector"))), tuple(values), reason)
        if len(values) != _VALUES.get(rule.selector, len(values)) or not values:
            raise ValueError(f"a {rule.selector.value} rule with {len(values)} values")
        if rule.selector is Selector.PERIOD:
            start, end = (datetime.fromisoformat(v) for v in values)  # ValueError if not times
            if start.tzinfo is None or end.tzinfo is None or not start < end:
                raise ValueError("the period is not two zoned times, the earlier first")
        return rule

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
