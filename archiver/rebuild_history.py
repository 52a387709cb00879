"""What the bucket says of the call history's export, for a lost checkpoint.

The exporter writes a conversation again only when its content changed, as the next revision
(export.py); it knows what it wrote from the checkpoint. A rebuilt checkpoint that forgot it would
have the windows it lists again export every conversation in them once more, as revision 1: a
second `(uuid, 1)`. So `rebuild-state` reads every part back (one GET each, in parallel) and keeps
for each uuid its highest revision and the digest of that revision's content, computed as the
exporter computes it, from the API's object the line holds; and each part, as written.

A part or line that cannot be read is reported, not fatal: the conversations it held are then
unknown, and are exported again if listed again, which the reader's "highest revision per uuid"
view (docs/athena.md) absorbs. A conversation object that itself had a field named like one the
export adds (`revision`, ...) cannot be told apart from it: its digest differs from the
exporter's, and a re-listing writes it once more as the next revision, never as a duplicate.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from archiver.conversations import (
    EXPORT_DIR,
    Exported,
    Revision,
    part_day,
    part_window,
    read_part,
)
from archiver.sink import BucketReader

log = structlog.get_logger(__name__)

MAX_PART_BYTES = 64 * 2**20  # gzip; a part is one window's conversations of one day
BATCH = 64  # parts read at a time: memory holds a batch of bodies, not the whole history


@dataclass
class History:
    """The export's state as its parts show it."""

    parts: dict[str, int] = field(default_factory=dict)  # key -> revisions read from it
    latest: dict[str, Exported] = field(default_factory=dict)  # uuid -> its highest revision
    unreadable: list[str] = field(default_factory=list)  # "key" or "key (line 3: why)"
    last_window: datetime | None = None  # the latest window start a part was written for

    def cursor(self, watermark: datetime) -> datetime | None:
        """Where the export's own cursor goes: the start of the latest window a part was
        written for (windows without conversations write no part), never past the watermark.
        The lost cursor was at or past that window's end (unless a backfill run ahead of it
        wrote the part), so listing again from there misses what it missed no more, and the
        restored revisions keep it from writing anything twice. A cursor left unset would start
        at the rebuilt watermark, later still. None without parts: the pass starts it."""
        if self.last_window is None:
            return None
        return min(self.last_window, watermark)

    def add(self, key: str, revisions: list[Revision]) -> None:
        """Fold one part in: each uuid keeps its highest revision (parts come in any order)."""
        self.parts[key] = len(revisions)
        window = part_window(key)
        if window is not None and (self.last_window is None or window > self.last_window):
            self.last_window = window
        for revision in revisions:
            kept = self.latest.get(revision.conversation.uuid)
            if kept is None or revision.revision > kept.revision:
                self.latest[revision.conversation.uuid] = Exported.of(revision, key)


def read_history(
    reader: BucketReader, prefix: str, pool: ThreadPoolExecutor, now: datetime
) -> History:
    """Read every part under `{prefix}conversations/` back."""
    keys = [
        listed.key
        for listed in reader.list(prefix + EXPORT_DIR)
        if part_day(listed.key) is not None and listed.key.endswith(".jsonl.gz")
    ]
    history = History()
    for start in range(0, len(keys), BATCH):
        batch = keys[start : start + BATCH]
        for key, body in zip(
            batch, pool.map(lambda k: reader.read(k, MAX_PART_BYTES), batch), strict=True
        ):
            fold(history, key, body, now)
    log.info(
        "rebuild.history_read",
        parts=len(history.parts),
        conversations=len(history.latest),
        unreadable=len(history.unreadable),
    )
    return history


def fold(history: History, key: str, body: bytes | None, now: datetime) -> None:
    """One part's body (None: gone since the listing) into `history`, its problems reported."""
    if body is None:
        log.warning(
            "rebuild.part_unreadable", key=key, error="gone between the listing and the read"
        )
        history.unreadable.append(key)
        return
    revisions, problems = read_part(body, now=now)
    for problem in problems:
        log.warning("rebuild.part_unreadable", key=key, error=problem)
        history.unreadable.append(f"{key} ({problem})")
    if revisions or not problems:
        history.add(key, revisions)
