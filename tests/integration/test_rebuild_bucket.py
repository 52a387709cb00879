"""`rebuild` and `ensure_checkpoint` against moto's S3 over HTTP, the bucket built by hand: manifests
with a supplement, objects no manifest lists, a stray, a listed object gone, the audit trail's
holds (one written before rules were kept), the call history's parts, and what a missing
checkpoint meets at start."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from archiver import conversations, layout, manifest, trail
from archiver.checkpoint import Checkpoint
from archiver.config import parse_config
from archiver.conversations import Conversation, Revision
from archiver.errors import UsageError
from archiver.holds import HoldRule, Selector
from archiver.models import Recording, RecordingState, Window
from archiver.rebuild import ensure_checkpoint, rebuild
from tests.builders import recording

PREFIX = "calls/"
NOW = datetime(2026, 1, 10, 12, tzinfo=UTC)
DAY1 = datetime(2022, 6, 1, tzinfo=UTC)
DAY3 = DAY1 + timedelta(days=2)


def uid(n: int) -> str:
    return f"{n:08x}-8f7d-4c2a-9e1b-5d4f3a2b1c0d"


class Archive:
    """A bucket filled the way the archiver fills it."""

    def __init__(self, endpoint: str, tmp_path: Path, rebuild_mode: str = "refuse") -> None:
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.bucket = f"rebuild-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=self.bucket)
        self.config = parse_config(
            {
                "cradle": {"base_url": "http://sim.test"},
                "s3": {"bucket": self.bucket, "endpoint_url": endpoint, "prefix": PREFIX},
                "archive": {"lookback": "6h"},
                "state": {"path": str(tmp_path / "state.db"), "rebuild": rebuild_mode},
            },
            "test.toml",
            {},
            require_credentials=False,
        )
        self.sequence = 0
        self.previous: manifest.Link | None = None

    def put_recording(self, rec: Recording, body: bytes = b"ID3 body") -> manifest.Entry:
        sha = hashlib.sha256(body).hexdigest()
        key = layout.object_key(PREFIX, rec)
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=body, Metadata=layout.object_metadata(rec, sha)
        )
        return manifest.Entry(
            id=rec.recording_id,
            key=key,
            version_id=None,
            sha256=sha,
            size=len(body),
            started_at=rec.started_at,
            duration_seconds=rec.duration_seconds,
            audio_seconds=None,
            retain_until=None,
            entry=rec.to_api(),
        )

    def seal(self, day: datetime, supplement: int, *entries: manifest.Entry) -> None:
        self.sequence += 1
        sealed = manifest.Manifest(day.date(), supplement, self.sequence, self.previous, entries)
        key = manifest.manifest_key(PREFIX, day.date(), supplement)
        body = sealed.body()
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
        self.client.put_object(Bucket=self.bucket, Key=manifest.checksum_key(key), Body=b"-")
        self.previous = manifest.Link(key, manifest.digest(body))

    def hold(self, at: datetime, action: str, rule: dict[str, Any]) -> None:
        done = trail.Action(action, ["hold"], at, at, rule=rule)
        key = trail.key_for(PREFIX, done)
        self.client.put_object(Bucket=self.bucket, Key=key, Body=trail.body_of(done))

    def state(self) -> Path:
        return self.config.state.path


def started(day: datetime, hours: int, n: int, **fields: str) -> Recording:
    at = (day + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return recording(uid(n), base_url="http://sim.test", startedAt=at, **fields)


@pytest.fixture
def archive(moto_server: str, tmp_path: Path) -> Archive:
    return Archive(moto_server, tmp_path)


def fill(archive: Archive) -> dict[str, Any]:
    """Day 1 sealed with a supplement that lists one recording again (its object replaced by
    a second version), day 2 sealed with a listed object deleted and a line without its list
    entry, day 3 unsealed; a stray."""
    a, b = started(DAY1, 1, 1), started(DAY1, 2, 2, agent1="Carol King")
    first_a = archive.put_recording(a, b"ID3 first")
    archive.seal(DAY1, 0, first_a, archive.put_recording(b))
    archive.seal(DAY1, 1, archive.put_recording(a, b"ID3 again"))
    gone = started(DAY1 + timedelta(days=1), 5, 3)
    # A line whose list entry is unusable: its object is read back by a HEAD instead.
    odd = replace(archive.put_recording(started(DAY1 + timedelta(days=1), 6, 6)), entry={})
    archive.seal(DAY1 + timedelta(days=1), 0, archive.put_recording(gone), odd)
    archive.client.delete_object(Bucket=archive.bucket, Key=layout.object_key(PREFIX, gone))
    late = started(DAY3, 20, 4, agent1="Zoë O'Neill")
    archive.put_recording(late)
    stray = f"{PREFIX}2022/06/03/{uid(5)}.mp3"
    archive.client.put_object(Bucket=archive.bucket, Key=stray, Body=b"not ours")
    kept = HoldRule(Selector.AGENT, ("carol king",), "case 1")
    lifted = HoldRule(Selector.NUMBER, ("+4930123456",), "case 2")
    archive.hold(NOW, "hold-add", kept.to_record())
    archive.hold(NOW + timedelta(seconds=1), "hold-add", lifted.to_record())
    archive.hold(NOW + timedelta(seconds=2), "hold-remove", lifted.to_record())
    archive.hold(NOW + timedelta(seconds=3), "hold-add", {"selects": "agent x", "reason": "old"})
    return {"a": a, "late": late, "stray": stray, "gone": gone, "kept": kept}


def test_rebuild_restores_manifests_objects_and_holds_and_names_what_it_could_not(
    archive: Archive,
) -> None:
    made = fill(archive)

    report = rebuild(archive.config, clock=lambda: NOW, workers=4)

    assert (report.from_manifests, report.from_objects, report.manifests) == (3, 2, 3)
    assert report.last_sealed_day == (DAY1 + timedelta(days=1)).date()
    assert report.skipped == (made["stray"],)
    assert report.missing == (layout.object_key(PREFIX, made["gone"]),)
    assert len(report.unreadable) == 1 and report.unreadable[0].endswith("-hold-add.json")
    assert report.holds == (made["kept"],)
    audit = archive.client.get_object(Bucket=archive.bucket, Key=report.audit_key)
    assert json.loads(audit["Body"].read())["counts"]["recordings"] == 5
    with Checkpoint.open(archive.state(), writer=False, create=False) as checkpoint:
        assert_rebuilt(checkpoint, made)


def assert_rebuilt(checkpoint: Checkpoint, made: dict[str, Any]) -> None:
    assert checkpoint.counts()[RecordingState.ARCHIVED] == 5
    a = checkpoint.get(made["a"].recording_id)
    assert a is not None
    assert (a.sha256, a.manifest_sequence) == (hashlib.sha256(b"ID3 again").hexdigest(), 2)
    late = checkpoint.get(made["late"].recording_id)
    assert late is not None
    assert (late.manifest_sequence, late.recording.agent1) == (None, "Zoë O'Neill")
    assert [m.sequence for m in checkpoint.manifests()] == [1, 2, 3]
    assert checkpoint.last_sealed_day() == (DAY1 + timedelta(days=1)).date()
    # The end of the last sealed day: the day after it (the late call) is listed again.
    assert checkpoint.watermark().position == DAY1 + timedelta(days=2)
    assert checkpoint.origin() == DAY1
    assert checkpoint.holds() == [made["kept"]]


def test_an_existing_checkpoint_is_refused_and_force_moves_it_aside(archive: Archive) -> None:
    fill(archive)
    Checkpoint.open(archive.state()).close()

    with pytest.raises(UsageError) as refused:
        rebuild(archive.config, clock=lambda: NOW)
    report = rebuild(archive.config, force=True, clock=lambda: NOW)

    assert str(archive.state()) in str(refused.value)
    assert "--force" in str(refused.value)
    assert report.moved_aside == archive.state().with_name("state.db.bak-20260110T120000Z")
    assert report.moved_aside.exists()
    assert report.recordings == 5
    assert not list(archive.state().parent.glob("*.rebuilding*"))


def test_a_missing_checkpoint_over_an_empty_prefix_starts_fresh(archive: Archive) -> None:
    probe = f"{PREFIX}.cradle-archiver-check/0123"
    archive.client.put_object(Bucket=archive.bucket, Key=probe, Body=b"probe")

    assert ensure_checkpoint(archive.config, clock=lambda: NOW) is None
    assert not archive.state().exists()


def test_a_missing_checkpoint_over_an_archive_is_refused_naming_rebuild_state(
    archive: Archive,
) -> None:
    archive.put_recording(started(DAY1, 1, 1))

    with pytest.raises(UsageError) as refused:
        ensure_checkpoint(archive.config, clock=lambda: NOW)

    assert "cradle-archiver rebuild-state" in str(refused.value)
    assert not archive.state().exists()


def test_state_rebuild_auto_rebuilds_a_missing_checkpoint(moto_server: str, tmp_path: Path) -> None:
    archive = Archive(moto_server, tmp_path, rebuild_mode="auto")
    archive.put_recording(started(DAY1, 1, 1))

    report = ensure_checkpoint(archive.config, clock=lambda: NOW)

    assert report is not None and report.recordings == 1
    with Checkpoint.open(archive.state(), writer=False, create=False) as checkpoint:
        assert checkpoint.counts()[RecordingState.ARCHIVED] == 1


def test_rebuild_restores_the_call_history_s_revisions_and_names_an_unreadable_part(
    archive: Archive,
) -> None:
    rec = started(DAY1, 1, 1)
    archive.put_recording(rec)
    entry = {"uuid": uid(9), "startedAt": "2022-06-01T01:00:00Z", "recordings": [rec.to_api()]}
    first = Conversation.from_api(entry, now=NOW)
    second = Conversation.from_api({**entry, "status": "missed"}, now=NOW)
    window = Window(DAY1, DAY1 + timedelta(hours=2))
    written = [
        *conversations.parts(PREFIX, window, [Revision(second, 2)], NOW),
        *conversations.parts(PREFIX, window, [Revision(first, 1)], NOW - timedelta(days=1)),
    ]
    for part in written:
        archive.client.put_object(Bucket=archive.bucket, Key=part.key, Body=part.body)
    junk = f"{PREFIX}conversations/year=2022/month=06/day=01/part-20220601T000000Z-0.jsonl.gz"
    archive.client.put_object(Bucket=archive.bucket, Key=junk, Body=b"not gzip")

    report = rebuild(archive.config, clock=lambda: NOW, workers=4)

    assert (report.conversations, report.parts) == (1, 2)
    assert len(report.unreadable) == 1 and report.unreadable[0].startswith(f"{junk} (")
    with Checkpoint.open(archive.state(), writer=False, create=False) as checkpoint:
        assert checkpoint.conversation_revisions([uid(9)]) == {uid(9): (2, second.digest)}
        assert checkpoint.conversations_between(DAY1, DAY3) == {uid(9): [rec.recording_id]}
        assert checkpoint.unwritten_parts() == []
        # The parts' window is after the rebuilt watermark: the export starts at the watermark.
        assert checkpoint.history_cursor() == checkpoint.watermark().position
