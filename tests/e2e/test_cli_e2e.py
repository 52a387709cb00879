"""The real CLI as a process, against the simulator and moto's S3 server over HTTP."""

from __future__ import annotations

import json
import os
import pty
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import (
    API_KEY,
    ROOT,
    Bucket,
    cli,
    cli_env,
    events,
    expected_objects,
    spawn,
    write_config,
)
from tests.ports import free_port

pytestmark = pytest.mark.e2e


def assert_bucket_holds_exactly(bucket: Bucket, sim: Any) -> dict[str, Any]:
    wanted = expected_objects(sim)
    found = bucket.objects()
    assert sorted(found) == sorted(wanted)
    for key, rec in wanted.items():
        obj = found[key]
        assert obj["sha256"] == sim.body_sha256(rec.recording_id), key
        assert obj["metadata"]["sha256"] == obj["sha256"]
        assert obj["metadata"]["recording-id"] == rec.recording_id
        assert obj["content_type"] == "audio/mpeg"
    assert bucket.multipart_uploads() == []
    return found


def test_run_once_archives_every_recording_exactly_once(
    tmp_path: Path, simulator: Any, bucket: Bucket
) -> None:
    sim = simulator(per_hour=15)
    config = write_config(tmp_path / "config.toml", sim, bucket)
    result = cli("run", "--once", config=config)
    assert result.returncode == 0, result.stderr[-2000:]
    found = assert_bucket_holds_exactly(bucket, sim)
    assert len(found) >= 30
    entry = next(rec.entry for rec in sim.recordings() if rec.entry.get("nature") == "in")
    key = next(k for k in found if k.endswith(entry["url"].rsplit("/", 1)[-1].split("?")[0]))
    metadata, tags = found[key]["metadata"], found[key]["tags"]
    assert metadata["nature"] == "in" and metadata["agent1"] == entry["agent1"]
    assert metadata["cradle-number"] == entry["cradleNumber"]
    assert metadata["duration-seconds"] == str(entry["durationSeconds"])
    assert tags["nature"] == "in" and tags["third-party-number"] == entry["thirdPartyNumber"]
    stats = sim.stats()
    assert stats["violations"] == 0
    logged = events(result.stderr)
    archived = [e for e in logged if e["event"] == "recording.archived"]
    assert len(archived) == len(found) and all(e["bytes"] > 0 for e in archived)
    assert any(e["event"] == "window.listed" for e in logged)
    assert API_KEY not in result.stderr + result.stdout

    downloads = stats["requests_by_kind"]["download"]
    again = cli("run", "--once", config=config)
    assert again.returncode == 0, again.stderr[-2000:]
    assert sim.stats()["requests_by_kind"]["download"] == downloads
    assert sim.stats()["violations"] == 0

    status = cli("status", "--json", config=config)
    report = json.loads(status.stdout)
    assert report["archived"] == len(found) and report["pending"] == 0 and report["failed"] == 0
    assert datetime.fromisoformat(report["watermark"].replace("Z", "+00:00")) <= datetime.now(UTC)


def test_boundaries_and_late_arrivals_are_caught(
    tmp_path: Path, simulator: Any, bucket: Bucket
) -> None:
    for bounds in ("inclusive", "exclusive"):
        sim = simulator(
            per_hour=10, boundary_fraction=0.4, late_fraction=0.2, late_delay=4, bounds=bounds
        )
        late = [r for r in sim.recordings() if r.visible_at > datetime.now(UTC)]
        assert late, "the simulator made no late recordings"
        workdir = tmp_path / bounds
        workdir.mkdir()
        config = write_config(workdir / "config.toml", sim, bucket, s3={"prefix": f"{bounds}/"})
        first = cli("run", "--once", config=config)
        assert first.returncode == 0, first.stderr[-2000:]
        time.sleep(max(0.0, max(r.visible_at for r in late).timestamp() - time.time()) + 0.2)
        second = cli("run", "--once", config=config)
        assert second.returncode == 0, second.stderr[-2000:]
        wanted = expected_objects(sim, prefix=f"{bounds}/")
        keys = [k for k in bucket.recording_keys() if k.startswith(f"{bounds}/")]
        assert sorted(keys) == sorted(wanted)
        assert sim.stats()["violations"] == 0


