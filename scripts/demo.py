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
from datetime import UTC, datetime, timedelta
from pathlib import Path

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-hour", type=int, default=10, help="simulated recordings per hour")
    args = parser.parse_args()
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(days=1)
    sim_port, s3_port = free_port(), free_port()
    s3_url = f"http://127.0.0.1:{s3_port}"
    workdir = Path(tempfile.mkdtemp(prefix="cradle-demo-"))
    # Fake AWS credentials for the local S3 server, in this process (boto3 below) and its children.
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "demo",
            "AWS_SECRET_ACCESS_KEY": "demo",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo",
        "AWS_DEFAULT_REGION": "us-east-1",
        "CRADLE_ID": "demo-id",
        "CRADLE_API_KEY": "demo-key",
    }
    servers: list[subprocess.Popen[bytes]] = []
    try:
        simulator = subprocess.Popen(
            [
                str(BIN / "cradle-archiver"),
                "simulate",
                "--listen",
                f"127.0.0.1:{sim_port}",
                "--seed",
                "7",
                "--start",
                start.isoformat(),
                "--end",
                end.isoformat(),
                "--per-hour",
                str(args.per_hour),
                "--bytes-per-second",
                "2000",
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        servers.append(simulator)
        moto = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        servers.append(moto)
        wait_for(f"http://127.0.0.1:{sim_port}/_sim/stats", "the simulator", simulator)
        wait_for(s3_url, "the S3 server", moto)
        s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)

        config = workdir / "config.toml"
        config.write_text(
            f"""[cradle]
base_url = "http://127.0.0.1:{sim_port}"
[s3]
bucket = "{BUCKET}"
endpoint_url = "{s3_url}"
[archive]
start = "{start.isoformat()}"
settle_delay = "10m"
[state]
path = "{workdir / "state.db"}"
[server]
listen = ""
"""
        )
        print(f"demo: simulator on :{sim_port}, S3 on :{s3_port}, state in {workdir}", flush=True)
        print(
            "demo: cradle-archiver run --once (a day of recordings; about half a minute)",
            flush=True,
        )
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
        subprocess.run(
            [str(BIN / "cradle-archiver"), "--config", str(config), "status"], env=env, check=False
        )
        count = sum(
            page.get("KeyCount", 0)
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        )
        stats = urllib.request.urlopen(f"http://127.0.0.1:{sim_port}/_sim/stats").read().decode()
        violations = json.loads(stats)["violations"]
        print(
            f"\ndemo: {count} objects in s3://{BUCKET}; the simulator counted {violations} rate-rule violations"
        )
        return run.returncode
    finally:
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
