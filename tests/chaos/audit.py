"""What is in the bucket, judged against what the simulator served.

Independent of the archiver's own code: keys, metadata and tags are rebuilt here from the
simulator's list entries and SPEC.md, and every body is hashed and compared with the simulator's.
The bucket is versioned, so an object written twice shows as two versions.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from archiver.simulator import SimRecording, Simulator
from archiver.simulator.body import audio_frames
from tests.e2e.harness import Bucket


@dataclass
class Audit:
    expected: int = 0
    archived: int = 0  # expected recordings present once with the right bytes, metadata and tags
    duplicates: int = 0  # a second version of a key, or one recording under two keys
    partial: int = 0  # objects whose bytes, size, metadata or tags are wrong
    lost: int = 0  # expected recordings neither in the bucket nor dead-lettered
    orphans: int = 0  # objects nobody should have written (poison, unknown keys)
    stale_uploads: int = 0  # multipart uploads begun and never completed or aborted
    problems: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, int]:
        return {
            "archived": self.archived,
            "expected": self.expected,
            "duplicates": self.duplicates,
            "partial": self.partial,
            "lost": self.lost,
            "orphans": self.orphans,
            "stale_uploads": self.stale_uploads,
        }


def key_of(prefix: str, recording: SimRecording) -> str:
    return f"{prefix}{recording.started_at:%Y/%m/%d}/{recording.recording_id}.mp3"


def valid_recordings(sim: Simulator, *, until: datetime | None = None) -> list[SimRecording]:
    """The recordings an archiver must archive: listed by now, not poison, started before
    `until` (a pass's horizon) when given."""
    now = datetime.now(UTC)
    return [
        rec
        for rec in sim.recordings()
        if rec.poison is None
        and rec.visible_at <= now
        and (until is None or rec.started_at < until)
    ]


def expected_audio_seconds(recording: SimRecording) -> float:
    """What the served body holds, from how the simulator builds it (whole MPEG-1 frames of
    1152 samples at 44.1 kHz, CBR or VBR behind a Xing frame; a frame cut by the end does not
    count), not from the archiver's walker."""
    frames = audio_frames(recording.recording_id, recording.size, vbr=recording.vbr)
    return frames * 1152 / 44100


def expected_metadata(recording: SimRecording, sha256: str) -> dict[str, str]:
    entry = recording.entry
    audio = expected_audio_seconds(recording)
    duration = entry["durationSeconds"]
    wanted = {
        "recording-id": recording.recording_id,
        "started-at": recording.started_at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "duration-seconds": str(duration),
        "nature": entry["nature"],
        "agent1": entry["agent1"],
        "sha256": sha256,
        "audio-seconds": f"{audio:.1f}",
    }
    if abs(audio - duration) > max(2.0, 0.02 * duration):  # the default audio.check, "warn"
        wanted["audio-mismatch"] = "true"
    for name, key in (
        ("agent2", "agent2"),
        ("cradle-number", "cradleNumber"),
        ("third-party-number", "thirdPartyNumber"),
    ):
        if key in entry:
            wanted[name] = entry[key]
    return wanted


def expected_tags(recording: SimRecording) -> dict[str, str]:
    entry = recording.entry
    wanted = {"nature": entry["nature"], "agent1": entry["agent1"]}
    for name, key in (
        ("cradle-number", "cradleNumber"),
        ("third-party-number", "thirdPartyNumber"),
    ):
        if key in entry:
            wanted[name] = entry[key]
    return wanted


def audit(
    bucket: Bucket,
    sim: Simulator,
    expected: Iterable[SimRecording],
    *,
    prefix: str = "calls/",
    dead_lettered: Iterable[str] = (),
    tolerate: Iterable[str] = (),
) -> Audit:
    """Judge the bucket. `dead_lettered` ids are excused from `lost`; `tolerate` ids may be in
    the bucket or not (late ones, say) but must be right if they are."""
    wanted = {key_of(prefix, rec): rec for rec in expected}
    by_id = {rec.recording_id: rec for rec in sim.recordings()}
    optional = {key_of(prefix, by_id[i]): by_id[i] for i in tolerate if i in by_id}
    excused = set(dead_lettered)
    result = Audit(expected=len(wanted))
    versions = _count_versions(bucket, result)
    # The archiver's own objects beside the recordings: written once each (a second version is
    # still a duplicate above), but not recordings to judge here.
    ours = tuple(prefix + folder for folder in ("manifests/", "audit/", "conversations/"))
    for key in sorted(versions):
        if key not in wanted and key not in optional and not key.startswith(ours):
            result.orphans += 1
            result.problems.append(f"{key} should not be in the bucket")
    judged = {key: rec for key, rec in {**optional, **wanted}.items() if key in versions}
    _judge_all(bucket, sim, judged, set(wanted), result)
    for key, rec in wanted.items():
        if key not in versions and rec.recording_id not in excused:
            result.lost += 1
            result.problems.append(f"{key} is missing and not dead-lettered")
    uploads = bucket.client.list_multipart_uploads(Bucket=bucket.name).get("Uploads", [])
    result.stale_uploads = len(uploads)
    return result


def _count_versions(bucket: Bucket, result: Audit) -> Counter[str]:
    """How many versions each key has; a second one is a duplicate, a delete marker a problem."""
    versions: Counter[str] = Counter()
    pages = bucket.client.get_paginator("list_object_versions").paginate(Bucket=bucket.name)
    for page in pages:
        for version in page.get("Versions", []):
            versions[version["Key"]] += 1
        for marker in page.get("DeleteMarkers", []):
            result.problems.append(f"a delete marker at {marker['Key']}: something deleted it")
    for key, count in versions.items():
        if count > 1:
            result.duplicates += count - 1
            result.problems.append(f"{key} was written {count} times")
    return versions


def _judge_all(
    bucket: Bucket,
    sim: Simulator,
    judged: dict[str, SimRecording],
    wanted: set[str],
    result: Audit,
) -> None:
    """Every object present that should or may be there, judged in parallel: partial when
    anything is wrong, archived when right and wanted; one id under two keys is a duplicate."""
    keys = sorted(judged)
    with ThreadPoolExecutor(max_workers=8) as pool:
        verdicts = list(
            pool.map(lambda key: _judge(bucket.client, bucket.name, key, sim, judged[key]), keys)
        )
    ids_seen: Counter[str] = Counter()
    for key, problems in zip(keys, verdicts, strict=True):
        ids_seen[key.rsplit("/", 1)[-1]] += 1
        if problems:
            result.partial += 1
            result.problems.extend(f"{key}: {p}" for p in problems)
        elif key in wanted:
            result.archived += 1
    for name, count in ids_seen.items():
        if count > 1:
            result.duplicates += count - 1
            result.problems.append(f"{name} is in the bucket under {count} keys")


def _judge(client: Any, bucket: str, key: str, sim: Simulator, rec: SimRecording) -> list[str]:
    problems = []
    got = client.get_object(Bucket=bucket, Key=key)
    digest = hashlib.sha256()
    size = 0
    for chunk in got["Body"].iter_chunks(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    sha256 = sim.body_sha256(rec.recording_id)
    if digest.hexdigest() != sha256:
        problems.append(f"body sha256 {digest.hexdigest()[:12]} is not the served {sha256[:12]}")
    if size != rec.size:
        problems.append(f"{size} bytes, the recording has {rec.size}")
    if got.get("ContentType") != "audio/mpeg":
        problems.append(f"content type {got.get('ContentType')!r}")
    metadata = got.get("Metadata", {})
    wanted = expected_metadata(rec, sha256)
    if metadata != wanted:
        diff = {k: (metadata.get(k), wanted.get(k)) for k in {*metadata, *wanted}}
        problems.append("metadata differs: " + str({k: v for k, v in diff.items() if v[0] != v[1]}))
    tags = client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    tags_found = {t["Key"]: t["Value"] for t in tags}
    if tags_found != expected_tags(rec):
        problems.append(f"tags {tags_found} are not {expected_tags(rec)}")
    return problems
