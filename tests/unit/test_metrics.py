"""Metrics and probes, scraped over real loopback HTTP."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from archiver.errors import CheckpointError, FatalError
from archiver.metrics import GaugeState, Metrics
from archiver.models import RecordingState
from archiver.probe import ProbeServer

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
INTERVAL = timedelta(minutes=5)
SPEC_METRICS = {
    "cradle_archiver_recordings_archived_total": "counter",
    "cradle_archiver_recordings_failed_total": "counter",
    "cradle_archiver_bytes_archived_total": "counter",
    "cradle_archiver_api_requests_total": "counter",
    "cradle_archiver_watermark_timestamp_seconds": "gauge",
    "cradle_archiver_watermark_lag_seconds": "gauge",
    "cradle_archiver_last_success_timestamp_seconds": "gauge",
    "cradle_archiver_pending_recordings": "gauge",
    "cradle_archiver_failed_recordings": "gauge",
    "cradle_archiver_download_seconds": "histogram",
    "cradle_archiver_upload_seconds": "histogram",
    "cradle_archiver_webhook_hints_total": "counter",
    "cradle_archiver_hint_to_archive_seconds": "histogram",
    "cradle_archiver_conversations_exported_total": "counter",
    "cradle_archiver_reconcile_differences": "gauge",
    "cradle_archiver_last_sealed_day_timestamp_seconds": "gauge",
}


def counts(**by_state: int) -> dict[RecordingState, int]:
    """The checkpoint's counts as `Checkpoint.counts` gives them: `counts(pending=4)`."""
    return {RecordingState(state): n for state, n in by_state.items()}


@dataclass
class World:
    """The clocks and the checkpoint state a Metrics sees; tests move them by hand."""

    now: datetime = T0
    ticks: float = 1000.0
    state: GaugeState = field(
        default_factory=lambda: GaugeState(T0 - timedelta(minutes=20), counts(pending=0, failed=0))
    )
    reads: int = 0
    alive: bool = True

    def read_state(self) -> GaugeState:
        self.reads += 1
        return self.state

    def metrics(self) -> Metrics:
        return Metrics(self.read_state, clock=lambda: self.now, monotonic=lambda: self.ticks)


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: str


def get(server: ProbeServer, path: str) -> Reply:
    host, port = server.address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as response:
            return Reply(
                response.status, response.headers["Content-Type"], response.read().decode()
            )
    except urllib.error.HTTPError as exc:
        with exc:
            return Reply(exc.code, exc.headers["Content-Type"], exc.read().decode())


def samples(text: str) -> dict[str, float]:
    """Sample lines of the exposition, keyed as written: `name{label="value",...}`."""
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def metrics(world: World) -> Metrics:
    return world.metrics()


@pytest.fixture
def probe(world: World, metrics: Metrics) -> Iterator[ProbeServer]:
    server = ProbeServer(
        ("127.0.0.1", 0), metrics, alive=lambda: world.alive, ready_window=3 * INTERVAL
    )
    server.start()
    yield server
    server.stop()


def test_every_spec_metric_is_exposed_with_its_type(probe: ProbeServer) -> None:
    reply = get(probe, "/metrics")
    assert reply.status == 200
    assert reply.content_type == "text/plain; version=0.0.4; charset=utf-8"
    for name, kind in SPEC_METRICS.items():
        assert f"# TYPE {name} {kind}\n" in reply.body
    assert "_total_total" not in reply.body
    assert "_created" not in reply.body


def test_counters_count_what_this_process_did(probe: ProbeServer, metrics: Metrics) -> None:
    before = samples(get(probe, "/metrics").body)
    assert before["cradle_archiver_recordings_archived_total"] == 0
    assert before["cradle_archiver_bytes_archived_total"] == 0
    metrics.recording_archived(1000, download_seconds=2.0, upload_seconds=3.0)
    metrics.recording_archived(500, download_seconds=0.04, upload_seconds=None)
    metrics.recording_archived(250, download_seconds=None, upload_seconds=None)
    after = samples(get(probe, "/metrics").body)
    assert after["cradle_archiver_recordings_archived_total"] == 3
    assert after["cradle_archiver_bytes_archived_total"] == 1750
    assert after["cradle_archiver_download_seconds_count"] == 2
    assert after["cradle_archiver_download_seconds_sum"] == pytest.approx(2.04)
    assert after['cradle_archiver_download_seconds_bucket{le="0.05"}'] == 1
    assert after["cradle_archiver_upload_seconds_count"] == 1
    assert after['cradle_archiver_upload_seconds_bucket{le="2.5"}'] == 0
    assert after['cradle_archiver_upload_seconds_bucket{le="5.0"}'] == 1
    assert after['cradle_archiver_upload_seconds_bucket{le="600.0"}'] == 1


def test_observations_outside_an_archived_recording_land_in_the_histograms(
    metrics: Metrics,
) -> None:
    metrics.observe_download(700.0)
    metrics.observe_upload(0.2)
    found = samples(metrics.exposition().decode())
    assert found['cradle_archiver_download_seconds_bucket{le="600.0"}'] == 0
    assert found['cradle_archiver_download_seconds_bucket{le="+Inf"}'] == 1
    assert found['cradle_archiver_upload_seconds_bucket{le="0.25"}'] == 1
    assert found["cradle_archiver_recordings_archived_total"] == 0


