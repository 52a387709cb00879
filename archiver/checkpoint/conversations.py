"""The call history's export: each conversation's latest revision, and the parts written.

A part's bytes are kept, with the revisions it holds recorded, before S3 gets it, so a kill
writes the same bytes again (export.py); `rebuild-state` restores both from the bucket.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from archiver.checkpoint.connection import Connection, from_micros, micros

if TYPE_CHECKING:
    from archiver.conversations import Exported


# A conversation's row moves only forward: a revision no newer than the one kept changes nothing.
_UPSERT = (
    "INSERT INTO conversations (uuid, revision, digest, started_at, recording_ids, part,"
    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uuid) DO UPDATE"
    " SET revision = excluded.revision, digest = excluded.digest,"
    " started_at = excluded.started_at, recording_ids = excluded.recording_ids,"
    " part = excluded.part, updated_at = excluded.updated_at"
    " WHERE excluded.revision > conversations.revision"
)


class Conversations(Connection):
    """The `conversations` and `conversation_parts` tables."""

    def conversation_revisions(self, uuids: Iterable[str]) -> dict[str, tuple[int, str]]:
        """uuid -> (latest revision exported, digest of its content), for those known."""
        found: dict[str, tuple[int, str]] = {}
        wanted = list(dict.fromkeys(uuids))
        for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._query(
                f"SELECT uuid, revision, digest FROM conversations WHERE uuid IN ({marks})",  # noqa: S608
                *chunk,
            )
            found.update({row[0]: (row[1], row[2]) for row in rows})
        return found

    def add_conversation_part(self, key: str, body: bytes, revisions: Sequence[Any]) -> None:
        """Keep a part about to be written and record the revisions it holds, in one
        transaction. `revisions` are `conversations.Revision`s."""
        now = self._now()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO conversation_parts (key, body, revisions, created_at)"
                " VALUES (?, ?, ?, ?)",
                (key, body, len(revisions), now),
            )
            for revision in revisions:
                conversation = revision.conversation
                conn.execute(
                    _UPSERT,
                    (
                        conversation.uuid,
                        revision.revision,
                        conversation.digest,
                        micros(conversation.started_at),
                        json.dumps(list(conversation.recording_ids)),
                        key,
                        now,
                    ),
                )

    def history_cursor(self) -> datetime | None:
        """How far the export has listed windows (its own watermark; None before it starts)."""
        rows = self._query("SELECT value FROM meta WHERE key = 'history_cursor'")
        return from_micros(rows[0][0]) if rows else None

    def set_history_cursor(self, position: datetime) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('history_cursor', ?) ON CONFLICT (key)"
                " DO UPDATE SET value = max(value, excluded.value)",
                (micros(position),),
            )

    def unwritten_parts(self) -> list[tuple[str, bytes, int]]:
        """Parts kept but not yet written: key, bytes and how many revisions they hold."""
        rows = self._query(
            "SELECT key, body, revisions FROM conversation_parts WHERE body IS NOT NULL"
            " ORDER BY created_at"
        )
        return [(row[0], bytes(row[1]), int(row[2])) for row in rows]

    def part_written(self, key: str) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE conversation_parts SET body = NULL, written_at = ? WHERE key = ?"
                " AND body IS NOT NULL",
                (self._now(), key),
            )

    def conversation_count(self) -> int:
        return int(self._query("SELECT count(*) FROM conversations")[0][0])

    def conversations_between(self, since: datetime, until: datetime) -> dict[str, list[str]]:
        """uuid -> the recording ids it names, for conversations started in [since, until)."""
        rows = self._query(
            "SELECT uuid, recording_ids FROM conversations WHERE started_at >= ?"
            " AND started_at < ?",
            micros(since),
            micros(until),
        )
        return {row[0]: json.loads(row[1]) for row in rows}

    def restore_conversations(self, parts: Mapping[str, int], latest: Iterable[Exported]) -> int:
        """Keep the call history's export as `rebuild-state` read it back, in one transaction:
        each part (key -> revisions it holds) as written, and each conversation's highest
        revision, so a re-listed window exports only what changed. Returns how many
        conversations were restored."""
        now = self._now()
        restored = 0
        with self._write() as conn:
            for key, count in parts.items():
                conn.execute(
                    "INSERT OR IGNORE INTO conversation_parts (key, body, revisions, created_at,"
                    " written_at) VALUES (?, NULL, ?, ?, ?)",
                    (key, count, now, now),
                )
            for exported in latest:
                restored += conn.execute(
                    _UPSERT,
                    (
                        exported.uuid,
                        exported.revision,
                        exported.digest,
                        micros(exported.started_at),
                        json.dumps(list(exported.recording_ids)),
                        exported.part,
                        now,
                    ),
                ).rowcount
        return restored
