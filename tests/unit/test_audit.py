"""`audit`'s conclusions, over a bucket held in memory: the chain checks (chain.py), the object
checks (audit.py) and what the reports say (audit_report.py)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from archiver import audit_report, manifest
from archiver.audit import Method, Options, Result, audit
from archiver.chain import Mark, SignatureStatus, verify_chain
from archiver.errors import SinkUnavailable
from archiver.manifest import Entry, Link, Manifest
from archiver.models import StoredObject
from archiver.signing import Signer, Verifier, generate
from archiver.sink.connection import Denied
from archiver.sink.reader import ListedObject, ListedVersion

PREFIX = "calls/"
FIRST = date(2026, 3, 1)
NOW = datetime(2026, 4, 1, tzinfo=UTC)


class MemoryBucket:
    """The Reader protocol over dicts: objects with versions, metadata, checksums and locks."""

    bucket = "audited"
    prefix = PREFIX

    def __init__(self) -> None:
        self.objects: dict[str, StoredObject] = {}
        self.bodies: dict[str, bytes] = {}
        self.hidden: dict[tuple[str, str], StoredObject] = {}  # versions behind a delete marker
        self.failing: dict[str, Exception] = {}
        self.history: dict[str, list[ListedVersion]] = {}  # every version and marker, in order
        self.versions_denied = False
        self._versions = 0

    def put(self, key: str, body: bytes, *, checksum: bool = True, **fields: object) -> str:
        self._versions += 1
        sha256 = hashlib.sha256(body).digest()
        values: dict[str, object] = {
            "key": key,
            "size": len(body),
            "sha256": sha256.hex(),
            "recording_id": None,
            "version_id": f"v{self._versions}",
            "checksum_sha256": base64.b64encode(sha256).decode() if checksum else None,
        }
        values.update(fields)
        self.objects[key] = StoredObject(**values)  # type: ignore[arg-type]
        self.bodies[key] = body
        version = str(values["version_id"])
        self.history.setdefault(key, []).append(ListedVersion(key, version, False, False))
        return version

    def delete(self, key: str) -> None:
        stored = self.objects.pop(key)
        assert stored.version_id is not None
        self.hidden[(key, stored.version_id)] = stored
        self._versions += 1
        marker = ListedVersion(key, f"v{self._versions}", False, True)
        self.history.setdefault(key, []).append(marker)

    def head(self, key: str, version_id: str | None = None) -> StoredObject | None:
        if key in self.failing:
            raise self.failing[key]
        if version_id is not None and (key, version_id) in self.hidden:
            return self.hidden[(key, version_id)]
        stored = self.objects.get(key)
        if stored is None or version_id not in (None, stored.version_id):
            return None
        return stored

    def read(self, key: str, limit: int, version_id: str | None = None) -> bytes | None:
        return self.bodies.get(key)

    def digest(self, key: str, version_id: str | None = None) -> tuple[str, int] | None:
        body = self.bodies.get(key)
        return None if body is None else (hashlib.sha256(body).hexdigest(), len(body))

    def versions(self, prefix: str) -> Iterator[ListedVersion]:
        if self.versions_denied:
            raise Denied("read from bucket audited denied (AccessDenied): no ListBucketVersions")
        for key, history in sorted(self.history.items()):
            if key.startswith(prefix):
                for n, version in enumerate(history):
                    yield dataclasses.replace(version, latest=n == len(history) - 1)

    def list(self, prefix: str) -> Iterator[ListedObject]:
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield ListedObject(key, self.objects[key].size, None)


class Archive:
    """A bucket sealed the way seal.py seals it: recordings, then a chain of manifests."""

    def __init__(self, days: int = 4, per_day: int = 2, *, lock: bool = False) -> None:
        self.bucket = MemoryBucket()
        self.lock = lock
        self.previous: Link | None = None
        self.sequence = 0
        for n in range(days):
            day = FIRST + timedelta(days=n)
            self.seal(day, [self.record(day, i) for i in range(per_day)])

    def record(self, day: date, index: int, body: bytes | None = None) -> Entry:
        recording_id = f"{day:%Y%m%d}-{index:04d}"
        key = f"{PREFIX}{day:%Y/%m/%d}/{recording_id}.mp3"
        body = body or f"mp3 of {recording_id}".encode()
        retain = datetime(day.year + 5, day.month, day.day, tzinfo=UTC) if self.lock else None
        lock: dict[str, Any] = (
            {"lock_mode": "GOVERNANCE", "retain_until": retain} if self.lock else {}
        )
        version = self.bucket.put(key, body, **lock)
        return Entry(
            id=recording_id,
            key=key,
            version_id=version,
            sha256=hashlib.sha256(body).hexdigest(),
            size=len(body),
            started_at=datetime(day.year, day.month, day.day, 10, tzinfo=UTC),
            duration_seconds=60.0,
            audio_seconds=60.0,
            retain_until=retain,
        )

    def seal(self, day: date, entries: list[Entry], supplement: int = 0) -> str:
        self.sequence += 1
        sealed = Manifest(day, supplement, self.sequence, self.previous, tuple(entries))
        key = manifest.manifest_key(PREFIX, day, supplement)
        self.write_manifest(key, sealed.body(), entries)
        self.previous = Link(key, manifest.digest(sealed.body()))
        return key

    def write_manifest(self, key: str, body: bytes, entries: list[Entry]) -> None:
        """The manifest, its sidecar and signature, as a consistent attacker would rewrite them."""
        self.bucket.put(key, body)
        sums = manifest.checksum_file(PREFIX, key, body, entries)
        self.bucket.put(manifest.checksum_key(key), sums)
        self.bucket.put(manifest.signature_key(key), SIGNER.sign(body))

    def key(self, n: int) -> str:
        return manifest.manifest_key(PREFIX, FIRST + timedelta(days=n))

    def manifest(self, n: int) -> Manifest:
        return manifest.parse(self.bucket.bodies[self.key(n)])

    def audit(self, **options: Any) -> Result:
        return audit(self.bucket, Options(**options), lambda: NOW)


def _key_files() -> tuple[Path, Path]:
    folder = Path(tempfile.mkdtemp(prefix="audit-keys-"))
    private, public = generate()
    (folder / "private.pem").write_bytes(private)
    (folder / "public.pem").write_bytes(public)
    return folder / "private.pem", folder / "public.pem"


PRIVATE, PUBLIC = _key_files()
SIGNER = Signer.from_file(PRIVATE)


def verifier() -> Verifier:
    return Verifier.from_file(PUBLIC)


def marks(result: Result) -> dict[str, tuple[Mark, str]]:
    """Each problem's key (relative) -> its mark and reasons."""
    return {
        f.key[len(PREFIX) :]: (f.mark, "; ".join(f.reasons))
        for f in result.lines()
        if f.mark is not Mark.MATCH
    }


