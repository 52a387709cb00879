"""Webhooks end to end: the daemon (`run`, a real process) with its webhook listener, the
simulator posting each live call's conversation at its end, and moto's S3 over HTTP.

- a live call ending after the first (and, with a 1 h interval, only) pass is archived by its
  hint within 60 s of the webhook, not by a second pass;
- a forged webhook (nothing real, a url at the canary) costs a couple of list calls, follows no
  url and archives nothing the API does not list;
- a flood of 1,000 webhooks in 10 s during a pass: the pass completes, the simulator counts no
  rate-rule violation, and the daemon's peak memory grows by less than BOUND_MIB;
- with every webhook dropped, a sweep still archives every listed recording.

No fixed sleeps: each step waits for a log event of the daemon's, or a simulator counter, with a
deadline.
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from archiver.models import format_time, parse_time
from archiver.simulator import Simulator
from tests.e2e.harness import (
    Bucket,
    cli,
    expected_objects,
    simulator_options,
    spawn,
    write_config,
)
from tests.ports import free_port

TOKEN = "e2e-webhook-token-0123456789"
HINT_DEADLINE = 60.0  # seconds from a webhook to its recording archived (the bound)
FLOOD = 1_000  # webhooks ...
FLOOD_SECONDS = 10.0  # ... over this long
# Ten sources at 10 a second each, under the receiver's 20 a second per address, so the whole
# flood is accepted and queued: the worst case for the worker, not the rate limit's easy one.
FLOOD_SOURCES = tuple(f"127.0.0.{n}" for n in range(10, 20))
# How much the daemon's peak resident set (VmHWM) may grow over the flood. The queue holds at
# most 1,000 hints (about 200 bytes each) and remembers 10,000 finished uuids (about 100 bytes
# each): about 1.2 MiB. The receiver serves at most 64 connections, each capped at 32 KiB of
# request line and headers and a 256 KiB body (the flood's are under 1 KiB), and every hint
# tried lists a few seconds' window. 16 MiB leaves room for the allocator's slack, and is
# far below what an unbounded queue of 1,000 bodies plus their threads would take.
BOUND_MIB = 16


class Daemon:
    """`run` as a process; its JSON log lines (stderr) are read as they come."""

    def __init__(self, config: Path) -> None:
        self.process = spawn("run", config=config)
        self.lines: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "non-json", "line": line}
            with self._changed:
                self.lines.append(event)
                self._changed.notify_all()
        with self._changed:
            self.lines.append({"event": "process.exited"})
            self._changed.notify_all()

    def events(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        with self._changed:
            return [
                e
                for e in self.lines
                if e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
            ]

    def wait_for(
        self, name: str, timeout: float, where: Callable[[dict[str, Any]], bool] = bool
    ) -> dict[str, Any]:
        """The first `name` event that satisfies `where`, waiting up to `timeout` seconds."""

        def found() -> dict[str, Any] | None:
            for e in self.lines:
                if e.get("event") == name and where(e):
                    return e
                if e.get("event") == "process.exited":
                    raise AssertionError(f"the daemon exited: {self.tail()}")
            return None

        with self._changed:
            assert self._changed.wait_for(found, timeout), (
                f"no {name} in {timeout} s: {self.tail()}"
            )
            event = found()
            assert event is not None
            return event

    def tail(self) -> list[dict[str, Any]]:
        return self.lines[-20:]

    def vm_hwm(self) -> int:
        """The daemon's peak resident set so far, in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)


def new_bucket(endpoint: str, name: str) -> Bucket:
    # Credentials of its own: a module fixture starts before the autouse fake environment.
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=name)
    return Bucket(name, endpoint, client)


def webhook_config(path: Path, sim: Simulator, bucket: Bucket, port: int, **archive: Any) -> Path:
    token_file = path.parent / "webhook-token"
    token_file.write_text(TOKEN + "\n")
    return write_config(
        path,
        sim,
        bucket,
        archive={"lookback": "10m", **archive},
        webhook={"listen": f"127.0.0.1:{port}", "token_file": str(token_file)},
    )