def test_failed_total_is_labelled_by_reason(probe: ProbeServer, metrics: Metrics) -> None:
    metrics.recording_failed("conflict")
    metrics.recording_failed("conflict")
    metrics.recording_failed("off_host_url")
    found = samples(get(probe, "/metrics").body)
    assert found['cradle_archiver_recordings_failed_total{reason="conflict"}'] == 2
    assert found['cradle_archiver_recordings_failed_total{reason="off_host_url"}'] == 1


def test_api_requests_are_labelled_by_endpoint_and_code(
    probe: ProbeServer, metrics: Metrics
) -> None:
    for endpoint, code in [("list", 200), ("list", 200), ("download", 429), ("download", 0)]:
        metrics.api_response(endpoint, code)
    found = samples(get(probe, "/metrics").body)
    assert found['cradle_archiver_api_requests_total{code="200",endpoint="list"}'] == 2
    assert found['cradle_archiver_api_requests_total{code="429",endpoint="download"}'] == 1
    assert found['cradle_archiver_api_requests_total{code="0",endpoint="download"}'] == 1


def test_gauges_read_the_checkpoint_at_scrape_time(world: World, probe: ProbeServer) -> None:
    sealed = datetime(2026, 3, 1, tzinfo=UTC)
    world.state = GaugeState(
        T0 - timedelta(minutes=20),
        counts(pending=4, archived=9, failed=1),
        T0 - timedelta(1),
        last_sealed_day=sealed,
    )
    found = samples(get(probe, "/metrics").body)
    assert found["cradle_archiver_last_sealed_day_timestamp_seconds"] == sealed.timestamp()
    assert (
        found["cradle_archiver_watermark_timestamp_seconds"]
        == (T0 - timedelta(minutes=20)).timestamp()
    )
    assert found["cradle_archiver_watermark_lag_seconds"] == 1200
    assert found["cradle_archiver_pending_recordings"] == 4
    assert found["cradle_archiver_failed_recordings"] == 1
    assert (
        found["cradle_archiver_last_success_timestamp_seconds"] == (T0 - timedelta(1)).timestamp()
    )

    world.state = GaugeState(T0 + timedelta(minutes=5), counts(pending=0, failed=2))
    world.now = T0 + timedelta(minutes=16)
    world.ticks += 2.0  # the cache has expired
    found = samples(get(probe, "/metrics").body)
    assert found["cradle_archiver_watermark_lag_seconds"] == 660
    assert found["cradle_archiver_pending_recordings"] == 0
    assert found["cradle_archiver_failed_recordings"] == 2
    assert world.reads == 2


def test_a_scrape_storm_reads_the_checkpoint_once_per_ttl(world: World, probe: ProbeServer) -> None:
    for _ in range(5):
        get(probe, "/metrics")
    assert world.reads == 1
    world.now += timedelta(seconds=30)  # lag follows the clock even from the cached state
    assert samples(get(probe, "/metrics").body)["cradle_archiver_watermark_lag_seconds"] == 1230
    world.ticks += 1.9
    get(probe, "/metrics")
    assert world.reads == 1
    world.ticks += 0.1
    get(probe, "/metrics")
    assert world.reads == 2


def test_values_not_known_yet_are_left_out_not_zero(world: World, probe: ProbeServer) -> None:
    world.state = GaugeState(None, counts(pending=0, archived=0, failed=0))
    reply = get(probe, "/metrics")
    found = samples(reply.body)
    for name in (
        "watermark_timestamp_seconds",
        "watermark_lag_seconds",
        "last_success_timestamp_seconds",
        "last_sealed_day_timestamp_seconds",
    ):
        assert f"# TYPE cradle_archiver_{name} gauge" in reply.body
        assert f"cradle_archiver_{name}" not in found
    assert found["cradle_archiver_pending_recordings"] == 0


def test_an_unreadable_checkpoint_still_serves_the_counters() -> None:
    def broken() -> GaugeState:
        raise CheckpointError("checkpoint /var/lib/x/state.db: database is locked")

    metrics = Metrics(broken)
    probe = ProbeServer(("127.0.0.1", 0), metrics, alive=lambda: True, ready_window=INTERVAL)
    probe.start()
    metrics.recording_archived(10, None, None)
    with capture_logs() as logs:
        reply = get(probe, "/metrics")
    assert reply.status == 200
    found = samples(reply.body)
    assert found["cradle_archiver_recordings_archived_total"] == 1
    assert "cradle_archiver_pending_recordings" not in found
    assert "cradle_archiver_watermark_lag_seconds" not in found
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["metrics.state_unreadable"]
    probe.stop()