def rel(key: str) -> str:
    return key[len(PREFIX) :]


# The chain


def test_an_archive_as_sealed_has_no_problem_and_its_chain_is_intact() -> None:
    result = Archive().audit(verifier=verifier())
    assert marks(result) == {}
    assert result.chain.intact
    assert [s.manifest.sequence for s in result.chain.manifests] == [1, 2, 3, 4]
    assert result.chain.signatures is SignatureStatus.VALID
    assert len(result.recordings) == 8
    assert {c.method for c in result.recordings} == {Method.CHECKSUM}
    kinds = {f.key.rsplit(".", 1)[-1] for f in result.chain.findings}
    assert kinds == {"jsonl", "sha256", "sig"}


def test_an_edited_manifest_is_named_by_the_next_link_and_its_own_sidecar() -> None:
    archive = Archive()
    original = archive.manifest(1).entries[0]
    body = archive.bucket.bodies[archive.key(1)].replace(b'"size":', b'"size":1', 1)
    archive.bucket.put(archive.key(1), body)
    found = marks(archive.audit())
    # The recording whose line was edited no longer matches it either.
    edited = archive.manifest(1).entries[0]
    assert found[rel(edited.key)] == (
        Mark.DIFFERS,
        f"size {original.size}, listed {edited.size}",
    )
    assert set(found) == {rel(archive.key(1)), rel(edited.key)}
    mark, why = found[rel(archive.key(1))]
    assert mark is Mark.DIFFERS
    assert f"{rel(archive.key(2))}" in why and "edited" in why
    assert "do not match" in why
    assert PREFIX not in why  # keys in reasons read as the lines print them, relative


