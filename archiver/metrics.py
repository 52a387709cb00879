"""Prometheus metrics and the `/metrics`, `/healthz` and `/readyz` probes on `server.listen`.

The only module that imports prometheus_client. Counters and histograms count what this process
did; the gauges read the checkpoint at scrape time, so they are right after a restart. Each
`Metrics` has its own registry: two archivers (or tests) in one process never collide.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import prometheus_client as prom
import structlog

from archiver.errors import FatalError
from archiver.models import RecordingState, format_time, utc_now

log = structlog.get_logger(__name__)

PREFIX = "cradle_archiver_"
# From a small body on a fast link (50 ms) to 100 MB on a slow one or after retries (10 min).
TRANSFER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# A scrape storm (several Prometheus replicas, a dashboard on refresh) reads SQLite once per TTL.
STATE_TTL_SECONDS = 2.0
TEXT = "text/plain; charset=utf-8"
# Our names are all legacy-valid, so the body is text format 0.0.4, which every scraper knows;
# prometheus_client's own handler labels it so too, unless a scraper asks for 1.0.0.
GAUGES = {
    "watermark_timestamp_seconds": "Every window ending at or before this time is archived.",
    "watermark_lag_seconds": "Now minus the watermark (at least archive.settle_delay).",
    "last_success_timestamp_seconds": "When the last successful archive pass finished.",
    "pending_recordings": "Recordings listed but not yet archived.",
    "failed_recordings": "Recordings dead-lettered (see `status`, `retry`).",
}

# `_created` series would double every counter and histogram in the text format and nothing of
# ours reads them; the switch is process-wide, and this is the only module using the library.
prom.disable_created_metrics()
Family = prom.metrics_core.GaugeMetricFamily


@dataclass(frozen=True)
class GaugeState:
    """What the checkpoint says at one instant; None where it does not know yet."""

    watermark: datetime | None
    counts: Mapping[RecordingState, int]
    last_success: datetime | None = None  # when the last successful pass finished


class Metrics:
    def __init__(
        self,
        state_reader: Callable[[], GaugeState],
        *,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        state_ttl: float = STATE_TTL_SECONDS,
    ) -> None:
        self.registry = prom.CollectorRegistry()
        self.clock = clock
        self._read_state = state_reader
        self._monotonic = monotonic
        self._state_ttl = state_ttl
        self._state_lock = threading.Lock()  # concurrent scrapes also share the one read
        self._cached: tuple[float, GaugeState | None] | None = None
        # The last pass this process finished successfully: readiness looks at this.
        self.last_success: datetime | None = None
        counter = partial(prom.Counter, registry=self.registry)
        histogram = partial(prom.Histogram, buckets=TRANSFER_BUCKETS, registry=self.registry)
        # prometheus_client strips and re-adds `_total`: the exposed names are exactly these.
        self.archived = counter(PREFIX + "recordings_archived_total", "Recordings archived.")
        self.failed = counter(
            PREFIX + "recordings_failed_total", "Recordings dead-lettered, by reason.", ["reason"]
        )
        self.bytes = counter(PREFIX + "bytes_archived_total", "Bytes of recordings archived.")
        api_help = "Cradle API responses; code 0 when none came (timeout, connection failure)."
        self.api_requests = counter(PREFIX + "api_requests_total", api_help, ["endpoint", "code"])
        self.download = histogram(PREFIX + "download_seconds", "Download time, retries included.")
        self.upload = histogram(PREFIX + "upload_seconds", "Upload time of a recording to S3.")
        self.registry.register(self)  # the gauges, see collect()
        prom.ProcessCollector(registry=self.registry)  # process_*: memory stays flat (SPEC 7)

    def recording_archived(
        self, size: int, download_seconds: float | None = None, upload_seconds: float | None = None
    ) -> None:
        self.archived.inc()
        self.bytes.inc(size)
        if download_seconds is not None:
            self.observe_download(download_seconds)
        if upload_seconds is not None:
            self.observe_upload(upload_seconds)

    def recording_failed(self, reason: str) -> None:
        self.failed.labels(reason=reason).inc()

    def api_response(self, endpoint: str, code: int) -> None:
        self.api_requests.labels(endpoint=endpoint, code=str(code)).inc()

    def observe_download(self, seconds: float) -> None:
        self.download.observe(max(0.0, seconds))

    def observe_upload(self, seconds: float) -> None:
        self.upload.observe(max(0.0, seconds))

    def pass_succeeded(self, at: datetime) -> None:
        self.last_success = max(at, self.last_success or at)  # one writer: the scheduler

    def exposition(self) -> bytes:
        return prom.generate_latest(self.registry)

    def state(self) -> GaugeState | None:
        """The checkpoint's state, at most `state_ttl` old; None when it cannot be read."""
        with self._state_lock:
            now = self._monotonic()
            if self._cached is None or now - self._cached[0] >= self._state_ttl:
                try:
                    state: GaugeState | None = self._read_state()
                except Exception as exc:  # a scrape must still serve the counters
                    log.warning("metrics.state_unreadable", error=str(exc))
                    state = None
                self._cached = (now, state)
            return self._cached[1]

    def last_success_at(self, state: GaugeState | None = None) -> datetime | None:
        """The later of this process's last success and the checkpoint's (which knows earlier
        processes', so a restarted daemon that succeeded recently is ready at once)."""
        state = state or self.state() or GaugeState(None, {})
        return max((t for t in (state.last_success, self.last_success) if t), default=None)

    def collect(self) -> Iterator[Family]:
        state = self.state() or GaugeState(None, {})
        mark = state.watermark
        last = self.last_success_at(state)
        values = {
            "watermark_timestamp_seconds": mark.timestamp() if mark else None,
            "watermark_lag_seconds": (self.clock() - mark).total_seconds() if mark else None,
            "last_success_timestamp_seconds": last.timestamp() if last else None,
            "pending_recordings": state.counts.get(RecordingState.PENDING),
            "failed_recordings": state.counts.get(RecordingState.FAILED),
        }
        # A value nobody knows yet (no watermark, unreadable checkpoint) is left out, not 0.
        for name, help_text in GAUGES.items():
            family = Family(PREFIX + name, help_text)
            value = values.get(name)
            if value is not None:
                family.add_metric([], value)
            yield family


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
            return 200, prom.CONTENT_TYPE_PLAIN_0_0_4, self.metrics.exposition()
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
