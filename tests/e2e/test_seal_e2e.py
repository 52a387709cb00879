"""Sealing through the real CLI: `run --once` seals the days behind it into one unbroken chain,
and a process killed while sealing leaves a chain the next run completes, link for link."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from archiver import manifest
from tests.e2e.harness import Bucket, cli, events, expected_objects, spawn, write_config

pytestmark = pytest.mark.e2e

PREFIX = "calls/"


def old_calls(simulator: Any, days_ago: int = 12, days: int = 3) -> Any:
    """A simulator whose calls all lie on whole days well behind any lookback."""
    first = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first -= timedelta(days=days_ago)
    return simulator(start=first + timedelta(hours=1), end=first + timedelta(days=days), per_hour=1)


def config_for(tmp_path: Path, sim: Any, bucket: Bucket) -> Path:
    start = sim.recordings()[0].started_at.replace(hour=0, minute=0, second=0, microsecond=0)
    return write_config(
        tmp_path / "config.toml",
        sim,
        bucket,
        # Day-wide windows: the walk to now costs a dozen list calls, not hundreds.
        archive={"start": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "window": "1d", "lookback": "1h"},
    )


def sealed_chain(bucket: Bucket, *, complete: bool = True) -> list[tuple[str, manifest.Manifest]]:
    """The bucket's manifests in sequence order, every link checked against the real bytes, and
    each `.sha256` beside it (but the last one's, where a kill may have come between the two)."""
    found = []
    for key in bucket.object_keys():
        if manifest.parse_key(PREFIX, key) and key.endswith(".jsonl"):
            body = bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read()
            found.append((manifest.parse(body), key, body))
    found.sort(key=lambda item: item[0].sequence)
    previous = None
    for n, (parsed, key, body) in enumerate(found, start=1):
        assert parsed.previous == previous, key
        previous = manifest.Link(key, manifest.digest(body))
        if not complete and n == len(found):
            break
        sums = bucket.client.get_object(Bucket=bucket.name, Key=manifest.checksum_key(key))
        assert manifest.parse_checksum_file(sums["Body"].read())[
            key.removeprefix(PREFIX)
        ] == manifest.digest(body)
    assert [parsed.sequence for parsed, _, _ in found] == list(range(1, len(found) + 1))
    return [(key, parsed) for parsed, key, _ in found]


def test_run_once_seals_every_day_behind_it_and_lists_every_recording_once(
    tmp_path: Path, simulator: Any, bucket: Bucket
) -> None:
    sim = old_calls(simulator, days=2)
    config = config_for(tmp_path, sim, bucket)

    result = cli("run", "--once", config=config)

    assert result.returncode == 0, result.stderr[-2000:]
    chain = sealed_chain(bucket)
    days = [parsed.day for _, parsed in chain]
    first = sim.recordings()[0].started_at.date()
    assert days[0] == first
    assert days == [first + timedelta(days=n) for n in range(len(days))]  # none skipped
    assert days[-1] >= datetime.now(UTC).date() - timedelta(days=2)
    listed = {entry.key: entry for _, parsed in chain for entry in parsed.entries}
    wanted = expected_objects(sim)
    assert sorted(listed) == sorted(wanted)
    objects = bucket.objects()
    for key, entry in listed.items():
        assert entry.sha256 == objects[key]["sha256"] == sim.body_sha256(entry.id)
        assert entry.size == objects[key]["size"]
    status = cli("status", "--json", config=config)
    assert f'"last_sealed_day": "{days[-1].isoformat()}"' in status.stdout


def test_a_kill_while_sealing_leaves_a_chain_the_next_run_completes(
    tmp_path: Path, simulator: Any, bucket: Bucket
) -> None:
    sim = old_calls(simulator, days_ago=40, days=2)  # some 40 days to seal, most of them empty
    config = config_for(tmp_path, sim, bucket)
    process = spawn("run", "--once", config=config)
    assert process.stderr is not None
    for line in process.stderr:  # kill it right after its first sealed day
        if '"manifest.sealed"' in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    cut = sealed_chain(bucket, complete=False)  # what it wrote so far is a chain already
    assert 1 <= len(cut) < 38, "the kill did not land while sealing"

    result = cli("run", "--once", config=config)

    assert result.returncode == 0, result.stderr[-2000:]
    chain = sealed_chain(bucket)
    assert chain[: len(cut)] == cut  # nothing written again differently, nothing replaced
    days = [parsed.day for _, parsed in chain]
    assert days == [days[0] + timedelta(days=n) for n in range(len(days))]
    assert days[-1] >= datetime.now(UTC).date() - timedelta(days=2)
    resealed = [e for e in events(result.stderr) if e["event"] == "manifest.sealed"]
    # The last one cut may be written again: its bytes landed, the checkpoint never heard.
    assert len(chain) - len(cut) <= len(resealed) <= len(chain) - len(cut) + 1
    assert sorted(e.key for _, m in chain for e in m.entries) == sorted(expected_objects(sim))
