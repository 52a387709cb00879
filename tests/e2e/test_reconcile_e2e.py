"""`reconcile` end to end: the CLI as a process against the simulator and moto's S3.

One simulator serves both tests: a few hours of calls two days ago, half of them "late" (listed
only from an hour after the simulator started). Its clock drives only that visibility, so each
test sets it: at real time the late ones are hidden, two hours on they are listed.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from archiver.simulator import Simulator
from tests.e2e.harness import Bucket, cli, events, simulator_options, spawn, write_config

pytestmark = pytest.mark.e2e

LATE_DELAY = timedelta(hours=1)


@dataclass
class ShiftedClock:
    """Real time, `offset` ahead: the simulator's clock."""

    offset: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class World:
    """The shared simulator and its clock."""

    sim: Simulator
    clock: ShiftedClock
    day: datetime  # the UTC midnight starting the day of the calls

    def hide_late(self) -> None:
        self.clock.offset = timedelta(0)

    def show_late(self) -> None:
        self.clock.offset = 2 * LATE_DELAY

    def keys(self, *, late: bool | None = None) -> dict[str, str]:
        """key -> recording id, of the late ones, the others, or all."""
        return {
            f"calls/{r.started_at:%Y/%m/%d}/{r.recording_id}.mp3": r.recording_id
            for r in self.sim.recordings()
            if late is None or r.late == late
        }

    def config(self, tmp_path: Path, bucket: Bucket, **archive: str) -> Path:
        # Calls two days back, a one-hour lookback: their day is sealed by the first pass and
        # far outside any rescan, so only a reconciliation can find what the API lists late.
        return write_config(
            tmp_path / "config.toml",
            self.sim,
            bucket,
            archive={
                "start": f"{self.day:%Y-%m-%dT%H:%M:%SZ}",
                "window": "6h",
                "lookback": "1h",
                **archive,
            },
        )

    def reconcile(self, config: Path) -> tuple[int, dict[str, Any]]:
        since, until = self.day, self.day + timedelta(days=1)
        done = cli(
            "reconcile", "--from", f"{since:%Y-%m-%dT%H:%M:%SZ}", "--until",
            f"{until:%Y-%m-%dT%H:%M:%SZ}", "--json", config=config,
        )  # fmt: skip
        assert done.returncode in (0, 3), done.stderr
        return done.returncode, json.loads(done.stdout)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    clock = ShiftedClock()
    options = simulator_options(
        start=day + timedelta(hours=6),
        end=day + timedelta(hours=9),
        per_hour=4,
        late_fraction=0.5,
        late_delay=LATE_DELAY.total_seconds(),
        clock=clock,
    )
    sim = Simulator(options).start()
    yield World(sim, clock, day)
    sim.stop()


def by_kind(report: dict[str, Any], kind: str) -> dict[str, str | None]:
    """key -> recording id of the report's differences of one kind."""
    return {d["key"]: d["recording_id"] for d in report["differences"] if d["kind"] == kind}


def run_once(config: Path) -> list[dict[str, Any]]:
    done = cli("run", "--once", config=config)
    assert done.returncode == 0, done.stderr
    return events(done.stderr)


def test_a_recording_listed_late_below_the_watermark_is_found_queued_and_archived(
    tmp_path: Path, bucket: Bucket, world: World
) -> None:
    late, on_time = world.keys(late=True), world.keys(late=False)
    assert late and on_time, "the seeded data should hold both late and on-time recordings"
    world.hide_late()
    config = world.config(tmp_path, bucket)
    run_once(config)
    assert set(bucket.recording_keys()) & set(world.keys()) == set(on_time)

    world.show_late()  # listed now, but below the watermark and an hour beyond the lookback
    code, report = world.reconcile(config)
    assert code == 3
    assert by_kind(report, "missing_in_checkpoint") == late
    assert report["unexplained"] == len(late)
    assert report["listed"] == len(late) + len(on_time)
    status = json.loads(cli("status", "--json", config=config).stdout)
    assert status["last_reconcile"]["counts"] == report["counts"]

    archived = {e["recording_id"] for e in run_once(config) if e["event"] == "recording.archived"}
    assert archived == set(late.values())
    assert set(world.keys()) <= set(bucket.recording_keys())

    code, report = world.reconcile(config)
    assert (code, report["unexplained"], report["differences"]) == (0, 0, [])
    trail = [k for k in bucket.object_keys() if k.startswith("calls/audit/")]
    assert len([k for k in trail if k.endswith("-reconcile.json")]) == 2


