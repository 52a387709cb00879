"""Sealing: after each pass, each UTC day the watermark has left behind gets its manifest.

A day is sealed once its end is at or below `watermark - archive.lookback` (no pass lists it
again), in day order, empty days included (an empty manifest proves "nothing that day"). A
recording archived after its day was sealed (a backfill, a `retry`, a `reconcile`) goes into a
supplement, next in the chain. A day with recordings still pending waits, and so do the days after
it, so the chain follows the calendar as far as the walk allows.

Each manifest is kept in the checkpoint, with its bytes and the recordings it lists marked, in one
transaction, before it is written; S3 then gets it once (`If-None-Match`), under the Object Lock of
the latest retain-until it lists, and only then does the checkpoint forget the bytes. A kill in
between writes the same bytes at the same key next time, which counts as written; other bytes at
the key are an ObjectConflict (exit 1), never overwritten.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Protocol

import structlog

from archiver import manifest
from archiver.manifest import Entry, Link, Manifest
from archiver.models import RecordingRow, SealedManifest, Watermark, utc_now
from archiver.retention import Lock, RetentionPolicy
from archiver.signing import Signer

log = structlog.get_logger(__name__)

MANIFEST_TYPE = "application/x-ndjson"
SIDECAR_TYPE = "text/plain; charset=utf-8"
ONE_DAY = timedelta(days=1)


class SealLedger(Protocol):
    def watermark(self) -> Watermark: ...
    def origin(self) -> datetime | None: ...
    def manifests(self, *, unwritten: bool = False) -> list[SealedManifest]: ...
    def last_manifest(self) -> SealedManifest | None: ...
    def last_sealed_day(self) -> date | None: ...
    def manifest_count(self, day: date) -> int: ...
    def unsealed(self, since: datetime, until: datetime) -> list[RecordingRow]: ...
    def unsealed_days(self, until: datetime) -> list[date]: ...
    def count_pending(
        self, *, until: datetime | None = None, since: datetime | None = None
    ) -> int: ...
    def add_manifest(self, manifest: SealedManifest, recording_ids: Sequence[str]) -> None: ...
    def manifest_written(self, sequence: int) -> None: ...


class ManifestStore(Protocol):
    def write_once(
        self, key: str, body: bytes, content_type: str, lock: Lock | None = None
    ) -> str | None: ...


class Sealer:
    def __init__(
        self,
        prefix: str,
        ledger: SealLedger,
        store: ManifestStore,
        *,
        lookback: timedelta,
        retention: RetentionPolicy | None = None,
        signer: Signer | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.prefix = prefix
        self.ledger = ledger
        self.store = store
        self.lookback = lookback
        self.retention = retention or RetentionPolicy()
        self.signer = signer
        self.clock = clock

    def seal(self) -> list[SealedManifest]:
        """Write what a killed run left unwritten, then seal every day that is due; returns the
        manifests written, in chain order."""
        written = [self._write(kept) for kept in self.ledger.manifests(unwritten=True)]
        position = self.ledger.watermark().position
        if position is None:
            return written
        for day in self._due(position - self.lookback):
            start, end = manifest.day_bounds(day)
            pending = self.ledger.count_pending(since=start, until=end)
            if pending:
                # Sealed now, they would only ever be in a supplement; the days after wait too,
                # so the chain keeps to the calendar.
                log.info("manifest.waiting", day=day.isoformat(), pending=pending)
                break
            composed = self._compose(day)
            if composed is not None:
                written.append(self._write(composed))
        return written

    def _due(self, cutoff: datetime) -> list[date]:
        """Days ending at or before `cutoff` that are unsealed, or have unsealed recordings."""
        last = self.ledger.last_sealed_day()
        origin = self.ledger.origin()
        first = last + ONE_DAY if last is not None else origin.date() if origin else None
        days = set(self.ledger.unsealed_days(cutoff))
        if first is not None:
            day = first
            while manifest.day_bounds(day)[1] <= cutoff:
                days.add(day)
                day += ONE_DAY
        return sorted(d for d in days if manifest.day_bounds(d)[1] <= cutoff)

    def _compose(self, day: date) -> SealedManifest | None:
        """The next manifest for `day` (its own, or a supplement), kept in the checkpoint with
        the recordings it lists; None when the day is sealed and nothing new came since."""
        supplement = self.ledger.manifest_count(day)
        rows = self.ledger.unsealed(*manifest.day_bounds(day))
        if supplement and not rows:
            return None
        last = self.ledger.last_manifest()
        composed = Manifest(
            day=day,
            supplement=supplement,
            sequence=last.sequence + 1 if last else 1,
            previous=Link(last.key, last.sha256) if last else None,
            entries=tuple(_entry(row) for row in rows),
        )
        body = composed.body()
        kept = SealedManifest(
            sequence=composed.sequence,
            day=day,
            supplement=supplement,
            key=manifest.manifest_key(self.prefix, day, supplement),
            sha256=manifest.digest(body),
            count=len(rows),
            body=body,
        )
        self.ledger.add_manifest(kept, [row.recording.recording_id for row in rows])
        return kept

    def _write(self, kept: SealedManifest) -> SealedManifest:
        """Write a kept manifest and its sidecars once, then let the checkpoint forget its bytes."""
        body = kept.body
        if body is None:
            return kept
        parsed = manifest.parse(body)
        lock = self._lock(parsed)
        self.store.write_once(kept.key, body, MANIFEST_TYPE, lock)
        sums = manifest.checksum_file(self.prefix, kept.key, body, parsed.entries)
        self.store.write_once(manifest.checksum_key(kept.key), sums, SIDECAR_TYPE, lock)
        if self.signer is not None:
            signature = self.signer.sign(body)
            self.store.write_once(manifest.signature_key(kept.key), signature, SIDECAR_TYPE, lock)
        self.ledger.manifest_written(kept.sequence)
        log.info(
            "manifest.sealed",
            day=kept.day.isoformat(),
            supplement=kept.supplement,
            sequence=kept.sequence,
            recordings=kept.count,
            key=kept.key,
            sha256=kept.sha256,
            signed=self.signer is not None,
        )
        return SealedManifest(
            kept.sequence, kept.day, kept.supplement, kept.key, kept.sha256, kept.count, None
        )

    def _lock(self, sealed: Manifest) -> Lock | None:
        """The latest retain-until the manifest lists; for one listing none (an empty day, or
        recordings archived unlocked), the lock a call at the day's end would get. None with
        retention off, or when the date has passed (S3 refuses a retain-until in the past)."""
        latest = sealed.latest_retain_until()
        if latest is None:
            return self.retention.lock_for(manifest.day_bounds(sealed.day)[1], self.clock())
        mode = self.retention.mode
        return Lock(mode, latest) if mode is not None and latest > self.clock() else None


def _entry(row: RecordingRow) -> Entry:
    recording = row.recording
    if row.sha256 is None or row.size is None or row.key is None:
        raise ValueError(f"{recording.recording_id} is not archived; it cannot be sealed")
    return Entry(
        id=recording.recording_id,
        key=row.key,
        version_id=row.version_id,
        sha256=row.sha256,
        size=row.size,
        started_at=recording.started_at,
        duration_seconds=recording.duration_seconds,
        audio_seconds=row.audio_seconds,
        retain_until=row.retain_until,
        entry=recording.to_api(),
    )
