"""Counters for /_sim/stats (API requests and webhooks), and the gate that enforces the API's
rate rules."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger()

REQUEST_KINDS = ("list", "download", "conversations", "other")
# Violations kept with their details (when, which rule, the arrivals of the last second).
RECENT_VIOLATIONS = 20
FAULT_KINDS = (
    "429",
    "5xx",
    "drop_headers",
    "drop_body",
    "truncate",
    "slow_body",
    "malformed_list",
    "list_cap",
)
# What became of the webhooks: each POST answered 2xx is sent, any other failed; a dropped
# one was never posted, a repeated one posted twice (both POSTs counted as sent or failed).
WEBHOOK_OUTCOMES = ("sent", "dropped", "repeated", "failed")


class Stats:
    """Thread-safe counters; `snapshot` is the JSON of GET /_sim/stats."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._counts: Counter[str] = Counter()
            self._kinds: Counter[str] = Counter()
            self._statuses: Counter[int] = Counter()
            self._faults: Counter[str] = Counter()
            self._max_in_flight = 0
            self._recent_violations: deque[dict[str, Any]] = deque(maxlen=RECENT_VIOLATIONS)

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def request(self, kind: str) -> None:
        with self._lock:
            self._counts["requests"] += 1
            self._kinds[kind] += 1

    def response(self, status: int) -> None:
        with self._lock:
            self._statuses[status] += 1

    def fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    def violation(self, details: dict[str, Any]) -> None:
        with self._lock:
            self._counts[f"{details['rule']}_violations"] += 1
            self._recent_violations.append(details)

    def in_flight(self, n: int) -> None:
        with self._lock:
            self._max_in_flight = max(self._max_in_flight, n)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            counts = self._counts
            return {
                "requests": counts["requests"],
                "requests_by_kind": {k: self._kinds[k] for k in REQUEST_KINDS},
                "responses": {str(code): n for code, n in sorted(self._statuses.items())},
                "violations": counts["in_flight_violations"] + counts["rate_violations"],
                "in_flight_violations": counts["in_flight_violations"],
                "rate_violations": counts["rate_violations"],
                "faults": {k: self._faults[k] for k in FAULT_KINDS},
                "bytes_served": counts["bytes_served"],
                "downloads_completed": counts["downloads_completed"],
                "client_disconnects": counts["client_disconnects"],
                "canary_requests": counts["canary_requests"],
                "canary_credential_requests": counts["canary_credential_requests"],
                "max_in_flight": self._max_in_flight,
                "webhooks": {k: counts[f"webhooks_{k}"] for k in WEBHOOK_OUTCOMES},
                "recent_violations": list(self._recent_violations),
            }


class Ticket:
    """One API request's place in the gate; `finish` is idempotent so every path may call it."""

    def __init__(self, gate: RateGate, connection: socket.socket | None) -> None:
        self.violation: str | None = None
        self.connection = connection
        self._gate = gate
        self._done = False

    def finish(self) -> None:
        if not self._done:
            self._done = True
            self._gate.release(self)


class RateGate:
    """At most one request in flight and at most `rps` arrivals in any sliding second.

    A request is in flight from its arrival until its handler calls `finish`, which the server
    does just before the last write: a keep-alive client may send its next request the moment
    it reads the last byte, and that must not look like an overlap. Likewise a client may
    abandon a response by closing the connection and go on at once, before the server's
    thread has noticed; a request whose client has hung up is not counted as in flight. Arrivals
    that break a rule still count in the window, as they would at a real server's edge.
    """

    def __init__(self, stats: Stats, clock: Callable[[], float] = time.monotonic) -> None:
        self._stats = stats
        self._clock = clock
        self._lock = threading.Lock()
        self._arrivals: deque[float] = deque()
        self._in_flight: set[Ticket] = set()

    def arrive(self, rps: int, path: str, connection: socket.socket | None = None) -> Ticket:
        ticket = Ticket(self, connection)
        with self._lock:
            now = self._clock()
            while self._arrivals and self._arrivals[0] <= now - 1.0:
                self._arrivals.popleft()
            self._arrivals.append(now)
            others = [t for t in self._in_flight if not _client_gone(t.connection)]
            if others:
                ticket.violation = "in_flight"
            elif len(self._arrivals) > rps:
                ticket.violation = "rate"
            self._in_flight.add(ticket)
            in_window = len(self._arrivals)
            window = [round((t - now) * 1000, 1) for t in self._arrivals]
        in_flight = len(others) + 1
        self._stats.in_flight(in_flight)
        if ticket.violation:
            self._stats.violation(
                {
                    "at": time.time(),
                    "rule": ticket.violation,
                    "path": path,
                    "in_flight": in_flight,
                    "arrivals_ms_before": window,
                }
            )
            log.warning(
                "simulator.rate_rule_violated",
                rule=ticket.violation,
                path=path,
                in_flight=in_flight,
                arrivals_last_second=in_window,
            )
        return ticket

    def release(self, ticket: Ticket) -> None:
        with self._lock:
            self._in_flight.discard(ticket)


def _client_gone(connection: socket.socket | None) -> bool:
    """Whether the client closed this connection (EOF or reset is waiting to be read)."""
    if connection is None or not hasattr(socket, "MSG_DONTWAIT"):
        return False
    try:
        # A peek never consumes anything the handler's own reads would see.
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