def test_the_last_manifest_edited_with_a_matching_sidecar_is_caught_by_its_signature() -> None:
    archive = Archive()
    archive.bucket.versions_denied = True  # what the chain alone shows
    last = archive.manifest(3)
    forged = dataclasses.replace(last, entries=last.entries[:1])
    archive.bucket.put(archive.key(3), forged.body())
    archive.bucket.put(
        manifest.checksum_key(archive.key(3)),
        manifest.checksum_file(PREFIX, archive.key(3), forged.body(), forged.entries),
    )
    assert archive.audit().chain.intact  # no successor, a consistent sidecar: only the key shows it
    found = marks(archive.audit(verifier=verifier()))
    assert found[rel(manifest.signature_key(archive.key(3)))][0] is Mark.DIFFERS
    # The recording it dropped lies in a sealed day's folder, listed nowhere now.
    dropped = last.entries[1].key
    assert found[rel(dropped)][0] is Mark.UNLISTED


def test_a_deleted_manifest_is_named_by_the_gap_it_leaves() -> None:
    archive = Archive()
    for key in (archive.key(1), manifest.checksum_key(archive.key(1))):
        archive.bucket.delete(key)
    archive.bucket.delete(manifest.signature_key(archive.key(1)))
    found = marks(archive.audit())
    mark, why = found[rel(archive.key(1))]
    assert mark is Mark.MISSING
    assert "sequence 2 of the chain" in why and "no manifest for this day" in why
    # Its recordings are still checked by nothing, so they show up as unlisted.
    assert {k for k, (m, _) in found.items() if m is Mark.UNLISTED} == {
        rel(e.key) for e in Archive().manifest(1).entries
    }


def test_a_day_cut_out_of_a_rewritten_chain_is_still_missing() -> None:
    """An attacker who deletes a day and rewrites every later manifest, sequences and links
    consistent, still leaves a hole in the calendar (empty days are sealed too)."""
    archive = Archive(days=0)
    for n in (0, 2, 3):
        day = FIRST + timedelta(days=n)
        archive.seal(day, [archive.record(day, 0)])
    found = marks(archive.audit())
    assert found == {
        rel(archive.key(1)): (
            Mark.MISSING,
            "deleted: no manifest for this day between the first sealed day (2026-03-01) "
            "and the last (2026-03-04); empty days are sealed too",
        )
    }


def test_swapped_links_are_named_on_both_manifests() -> None:
    archive = Archive()
    one, two = archive.manifest(1), archive.manifest(2)
    for n, m in (
        (1, dataclasses.replace(one, previous=two.previous)),
        (2, dataclasses.replace(two, previous=one.previous)),
    ):
        archive.write_manifest(archive.key(n), m.body(), list(m.entries))
    found = marks(archive.audit())
    assert found[rel(archive.key(1))][0] is Mark.DIFFERS
    assert "broken link: previous names" in found[rel(archive.key(1))][1]
    assert "broken link: previous names" in found[rel(archive.key(2))][1]


def test_the_newest_manifests_deleted_whole_are_named_by_their_delete_markers() -> None:
    """Deleting the last manifest with its sidecar and signature leaves a shorter chain that
    holds together; on a versioned bucket the delete markers give it away."""
    archive = Archive()
    last = archive.key(3)
    files = (last, manifest.checksum_key(last), manifest.signature_key(last))
    for key in files:
        archive.bucket.delete(key)
    result = archive.audit()
    assert result.chain.versions_checked
    found = marks(result)
    for key in files:
        assert found[rel(key)] == (Mark.MISSING, "deleted: a delete marker hides 1 version(s)")
    archive.bucket.versions_denied = True
    unversioned = archive.audit()
    assert not unversioned.chain.versions_checked
    assert not any(k.startswith("manifests/") for k in marks(unversioned))


def test_the_last_manifest_rewritten_with_its_sidecar_is_named_by_its_versions() -> None:
    archive = Archive()
    last = archive.manifest(3)
    forged = dataclasses.replace(last, entries=last.entries[:1])
    archive.write_manifest(archive.key(3), forged.body(), list(forged.entries))
    found = marks(archive.audit())
    assert found[rel(archive.key(3))] == (
        Mark.DIFFERS,
        "rewritten: 2 versions of a file written once",
    )


