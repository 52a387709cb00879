"""End-to-end plumbing: the simulator over HTTP, moto's S3 server over HTTP, the CLI as a process."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from archiver.layout import recording_id_from_key
from archiver.simulator import Simulator, SimulatorOptions
from tests.builders import write_toml

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "e2e-secret-key-7f3a9c"
_buckets = itertools.count()


@dataclass
class Bucket:
    name: str
    endpoint: str
    client: Any

    def objects(self) -> dict[str, dict[str, Any]]:
        """Every recording's object: key -> size, sha256 of the body, metadata, tags, content
        type (manifests, audit records and the call history's parts are left out)."""
        found: dict[str, dict[str, Any]] = {}
        for key in self.recording_keys():
            got = self.client.get_object(Bucket=self.name, Key=key)
            body = got["Body"].read()
            tags = self.client.get_object_tagging(Bucket=self.name, Key=key)["TagSet"]
            found[key] = {
                "size": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "metadata": got["Metadata"],
                "content_type": got["ContentType"],
                "tags": {t["Key"]: t["Value"] for t in tags},
            }
        return found

    def object_keys(self) -> list[str]:
        return [
            item["Key"]
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name)
            for item in page.get("Contents", [])
        ]

    def recording_keys(self) -> list[str]:
        """The keys of recordings (`.../<uuid>.mp3`), not of our other objects."""
        return [key for key in self.object_keys() if recording_id_from_key(key) is not None]

    def multipart_uploads(self) -> list[Any]:
        return self.client.list_multipart_uploads(Bucket=self.name).get("Uploads", [])


@pytest.fixture
def bucket(moto_server: str) -> Bucket:
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    name = f"e2e-{os.getpid()}-{next(_buckets)}"
    client.create_bucket(Bucket=name)
    return Bucket(name, moto_server, client)


def simulator_options(hours: float = 3, **options: Any) -> SimulatorOptions:
    """The simulator the e2e and chaos tiers run: `hours` of calls that all ended well in the
    past, so every call is listed (bar late ones); `options` set any other switch."""
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2, minutes=30)
    defaults: dict[str, Any] = {
        "seed": 11,
        "start": end - timedelta(hours=hours),
        "end": end,
        "per_hour": 12,
        "bytes_per_second": 500,
        "api_key": API_KEY,
        "cradle_id": "e2e",
        "processing_delay": 0,
    }
    return SimulatorOptions(**{**defaults, **options})


@pytest.fixture
def simulator() -> Iterator[Any]:
    """A factory: `simulator(**options)` starts one on a free port; all are stopped after."""
    started: list[Simulator] = []

    def start(**options: Any) -> Simulator:
        sim = Simulator(simulator_options(**options)).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


def write_config(
    path: Path,
    sim: Simulator,
    bucket: Bucket,
    *,
    archive: dict[str, Any] | None = None,
    **sections: dict[str, Any],
) -> Path:
    """A config for the CLI; `archive` and other sections override the defaults given here."""
    start = (
        sim.recordings()[0].started_at
        if sim.recordings()
        else datetime.now(UTC) - timedelta(hours=4)
    )
    tables: dict[str, dict[str, Any]] = {
        "cradle": {"base_url": sim.base_url, "id": "e2e", "api_key": API_KEY, "timeout": "20s"},
        "s3": {"bucket": bucket.name, "endpoint_url": bucket.endpoint, "prefix": "calls/"},
        "archive": {
            "start": (start - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "settle_delay": "0s",
            "lookback": "6h",
            **(archive or {}),
        },
        "schedule": {"interval": "1h", "shutdown_timeout": "10s"},
        "state": {"path": str(path.parent / "state.db")},
        "server": {"listen": ""},
    }
    return write_toml(path, tables, sections)


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRADLE_", "AWS_"))}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    env.update(extra)
    return env


def cli_command(*args: str, config: Path | None = None) -> list[str]:
    """`python -m archiver` with JSON logs (on stderr), the config, and `args`."""
    command = [sys.executable, "-m", "archiver", "--log-format", "json"]
    if config is not None:
        command += ["--config", str(config)]
    return [*command, *args]


def cli(
    *args: str, config: Path | None = None, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a real process and wait for it."""
    return subprocess.run(
        cli_command(*args, config=config),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(**env),
        cwd=ROOT,
        check=False,
    )


def spawn(*args: str, config: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_command(*args, config=config),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(**env),
        cwd=ROOT,
    )


def events(stderr: str) -> list[dict[str, Any]]:
    found = []
    for line in stderr.splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def expected_objects(
    sim: Simulator, prefix: str = "calls/", until: datetime | None = None
) -> dict[str, Any]:
    """key -> simulator record, for every good recording visible now (and started before `until`)."""
    wanted = {}
    now = datetime.now(UTC)
    for rec in sim.recordings():
        if rec.poison is not None or "url" not in rec.entry or rec.visible_at > now:
            continue
        if until is not None and rec.started_at >= until:
            continue
        key = f"{prefix}{rec.started_at:%Y/%m/%d}/{rec.recording_id}.mp3"
        wanted[key] = rec
    return wanted
