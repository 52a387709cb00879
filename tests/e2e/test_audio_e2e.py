"""Audio checked frame by frame, end to end: the simulator serves real MPEG frame streams, some
with half the audio their list entry claims, and the CLI walks each body as it streams."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.audit import expected_audio_seconds
from tests.e2e.harness import Bucket, cli, expected_objects, write_config

pytestmark = pytest.mark.e2e


def far(rec: Any) -> bool:
    duration = rec.entry["durationSeconds"]
    return abs(expected_audio_seconds(rec) - duration) > max(2.0, 0.02 * duration)


def test_with_audio_check_fail_short_audio_is_dead_lettered_and_the_rest_archived(
    tmp_path: Path, simulator: Any, bucket: Bucket
) -> None:
    # Real 128 kbps frames (16,000 bytes a call second) make a body's audio match its entry.
    # Half of them VBR behind a Xing frame, which the walk must not count as audio.
    sim = simulator(per_hour=5, bytes_per_second=16_000, short_audio=0.3, vbr=0.5)
    config = write_config(
        tmp_path / "config.toml",
        sim,
        bucket,
        archive={"max_attempts": 2},
        audio={"check": "fail"},
    )
    result = cli("run", "--once", config=config, timeout=300)
    assert result.returncode == 3, result.stderr[-3000:]
    wanted = expected_objects(sim)
    short = {key for key, rec in wanted.items() if far(rec)}
    assert short and {key for key, rec in wanted.items() if rec.short_audio} <= short
    assert any(rec.vbr for key, rec in wanted.items() if key not in short)
    assert set(bucket.recording_keys()) == set(wanted) - short
    for key in bucket.recording_keys():
        metadata = bucket.client.head_object(Bucket=bucket.name, Key=key)["Metadata"]
        assert abs(float(metadata["audio-seconds"]) - expected_audio_seconds(wanted[key])) < 0.05
        assert "audio-mismatch" not in metadata
    report = json.loads(cli("status", "--json", config=config).stdout)
    assert report["failed"] == len(short)
    assert {f["reason"] for f in report["recent_failures"]} == {"audio_mismatch"}


def test_with_audio_check_warn_short_audio_is_archived_and_marked(
    tmp_path: Path, simulator: Any, bucket: Bucket
) -> None:
    sim = simulator(per_hour=4, bytes_per_second=16_000, short_audio=0.4)
    config = write_config(tmp_path / "config.toml", sim, bucket)  # audio.check defaults to warn
    result = cli("run", "--once", config=config, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    wanted = expected_objects(sim)
    assert set(bucket.recording_keys()) == set(wanted)
    marked = {
        key
        for key in wanted
        if bucket.client.head_object(Bucket=bucket.name, Key=key)["Metadata"].get("audio-mismatch")
        == "true"
    }
    assert marked == {key for key, rec in wanted.items() if far(rec)} and marked
    report = json.loads(cli("status", "--json", config=config).stdout)
    assert report["audio_mismatches"] == len(marked)
