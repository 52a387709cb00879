"""`make demo`'s script: exits 0, reports what landed, and leaves no server behind."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import pytest

from tests.e2e.harness import ROOT, cli_env

pytestmark = pytest.mark.e2e


def test_demo_archives_and_cleans_up() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/demo.py", "--per-hour", "2"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env=cli_env(),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    landed = re.search(
        r"demo: (\d+) recordings in s3://demo-recordings, \d+ sealed-day manifests, \d+ call-history"
        r" parts; the simulator counted 0 rate-rule violations",
        result.stdout,
    )
    assert landed and int(landed.group(1)) > 20
    assert re.search(r"archived\s+" + landed.group(1), result.stdout)
    ports = re.search(r"simulator on :(\d+), S3 on :(\d+)", result.stdout)
    assert ports
    for port in ports.groups():
        with socket.socket() as probe:
            # SO_REUSEADDR lets the bind pass over TIME_WAIT connections, never over a listener.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", int(port)))  # nothing is listening there any more
