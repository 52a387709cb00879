"""`audit`: what a third party with read-only access can prove about the archive.

It trusts the bucket's manifests only as far as the chain holds (`chain.py`), then holds every
listed recording up against S3 itself. S3's own `ChecksumSHA256`, asked for on each HEAD,
proves the stored bytes without reading them: S3 computed it from the body at upload and checks
it, so 10,000 recordings cost 10,000 HEADs, run in parallel on a bounded pool, not 10,000
downloads. Where S3 has no whole-body checksum (a multipart upload's composite `...-N`, or a
store that keeps none) the body is read and hashed instead, and the report says so.

Read-only by construction: the reader it is handed has no method that writes.
"""

from __future__ import annotations

import base64
import binascii
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Protocol, TypeVar

import structlog

from archiver.chain import Chain, Finding, Mark, verify_chain
from archiver.errors import SinkUnavailable
from archiver.manifest import MANIFEST_DIR, MAX_MANIFEST_BYTES, Entry
from archiver.models import StoredObject
from archiver.signing import Verifier
from archiver.sink.connection import Denied
from archiver.sink.reader import ListedObject, ListedVersion

log = structlog.get_logger("archiver.audit")
WORKERS = 16  # HEADs in flight; S3 serves thousands a second per prefix, a local store fewer

T = TypeVar("T")
R = TypeVar("R")


class Reader(Protocol):
    """What `audit` needs of the bucket (BucketReader has it): reads, never writes."""

    @property
    def bucket(self) -> str: ...

    @property
    def prefix(self) -> str: ...

    def head(self, key: str, version_id: str | None = None) -> StoredObject | None: ...

    def read(self, key: str, limit: int, version_id: str | None = None) -> bytes | None: ...

    def digest(self, key: str, version_id: str | None = None) -> tuple[str, int] | None: ...

    def list(self, prefix: str) -> Iterator[ListedObject]: ...

    def versions(self, prefix: str) -> Iterator[ListedVersion]: ...


@dataclass(frozen=True)
class Options:
    since: date | None = None
    until: date | None = None
    read_percent: float = 0.0  # --read-data: 100 reads every body, less a seeded sample
    seed: int = 0
    verifier: Verifier | None = None
    workers: int = WORKERS

    def covers(self, day: date) -> bool:
        return (self.since is None or day >= self.since) and (
            self.until is None or day <= self.until
        )


class Method(StrEnum):
    """How a recording's bytes were proven."""

    CHECKSUM = "checksum"  # S3's ChecksumSHA256 of the whole body
    READ = "read"  # downloaded and hashed (--read-data, or no whole-body checksum)
    NONE = "none"  # not proven: missing, or the HEAD already showed a difference


@dataclass(frozen=True)
class Checked:
    """One listed recording held up against S3."""

    finding: Finding
    day: date
    size: int
    method: Method = Method.NONE
    lock_mode: str | None = None
    retain_until: datetime | None = None
    locked_short: bool = False


@dataclass(frozen=True)
class Result:
    """Everything `audit` found; `report.py` renders it."""

    bucket: str
    prefix: str
    options: Options
    started_at: datetime
    finished_at: datetime
    chain: Chain
    recordings: tuple[Checked, ...]
    unlisted: tuple[Finding, ...]
    days: tuple[date, ...]  # the sealed days in scope
    sampled: int = 0  # bodies chosen for --read-data
    endpoint: str = ""  # where the bucket was read, for the report

    def lines(self) -> list[Finding]:
        """Every object's finding: the chain's, then the recordings' and strays' by key."""
        objects = [c.finding for c in self.recordings] + list(self.unlisted)
        return list(self.chain.findings) + sorted(objects, key=lambda f: f.key)

    @property
    def problems(self) -> int:
        return sum(1 for f in self.lines() if f.mark is not Mark.MATCH)


