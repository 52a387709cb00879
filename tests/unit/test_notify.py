"""sd_notify: the exact datagrams systemd receives, on a real AF_UNIX socket."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from archiver.notify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound in tmp_path, as systemd's notify socket is; yields it and its name."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        yield sock, str(path)


def received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def nothing_received(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    return False


def test_ready_sends_ready_and_status_in_one_datagram(listener: tuple[socket.socket, str]) -> None:
    sock, name = listener
    notifier = Notifier({"NOTIFY_SOCKET": name})

    assert notifier.ready("watermark 2024-05-01T10:00:00Z")

    assert received(sock) == "READY=1\nSTATUS=watermark 2024-05-01T10:00:00Z"


def test_status_watchdog_and_stopping_messages(listener: tuple[socket.socket, str]) -> None:
    sock, name = listener
    notifier = Notifier({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "60000000"})

    notifier.status("archived 3, pending 0")
    notifier.watchdog()
    notifier.stopping()

    assert [received(sock) for _ in range(3)] == [
        "STATUS=archived 3, pending 0",
        "WATCHDOG=1",
        "STOPPING=1",
    ]


def test_a_newline_in_a_status_cannot_inject_another_assignment(
    listener: tuple[socket.socket, str],
) -> None:
    sock, name = listener

    Notifier({"NOTIFY_SOCKET": name}).status("failed:\nREADY=1")

    assert received(sock) == "STATUS=failed: READY=1"


def test_abstract_socket_named_with_an_at_sign() -> None:
    name = f"cradle-archiver-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})

        assert notifier.enabled
        assert notifier.ready("starting")
        assert received(sock) == "READY=1\nSTATUS=starting"


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "1000000"}, 0.5),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "not-a-pid"}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    env: dict[str, str], interval: float | None
) -> None:
    assert Notifier({"NOTIFY_SOCKET": "/run/x", **env}).watchdog_interval == interval


def test_a_watchdog_meant_for_another_process_is_not_pinged(
    listener: tuple[socket.socket, str],
) -> None:
    sock, name = listener
    env = {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}
    notifier = Notifier(env, pid=4242)

    assert notifier.watchdog_interval is None
    assert not notifier.watchdog()
    assert nothing_received(sock)


def test_no_watchdog_ping_when_the_unit_has_no_watchdog(
    listener: tuple[socket.socket, str],
) -> None:
    sock, name = listener
    notifier = Notifier({"NOTIFY_SOCKET": name})

    assert not notifier.watchdog()
    assert nothing_received(sock)


def test_everything_is_a_no_op_without_notify_socket() -> None:
    notifier = Notifier({"WATCHDOG_USEC": "60000000"})

    assert not notifier.enabled
    assert notifier.watchdog_interval == 30.0
    assert not notifier.ready("up")
    assert not notifier.status("up")
    assert not notifier.watchdog()
    assert not notifier.stopping()


def test_reads_os_environ_by_default(
    monkeypatch: pytest.MonkeyPatch, listener: tuple[socket.socket, str]
) -> None:
    sock, name = listener
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier()

    assert notifier.watchdog_interval == 5.0
    assert notifier.watchdog()
    assert received(sock) == "WATCHDOG=1"


def test_a_failed_send_never_raises_and_warns_once(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})

    with capture_logs() as events:
        results = [notifier.ready("up"), notifier.status("x"), notifier.stopping()]

    assert results == [False, False, False]
    warnings = [e for e in events if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["event"] == "notify.send_failed"
    assert warnings[0]["socket"] == str(tmp_path / "gone.sock")


def test_an_unsupported_socket_kind_disables_notifications() -> None:
    with capture_logs() as events:
        notifier = Notifier({"NOTIFY_SOCKET": "vsock:2:1234"})

    assert not notifier.enabled
    assert not notifier.ready("up")
    assert [e["event"] for e in events] == ["notify.unsupported_socket"]
