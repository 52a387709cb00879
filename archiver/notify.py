"""systemd's sd_notify protocol, for `Type=notify` units with `WatchdogSec=`.

The protocol is one datagram of `KEY=value` lines on the AF_UNIX socket named by
`$NOTIFY_SOCKET` (a file system path, or an abstract socket written with a leading `@`).
`$WATCHDOG_USEC` asks for a `WATCHDOG=1` keep-alive at least that often, and `$WATCHDOG_PID`,
when set, says which process it is meant for. Outside systemd none of these is set and every
method does nothing, so the daemon calls them unconditionally.

Standard library only (socket), and it never raises: a lost notification must not stop the
archiver. The first failed send is logged as a warning, later ones at debug.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


class Notifier:
    """Sends readiness, status, watchdog and stopping notifications to the service manager."""

    def __init__(self, env: Mapping[str, str] | None = None, pid: int | None = None) -> None:
        env = os.environ if env is None else env
        self.socket_name = env.get("NOTIFY_SOCKET", "")
        self.address = _address(self.socket_name)
        if self.socket_name and self.address is None:
            log.warning("notify.unsupported_socket", socket=self.socket_name)
        self.watchdog_interval = _watchdog_interval(env, os.getpid() if pid is None else pid)
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when a service manager is listening."""
        return self.address is not None

    def ready(self, status: str) -> bool:
        """The service is up (`Type=notify` units count as started from here)."""
        return self.send(f"READY=1\nSTATUS={_one_line(status)}")

    def status(self, text: str) -> bool:
        """A one-line status that `systemctl status` shows."""
        return self.send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """The keep-alive; sent only when the service manager asked for one (`WatchdogSec=`)."""
        if self.watchdog_interval is None:
            return False
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        """The service has begun to shut down (the stop timeout runs from here)."""
        return self.send("STOPPING=1")

    def send(self, message: str) -> bool:
        """Send one datagram; True when it was sent, False when disabled or on failure."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode("utf-8", "replace"), self.address)
        except OSError as exc:
            # sd_notify semantics: a notification is best effort and never fatal.
            event = {"socket": self.socket_name, "message": message.split("\n", 1)[0]}
            if self._warned:
                log.debug("notify.send_failed", error=str(exc), **event)
            else:
                self._warned = True
                log.warning("notify.send_failed", error=str(exc), **event)
            return False
        return True


def _address(name: str) -> str | None:
    """The sendto() address for `$NOTIFY_SOCKET`, or None when unset or unsupported."""
    if name.startswith("@") and len(name) > 1:
        return "\0" + name[1:]  # Linux abstract namespace
    if name.startswith("/"):
        return name
    return None  # unset, relative, or a kind we do not speak (e.g. vsock:)


def _watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between two pings (half of `$WATCHDOG_USEC`), or None when no watchdog is set."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    watchdog_pid = env.get("WATCHDOG_PID", "")
    if watchdog_pid:
        try:
            if int(watchdog_pid) != pid:
                return None  # the watchdog belongs to another process (e.g. a wrapper)
        except ValueError:
            return None
    return usec / 2 / 1_000_000


def _one_line(text: str) -> str:
    """A newline in STATUS= would start another assignment: fold it away."""
    return " ".join(text.split())
