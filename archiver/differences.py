"""What `reconcile` can find: each kind of difference, and one difference with its explanation.

A kind says once whether it is explained (the archive is as complete as it can be, nothing to
do) or not (exit 3 until it is gone). The kinds are the series of
`cradle_archiver_reconcile_differences{kind}` and the counts `status` shows, so every kind is
listed here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from archiver.models import format_time


class Kind(StrEnum):
    MISSING_IN_CHECKPOINT = "missing_in_checkpoint"
    MISSING_IN_BUCKET = "missing_in_bucket"
    UNKNOWN_IN_BUCKET = "unknown_in_bucket"
    DEAD_LETTERED = "dead_lettered"
    GONE_FROM_API = "gone_from_api"
    # A recording a conversation names that is not archived (and no other difference names).
    CONVERSATION_RECORDING_MISSING = "conversation_recording_missing"

    @property
    def explained(self) -> bool:
        """Nothing more to do: the archive is as complete as it can be."""
        return self in (Kind.DEAD_LETTERED, Kind.GONE_FROM_API)


@dataclass(frozen=True)
class Difference:
    kind: Kind
    key: str
    recording_id: str | None  # None for a key that is no recording's
    started_at: datetime | None
    explanation: str
    conversation: str | None = None  # the uuid of the conversation that names the recording

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "key": self.key,
            "recording_id": self.recording_id,
            "conversation": self.conversation,
            "started_at": format_time(self.started_at) if self.started_at else None,
            "explanation": self.explanation,
        }
