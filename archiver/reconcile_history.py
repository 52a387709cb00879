"""`reconcile`'s check of the call history: every recording a conversation names is archived.

The recordings list and the conversations list are two answers about the same calls. A
recording the API lists late, or lists with an entry we cannot read, or not at all, is missed by
the recordings' own comparisons; the conversation that names it still says it exists. So for
each day every recording id a conversation names must be archived in the checkpoint (the
recordings' comparisons then hold the checkpoint against the bucket).

Which conversations: those the API lists for the day now, listed as the pass lists them (the
same WindowLister, so the same overlap, splitting and rate budget), and those the checkpoint
exported for the day (one the API no longer lists still named its recordings when it did). A
conversation with no recording (missed, voicemail) is normal, not a difference. A recording
that another difference already names (queued as `missing_in_checkpoint`, requeued as
`missing_in_bucket`, `dead_lettered` in the period) is not named twice, and one left unarchived
by `retention.expired = "skip"` is as the operator asked.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog

from archiver.config import ArchiveConfig
from archiver.conversations import Conversation
from archiver.differences import Difference, Kind
from archiver.export import ConversationListed
from archiver.layout import object_key
from archiver.listing import WindowLister
from archiver.models import RecordingRow, RecordingState, Window, format_time, walk

log = structlog.get_logger(__name__)


class HistorySource(Protocol):
    """The Cradle API's conversations call."""

    def list_conversations(
        self, window: Window, listed_from: datetime, listed_until: datetime
    ) -> ConversationListed: ...


class HistoryLedger(Protocol):
    def get(self, recording_id: str) -> RecordingRow | None: ...
    def conversations_between(self, since: datetime, until: datetime) -> dict[str, list[str]]: ...
    def record_malformed(self, window: Window, reason: str, raw: str) -> None: ...


@dataclass(frozen=True)
class Named:
    """A recording id as a conversation names it."""

    conversation: str  # uuid
    started_at: datetime | None  # the conversation's; None when only the checkpoint has it
    recording_id: str


class HistoryCheck:
    def __init__(
        self,
        source: HistorySource,
        ledger: HistoryLedger,
        config: ArchiveConfig,
        check_stop: Callable[[], None],
        *,
        prefix: str,
    ) -> None:
        self.ledger = ledger
        self.config = config
        self.prefix = prefix
        self.lister = WindowLister(source.list_conversations, config, check_stop)

    def differences(
        self, day: Window, horizon: datetime, period: Window, named_already: Collection[str]
    ) -> tuple[int, list[Difference]]:
        """The day's conversations (how many) and each recording they name that is not
        archived; `named_already`: recording ids other differences of the day name."""
        conversations, named = self._named(day, horizon)
        differences = []
        for name in named:
            if name.recording_id in named_already:
                continue
            difference = self._unarchived(name, day, period)
            if difference is not None:
                differences.append(difference)
        return conversations, differences

    def _named(self, day: Window, horizon: datetime) -> tuple[int, list[Named]]:
        """Every (conversation, recording id) of the day, from the API and the checkpoint, in
        conversation then recording order; and how many conversations there are."""
        started: dict[str, datetime | None] = {}
        ids: dict[str, set[str]] = {}
        for uuid, recording_ids in self.ledger.conversations_between(day.start, day.end).items():
            started[uuid] = None
            ids[uuid] = set(recording_ids)
        for conversation in self._list(day, horizon):
            started[conversation.uuid] = conversation.started_at
            ids.setdefault(conversation.uuid, set()).update(conversation.recording_ids)
        named = [
            Named(uuid, started[uuid], recording_id)
            for uuid in sorted(ids)
            for recording_id in sorted(ids[uuid])
        ]
        return len(ids), named

    def _list(self, day: Window, horizon: datetime) -> list[Conversation]:
        found: list[Conversation] = []
        for window in walk(day.start, day.end, self.config.window):
            for leaf, listing in self.lister.leaves(window, horizon):
                for reason, raw in listing.malformed:
                    log.error(
                        "conversation.malformed", window=str(leaf), reason=reason, entry=raw[:300]
                    )
                    self.ledger.record_malformed(leaf, reason, raw)
                found += [c for c in listing.conversations if day.start <= c.started_at < day.end]
        return found

    def _unarchived(self, name: Named, day: Window, period: Window) -> Difference | None:
        row = self.ledger.get(name.recording_id)
        if row is None:
            return self._difference(
                name,
                # Where it would be, were it dated like its conversation (as it nearly always is).
                f"{self.prefix}{(name.started_at or day.start):%Y/%m/%d}/{name.recording_id}.mp3",
                None,
                "but no list of recordings ever gave it (the checkpoint does not know it): the"
                " API names a recording it does not list (not processed yet, deleted, or its"
                " list entry unreadable: see `status` for malformed entries)",
            )
        recording = row.recording
        key = row.key or object_key(self.prefix, recording)
        if row.state in (RecordingState.ARCHIVED, RecordingState.EXPIRED):
            return None
        if row.state is RecordingState.FAILED:
            if period.start <= recording.started_at < period.end:
                return None  # the period's dead letters are reported as such
            return self._difference(
                name,
                key,
                recording.started_at,
                f"but it is dead-lettered after {row.attempts} attempt(s): {row.reason}; `retry`"
                " puts it back to pending",
            )
        return self._difference(
            name,
            key,
            recording.started_at,
            "but it is still pending (listed, not archived yet): the next pass archives it",
        )

    def _difference(
        self, name: Named, key: str, started_at: datetime | None, why: str
    ) -> Difference:
        log.warning(
            "reconcile.conversation_recording_missing",
            conversation=name.conversation,
            recording_id=name.recording_id,
            key=key,
        )
        when = f" (started {format_time(name.started_at)})" if name.started_at else ""
        return Difference(
            Kind.CONVERSATION_RECORDING_MISSING,
            key,
            name.recording_id,
            started_at,
            f"conversation {name.conversation}{when} names this recording, {why}",
            conversation=name.conversation,
        )
