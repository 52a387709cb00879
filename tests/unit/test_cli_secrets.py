"""The CLI and the API key: a key that cannot be sent stops `check` before any request, and a key
lying in a file others can read is flagged by `check` and once at the daemon's start."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from archiver import app, cli, cradle, sink
from archiver.retention import BucketLock

KEY = "k-S3cretVALUE"


class FakeClient:
    created = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        FakeClient.created += 1

    def probe(self) -> int:
        return 0

    def close(self) -> None:
        pass


class FakeSink:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def check_write(self) -> None:
        pass

    def lock_configuration(self) -> BucketLock:
        return BucketLock(versioning=False, object_lock=False)


class FakeArchiver:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> FakeArchiver:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def run_once(self) -> None:
        pass

    def serve(self) -> bool:
        return True

    def dead_lettered(self) -> int:
        return 0


@pytest.fixture(autouse=True)
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No network, no S3. What `cli.run` sets up for the process (the signal handlers, and
    logging to this test's captured stderr, closed after it) is put back afterwards."""
    monkeypatch.setattr(cradle, "CradleClient", FakeClient)
    monkeypatch.setattr(sink, "S3Sink", FakeSink)
    monkeypatch.setattr(app, "Archiver", FakeArchiver)
    for name in ("CRADLE_ID", "CRADLE_API_KEY", "CREDENTIALS_DIRECTORY", "CRADLE_ARCHIVER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    FakeClient.created = 0
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    structlog_config = structlog.get_config()
    root = logging.getLogger()
    root_handlers, root_level = root.handlers[:], root.level
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    structlog.configure(**structlog_config)
    root.handlers[:], root.level = root_handlers, root_level


def config_file(tmp_path: Path, mode: int, key: str = KEY) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[cradle]\nid = "acme"\napi_key = "{key}"\n[s3]\nbucket = "calls"\n'
        f'[state]\npath = "{tmp_path / "state.db"}"\n[server]\nlisten = ""\n'
    )
    path.chmod(mode)
    return path


def test_check_warns_about_a_world_readable_config_holding_the_key_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path, 0o644)
    assert cli.run(["check", "--config", str(path), "--log-format", "json"]) == 0
    out = capsys.readouterr()
    assert (
        f"warning     {path} holds the API key and is readable by everyone (mode 0644)" in out.out
    )
    assert "cradle api  ok" in out.out and "s3          ok" in out.out
    assert KEY not in out.out + out.err


def test_check_says_nothing_about_a_private_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path, 0o600)
    assert cli.run(["check", "--config", str(path), "--log-format", "json"]) == 0
    assert "warning" not in capsys.readouterr().out


def test_check_refuses_a_key_with_a_newline_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRADLE_API_KEY", f"{KEY}\n")
    path = config_file(tmp_path, 0o600)
    assert cli.run(["check", "--config", str(path), "--log-format", "json"]) == 2
    out = capsys.readouterr()
    assert "config      ok" not in out.out
    assert f"{path}: CRADLE_API_KEY (environment): has leading or trailing whitespace" in out.err
    assert KEY not in out.out + out.err
    assert FakeClient.created == 0


@pytest.mark.parametrize("once", [True, False])
def test_run_logs_a_readable_secret_once_at_start(tmp_path: Path, once: bool) -> None:
    path = config_file(tmp_path, 0o604)
    args = cli.build_parser().parse_args(["run", "--config", str(path), *(["--once"] * once)])
    with capture_logs() as logs:
        assert cli.cmd_run(args) == 0
    flagged = [e for e in logs if e["event"] == "config.secret_readable"]
    assert flagged == [
        {
            "event": "config.secret_readable",
            "log_level": "warning",
            "path": str(path),
            "mode": "0604",
            "readers": "everyone",
        }
    ]
    assert KEY not in repr(logs)


def test_run_logs_nothing_for_a_private_config(tmp_path: Path) -> None:
    args = cli.build_parser().parse_args(
        ["run", "--once", "--config", str(config_file(tmp_path, 0o600))]
    )
    with capture_logs() as logs:
        assert cli.cmd_run(args) == 0
    assert not [e for e in logs if e["event"] == "config.secret_readable"]
