"""Exporting the call history: each settled window's new conversation revisions, written once.

The pass lists `/conversations` for every window it lists recordings for, and hands the answer
here once the window is settled. What is new (a uuid never exported, or one whose content changed:
its next revision) becomes parts (conversations.py). Each part is kept in the checkpoint with the
revisions it holds, in one transaction, before S3 gets it with `If-None-Match`; only then does
the checkpoint forget its bytes. So each `(uuid, revision)` is written exactly once across kills:
a run killed after the write finds the same bytes at the same key, which counts as written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from archiver.conversations import Conversation, Revision, part_day, parts
from archiver.listing import Listed
from archiver.manifest import day_bounds
from archiver.models import Window, utc_now, walk
from archiver.retention import Lock, RetentionPolicy

log = structlog.get_logger(__name__)

PART_TYPE = "application/gzip"


class ConversationListed(Listed, Protocol):
    @property
    def conversations(self) -> list[Conversation]: ...


class ConversationLister(Protocol):
    """listing.WindowLister over `list_conversations`."""

    def leaves(
        self, window: Window, horizon: datetime
    ) -> Iterator[tuple[Window, ConversationListed]]: ...
    def once(self, window: Window, horizon: datetime) -> ConversationListed: ...


class ExportLedger(Protocol):
    def history_cursor(self) -> datetime | None: ...
    def set_history_cursor(self, position: datetime) -> None: ...
    def record_malformed(self, window: Window, reason: str, raw: str) -> None: ...
    def conversation_revisions(self, uuids: Iterable[str]) -> dict[str, tuple[int, str]]: ...
    def add_conversation_part(self, key: str, body: bytes, revisions: Sequence[Any]) -> None: ...
    def unwritten_parts(self) -> list[tuple[str, bytes, int]]: ...
    def part_written(self, key: str) -> None: ...


class PartStore(Protocol):
    def write_once(
        self, key: str, body: bytes, content_type: str, lock: Lock | None = None
    ) -> str | None: ...


class ConversationExporter:
    def __init__(
        self,
        prefix: str,
        ledger: ExportLedger,
        store: PartStore,
        *,
        retention: RetentionPolicy | None = None,
        clock: Callable[[], datetime] = utc_now,
        on_exported: Callable[[int], None] | None = None,
    ) -> None:
        self.prefix = prefix
        self.ledger = ledger
        self.store = store
        self.retention = retention or RetentionPolicy()
        self.clock = clock
        self.on_exported = on_exported or (lambda count: None)

    def keep(self, window: Window, conversations: Iterable[Conversation]) -> int:
        """Record the window's new revisions as parts to write; returns how many there are."""
        latest = {c.uuid: c for c in conversations}  # overlapping calls list some twice
        known = self.ledger.conversation_revisions(latest)
        revisions = []
        for uuid, conversation in sorted(latest.items()):
            prior = known.get(uuid)
            if prior is None:
                revisions.append(Revision(conversation, 1))
            elif prior[1] != conversation.digest:
                revisions.append(Revision(conversation, prior[0] + 1))
        for part in parts(self.prefix, window, revisions, self.clock()):
            self.ledger.add_conversation_part(part.key, part.body, part.revisions)
        return len(revisions)

    def flush(self) -> int:
        """Write every kept part (a killed run's too) once; returns how many were written."""
        written = 0
        for key, body, count in self.ledger.unwritten_parts():
            self.store.write_once(key, body, PART_TYPE, self._lock(key))
            self.ledger.part_written(key)
            self.on_exported(count)
            written += 1
            log.info("conversations.exported", key=key, conversations=count, bytes=len(body))
        return written

    def _lock(self, key: str) -> Lock | None:
        """With retention on, the history of a day is kept as long as its recordings: until the
        day's end (from the part's partition) plus the period."""
        day = part_day(key)
        return None if day is None else self.retention.lock_for(day_bounds(day)[1], self.clock())


class CallHistory:
    """The call history as the pass drives it: list a window (through the same split rule as
    recordings), then keep and write what is new once the window is settled."""

    def __init__(
        self,
        lister: ConversationLister,
        exporter: ConversationExporter,
        ledger: ExportLedger,
    ) -> None:
        self.lister = lister
        self.exporter = exporter
        self.ledger = ledger

    def list_window(self, window: Window, horizon: datetime) -> list[Conversation]:
        """A window's conversations, split as recordings are while the answer looks full."""
        found: list[Conversation] = []
        for leaf, listing in self.lister.leaves(window, horizon):
            found += self._read(leaf, listing)
        return found

    def list_once(self, window: Window, horizon: datetime) -> list[Conversation]:
        """One list call, never split (a hint's: a full answer is left to the sweep)."""
        return self._read(window, self.lister.once(window, horizon))

    def export(self, window: Window, conversations: list[Conversation]) -> int:
        """Keep the settled window's new revisions, then write every kept part."""
        kept = self.exporter.keep(window, conversations)
        self.exporter.flush()
        return kept

    def catch_up(
        self,
        *,
        origin: datetime,
        until: datetime,
        horizon: datetime,
        rescan_from: datetime,
        width: timedelta,
    ) -> int:
        """Export every window from the history's own cursor (`origin` the first time) up to
        `until`, the watermark, moving the cursor past each; then list the lookback's windows
        below the old cursor again, for conversations that changed. Returns the revisions
        exported. What a killed run kept is written first."""
        self.exporter.flush()
        cursor = self.ledger.history_cursor() or origin
        exported = 0
        for window in walk(cursor, until, width):
            exported += self.export(window, self.list_window(window, horizon))
            self.ledger.set_history_cursor(window.end)
        for window in walk(rescan_from, min(cursor, until), width):
            exported += self.export(window, self.list_window(window, horizon))
        return exported

    def _read(self, window: Window, listing: ConversationListed) -> list[Conversation]:
        for reason, raw in listing.malformed:
            log.error("conversation.malformed", window=str(window), reason=reason, entry=raw[:300])
            self.ledger.record_malformed(window, reason, raw)
        return listing.conversations
