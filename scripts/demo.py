"""`make demo`: archive a day of simulated recordings into a local S3 server, then show the result.

Starts the bundled Cradle simulator and moto's S3 server on free loopback ports, writes a
temporary config, runs `cradle-archiver run --once` and `status`, counts the objects that landed,
and stops both servers whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3

BIN = Path(sys.executable).parent
BUCKET = "demo-recordings"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, what: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"demo: {what} exited with code {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).close()  # noqa: S310  our own loopback server
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"demo: {what} did not answer at {url} within {timeout:.0f}s")


@dataclass(frozen=True)
class Demo:
    """The demo's world: where each server listens and what period the simulator covers."""

    start: datetime
    end: datetime
    per_hour: int
    sim_port: int
    s3_port: int
    workdir: Path

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-hour", type=int, default=10, help="simulated recordings per hour")
    args = parser.parse_args()
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    demo = Demo(
        start=end - timedelta(days=1),
        end=end,
        per_hour=args.per_hour,
        sim_port=free_port(),
        s3_port=free_port(),
        workdir=Path(tempfile.mkdtemp(prefix="cradle-demo-")),
    )
    env = demo_environment()
    servers: list[subprocess.Popen[bytes]] = []
    try:
        s3 = start_servers(demo, env, servers)
        config = write_config(demo)
        code = run_once(demo, config, env)
        report(demo, config, env, s3)
        return code
    finally:
        stop_servers(servers)


def demo_environment() -> dict[str, str]:
    """Fake AWS credentials for the local S3 server, in this process (boto3) and its children."""
    aws = {
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    os.environ.update(aws)
    return {**os.environ, **aws, "CRADLE_ID": "demo-id", "CRADLE_API_KEY": "demo-key"}


def start_servers(demo: Demo, env: dict[str, str], servers: list[subprocess.Popen[bytes]]) -> Any:
    """The simulator and moto's S3 server, each answering before this returns; the bucket made."""
    simulator = subprocess.Popen(
        [
            str(BIN / "cradle-archiver"),
            "simulate",
            *("--listen", f"127.0.0.1:{demo.sim_port}", "--seed", "7"),
            *("--start", demo.start.isoformat(), "--end", demo.end.isoformat()),
            *("--per-hour", str(demo.per_hour), "--bytes-per-second", "2000"),
            *("--log-level", "warning"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    servers.append(simulator)
    moto = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(demo.s3_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    servers.append(moto)
    wait_for(f"{demo.sim_url}/_sim/stats", "the simulator", simulator)
    wait_for(demo.s3_url, "the S3 server", moto)
    s3 = boto3.client("s3", endpoint_url=demo.s3_url, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    return s3


def write_config(demo: Demo) -> Path:
    config = demo.workdir / "config.toml"
    config.write_text(
        f"""[cradle]
base_url = "{demo.sim_url}"
[s3]
bucket = "{BUCKET}"
endpoint_url = "{demo.s3_url}"
[archive]
start = "{demo.start.isoformat()}"
settle_delay = "10m"
[audio]
# The demo's bodies are an eighth of a real call's bytes (--bytes-per-second 2000), to stay small,
# so their audio is an eighth of durationSeconds: every one would be flagged audio-mismatch.
check = "off"
[state]
path = "{demo.workdir / "state.db"}"
[server]
listen = ""
"""
    )
    return config


def run_once(demo: Demo, config: Path, env: dict[str, str]) -> int:
    print(
        f"demo: simulator on :{demo.sim_port}, S3 on :{demo.s3_port}, state in {demo.workdir}",
        flush=True,
    )
    print("demo: cradle-archiver run --once (a day of recordings; about half a minute)", flush=True)
    started = time.monotonic()
    run = subprocess.run(
        [
            str(BIN / "cradle-archiver"),
            "--config",
            str(config),
            "--log-level",
            "warning",
            "run",
            "--once",
        ],
        env=env,
        check=False,
    )
    elapsed = time.monotonic() - started
    print(f"demo: run --once exited {run.returncode} after {elapsed:.1f}s\n", flush=True)
    return run.returncode


def report(demo: Demo, config: Path, env: dict[str, str], s3: Any) -> None:
    """`status`, what landed (recordings, manifests, call history), `audit`'s verdict on the
    sealed days, and the simulator's count of rate-rule violations."""
    command = [str(BIN / "cradle-archiver"), "--config", str(config)]
    subprocess.run([*command, "status"], env=env, check=False)
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for item in page.get("Contents", [])
    ]
    recordings = sum(1 for key in keys if key.endswith(".mp3"))
    manifests = sum(1 for key in keys if key.startswith("cradle/manifests/") and key.endswith("l"))
    history = sum(1 for key in keys if key.startswith("cradle/conversations/"))
    audit = subprocess.run(
        [*command, "--log-level", "warning", "audit"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    verdict = audit.stdout.strip().splitlines()[-1:] or [audit.stderr.strip()[-300:]]
    stats = urllib.request.urlopen(f"{demo.sim_url}/_sim/stats").read().decode()  # noqa: S310
    violations = json.loads(stats)["violations"]
    print(
        f"\ndemo: {recordings} recordings in s3://{BUCKET}, {manifests} sealed-day manifests,"
        f" {history} call-history parts; the simulator counted {violations} rate-rule violations"
        f"\ndemo: cradle-archiver audit (exit {audit.returncode}): {verdict[0]}"
    )


def stop_servers(servers: list[subprocess.Popen[bytes]]) -> None:
    for server in servers:
        server.terminate()
    for server in servers:
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    sys.exit(main())