def test_an_object_gone_from_the_bucket_is_requeued_and_a_stray_one_reported(
    tmp_path: Path, bucket: Bucket, world: World
) -> None:
    world.show_late()
    config = world.config(tmp_path, bucket)
    run_once(config)
    keys = world.keys()
    assert set(keys) <= set(bucket.recording_keys())
    deleted = sorted(keys)[0]
    bucket.client.delete_object(Bucket=bucket.name, Key=deleted)
    stray = f"calls/{world.day:%Y/%m/%d}/{uuid.uuid4()}.mp3"
    bucket.client.put_object(Bucket=bucket.name, Key=stray, Body=b"not ours")

    started = time.monotonic()
    code, report = world.reconcile(config)
    print(f"reconcile of one day: {time.monotonic() - started:.1f}s, {report['counts']}")
    assert code == 3
    assert by_kind(report, "missing_in_bucket") == {deleted: keys[deleted]}
    assert by_kind(report, "unknown_in_bucket") == {stray: stray.rsplit("/", 1)[1][:-4]}
    assert report["unexplained"] == 2

    archived = {e["recording_id"] for e in run_once(config) if e["event"] == "recording.archived"}
    assert archived == {keys[deleted]}
    assert deleted in bucket.recording_keys()

    bucket.client.delete_object(Bucket=bucket.name, Key=stray)
    code, report = world.reconcile(config)
    assert (code, report["differences"]) == (0, [])


def test_an_api_refusing_the_key_is_exit_1_and_nothing_is_recorded(
    tmp_path: Path, bucket: Bucket, world: World
) -> None:
    config = world.config(tmp_path, bucket)
    world.sim.set_faults(forbid=True)
    try:
        refused = cli("reconcile", "--from", f"{world.day:%Y-%m-%dT%H:%M:%SZ}", "--until",
                      f"{world.day + timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}", config=config)  # fmt: skip
    finally:
        world.sim.set_faults(forbid=False)
    assert refused.returncode == 1, refused.stderr
    assert "credentials" in refused.stderr
    assert json.loads(cli("status", "--json", config=config).stdout)["last_reconcile"] is None
    assert bucket.object_keys() == []  # no audit record either


def test_the_daemon_reconciles_yesterday_once_it_is_sealed(
    tmp_path: Path, bucket: Bucket, world: World
) -> None:
    world.show_late()
    # No lookback: yesterday is sealed by the first pass whatever the hour (schedule "daily" is
    # the default).
    config = world.config(tmp_path, bucket, lookback="0s")
    daemon = spawn("run", config=config)
    watchdog = threading.Timer(60, daemon.kill)  # a daemon that never reconciles fails, not hangs
    watchdog.start()
    assert daemon.stderr is not None
    seen = []
    for line in daemon.stderr:
        seen.append(line)
        if '"reconcile.finished"' in line:
            break
    beside = cli("reconcile", "--from", f"{world.day:%Y-%m-%dT%H:%M:%SZ}", "--until",
                 f"{world.day + timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}", config=config)  # fmt: skip
    daemon.send_signal(signal.SIGTERM)
    _, rest = daemon.communicate(timeout=15)
    watchdog.cancel()
    assert daemon.returncode == 0, "".join(seen)[-3000:] + rest[-2000:]
    # It spends the API's rate budget: one at a time per checkpoint, as `run` is.
    assert beside.returncode == 1 and f"(pid {daemon.pid}) holds the checkpoint" in beside.stderr
    names = [e["event"] for e in events("".join(seen))]
    assert names.index("pass.finished") < names.index("reconcile.started")
    yesterday = world.day + timedelta(days=1)
    sealed = [e["day"] for e in events("".join(seen)) if e["event"] == "manifest.sealed"]
    assert f"{yesterday:%Y-%m-%d}" in sealed
    last = json.loads(cli("status", "--json", config=config).stdout)["last_reconcile"]
    assert (last["since"], last["until"]) == (
        f"{yesterday:%Y-%m-%dT%H:%M:%S.000Z}",
        f"{yesterday + timedelta(days=1):%Y-%m-%dT%H:%M:%S.000Z}",
    )
    assert last["unexplained"] == 0
