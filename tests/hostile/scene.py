"""A scene for the hostile suite: one HostileApi, one Canary, one bucket, one state directory,
and the CLI run against them; and scenarios, played side by side, whose outcomes tests assert on.

A scenario scripts the API and returns the recording ids it added, by role ("good..." for those
that must be archived). `play` runs it once (`run --once`), gathers what the API saw, `status
--json` and the bucket, and, for a scenario that fails its list call, lets the API behave and
runs again, to show nothing was lost. Servers are stopped when it ends; what they saw is kept.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.builders import mp3, write_toml
from tests.e2e.harness import Bucket
from tests.hostile.process import Finished, run_cli
from tests.hostile.server import Canary, HostileApi, Seen

CRADLE_ID = "hostile-e2e"
API_KEY = "hostile-key-4c2f9e1a7b"
PREFIX = "calls/"
RECORDINGS = "/api/v1/public/recordings"
MiB = 2**20


def rid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"cradle-archiver/hostile/{name}"))


def stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def entry_json(url: str, started: str, *, duration: str | None, agent1: str) -> str:
    """One list entry as raw JSON; `duration` is raw JSON too (`Infinity`), None leaves it out.
    Non-ASCII is written as UTF-8, not \\u escapes, so the body's encoding matters."""
    fields = {
        "url": url,
        "startedAt": started,
        "nature": "out",
        "agent1": agent1,
        "cradleNumber": "+441234567890",
        "thirdPartyNumber": "+449876543210",
    }
    text = json.dumps(fields, ensure_ascii=False)
    return text if duration is None else text[:-1] + f', "durationSeconds": {duration}}}'


def make_bucket(endpoint: str) -> Bucket:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    name = f"hostile-{os.getpid()}-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    return Bucket(name, endpoint, client)


@dataclass
class Scene:
    """One hostile API, one canary, one bucket and one state directory."""

    root: Path
    api: HostileApi
    canary: Canary
    bucket: Bucket
    start: datetime  # archive.start: the watermark's first position
    filed: dict[str, datetime] = field(default_factory=dict)  # recording id -> startedAt
    config_path: Path | None = None

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    def path_of(self, recording_id: str) -> str:
        return f"{RECORDINGS}/{recording_id}.mp3"

    def url_of(self, recording_id: str) -> str:
        return f"{self.api.base_url}{self.path_of(recording_id)}?source=api"

    def add(
        self,
        name: str,
        at: timedelta,
        *,
        url: str | None = None,
        started: str | None = None,
        duration: str | None = "2",
        agent1: str = "Ann Agent",
    ) -> str:
        """An entry filed at start + `at`, by default a valid one with its MP3 served."""
        recording_id = rid(name)
        when = self.start + at
        raw = entry_json(
            url or self.url_of(recording_id),
            started or stamp(when),
            duration=duration,
            agent1=agent1,
        )
        self.api.entries.append((when, raw))
        self.api.bodies[recording_id] = mp3(24_000, recording_id)
        self.filed[recording_id] = when
        return recording_id

    def config(
        self,
        *,
        api_key: str = API_KEY,
        timeout: str = "4s",
        max_attempts: int = 2,
        **sections: dict[str, Any],
    ) -> Path:
        tables: dict[str, dict[str, Any]] = {
            "cradle": {
                "base_url": self.api.base_url,
                "id": CRADLE_ID,
                "api_key": api_key,
                "timeout": timeout,
            },
            "s3": {
                "bucket": self.bucket.name,
                "endpoint_url": self.bucket.endpoint,
                "prefix": PREFIX,
            },
            "archive": {
                "start": stamp(self.start),
                "settle_delay": "0s",
                "lookback": "0s",
                "window": "1h",
                "max_attempts": max_attempts,
            },
            "schedule": {"interval": "1h", "shutdown_timeout": "10s"},
            "state": {"path": str(self.root / "state.db")},
            "server": {"listen": ""},
        }
        self.config_path = write_toml(self.root / "config.toml", tables, sections)
        self.config_path.chmod(0o600)
        return self.config_path

    def run(self, *args: str, retry_attempts: int | None = None, timeout: float = 90) -> Finished:
        if self.config_path is None:
            self.config()
        assert self.config_path is not None
        return run_cli(
            *(args or ("run", "--once")),
            config=self.config_path,
            spool=self.spool,
            retry_attempts=retry_attempts,
            timeout=timeout,
        )

    def status(self) -> dict[str, Any]:
        assert self.config_path is not None
        done = run_cli("status", "--json", config=self.config_path)
        assert done.code == 0, done.explain()
        return json.loads(done.stdout)

    def key(self, recording_id: str) -> str:
        return f"{PREFIX}{self.filed[recording_id]:%Y/%m/%d}/{recording_id}.mp3"


