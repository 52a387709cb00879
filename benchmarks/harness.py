"""Plumbing for the benchmarks: the simulator and moto's S3 server on loopback, configs, and a
watch on the simulator's request counter.

Every server is started here and stopped here. moto runs in a process of its own, so its CPU work
(parsing 8 MiB parts, checksumming them) does not share a GIL with the simulator, which runs
in the benchmark's own process so its counters can be read directly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3

from archiver.simulator import Simulator, SimulatorOptions

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-secret-key-5d1e"
CRADLE_ID = "bench"
PREFIX = "calls/"
POLL_SECONDS = 0.02


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def child_env() -> dict[str, str]:
    """The environment of every child: fake AWS credentials, nothing from the developer's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRADLE_", "AWS_"))}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",  # noqa: S106  moto's fake credentials
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        PYTHONPATH=str(ROOT),
    )
    return env


class MotoServer:
    """moto's S3 over HTTP in a child process on a free port; a context manager."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.endpoint = ""
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> MotoServer:
        for _ in range(3):  # a port taken between probing and binding: try another
            port = free_port()
            with open(self.log_path, "ab") as log:
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=child_env(),
                )
            self.endpoint = f"http://127.0.0.1:{port}"
            if self._wait_ready():
                return self
            self._stop()
        raise RuntimeError(f"moto's server did not start; see {self.log_path}")

    def __exit__(self, *exc_info: object) -> None:
        self._stop()

    def _wait_ready(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=1):  # noqa: S310  our own loopback server
                    return True
            except OSError:
                time.sleep(0.1)
        return False

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106  moto's fake credentials
        )

    def new_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def drop_bucket(self, name: str) -> None:
        """Empty and delete a bucket, so moto's memory and spool do not pile up across runs."""
        client = self.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=item["Key"])
        client.delete_bucket(Bucket=name)


@dataclass(frozen=True)
class Period:
    """Where a scenario's recordings lie: whole hours, ending 3 h before now.

    Whole hours, because the simulator puts exactly `per_hour` recordings in each hour; 3 h
    back, because a call lasts up to 2 h and is listed only once it has ended.
    """

    start: datetime
    end: datetime

    @classmethod
    def hours_back(cls, hours: int) -> Period:
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
        return cls(end - timedelta(hours=hours), end)


def start_simulator(
    period: Period,
    *,
    per_hour: int,
    size: int,
    latency: float = 0.0,
    bandwidth: int | None = None,
    seed: int = 7,
) -> Simulator:
    options = SimulatorOptions(
        seed=seed,
        start=period.start,
        end=period.end,
        per_hour=per_hour,
        size=size,
        latency=latency,
        bandwidth=bandwidth,
        processing_delay=0,
        api_key=API_KEY,
        cradle_id=CRADLE_ID,
    )
    return Simulator(options).start()


def write_config(directory: Path, sim: Simulator, endpoint: str, bucket: str) -> Path:
    """A config for the real CLI: this simulator, this bucket, state and spool in `directory`."""
    tables: dict[str, dict[str, Any]] = {
        "cradle": {
            "base_url": sim.base_url,
            "id": CRADLE_ID,
            "api_key": API_KEY,
            "requests_per_second": 10,
            "timeout": "60s",
        },
        "s3": {"bucket": bucket, "endpoint_url": endpoint, "prefix": PREFIX},
        "archive": {"settle_delay": "0s", "window": "1h"},
        "schedule": {"interval": "1h", "shutdown_timeout": "10s"},
        "state": {"path": str(directory / "state.db")},
        "server": {"listen": ""},
    }
    lines = []
    for name, values in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path = directory / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def object_digests(client: Any, bucket: str) -> dict[str, str]:
    """key -> the sha256 metadata of every object in the bucket (a HEAD each, no bodies)."""
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            head = client.head_object(Bucket=bucket, Key=item["Key"])
            found[item["Key"]] = head["Metadata"].get("sha256", "")
    return found


def expected_digests(sim: Simulator) -> dict[str, str]:
    """key -> sha256 of the body, for every recording the simulator serves."""
    return {
        f"{PREFIX}{rec.started_at:%Y/%m/%d}/{rec.recording_id}.mp3": sim.body_sha256(
            rec.recording_id
        )
        for rec in sim.recordings()
    }


@dataclass
class RequestWatch:
    """When the simulator saw the first and the last request start, to within POLL_SECONDS.

    The simulator does not expose a per-request log, so a thread reads its request counter
    (`stats()["requests"]`, incremented as each request arrives) every 20 ms and notes the
    monotonic time of every change. `first` is the first poll that saw the count above its
    value at `start()`, `last` the first poll that saw its final value: both are late by the
    same 0-20 ms, so `last - first` is the span between the first and the last request start
    to within one poll interval either way.
    """

    sim: Simulator
    base: dict[str, Any] = field(default_factory=dict)
    changes: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RequestWatch:
        self.base = self.sim.stats()
        self._thread = threading.Thread(target=self._poll, name="request-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        """Stop polling; returns the stats accrued since `start()`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._note(self.sim.stats()["requests"])
        now = self.sim.stats()
        return {
            "requests": now["requests"] - self.base["requests"],
            "violations": now["violations"] - self.base["violations"],
            "by_kind": {
                kind: count - self.base["requests_by_kind"].get(kind, 0)
                for kind, count in now["requests_by_kind"].items()
            },
        }

    @property
    def first(self) -> float | None:
        return self.changes[0][0] if self.changes else None

    @property
    def last(self) -> float | None:
        return self.changes[-1][0] if self.changes else None

    def _poll(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self._note(self.sim.stats()["requests"])

    def _note(self, count: int) -> None:
        previous = self.changes[-1][1] if self.changes else self.base["requests"]
        if count != previous:
            self.changes.append((time.monotonic(), count))