def test_a_429_with_retry_after_is_honoured(tmp_path: Path, simulator: Any, bucket: Bucket) -> None:
    sim = simulator(per_hour=8, fault_429=0.15, retry_after="seconds")
    config = write_config(tmp_path / "config.toml", sim, bucket)
    result = cli("run", "--once", config=config)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_bucket_holds_exactly(bucket, sim)
    stats = sim.stats()
    assert stats["faults"]["429"] > 0
    assert stats["violations"] == 0
    retries = [
        e for e in events(result.stderr) if e["event"] == "api.retry" and e["reason"] == "http_429"
    ]
    assert len(retries) == stats["faults"]["429"]
    assert all(e["wait"] == 1.0 for e in retries)  # the simulator says Retry-After: 1


def test_large_recordings_go_up_as_real_multipart_uploads(
    tmp_path: Path, simulator: Any, bucket: Bucket
) -> None:
    sim = simulator(per_hour=1, size=17 * 2**20)
    config = write_config(tmp_path / "config.toml", sim, bucket, s3={"multipart_threshold": "6MiB"})
    result = cli("run", "--once", config=config)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_bucket_holds_exactly(bucket, sim)
    puts = [e for e in events(result.stderr) if e["event"] == "s3.put"]
    assert puts and all(e["multipart"] for e in puts)


def test_kill_9_during_a_backfill_then_restart_archives_everything_once(
    tmp_path: Path, simulator: Any, bucket: Bucket
) -> None:
    sim = simulator(per_hour=30, bytes_per_second=4000)
    config = write_config(tmp_path / "config.toml", sim, bucket)
    start = min(r.started_at for r in sim.recordings()) - timedelta(minutes=1)
    args = ("backfill", "--from", start.strftime("%Y-%m-%dT%H:%M:%SZ"))
    for delay in (2.5, 4.0, 3.0):
        process = spawn(*args, config=config)
        time.sleep(delay)
        process.kill()
        process.communicate()
    final = cli(*args, config=config, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    assert_bucket_holds_exactly(bucket, sim)
    assert sim.stats()["violations"] == 0
    report = json.loads(cli("status", "--json", config=config).stdout)
    assert report["pending"] == 0 and report["failed"] == 0
    assert report["archived"] == len(expected_objects(sim))


def test_sigterm_stops_the_daemon_cleanly(tmp_path: Path, simulator: Any, bucket: Bucket) -> None:
    sim = simulator(per_hour=30, bytes_per_second=4000)
    config = write_config(tmp_path / "config.toml", sim, bucket)
    process = spawn("run", config=config)
    # Not a fixed sleep: on a loaded machine the interpreter may still be importing after 3 s,
    # and a SIGTERM before the handlers are in place kills it with -15. Once the daemon says it
    # has started, a pass is under way and the handlers are set.
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if '"daemon.started"' in line:
            break
    time.sleep(1)  # into the first pass, so the stop lands mid-work
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=15)
    stderr = "".join(seen) + rest
    assert process.returncode == 0, stderr[-2000:]
    assert any(e["event"] == "daemon.stopped" for e in events(stderr))
    assert bucket.multipart_uploads() == []
    # Whatever the checkpoint calls archived is in the bucket.
    verify = cli("verify", config=config)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_second_instance_exits_1(tmp_path: Path, simulator: Any, bucket: Bucket) -> None:
    sim = simulator(per_hour=30)
    config = write_config(tmp_path / "config.toml", sim, bucket)
    first = spawn("run", config=config)
    try:
        deadline = time.monotonic() + 15
        while not (tmp_path / "state.db").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = cli("run", "--once", config=config)
        assert second.returncode == 1
        assert "holds the checkpoint" in second.stderr and str(first.pid) in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=15)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[cradle]\nid='x'\napi_key='k'\n[s3]\n", "s3.bucket"),
        (
            "[cradle]\nid='x'\napi_key='k'\nrequests_per_second = 12\n[s3]\nbucket='b1b'\n",
            "cradle.requests_per_second",
        ),
        ("[cradle]\nid='x'\napi_key='k'\n[s3]\nbucket='b1b'\nflavour='x'\n", "s3.flavour"),
        (
            "[cradle]\nid='x'\napi_key='k'\n[s3]\nbucket='b1b'\n[schedule]\ninterval='often'\n",
            "schedule.interval",
        ),
        (
            "[cradle]\nid='x'\napi_key_file='/no/such/key'\n[s3]\nbucket='b1b'\n",
            "cradle.api_key_file",
        ),
    ],
)
def test_a_bad_config_exits_2_naming_the_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = cli("run", "--once", config=config)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(config) in lines[0] and key in lines[0]


