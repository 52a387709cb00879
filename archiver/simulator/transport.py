"""HTTP plumbing shared by the API and canary listeners.

`SimHandler.send` is the one way a response leaves the simulator: it streams the body, applies
body faults and throttling, and calls the request's bookkeeping (releasing its rate-gate ticket)
just before the last write, for the reason given in `RateGate`.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

from archiver.simulator.body import CHUNK_SIZE
from archiver.simulator.faults import Plan
from archiver.simulator.kinds import split_listen
from archiver.simulator.state import SimState
from archiver.simulator.stats import Stats, Ticket

log = structlog.get_logger()

DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
_CLEAN = Plan()


class SimServer(ThreadingHTTPServer):
    """A threading HTTP server that holds its simulator's state and can reset connections."""

    daemon_threads = True
    # Set once both urls are known, since the catalog needs them; before `serve_forever` runs,
    # connections only wait in the listen backlog.
    state: SimState

    def __init__(self, address: tuple[str, int], handler: type[SimHandler]):
        self._resets: set[socket.socket] = set()
        self._resets_lock = threading.Lock()
        super().__init__(address, handler)

    def reset_on_close(self, connection: socket.socket) -> None:
        """Close this connection with a TCP RST instead of a FIN, like a crashed backend."""
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self._resets_lock:
            self._resets.add(connection)

    def shutdown_request(self, request: Any) -> None:
        with self._resets_lock:
            reset = request in self._resets
            self._resets.discard(request)
        if reset:
            # Skip the polite shutdown(SHUT_WR): it would send a FIN before the RST.
            self.close_request(request)
        else:
            super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver would print the traceback to stderr; the simulator only logs.
        log.exception("simulator.handler_failed", client=str(client_address[0]))


class SimServer6(SimServer):
    address_family = socket.AF_INET6


def bind(listen: str, handler: type[SimHandler]) -> SimServer:
    host, port = split_listen(listen)
    server_class = SimServer6 if ":" in host else SimServer
    return server_class((host, port), handler)


def url_of(server: SimServer) -> str:
    """The url clients use; a wildcard listen address is reached on loopback."""
    host, port = server.server_address[:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(str(host), str(host))
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class SimHandler(BaseHTTPRequestHandler):
    """Shared plumbing: keep-alive, structlog instead of stderr, streaming `send`."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm the body would wait
    # for the client's delayed ACK, adding 40 ms to every small response.
    disable_nagle_algorithm = True
    server_version = "cradle-simulator"
    sys_version = ""
    server: SimServer
    # Only API responses count in the stats' `responses`; admin and canary ones do not.
    api_request = False

    def version_string(self) -> str:
        return self.server_version

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug(
            "simulator.request",
            listener=type(self).__name__,
            method=self.command,
            path=self.path,
            status=int(code) if str(code).isdigit() else code,
        )

    def log_message(self, format: str, *args: Any) -> None:
        # Only http.server's own complaints (bad request lines, timeouts) arrive here.
        log.info("simulator.http_message", message=format % args, client=self.client_address[0])

    def send(
        self,
        status: int,
        content_type: str,
        length: int,
        pieces: Iterable[bytes],
        ticket: Ticket | None = None,
        *,
        plan: Plan = _CLEAN,
        headers: dict[str, str] | None = None,
        download: bool = False,
    ) -> None:
        """Answer with `length` bytes of `pieces`, applying the plan's body faults."""
        state = self.server.state
        cut = _cut(length, plan, state.counters)
        completion = _Completion(state.counters, ticket, download and cut == length)
        if self.api_request:
            state.counters.response(status)
        self._send_head(status, content_type, length, headers or {})
        if cut == 0:
            completion.before_last()
        self.end_headers()
        try:
            sent = self._write(
                _limit(pieces, cut), completion.before_last, self._throttle(plan), download
            )
        except DISCONNECTS:
            completion.undo()  # the last write failed after all
            raise
        if sent < length:
            self.close_connection = True
            if plan.drop_body or state.stopping.is_set():
                self.server.reset_on_close(self.connection)

    def send_json(
        self,
        status: int,
        document: Any,
        ticket: Ticket | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        body = json.dumps(document).encode()
        self.send(status, "application/json", len(body), [body], ticket, headers=headers)

    def _send_head(
        self, status: int, content_type: str, length: int, headers: dict[str, str]
    ) -> None:
        """The status line and headers, all but the blank line that ends them."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))

    def _throttle(self, plan: Plan) -> float | None:
        state = self.server.state
        switches = state.switches
        rates = [switches.bandwidth] if switches.bandwidth else []
        if plan.slow:
            state.counters.fault("slow_body")
            rates.append(switches.slow_bytes_per_second)
        return float(min(rates)) if rates else None

    def _write(
        self,
        pieces: Iterable[bytes],
        before_last: Callable[[], None],
        rate: float | None,
        download: bool,
    ) -> int:
        """Stream `pieces`, calling `before_last` just before the last write; bytes sent."""
        state = self.server.state
        if rate:
            pieces = _slices(pieces, max(512, min(CHUNK_SIZE, int(rate / 20))))
        sent, began = 0, time.monotonic()
        iterator = iter(pieces)
        piece = next(iterator, None)
        while piece is not None:
            following = next(iterator, None)
            if rate:
                # Paced by the end of each piece, so a body takes length / rate in all.
                delay = began + (sent + len(piece)) / rate - time.monotonic()
                if delay > 0 and state.stopping.wait(delay):
                    break
            if state.stopping.is_set():
                break
            if following is None:
                before_last()
            if download:
                state.counters.add("bytes_served", len(piece))
            try:
                self.wfile.write(piece)
            except DISCONNECTS:
                if download:
                    state.counters.add("bytes_served", -len(piece))
                raise
            sent += len(piece)
            piece = following
        return sent


def _cut(length: int, plan: Plan, counters: Stats) -> int:
    """How many of a body's `length` bytes are sent: all, or fewer when the plan drops or
    truncates the body (then counted as that fault)."""
    if not (plan.drop_body or plan.truncate) or length <= 1:
        return length
    counters.fault("drop_body" if plan.drop_body else "truncate")
    return min(length - 1, max(1, int(length * plan.cut_fraction)))


@dataclass
class _Completion:
    """A response's bookkeeping, done just before its last write: the client cannot see the
    end of the response before it, so one that reads /_sim/stats right after a download
    finds it counted."""

    counters: Stats
    ticket: Ticket | None
    completes_download: bool  # a download sent whole
    counted: bool = False

    def before_last(self) -> None:
        if self.ticket:
            self.ticket.finish()
        if self.completes_download:
            self.counters.add("downloads_completed")
            self.counted = True

    def undo(self) -> None:
        if self.counted:
            self.counters.add("downloads_completed", -1)


def _limit(pieces: Iterable[bytes], cut: int) -> Iterator[bytes]:
    """The first `cut` bytes of `pieces`."""
    left = cut
    for piece in pieces:
        if left <= 0:
            return
        yield piece[:left]
        left -= len(piece)


def _slices(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    for piece in pieces:
        for start in range(0, len(piece), size):
            yield piece[start : start + size]