def test_a_sidecar_left_behind_names_its_deleted_manifest() -> None:
    archive = Archive()
    archive.bucket.versions_denied = True  # what the chain alone shows
    archive.bucket.delete(archive.key(3))  # the last one: no successor, no gap in the days
    found = marks(archive.audit())
    assert found[rel(archive.key(3))] == (
        Mark.MISSING,
        "deleted: its signature and .sha256 still there",
    )
    assert found[rel(manifest.checksum_key(archive.key(3)))][0] is Mark.UNLISTED


def test_the_first_manifest_may_not_link_back_and_a_stray_file_is_unlisted() -> None:
    archive = Archive(days=1)
    first = dataclasses.replace(archive.manifest(0), previous=Link("x", "0" * 64))
    archive.write_manifest(archive.key(0), first.body(), list(first.entries))
    archive.bucket.put(f"{PREFIX}manifests/notes.txt", b"hello")
    archive.bucket.put(f"{PREFIX}manifests/2026/03/02.jsonl", b"not json\n")
    found = marks(archive.audit())
    assert found[rel(archive.key(0))][0] is Mark.DIFFERS
    assert found["manifests/notes.txt"][0] is Mark.UNLISTED
    assert found["manifests/2026/03/02.jsonl"][0] is Mark.DIFFERS
    assert "not a manifest: line 1" in found["manifests/2026/03/02.jsonl"][1]


def test_missing_and_bad_signatures_are_named_only_with_a_public_key() -> None:
    archive = Archive(days=2)
    archive.bucket.versions_denied = True  # what the chain alone shows
    archive.bucket.delete(manifest.signature_key(archive.key(0)))
    archive.bucket.put(manifest.signature_key(archive.key(1)), b"bm90IGEgc2lnbmF0dXJl\n")
    assert marks(archive.audit()) == {}
    found = marks(archive.audit(verifier=verifier()))
    assert found[rel(manifest.signature_key(archive.key(0)))][0] is Mark.MISSING
    assert found[rel(manifest.signature_key(archive.key(1)))][0] is Mark.DIFFERS
    assert archive.audit(verifier=verifier()).chain.signatures is SignatureStatus.BROKEN


def test_no_manifest_at_all_is_an_error_never_a_clean_audit() -> None:
    chain = verify_chain(PREFIX, {}, None)
    assert chain.days == () and chain.head is None and not chain.intact
    assert [(f.key, f.mark) for f in chain.findings] == [(f"{PREFIX}manifests/", Mark.ERROR)]
    assert "not the archive's prefix" in chain.findings[0].reasons[0]


# The recordings


def test_a_replaced_recording_is_named_by_its_version_and_checksum() -> None:
    archive = Archive()
    key = archive.manifest(0).entries[0].key
    stored = archive.bucket.objects[key]
    archive.bucket.put(key, b"X" * stored.size, sha256=stored.sha256)
    mark, why = marks(archive.audit())[rel(key)]
    assert mark is Mark.DIFFERS
    assert why.startswith("replaced: the current version is v")
    assert "S3's ChecksumSHA256" in why and "sha256 metadata" not in why


def test_a_body_without_a_whole_checksum_is_read_and_the_report_says_so() -> None:
    archive = Archive(days=1)
    entry = archive.manifest(0).entries[0]
    stored = archive.bucket.objects[entry.key]
    archive.bucket.objects[entry.key] = dataclasses.replace(stored, checksum_sha256="abc=-3")
    result = archive.audit()
    assert marks(result) == {}
    assert {c.finding.key: c.method for c in result.recordings}[entry.key] == Method.READ
    # The same, with other bytes behind the unchanged HEAD: the read shows it.
    archive.bucket.bodies[entry.key] = b"Y" * stored.size
    assert "body read: sha256" in marks(archive.audit())[rel(entry.key)][1]


def test_missing_deleted_and_locked_short_recordings() -> None:
    archive = Archive(lock=True)
    one, two, three = (archive.manifest(n).entries[0] for n in range(3))
    archive.bucket.delete(one.key)
    del archive.bucket.objects[two.key]
    archive.bucket.objects[three.key] = dataclasses.replace(
        archive.bucket.objects[three.key], retain_until=NOW
    )
    found = marks(archive.audit())
    assert found[rel(one.key)] == (
        Mark.MISSING,
        f"deleted: a delete marker hides the listed version {one.version_id}",
    )
    assert found[rel(two.key)] == (Mark.MISSING, "missing: no object at the key")
    assert found[rel(three.key)][1].startswith("locked short: retain-until 2026-04-01")
    retention = audit_report.data(archive.audit())["retention"]
    assert retention["modes"] == {"GOVERNANCE": 6}
    assert retention["locked_short"] == 1
    assert retention["earliest_retain_until"] == "2026-04-01T00:00:00.000Z"