def test_verify_retry_and_check(tmp_path: Path, simulator: Any, bucket: Bucket) -> None:
    sim = simulator(per_hour=6, poison_404=1)
    config = write_config(tmp_path / "config.toml", sim, bucket, archive={"max_attempts": 2})
    run = cli("run", "--once", config=config)
    assert run.returncode == 3, run.stderr[-2000:]
    report = json.loads(cli("status", "--json", config=config).stdout)
    assert report["failed"] == 1 and report["recent_failures"][0]["reason"] == "http_404"

    verify = cli("verify", config=config)
    assert verify.returncode == 0 and "0 missing" in verify.stdout
    victim = bucket.recording_keys()[0]
    bucket.client.delete_object(Bucket=bucket.name, Key=victim)
    verify = cli("verify", config=config)
    assert verify.returncode == 3 and f"missing: {victim}" in verify.stdout

    retry = cli("retry", "--all", config=config)
    assert retry.returncode == 0 and "1 recordings put back" in retry.stdout
    assert json.loads(cli("status", "--json", config=config).stdout)["pending"] == 1
    (trail,) = [k for k in bucket.object_keys() if k.startswith("calls/audit/")]
    assert trail.endswith("-retry.json") and trail in retry.stdout
    record = json.loads(bucket.client.get_object(Bucket=bucket.name, Key=trail)["Body"].read())
    assert record["action"] == "retry" and record["counts"] == {"retried": 1}
    assert record["command"][1:] == [
        "--log-format",
        "json",
        "--config",
        str(config),
        "retry",
        "--all",
    ]
    assert record["who"]["user"] and record["who"]["host"]

    check = cli("check", config=config)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "credentials accepted" in check.stdout and "accepts writes" in check.stdout
    wrong = cli("check", config=config, CRADLE_API_KEY="not-the-key")
    assert wrong.returncode == 1 and "credentials" in wrong.stderr
    assert API_KEY not in check.stdout + check.stderr + wrong.stderr


def test_backfill_draws_a_progress_bar_on_a_terminal(
    tmp_path: Path, simulator: Any, bucket: Bucket
) -> None:
    sim = simulator(per_hour=6)
    config = write_config(tmp_path / "config.toml", sim, bucket)
    start = min(r.started_at for r in sim.recordings()) - timedelta(minutes=1)
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "archiver",
            "--config",
            str(config),
            "--log-level",
            "error",
            "backfill",
            "--from",
            start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=follower,
        env=cli_env(),
        cwd=ROOT,
        text=True,
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    stdout, _ = process.communicate(timeout=60)
    os.close(leader)
    assert process.returncode == 0
    text = seen.decode(errors="replace")
    assert "\r[" in text and "recordings" in text and "ETA" in text and "100%" in text
    assert stdout.startswith("backfill ok:")


