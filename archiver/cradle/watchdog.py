"""The watchdog and the time budget of a response: what bounds a request, not only each read.

A socket timeout bounds one read, so a server that sends a byte a second holds a request open
for ever. The budget (`Transfer`) says how long a response may take for its size; the watchdog
enforces it from outside the blocked read, by shutting the socket down, because nothing inside
a read that never times out can notice the clock.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import requests.adapters
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class Watchdog:
    """Cuts the connection of a request that outlives its deadline.

    The socket timeout bounds each read, not the request: a server that sends a byte a second
    keeps a read from ever timing out, in the headers as in the body. One thread per client
    watches the one request in flight and, past its deadline, shuts down the sockets of the
    session's connections, so the blocked read returns at once and the request fails.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._fired = False
        self._connections: weakref.WeakSet[HTTPConnection] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._closed = False

    def track(self, connection: HTTPConnection) -> None:
        with self._cond:
            self._connections.add(connection)

    def arm(self, deadline: float) -> None:
        """Cut at `deadline` (time.monotonic) unless disarmed or re-armed first."""
        with self._cond:
            self._deadline, self._fired = deadline, False
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._deadline = None
            self._cond.notify()

    @property
    def fired(self) -> bool:
        return self._fired

    def close(self) -> None:
        """End the watching thread (a client's `close`)."""
        with self._cond:
            self._closed, self._deadline = True, None
            self._cond.notify()

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                self._deadline, self._fired = None, True
                for connection in list(self._connections):
                    sock = connection.sock
                    if sock is not None:
                        with contextlib.suppress(OSError):  # already closed: nothing to cut
                            sock.shutdown(socket.SHUT_RDWR)  # the blocked recv returns now


class WatchedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter with connections that report to the watchdog when they connect."""

    def __init__(self, watchdog: Watchdog) -> None:
        self._watchdog = watchdog
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        watchdog = self._watchdog

        class WatchedHTTPConnection(HTTPConnection):
            def connect(self) -> None:
                watchdog.track(self)
                super().connect()

        class WatchedHTTPSConnection(HTTPSConnection):
            def connect(self) -> None:
                watchdog.track(self)
                super().connect()

        class WatchedHTTPPool(HTTPConnectionPool):
            ConnectionCls = WatchedHTTPConnection

        class WatchedHTTPSPool(HTTPSConnectionPool):
            ConnectionCls = WatchedHTTPSConnection

        self.poolmanager.pool_classes_by_scheme = {
            "http": WatchedHTTPPool,
            "https": WatchedHTTPSPool,
        }


@dataclass
class Transfer:
    """The time budget of one response: `timeout` for the headers, then the body must keep an
    average of at least `min_rate` bytes a second since the request started (after the same
    grace), so a trickle fails while a large body at a fair speed gets all the time it needs."""

    started: float
    timeout: float
    min_rate: float

    def allowed(self, received: int) -> float:
        return self.timeout + received / self.min_rate

    def hard_deadline(self, expected: int) -> float:
        return self.started + self.allowed(expected)

    def too_slow(self, received: int) -> bool:
        return time.monotonic() - self.started > self.allowed(received)