def audit(
    reader: Reader,
    options: Options,
    clock: Callable[[], datetime],
    endpoint: str = "",
) -> Result:
    """Check the chain, then every listed recording in scope, then look for strays."""
    started = clock()
    prefix = reader.prefix
    with ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="audit") as pool:
        chain = verify_chain(
            prefix, _manifest_files(reader, pool), options.verifier, _manifest_versions(reader)
        )
        listed = _latest_listings(chain, options)
        sample = _sample(sorted(listed), options)
        checked = _parallel(
            pool, lambda e: check_recording(reader, e[0], e[1], e[0].key in sample), listed.values()
        )
        days = tuple(d for d in chain.days if options.covers(d))
        unlisted = _unlisted(reader, pool, prefix, days, _all_keys(chain))
    result = Result(
        reader.bucket,
        prefix,
        options,
        started,
        clock(),
        chain,
        tuple(checked),
        unlisted,
        days,
        len(sample),
        endpoint,
    )
    log.info(
        "audit.finished",
        manifests=len(chain.manifests),
        recordings=len(checked),
        problems=result.problems,
        seconds=round((result.finished_at - started).total_seconds(), 3),
    )
    return result


def _manifest_files(reader: Reader, pool: ThreadPoolExecutor) -> dict[str, bytes]:
    keys = [o.key for o in reader.list(reader.prefix + MANIFEST_DIR)]
    bodies = _parallel(pool, lambda key: reader.read(key, MAX_MANIFEST_BYTES), keys)
    # A key listed, then gone before its read, is as good as never listed.
    return {key: body for key, body in zip(keys, bodies, strict=True) if body is not None}


def _manifest_versions(reader: Reader) -> list[ListedVersion] | None:
    """The manifest files' versions, or None when the credentials may not list versions (the
    chain is checked all the same; the report says versions were not)."""
    try:
        return list(reader.versions(reader.prefix + MANIFEST_DIR))
    except Denied as exc:
        log.warning("audit.versions_not_listed", error=str(exc))
        return None


def _latest_listings(chain: Chain, options: Options) -> dict[str, tuple[Entry, date]]:
    """key -> (entry, day) for every recording in scope; a later listing of the same id (a
    supplement after a requeue) supersedes an earlier one."""
    by_id: dict[str, tuple[Entry, date]] = {}
    for sealed in chain.manifests:  # in sequence order: later wins
        for e in sealed.manifest.entries:
            by_id[e.id] = (e, sealed.manifest.day)
    return {e.key: (e, day) for e, day in by_id.values() if options.covers(day)}


def _all_keys(chain: Chain) -> set[str]:
    return {e.key for s in chain.manifests for e in s.manifest.entries}


def _sample(keys: Sequence[str], options: Options) -> frozenset[str]:
    """The bodies --read-data reads: all, or a share drawn with the printed seed (the same
    seed over the same listing draws the same keys)."""
    if options.read_percent >= 100:
        return frozenset(keys)
    count = round(len(keys) * options.read_percent / 100)
    if options.read_percent > 0:
        count = max(count, 1) if keys else 0
    return frozenset(random.Random(options.seed).sample(list(keys), count))


def check_recording(reader: Reader, entry: Entry, day: date, read_body: bool) -> Checked:
    """One listed recording: present at its version, its size, sums, lock; bytes when asked.
    A request denied for this object (a permission the auditor lacks) is its `!` line; S3
    unreachable goes up and ends the audit."""
    try:
        return _check(reader, entry, day, read_body)
    except Denied as exc:
        return Checked(Finding(entry.key, Mark.ERROR, (str(exc),)), day, entry.size)


def _check(reader: Reader, entry: Entry, day: date, read_body: bool) -> Checked:
    stored = reader.head(entry.key)
    if stored is None:
        return Checked(Finding(entry.key, Mark.MISSING, (_why_missing(reader, entry),)), day, 0)
    reasons = _differences(entry, stored)
    short = _locked_short(entry, stored)
    if short:
        reasons.append(short)
    method = Method.NONE
    if not reasons:
        method, reasons = _prove_bytes(reader, entry, stored, read_body)
    mark = Mark.DIFFERS if reasons else Mark.MATCH
    return Checked(
        Finding(entry.key, mark, tuple(reasons)),
        day,
        stored.size,
        method,
        stored.lock_mode,
        stored.retain_until,
        bool(short),
    )


