"""The probe HTTP server on `server.listen`: `/metrics`, `/healthz` and `/readyz`.

Stdlib only, and bound in its constructor so a taken port fails before any pass runs. It knows
the metrics only through `Metrics.exposition()` and the liveness check it is handed.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

from archiver.errors import FatalError
from archiver.metrics import EXPOSITION_TYPE, Metrics
from archiver.models import format_time

log = structlog.get_logger(__name__)

TEXT = "text/plain; charset=utf-8"


class _ProbeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], probe: ProbeServer) -> None:
        self.probe = probe
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _ProbeHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("probe.handler_failed", client=str(client_address[0]))


class _ProbeHandler(BaseHTTPRequestHandler):
    server: _ProbeHTTPServer
    server_version = "cradle-archiver"
    sys_version = ""

    def do_GET(self) -> None:
        status, content_type, body = self.server.probe.answer(self.path.split("?", 1)[0])
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines end here, not on stderr: a probe every few seconds would drown the logs.
        log.debug("probe.http", message=format % args)


class ProbeServer:
    """`/metrics`, `/healthz` and `/readyz`; bound in the constructor, served after start()."""

    def __init__(
        self,
        address: tuple[str, int],
        metrics: Metrics,
        *,
        alive: Callable[[], bool],
        ready_window: timedelta,
    ) -> None:
        self.metrics = metrics
        self.alive = alive
        self.ready_window = ready_window
        try:
            self._server = _ProbeHTTPServer(address, self)
        except OSError as exc:
            where = f"{address[0]}:{address[1]}"
            raise FatalError(f"cannot listen on {where} (server.listen): {exc.strerror}") from exc
        host, port = self._server.server_address[:2]
        self.address = (str(host), int(port))  # the real port when asked for port 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # stop() waits up to one poll interval: 0.1 s keeps shutdown (and the tests) quick.
        serve = partial(self._server.serve_forever, poll_interval=0.1)
        self._thread = threading.Thread(target=serve, name="probe", daemon=True)
        self._thread.start()
        log.info("probe.listening", host=self.address[0], port=self.address[1])

    def stop(self) -> None:
        """Stop serving and free the port; safe to call twice or without start()."""
        if self._thread is not None:
            self._server.shutdown()  # waits for serve_forever to end; would hang if not started
            self._thread = None
        self._server.server_close()  # closing it again is harmless

    def answer(self, path: str) -> tuple[int, str, bytes]:
        if path == "/metrics":
            return 200, EXPOSITION_TYPE, self.metrics.exposition()
        if path == "/healthz":
            return (200, TEXT, b"ok\n") if self._alive() else (503, TEXT, b"not alive\n")
        if path == "/readyz":
            reason = self.not_ready()
            return (503, TEXT, f"{reason}\n".encode()) if reason else (200, TEXT, b"ready\n")
        return 404, TEXT, b"not found\n"

    def not_ready(self) -> str | None:
        """Why the archiver is not ready, in one line; None when it is."""
        last = self.metrics.last_success_at()
        if last is None:
            return "no archive pass has succeeded yet"
        age, limit = (
            (self.metrics.clock() - last).total_seconds(),
            self.ready_window.total_seconds(),
        )
        if age > limit:
            return f"last success {format_time(last)} is {age:.0f}s old (limit {limit:.0f}s)"
        return None

    def _alive(self) -> bool:
        try:
            return bool(self.alive())
        except Exception as exc:  # a check that fails cannot vouch for the process
            log.warning("probe.alive_check_failed", error=str(exc))
            return False
