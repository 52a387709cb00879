"""Prometheus metrics: the counters, histograms and gauges `/metrics` serves (see probe.py).

The only module that imports prometheus_client. Counters and histograms count what this process
did; the gauges read the checkpoint at scrape time, so they are right after a restart. Each
`Metrics` has its own registry: two archivers (or tests) in one process never collide.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial

import prometheus_client as prom
import structlog

from archiver.models import RecordingState, utc_now

log = structlog.get_logger(__name__)

PREFIX = "cradle_archiver_"
# From a small body on a fast link (50 ms) to 100 MB on a slow one or after retries (10 min).
TRANSFER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# From a hint whose recording is listed at once (1 s) to one found on its last retry (5 min on).
HINT_BUCKETS = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# A scrape storm (several Prometheus replicas, a dashboard on refresh) reads SQLite once per TTL.
STATE_TTL_SECONDS = 2.0
# Our names are all legacy-valid, so the body is text format 0.0.4, which every scraper knows;
# prometheus_client's own handler labels it so too, unless a scraper asks for 1.0.0.
EXPOSITION_TYPE = prom.CONTENT_TYPE_PLAIN_0_0_4
GAUGES = {
    "watermark_timestamp_seconds": "Every window ending at or before this time is archived.",
    "watermark_lag_seconds": "Now minus the watermark (at least archive.settle_delay).",
    "last_success_timestamp_seconds": "When the last successful archive pass finished.",
    "pending_recordings": "Recordings listed but not yet archived.",
    "failed_recordings": "Recordings dead-lettered (see `status`, `retry`).",
    "last_sealed_day_timestamp_seconds": "UTC midnight starting the latest day sealed by a manifest.",
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
    last_sealed_day: datetime | None = None  # the start of the latest day with its manifest
    reconcile: Mapping[str, int] | None = None  # the last reconciliation's differences by kind


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
        self.audio_mismatches = counter(
            PREFIX + "audio_mismatches_total",
            "Recordings whose walked audio length is far from durationSeconds.",
        )
        api_help = "Cradle API responses; code 0 when none came (timeout, connection failure)."
        self.api_requests = counter(PREFIX + "api_requests_total", api_help, ["endpoint", "code"])
        self.download = histogram(PREFIX + "download_seconds", "Download time, retries included.")
        self.upload = histogram(PREFIX + "upload_seconds", "Upload time of a recording to S3.")
        self.conversations = counter(
            PREFIX + "conversations_exported_total", "Conversation revisions exported."
        )
        self.webhook_hints = counter(
            PREFIX + "webhook_hints_total", "Webhook requests and hints, by outcome.", ["outcome"]
        )
        self.hint_to_archive = prom.Histogram(
            PREFIX + "hint_to_archive_seconds",
            "From a webhook received to its recording archived.",
            buckets=HINT_BUCKETS,
            registry=self.registry,
        )
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

    def audio_mismatch(self) -> None:
        self.audio_mismatches.inc()

    def conversations_exported(self, count: int) -> None:
        self.conversations.inc(count)

    def recording_failed(self, reason: str) -> None:
        self.failed.labels(reason=reason).inc()

    def webhook_hint(self, outcome: str) -> None:
        """One webhook request or hint, by outcome (hints.HintOutcome's values)."""
        self.webhook_hints.labels(outcome=outcome).inc()

    def observe_hint_to_archive(self, seconds: float) -> None:
        self.hint_to_archive.observe(max(0.0, seconds))

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
            "last_sealed_day_timestamp_seconds": (
                state.last_sealed_day.timestamp() if state.last_sealed_day else None
            ),
        }
        # A value nobody knows yet (no watermark, unreadable checkpoint) is left out, not 0.
        for name, help_text in GAUGES.items():
            family = Family(PREFIX + name, help_text)
            value = values.get(name)
            if value is not None:
                family.add_metric([], value)
            yield family
        yield self._reconcile_differences(state)

    def _reconcile_differences(self, state: GaugeState) -> Family:
        family = Family(
            PREFIX + "reconcile_differences",
            "Differences the last reconciliation found, by kind (see `reconcile`).",
            labels=["kind"],
        )
        for kind, count in sorted((state.reconcile or {}).items()):
            family.add_metric([kind], count)
        return family