def test_a_later_listing_supersedes_an_earlier_one() -> None:
    archive = Archive(days=2)
    first = archive.manifest(0).entries[0]
    again = archive.record(FIRST, 0, body=b"archived again after a requeue")
    archive.seal(FIRST, [again], supplement=1)
    result = archive.audit()
    assert marks(result) == {}
    assert [c.size for c in result.recordings if c.finding.key == first.key] == [
        len(b"archived again after a requeue")
    ]


def test_strays_in_sealed_days_only_and_the_scope_of_from_and_until() -> None:
    archive = Archive()
    archive.bucket.put(f"{PREFIX}2026/03/02/stray.mp3", b"stray")
    archive.bucket.put(f"{PREFIX}2026/03/09/not-sealed-yet.mp3", b"later")
    assert set(marks(archive.audit())) == {"2026/03/02/stray.mp3"}
    scoped = archive.audit(since=date(2026, 3, 3), until=date(2026, 3, 3))
    assert marks(scoped) == {}
    assert {c.day for c in scoped.recordings} == {date(2026, 3, 3)}
    assert scoped.days == (date(2026, 3, 3),)


def test_read_data_draws_a_seeded_share_and_the_same_seed_draws_the_same() -> None:
    archive = Archive(days=5, per_day=4)

    def read(seed: int) -> set[str]:
        result = archive.audit(read_percent=25.0, seed=seed)
        return {c.finding.key for c in result.recordings if c.method == Method.READ}

    assert len(read(7)) == 5
    assert read(7) == read(7)
    assert read(7) != read(8)
    every = archive.audit(read_percent=100.0)
    assert {c.method for c in every.recordings} == {Method.READ}


def _denied(key: str, version_id: str | None = None) -> tuple[str, int] | None:
    raise Denied("denied: no s3:GetObjectVersion")


def test_a_denied_head_is_an_error_line_and_s3_gone_stops_the_audit() -> None:
    archive = Archive(days=1)
    key = archive.manifest(0).entries[0].key
    archive.bucket.failing[key] = Denied("read from bucket audited denied (AccessDenied): no")
    assert marks(archive.audit())[rel(key)][0] is Mark.ERROR
    # Denied later, reading the body (no GetObjectVersion, say): the same `!` line.
    del archive.bucket.failing[key]
    archive.bucket.objects[key] = dataclasses.replace(
        archive.bucket.objects[key], checksum_sha256=None
    )
    archive.bucket.digest = _denied  # type: ignore[method-assign]
    assert marks(archive.audit())[rel(key)] == (Mark.ERROR, "denied: no s3:GetObjectVersion")
    archive.bucket.failing[key] = SinkUnavailable("S3 at http://x unreachable")
    with pytest.raises(SinkUnavailable):
        archive.audit()


# The reports


def test_text_lines_end_with_one_summary_line() -> None:
    archive = Archive(days=2)
    archive.bucket.put(f"{PREFIX}2026/03/01/stray.mp3", b"stray")
    lines = audit_report.text_lines(archive.audit())
    assert "+ 2026/03/01/stray.mp3  in the bucket, in no manifest" in lines
    assert "= manifests/2026/03/01.jsonl" in lines
    assert lines[-1].startswith("audit FAILED: 9 objects: 8 matching, 0 missing, 1 unlisted")


def test_the_reports_escape_what_came_from_the_bucket() -> None:
    archive = Archive(days=1)
    hostile = f"{PREFIX}2026/03/01/<script>alert(1)</script>.mp3"
    archive.bucket.put(hostile, b"x")
    result = archive.audit()
    page = audit_report.render_html(audit_report.data(result))
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.mp3" in page
    assert '<table id="days">' in page and '<table id="problems">' in page
    assert "src=" not in page and "<link" not in page  # no external asset, no script
    data = json.loads(json.dumps(audit_report.data(result)))
    assert data["problems"] == [
        {"mark": "+", "key": rel(hostile), "reasons": ["in the bucket, in no manifest"]}
    ]
    assert data["days"] == [
        {"day": "2026-03-01", "recordings": 2, "bytes": 40, "verified": 2, "problems": 1}
    ]