def probe_get(base: str, path: str) -> tuple[int, str]:
    """The daemon's answer to GET `path`: status and body; (0, "") while nothing listens."""
    try:
        with urllib.request.urlopen(base + path, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def wait_until_ready(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while probe_get(base, "/readyz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert probe_get(base, "/readyz")[0] == 200


def samples_of(exposition: str) -> dict[str, float]:
    """Prometheus's text format: each sample's name with its labels, and its value."""
    return {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in exposition.splitlines()
        if line and not line.startswith("#")
    }


def assert_metrics_count_one_pass(exposition: str, archived: int) -> None:
    samples = samples_of(exposition)
    assert samples["cradle_archiver_recordings_archived_total"] == archived
    assert samples["cradle_archiver_bytes_archived_total"] > 0
    assert samples['cradle_archiver_api_requests_total{code="200",endpoint="download"}'] == archived
    assert samples["cradle_archiver_pending_recordings"] == 0
    assert samples["cradle_archiver_failed_recordings"] == 0
    assert 0 <= samples["cradle_archiver_watermark_lag_seconds"] < 120
    assert samples["cradle_archiver_download_seconds_count"] == archived
    for name in ("watermark_timestamp_seconds", "last_success_timestamp_seconds"):
        assert samples[f"cradle_archiver_{name}"] > 1.7e9
    assert "# TYPE cradle_archiver_recordings_failed_total counter" in exposition
    assert "# TYPE cradle_archiver_upload_seconds histogram" in exposition


def test_the_daemon_serves_metrics_health_and_readiness(
    tmp_path: Path, simulator: Any, bucket: Bucket
) -> None:
    port = free_port()
    sim = simulator(per_hour=6)
    config = write_config(
        tmp_path / "config.toml", sim, bucket, server={"listen": f"127.0.0.1:{port}"}
    )
    process = spawn("run", config=config)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base)
        assert probe_get(base, "/healthz") == (200, "ok\n")
        time.sleep(2.1)  # the gauges cache the checkpoint's state for 2 s
        code, text = probe_get(base, "/metrics")
        assert code == 200
        assert_metrics_count_one_pass(text, archived=len(expected_objects(sim)))
        assert probe_get(base, "/nothing")[0] == 404
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
    assert process.returncode == 0


def receive_until(
    listener: socket.socket, messages: list[str], wanted: Callable[[str], bool]
) -> None:
    """Appends each datagram to `messages` until one is `wanted` (or is there already)."""
    while not any(wanted(m) for m in messages):
        messages.append(listener.recv(4096).decode())


def drain(listener: socket.socket, quiet: float = 2) -> list[str]:
    """The datagrams still coming: read until `quiet` seconds pass without one."""
    listener.settimeout(quiet)
    messages = []
    try:
        while True:
            messages.append(listener.recv(4096).decode())
    except TimeoutError:
        return messages


def test_the_daemon_speaks_sd_notify(tmp_path: Path, simulator: Any, bucket: Bucket) -> None:
    sim = simulator(per_hour=6)
    config = write_config(tmp_path / "config.toml", sim, bucket)
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(30)
    process = spawn("run", config=config, NOTIFY_SOCKET=path, WATCHDOG_USEC="1000000")
    os.environ.pop("WATCHDOG_PID", None)
    messages: list[str] = []
    try:
        receive_until(
            listener, messages, lambda m: "archived" in m and "STATUS=" in m and "READY" not in m
        )
        receive_until(listener, messages, lambda m: m == "WATCHDOG=1")
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
        messages += drain(listener)
        listener.close()
    assert process.returncode == 0
    assert messages[0].startswith("READY=1\nSTATUS=watermark ")
    assert any(m.startswith("STATUS=watermark ") and "0 pending" in m for m in messages)
    assert "WATCHDOG=1" in messages and "STOPPING=1" in messages
