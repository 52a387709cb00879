"""The manifests that seal each day, and which manifest lists each archived recording.

A manifest's bytes are kept until S3 confirms the write (`manifest_written`), so a kill in
between writes the same bytes again; a recording's `manifest_seq` is the manifest listing it,
NULL while its day (or a supplement) is unsealed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import date, datetime, timedelta

from archiver.checkpoint.connection import (
    EPOCH,
    MICROS_PER_DAY,
    Connection,
    day_start,
    from_micros,
    micros,
)
from archiver.checkpoint.recordings import recording_row
from archiver.models import RecordingRow, SealedManifest


class Manifests(Connection):
    """The manifests table, and the recordings' `manifest_seq`."""

    def manifests(self, *, unwritten: bool = False) -> list[SealedManifest]:
        """Every manifest in chain order (only those whose write is unconfirmed, if asked)."""
        where = " WHERE body IS NOT NULL" if unwritten else ""
        rows = self._query(f"SELECT * FROM manifests{where} ORDER BY sequence")  # noqa: S608
        return [sealed_manifest(row) for row in rows]

    def last_manifest(self) -> SealedManifest | None:
        rows = self._query("SELECT * FROM manifests ORDER BY sequence DESC LIMIT 1")
        return sealed_manifest(rows[0]) if rows else None

    def manifest_count(self, day: date) -> int:
        """How many manifests (the day's own and its supplements) seal `day` so far."""
        sql = "SELECT count(*) FROM manifests WHERE day = ?"
        return int(self._query(sql, micros(day_start(day)))[0][0])

    def last_sealed_day(self) -> date | None:
        """The latest day whose own manifest is written."""
        sql = "SELECT max(day) FROM manifests WHERE supplement = 0 AND body IS NULL"
        value = self._query(sql)[0][0]
        return None if value is None else from_micros(value).date()

    def unsealed(self, since: datetime, until: datetime) -> list[RecordingRow]:
        """Archived recordings in [since, until) that no manifest lists yet, in id order."""
        rows = self._query(
            "SELECT * FROM recordings WHERE state = 'archived' AND manifest_seq IS NULL"
            " AND started_at >= ? AND started_at < ? ORDER BY recording_id",
            micros(since),
            micros(until),
        )
        return [recording_row(row) for row in rows]

    def unsealed_days(self, until: datetime) -> list[date]:
        """The days before `until` with archived recordings no manifest lists yet."""
        rows = self._query(
            "SELECT DISTINCT started_at / ? FROM recordings WHERE state = 'archived'"
            " AND manifest_seq IS NULL AND started_at < ?",
            MICROS_PER_DAY,
            micros(until),
        )
        return sorted((EPOCH + timedelta(days=row[0])).date() for row in rows)

    def add_manifest(self, manifest: SealedManifest, recording_ids: Sequence[str]) -> None:
        """Keep a manifest about to be written, and mark what it lists, in one transaction."""
        if manifest.body is None:
            raise ValueError("a manifest is kept with its bytes until its write is confirmed")
        with self._write() as conn:
            conn.execute(
                "INSERT INTO manifests (sequence, day, supplement, key, sha256, count, body,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    *_columns(manifest),
                    manifest.body,
                    self._now(),
                ),
            )
            for recording_id in recording_ids:
                if not conn.execute(
                    "UPDATE recordings SET manifest_seq = ? WHERE recording_id = ?"
                    " AND state = 'archived' AND manifest_seq IS NULL",
                    (manifest.sequence, recording_id),
                ).rowcount:
                    raise ValueError(f"{recording_id} is not archived and unsealed")

    def manifest_written(self, sequence: int) -> None:
        """S3 holds the manifest: its bytes are no longer needed here."""
        with self._write() as conn:
            conn.execute(
                "UPDATE manifests SET body = NULL, written_at = ? WHERE sequence = ?"
                " AND body IS NOT NULL",
                (self._now(), sequence),
            )

    def restore_manifest(self, manifest: SealedManifest) -> None:
        """Keep a manifest found written in the bucket (`rebuild-state`)."""
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO manifests (sequence, day, supplement, key, sha256, count,"
                " body, created_at, written_at) VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                (
                    *_columns(manifest),
                    self._now(),
                    self._now(),
                ),
            )


def sealed_manifest(row: sqlite3.Row) -> SealedManifest:
    return SealedManifest(
        sequence=row["sequence"],
        day=from_micros(row["day"]).date(),
        supplement=row["supplement"],
        key=row["key"],
        sha256=row["sha256"],
        count=row["count"],
        body=None if row["body"] is None else bytes(row["body"]),
    )


def _columns(manifest: SealedManifest) -> tuple[int, int, int, str, str, int]:
    """sequence, day, supplement, key, sha256 and count, as the manifests table keeps them."""
    return (
        manifest.sequence,
        micros(day_start(manifest.day)),
        manifest.supplement,
        manifest.key,
        manifest.sha256,
        manifest.count,
    )