def _why_missing(reader: Reader, entry: Entry) -> str:
    if entry.version_id and reader.head(entry.key, entry.version_id) is not None:
        return f"deleted: a delete marker hides the listed version {entry.version_id}"
    return "missing: no object at the key"


def _differences(entry: Entry, stored: StoredObject) -> list[str]:
    reasons = []
    if entry.version_id and stored.version_id != entry.version_id:
        reasons.append(
            f"replaced: the current version is {stored.version_id}, "
            f"the manifest lists {entry.version_id}"
        )
    if stored.size != entry.size:
        reasons.append(f"size {stored.size}, listed {entry.size}")
    if stored.sha256 != entry.sha256:
        reasons.append(f"sha256 metadata {_short(stored.sha256)}, listed {_short(entry.sha256)}")
    checksum = _whole_checksum(stored.checksum_sha256)
    if checksum is not None and checksum != entry.sha256:
        reasons.append(f"S3's ChecksumSHA256 {_short(checksum)}, listed {_short(entry.sha256)}")
    return reasons


def _locked_short(entry: Entry, stored: StoredObject) -> str:
    if entry.retain_until is None:
        return ""
    if stored.lock_mode is None or stored.retain_until is None:
        return f"not locked; listed retain-until {entry.retain_until:%Y-%m-%d}"
    if stored.retain_until < entry.retain_until:
        return (
            f"locked short: retain-until {stored.retain_until:%Y-%m-%d}, "
            f"listed {entry.retain_until:%Y-%m-%d}"
        )
    return ""


def _prove_bytes(
    reader: Reader, entry: Entry, stored: StoredObject, read_body: bool
) -> tuple[Method, list[str]]:
    """The body proven by S3's whole-body checksum, or read and hashed (--read-data, or when
    S3 has none: a multipart composite or a store without checksums)."""
    if not read_body and _whole_checksum(stored.checksum_sha256) is not None:
        return Method.CHECKSUM, []
    found = reader.digest(entry.key, stored.version_id)
    if found is None:
        return Method.READ, ["missing: gone while it was read"]
    sha256, size = found
    if (sha256, size) != (entry.sha256, entry.size):
        return Method.READ, [f"body read: sha256 {_short(sha256)}, {size} bytes; listed otherwise"]
    return Method.READ, []


def _whole_checksum(checksum: str | None) -> str | None:
    """S3's ChecksumSHA256 as hex, or None when it is absent or a multipart composite."""
    if not checksum or "-" in checksum:
        return None
    try:
        return base64.b64decode(checksum, validate=True).hex()
    except (binascii.Error, ValueError):
        return None


def _unlisted(
    reader: Reader,
    pool: ThreadPoolExecutor,
    prefix: str,
    days: Sequence[date],
    listed: set[str],
) -> tuple[Finding, ...]:
    """Objects in a sealed day's folder that no manifest lists."""
    folders = _parallel(pool, lambda day: list(reader.list(f"{prefix}{day:%Y/%m/%d}/")), days)
    return tuple(
        Finding(o.key, Mark.UNLISTED, ("in the bucket, in no manifest",))
        for objects in folders
        for o in objects
        if o.key not in listed
    )


def _parallel(pool: ThreadPoolExecutor, work: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """`work` over `items` on the pool, results in order; the first SinkUnavailable (S3 gone,
    not one object denied) cancels what has not started and goes up."""
    futures = [pool.submit(work, item) for item in items]
    try:
        return [f.result() for f in futures]
    except SinkUnavailable:
        for f in futures:
            f.cancel()
        raise


def _short(value: str | None) -> str:
    return f"{value[:12]}..." if value else "none"
