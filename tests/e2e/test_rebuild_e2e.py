"""A lost checkpoint through the real CLI: `run --once` refuses to start afresh over an archive,
`rebuild-state` restores the checkpoint from the bucket (manifests, objects, the holds of the
audit trail), and the next pass downloads nothing; `state.rebuild = "auto"` does both at once."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from archiver import manifest
from tests.e2e.harness import Bucket, cli, events, expected_objects, write_config

pytestmark = pytest.mark.e2e

PREFIX = "calls/"
AUTO = {"rebuild": "auto"}


def old_calls(simulator: Any, days_ago: int = 6, days: int = 2) -> Any:
    """Calls on whole days well behind the lookback, so every day of them is sealed."""
    first = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first -= timedelta(days=days_ago)
    return simulator(start=first + timedelta(hours=1), end=first + timedelta(days=days), per_hour=1)


def config_for(tmp_path: Path, sim: Any, bucket: Bucket, **sections: dict[str, Any]) -> Path:
    start = sim.recordings()[0].started_at.replace(hour=0, minute=0, second=0, microsecond=0)
    return write_config(
        tmp_path / "config.toml",
        sim,
        bucket,
        # Day-wide windows: the walk to now costs a few list calls, not hundreds.
        archive={"start": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "window": "1d", "lookback": "1h"},
        **sections,
    )


def status(config: Path) -> dict[str, Any]:
    result = cli("status", "--json", config=config)
    assert result.returncode == 0, result.stderr[-2000:]
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def lose_checkpoint(config: Path) -> None:
    state = config.parent / "state.db"
    for name in (state, Path(f"{state}-wal"), Path(f"{state}-shm")):
        name.unlink(missing_ok=True)


def history_parts(bucket: Bucket) -> list[str]:
    return [k for k in bucket.object_keys() if k.startswith(f"{PREFIX}conversations/")]


def downloads(sim: Any) -> int:
    count: int = sim.stats()["requests_by_kind"]["download"]
    return count


@pytest.fixture
def locked(moto_server: str) -> Bucket:
    """A bucket with Object Lock (and so versioning), for holds and retention."""
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    name = f"rebuild-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return Bucket(name, moto_server, client)


def archive_with_a_hold(tmp_path: Path, sim: Any, bucket: Bucket) -> tuple[Path, dict[str, Any]]:
    """Archive and seal every day, put one agent's calls on hold, then lose the checkpoint;
    returns the config and `status` as it was."""
    config = config_for(tmp_path, sim, bucket, retention={"mode": "governance", "period": "5y"})
    first = cli("run", "--once", config=config)
    assert first.returncode == 0, first.stderr[-2000:]
    before = status(config)
    agent = sim.recordings()[0].entry["agent1"]
    held = cli("hold", "add", "--agent", agent, "--reason", "case 7", config=config)
    assert held.returncode == 0, held.stderr[-2000:]
    lose_checkpoint(config)
    return config, before


def test_a_lost_checkpoint_is_refused_then_rebuilt_from_the_manifests_with_its_holds(
    tmp_path: Path, simulator: Any, locked: Bucket
) -> None:
    sim = old_calls(simulator)
    config, before = archive_with_a_hold(tmp_path, sim, locked)
    archived = len(expected_objects(sim))
    assert before["archived"] == archived

    refused = cli("run", "--once", config=config)
    assert refused.returncode == 2
    assert "cradle-archiver rebuild-state" in refused.stderr
    assert not (tmp_path / "state.db").exists()

    rebuilt = cli("rebuild-state", config=config)
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert f"restored {archived} archived recordings ({archived} from manifests" in rebuilt.stdout
    assert ", 1 holds" in rebuilt.stdout
    recorded = [e for e in events(rebuilt.stderr) if e.get("event") == "audit.recorded"]
    assert recorded[0]["action"] == "rebuild-state"
    assert recorded[0]["recordings"] == archived
    assert_restored(config, before, sim.recordings()[0].entry["agent1"])

    sim.reset_stats()
    again = cli("run", "--once", config=config)
    assert again.returncode == 0, again.stderr[-2000:]
    assert downloads(sim) == 0
    assert status(config)["archived"] == archived
    sealed = [k for k in locked.object_keys() if k.endswith(".jsonl")]
    assert len(sealed) == len({manifest.parse_key(PREFIX, k) for k in sealed})  # none twice


def assert_restored(config: Path, before: dict[str, Any], agent: str) -> None:
    """The rebuilt checkpoint counts, seals, locks and holds what the lost one did; its
    watermark stands at the end of the last sealed day."""
    after = status(config)
    assert after["archived"] == before["archived"]
    assert after["last_sealed_day"] == before["last_sealed_day"]
    last_sealed = datetime.fromisoformat(before["last_sealed_day"]).replace(tzinfo=UTC)
    assert datetime.fromisoformat(after["watermark"]) == last_sealed + timedelta(days=1)
    verified = cli("verify", config=config)  # sizes, sha256 and locks as restored
    assert verified.returncode == 0, verified.stdout + verified.stderr[-2000:]
    listing = cli("hold", "list", config=config)
    assert f"agent {agent.lower()}  (reason: case 7)" in listing.stdout
    assert "1 holds in force" in listing.stdout


def test_rebuild_state_refuses_an_existing_checkpoint_and_force_moves_it_aside(
    tmp_path: Path, simulator: Any, bucket: Bucket
) -> None:
    sim = old_calls(simulator, days=1)
    config = config_for(tmp_path, sim, bucket)
    assert cli("run", "--once", config=config).returncode == 0

    refused = cli("rebuild-state", config=config)
    assert refused.returncode == 2
    assert str(tmp_path / "state.db") in refused.stderr
    assert "--force" in refused.stderr

    forced = cli("rebuild-state", "--force", config=config)
    assert forced.returncode == 0, forced.stderr[-2000:]
    backups = list(tmp_path.glob("state.db.bak-*"))
    assert [b.name for b in backups if not b.name.endswith(("-wal", "-shm"))]
    assert f"moved the old checkpoint aside to {tmp_path}" in forced.stdout
    assert status(config)["archived"] == len(expected_objects(sim))


def test_state_rebuild_auto_rebuilds_from_the_objects_alone_then_runs(
    tmp_path: Path, simulator: Any, bucket: Bucket
) -> None:
    sim = old_calls(simulator, days=1)
    config = config_for(tmp_path, sim, bucket, manifest={"enabled": False}, state=AUTO)
    assert cli("run", "--once", config=config).returncode == 0
    archived = len(expected_objects(sim))
    parts = history_parts(bucket)
    assert parts  # the call history was exported
    lose_checkpoint(config)
    sim.reset_stats()

    again = cli("run", "--once", config=config)

    assert again.returncode == 0, again.stderr[-2000:]
    assert downloads(sim) == 0
    rebuilt = [e for e in events(again.stderr) if e.get("event") == "rebuild.finished"]
    assert rebuilt[0]["from_objects"] == archived
    assert rebuilt[0]["from_manifests"] == 0
    assert rebuilt[0]["parts"] == len(parts)
    # Without manifests the watermark goes back a lookback before the latest call, so the pass
    # lists that call's conversation again: known at its revision, it is not written again.
    relisted = [e for e in events(again.stderr) if e.get("event") == "conversations.exported"]
    assert relisted == []
    assert history_parts(bucket) == parts
    assert status(config)["archived"] == archived
    audit = [k for k in bucket.object_keys() if k.endswith("-rebuild-state.json")]
    assert len(audit) == 1