def test_last_success_is_the_later_of_the_checkpoint_and_this_process(
    world: World, metrics: Metrics
) -> None:
    world.state = GaugeState(T0, {}, last_success=T0 - timedelta(hours=1))
    metrics.pass_succeeded(T0 - timedelta(minutes=2))
    metrics.pass_succeeded(T0 - timedelta(minutes=7))  # out of order: never moves back
    found = samples(metrics.exposition().decode())
    assert (
        found["cradle_archiver_last_success_timestamp_seconds"]
        == (T0 - timedelta(minutes=2)).timestamp()
    )
    assert metrics.last_success == T0 - timedelta(minutes=2)


def test_healthz_follows_the_liveness_check(world: World, probe: ProbeServer) -> None:
    assert get(probe, "/healthz") == Reply(200, "text/plain; charset=utf-8", "ok\n")
    world.alive = False
    assert get(probe, "/healthz").status == 503


def test_healthz_is_503_when_the_liveness_check_itself_fails(metrics: Metrics) -> None:
    def broken() -> bool:
        raise RuntimeError("scheduler gone")

    server = ProbeServer(("127.0.0.1", 0), metrics, alive=broken, ready_window=INTERVAL)
    server.start()
    try:
        assert get(server, "/healthz").status == 503
    finally:
        server.stop()


def test_readyz_needs_a_successful_pass_within_the_window(
    world: World, probe: ProbeServer, metrics: Metrics
) -> None:
    reply = get(probe, "/readyz")
    assert (reply.status, reply.body) == (503, "no archive pass has succeeded yet\n")
    metrics.pass_succeeded(T0)
    assert get(probe, "/readyz") == Reply(200, "text/plain; charset=utf-8", "ready\n")
    world.now = T0 + 3 * INTERVAL
    assert get(probe, "/readyz").status == 200
    world.now = T0 + 3 * INTERVAL + timedelta(seconds=1)
    reply = get(probe, "/readyz")
    assert reply.status == 503
    assert reply.body == "last success 2024-06-01T12:00:00.000Z is 901s old (limit 900s)\n"
    metrics.pass_succeeded(world.now)
    assert get(probe, "/readyz").status == 200


def test_an_unknown_path_is_404(probe: ProbeServer) -> None:
    assert get(probe, "/").status == 404
    assert get(probe, "/metricsx").status == 404
    assert get(probe, "/metrics?name[]=x").status == 200


def test_requests_are_not_logged_to_stderr(
    probe: ProbeServer, capfd: pytest.CaptureFixture[str]
) -> None:
    for path in ("/metrics", "/healthz", "/readyz", "/nope"):
        get(probe, path)
    assert capfd.readouterr().err == ""


def test_two_instances_do_not_collide() -> None:
    first, second = World(), World()
    a, b = first.metrics(), second.metrics()
    a.recording_archived(100, 1.0, 1.0)
    a.recording_failed("conflict")
    second.state = GaugeState(None, counts(pending=7, failed=0))
    found_a = samples(a.exposition().decode())
    found_b = samples(b.exposition().decode())
    assert found_a["cradle_archiver_recordings_archived_total"] == 1
    assert found_b["cradle_archiver_recordings_archived_total"] == 0
    assert 'cradle_archiver_recordings_failed_total{reason="conflict"}' not in found_b
    assert found_a["cradle_archiver_pending_recordings"] == 0
    assert found_b["cradle_archiver_pending_recordings"] == 7


def test_stop_frees_the_port(metrics: Metrics) -> None:
    server = ProbeServer(("127.0.0.1", 0), metrics, alive=lambda: True, ready_window=INTERVAL)
    server.start()
    assert get(server, "/healthz").status == 200
    server.stop()
    with pytest.raises(urllib.error.URLError):
        get(server, "/healthz")
    again = ProbeServer(server.address, metrics, alive=lambda: True, ready_window=INTERVAL)
    again.start()
    try:
        assert get(again, "/healthz").status == 200
    finally:
        again.stop()
    again.stop()  # twice is harmless


def test_stop_without_start_closes_the_socket(metrics: Metrics) -> None:
    server = ProbeServer(("127.0.0.1", 0), metrics, alive=lambda: True, ready_window=INTERVAL)
    server.stop()
    ProbeServer(server.address, metrics, alive=lambda: True, ready_window=INTERVAL).stop()


def test_a_port_in_use_is_a_fatal_error_naming_the_key(
    probe: ProbeServer, metrics: Metrics
) -> None:
    with pytest.raises(FatalError) as caught:
        ProbeServer(probe.address, metrics, alive=lambda: True, ready_window=INTERVAL)
    assert re.fullmatch(
        r"cannot listen on 127\.0\.0\.1:\d+ \(server\.listen\): .+", str(caught.value)
    )
    assert caught.value.exit_code == 1


def test_hints_and_the_call_history_are_counted(probe: ProbeServer, metrics: Metrics) -> None:
    metrics.conversations_exported(3)
    metrics.webhook_hint("archived")
    metrics.observe_hint_to_archive(11.5)
    found = samples(get(probe, "/metrics").body)
    assert found["cradle_archiver_conversations_exported_total"] == 3
    assert found['cradle_archiver_webhook_hints_total{outcome="archived"}'] == 1
    assert found["cradle_archiver_hint_to_archive_seconds_count"] == 1
    assert found["cradle_archiver_hint_to_archive_seconds_sum"] == 11.5