def list_calls(sim: Simulator) -> int:
    kinds = sim.stats()["requests_by_kind"]
    return int(kinds["list"] + kinds["conversations"])


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` (a simulator counter or the clock) every 50 ms until true or `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def post(port: int, body: bytes, source: str = "127.0.0.1") -> int:
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=(source, 0)
    )
    try:
        connection.request(
            "POST", f"/webhook/{TOKEN}", body=body, headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        response.read()
        return int(response.status)
    finally:
        connection.close()


def naming(uuid: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event.get("uuid") == uuid


# -- live calls: a hint archives them; a forged one costs a couple of list calls ------------------


class Live:
    def __init__(self, sim: Simulator, bucket: Bucket, daemon: Daemon, port: int) -> None:
        self.sim, self.bucket, self.daemon, self.port = sim, bucket, daemon, port
        self.first_pass = daemon.wait_for("pass.finished", 60)
        self.pass_ended = parse_time(self.first_pass["timestamp"])

    def live_calls(self) -> list[Any]:
        """The conversations whose call ends after the first pass finished: only a hint can
        archive them before the next pass, an hour away."""
        return [c for c in self.sim.conversations() if c.ended_at > self.pass_ended]

    def wait_live_hints_done(self) -> None:
        """Until every live call's hint has found its conversation and recordings."""
        for call in self.live_calls():
            wait = (call.ended_at - datetime.now(UTC)).total_seconds() + HINT_DEADLINE
            self.daemon.wait_for("hint.done", wait, naming(call.uuid))


@pytest.fixture(scope="module")
def live(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """Half a minute of past calls and 6 s of live ones (one a second on average, 1 to 6 s
    long: about 8 end after the first pass); the simulator posts each live call's conversation
    to the daemon, listed 2 s after the call ends."""
    now = datetime.now(UTC).replace(microsecond=0)
    port = free_port()
    options = simulator_options(
        start=now - timedelta(seconds=30),
        end=now + timedelta(seconds=6),
        per_hour=3600,
        max_duration=6,
        boundary_fraction=0.0,
        processing_delay=2.0,
        webhook_url=f"http://127.0.0.1:{port}/webhook/{TOKEN}",
    )
    sim = Simulator(options).start()
    bucket = new_bucket(moto_server, f"e2e-webhook-live-{port}")
    config = webhook_config(tmp_path_factory.mktemp("live") / "config.toml", sim, bucket, port)
    daemon = Daemon(config)
    try:
        yield Live(sim, bucket, daemon, port)
    finally:
        daemon.stop()
        sim.stop()


def test_a_live_calls_hint_archives_it_without_waiting_for_the_next_pass(live: Live) -> None:
    # The recordings of the live calls that the first pass could not have listed (a transfer's
    # first leg may have been).
    listed_at = {r.recording_id: r.visible_at for r in live.sim.recordings()}
    recorded = [
        rid
        for call in live.live_calls()
        for rid in call.recording_ids
        if listed_at[rid] > live.pass_ended
    ]
    assert recorded, "no live call with a recording ends after the first pass"
    live.wait_live_hints_done()
    archived = {e["recording_id"]: e for e in live.daemon.events("hint.archived")}
    for recording_id in recorded:
        assert recording_id in archived, f"{recording_id} not archived by a hint"
        assert archived[recording_id]["seconds"] <= HINT_DEADLINE
    keys = set(live.bucket.recording_keys())
    assert {k for k, r in expected_objects(live.sim).items() if r.recording_id in archived} <= keys
    assert len(live.daemon.events("pass.started")) == 1  # the next pass is an hour away
    assert live.sim.stats()["violations"] == 0


def test_a_forged_webhook_follows_no_url_and_costs_a_couple_of_list_calls(live: Live) -> None:
    live.wait_live_hints_done()  # the worker idle: the list calls counted are the forged hint's
    forged = str(uuid.uuid4())
    assert live.sim.options.start is not None
    started = live.sim.options.start - timedelta(minutes=10)  # before the account's first call
    body = {
        "uuid": forged,
        "startedAt": format_time(started),
        "durationSeconds": 30,
        "recordings": [{"url": f"{live.sim.canary_url}/recordings/{forged}.mp3"}],
    }
    before, downloads = list_calls(live.sim), live.sim.stats()["requests_by_kind"]["download"]
    assert post(live.port, json.dumps(body).encode()) == 202
    tried = live.daemon.wait_for("hint.waiting", 20, naming(forged))
    assert tried["archived"] == 0
    stats = live.sim.stats()
    # One list of the call's window at /conversations and one at /recordings; it is tried
    # again at 10 s, 30 s, 1, 2 and 5 min: at most 12 list calls in all, then dropped.
    assert list_calls(live.sim) - before <= 2
    assert stats["requests_by_kind"]["download"] == downloads
    assert stats["canary_requests"] == 0
    listed = set(expected_objects(live.sim))
    assert set(live.bucket.recording_keys()) <= listed
    assert not live.daemon.events("hint.archived", uuid=forged)


# -- a flood during a pass ----------------------------------------------------------------------


def forged_body(n: int, sim: Simulator) -> bytes:
    """A conversation-shaped body naming a random uuid at a time inside the account's period,
    so each hint lists a real window (and finds no such conversation)."""
    assert sim.options.start is not None
    at = sim.options.start + timedelta(seconds=(n * 7) % 7200)
    return json.dumps(
        {
            "uuid": str(uuid.uuid4()),
            "startedAt": format_time(at),
            "durationSeconds": 60,
            "recordings": [{"url": f"{sim.canary_url}/flood/{n}.mp3"}],
        }
    ).encode()


def flood(port: int, sim: Simulator) -> list[int]:
    """FLOOD webhooks spread evenly over FLOOD_SECONDS from FLOOD_SOURCES, on 8 threads."""
    start = time.monotonic()

    def one(n: int) -> int:
        time.sleep(max(0.0, start + n * FLOOD_SECONDS / FLOOD - time.monotonic()))  # pacing
        return post(port, forged_body(n, sim), FLOOD_SOURCES[n % len(FLOOD_SOURCES)])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(FLOOD)))


@dataclass(frozen=True)
class FloodRun:
    answers: list[int]
    flood_started: datetime
    flood_seconds: float
    passes: list[dict[str, Any]]  # pass.started events
    finished: dict[str, Any]  # the pass.finished event
    hints_during_pass: int  # hint tries logged while the pass ran
    peak_before: int  # VmHWM, bytes
    peak_after: int


def flood_during_a_pass(config: Path, port: int, sim: Simulator) -> FloodRun:
    """Start the daemon, flood its listener once its first pass has started, and wait for the
    pass to finish."""
    daemon = Daemon(config)
    try:
        daemon.wait_for("pass.started", 30)
        before = daemon.vm_hwm()
        flood_started = datetime.now(UTC)
        answers = flood(port, sim)
        flood_seconds = (datetime.now(UTC) - flood_started).total_seconds()
        finished = daemon.wait_for("pass.finished", 90)
        after = daemon.vm_hwm()
    finally:
        daemon.stop()
    passes = [e for e in daemon.lines if e.get("event") == "pass.started"]
    began, ended = parse_time(passes[0]["timestamp"]), parse_time(finished["timestamp"])
    tried = [
        e
        for e in daemon.lines
        if e.get("event") in ("hint.waiting", "hint.done")
        and began <= parse_time(e["timestamp"]) <= ended
    ]
    return FloodRun(
        answers, flood_started, flood_seconds, passes, finished, len(tried), before, after
    )


def test_a_flood_of_webhooks_during_a_pass_leaves_it_complete_and_memory_bounded(
    moto_server: str, tmp_path: Path
) -> None:
    # An hour of past calls in 5-minute windows: a pass of about 100 requests
    # (longer than the flood), which hands over to the hints between windows.
    sim = Simulator(simulator_options(hours=1, per_hour=40)).start()
    try:
        port = free_port()
        bucket = new_bucket(moto_server, f"e2e-webhook-flood-{port}")
        config = webhook_config(tmp_path / "config.toml", sim, bucket, port, window="5m")
        run = flood_during_a_pass(config, port, sim)
        stats = sim.stats()
    finally:
        sim.stop()
    finished = run.finished
    print(
        f"flood: {len(run.answers)} webhooks in {run.flood_seconds:.1f} s, answers"
        f" {sorted((s, run.answers.count(s)) for s in set(run.answers))}; pass"
        f" {finished['seconds']} s, {finished['archived']} archived, {run.hints_during_pass}"
        f" hints tried during it; VmHWM {run.peak_before / 2**20:.1f} ->"
        f" {run.peak_after / 2**20:.1f} MiB; {stats['requests']} API requests,"
        f" {stats['violations']} violations"
    )
    assert run.answers.count(202) == FLOOD  # answered at once, all queued
    assert run.flood_started < parse_time(finished["timestamp"])  # it began while the pass ran
    assert len(run.passes) == 1
    assert finished["outcome"] == "ok"
    assert set(expected_objects(sim)) <= set(bucket.recording_keys())
    assert stats["violations"] == 0
    assert stats["canary_requests"] == 0
    assert run.peak_after - run.peak_before < BOUND_MIB * 2**20


# -- every webhook dropped -------------------------------------------------------------------------


def test_with_every_webhook_dropped_the_sweep_still_archives_everything(
    moto_server: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    sim = Simulator(
        simulator_options(
            start=now - timedelta(seconds=8),
            end=now + timedelta(seconds=4),
            per_hour=3600,
            max_duration=3,
            boundary_fraction=0.0,
            processing_delay=1.0,
            webhook_drop=1.0,
            webhook_url=f"http://127.0.0.1:{free_port()}/webhook/{TOKEN}",
        )
    ).start()
    try:
        live = [c for c in sim.conversations() if c.ended_at > sim.started_at]
        assert any(c.recording_ids for c in live)
        last_listed = max(r.visible_at for r in sim.recordings())
        wait_until(
            lambda: (
                sim.stats()["webhooks"]["dropped"] == len(live) and datetime.now(UTC) >= last_listed
            ),
            30,
            "every live call ended, its webhook dropped, its recordings listed",
        )
        bucket = new_bucket(moto_server, f"e2e-webhook-dropped-{uuid.uuid4().hex[:12]}")
        result = cli(
            "run",
            "--once",
            config=write_config(tmp_path / "c.toml", sim, bucket, archive={"lookback": "10m"}),
        )
        assert result.returncode == 0, result.stderr[-2000:]
        stats = sim.stats()
        assert stats["webhooks"]["sent"] == 0
        expected = expected_objects(sim)
        assert set(bucket.recording_keys()) == set(expected)
        live_ids = {rid for c in live for rid in c.recording_ids}
        assert live_ids & {r.recording_id for r in expected.values()} == live_ids
        assert stats["violations"] == 0
    finally:
        sim.stop()