def started_scene(root: Path, bucket: Bucket, span: timedelta) -> Scene:
    api = HostileApi(CRADLE_ID, API_KEY)
    canary = Canary()
    api.start()
    canary.start()
    start = datetime.now(UTC).replace(microsecond=0) - span
    return Scene(root, api, canary, bucket, start)


# -- scenarios, played concurrently ------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A scripted API (`script` returns the recording ids it added, by role) and how to run."""

    script: Callable[[Scene], dict[str, str]]
    span: timedelta = timedelta(minutes=30)  # archive.start is now - span
    max_attempts: int = 2
    retry_attempts: int | None = None
    recover: bool = False  # then let the API behave and run again
    archive: dict[str, Any] = field(default_factory=dict)  # [archive] keys to override


@dataclass
class Outcome:
    """What one scenario did, gathered while it ran; its tests assert on it afterwards."""

    scene: Scene
    ids: dict[str, str]
    done: Finished
    requests: list[Seen]  # what the API received during the hostile run
    status: dict[str, Any]  # `status --json` after it
    objects: dict[str, Any]  # the bucket after it
    before: datetime
    after: datetime
    recovered: Finished | None = None
    recovered_objects: dict[str, Any] = field(default_factory=dict)

    @property
    def list_calls(self) -> int:
        return sum(1 for seen in self.requests if seen.kind == "list")

    def downloads_of(self, recording_id: str) -> list[Seen]:
        return [seen for seen in self.requests if seen.recording_id == recording_id]

    def good(self) -> list[str]:
        return [value for key, value in self.ids.items() if key.startswith("good")]


def play(root: Path, endpoint: str, scenario: Scenario) -> Outcome:
    scene = started_scene(root, make_bucket(endpoint), scenario.span)
    try:
        ids = scenario.script(scene)
        scene.config(max_attempts=scenario.max_attempts, archive=scenario.archive)
        before = datetime.now(UTC)
        done = scene.run(retry_attempts=scenario.retry_attempts)
        after = datetime.now(UTC)
        requests = scene.api.requests()
        outcome = Outcome(
            scene, ids, done, requests, scene.status(), scene.bucket.objects(), before, after
        )
        if scenario.recover:
            scene.api.list_reply = scene.api.listing
            scene.api.downloads.clear()
            outcome.recovered = scene.run()
            outcome.recovered_objects = scene.bucket.objects()
        return outcome
    finally:
        scene.api.stop()
        scene.canary.stop()


class Played:
    """Outcomes by scenario name; a scenario that raised raises again in each of its tests."""

    def __init__(self, results: dict[str, Outcome | BaseException]) -> None:
        self._results = results

    def __getitem__(self, name: str) -> Outcome:
        result = self._results[name]
        if isinstance(result, BaseException):
            raise result
        return result


def play_all(
    factory: pytest.TempPathFactory, endpoint: str, scenarios: dict[str, Scenario]
) -> Played:
    """Each scenario has its own servers, bucket and state; most of their time is spent
    waiting (on trickles, timeouts, process start), so they run side by side."""
    with ThreadPoolExecutor(max_workers=len(scenarios)) as pool:
        futures = {
            name: pool.submit(play, factory.mktemp(name), endpoint, scenario)
            for name, scenario in scenarios.items()
        }
    results: dict[str, Outcome | BaseException] = {}
    for name, future in futures.items():
        error = future.exception()
        results[name] = error if error is not None else future.result()
    return Played(results)
