"""Wiring: builds the client, checkpoint and sink from a Config, and runs each command's work.

Commands return results; the CLI turns them into output and exit codes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from archiver.archive import ArchivePass, Progress
from archiver.checkpoint import Checkpoint
from archiver.config import Config
from archiver.cradle import CradleClient
from archiver.daemon import Daemon
from archiver.errors import Interrupted
from archiver.metrics import GaugeState, Metrics, ProbeServer
from archiver.models import PassResult, Recording, utc_now
from archiver.notify import Notifier
from archiver.sink import S3Sink

log = structlog.get_logger(__name__)


class Archiver:
    """The parts of one configured archiver, opened together and closed together."""

    def __init__(
        self,
        config: Config,
        *,
        stop: threading.Event | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.config = config
        self.stop = stop or threading.Event()
        self.clock = clock
        self.checkpoint = Checkpoint.open(config.state.path, writer=True)
        self.metrics = Metrics(self._gauge_state, clock=clock)
        self.notifier = Notifier()
        try:
            self.client = CradleClient(
                config.cradle, stop=self.stop, on_response=self.metrics.api_response
            )
            self.sink = S3Sink(config.s3)
        except BaseException:
            self.checkpoint.close()
            raise

    def __enter__(self) -> Archiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()
        self.checkpoint.close()

    def new_pass(
        self,
        on_progress: Callable[[Progress], None] | None = None,
        on_archived: Callable[[Recording, int], None] | None = None,
    ) -> ArchivePass:
        metrics = self.metrics
        return ArchivePass(
            self.config.archive,
            self.client,
            self.checkpoint,
            self.sink,
            self.config.state.spool_dir,
            clock=self.clock,
            stop=self.stop,
            on_progress=on_progress,
            on_archived=on_archived,
            on_failed=lambda recording, reason: metrics.recording_failed(reason),
            on_transferred=lambda recording, size, down, up: metrics.recording_archived(
                size, down, up
            ),
        )

    def run_once(self) -> PassResult:
        result = self.new_pass().run()  # raises unless the pass finished (ok or dead_letters)
        self.metrics.pass_succeeded(result.finished_at)
        return result

    def serve(self) -> bool:
        """The daemon; returns whether it stopped within shutdown_timeout."""
        notifier = self.notifier

        def ping() -> None:  # only while the scheduler lives, so systemd restarts a dead one
            if daemon.alive():
                notifier.watchdog()

        daemon = Daemon(
            self._scheduled_pass,
            interval=self.config.schedule.interval,
            shutdown_timeout=self.config.schedule.shutdown_timeout,
            stop=self.stop,
            on_ready=lambda: notifier.ready(self._status_line()),
            on_idle=ping,
            on_stopping=notifier.stopping,
            idle_every=min(5.0, notifier.watchdog_interval or 5.0),
        )
        probe = self._probe(daemon)  # binds first: a taken port fails before any pass
        try:
            return daemon.run()
        finally:
            if probe is not None:
                probe.stop()

    def _probe(self, daemon: Daemon) -> ProbeServer | None:
        address = self.config.server.address
        if address is None:  # server.listen = ""
            return None
        probe = ProbeServer(
            address,
            self.metrics,
            alive=daemon.alive,
            # SPEC: ready "once a pass has succeeded within the last few intervals".
            ready_window=3 * self.config.schedule.interval,
        )
        probe.start()
        return probe

    def _gauge_state(self) -> GaugeState:
        """What the /metrics gauges show; read on the probe server's thread at scrape time."""
        last = self.checkpoint.last_pass("pass")
        succeeded = last is not None and last.outcome in ("ok", "dead_letters")
        return GaugeState(
            watermark=self.checkpoint.watermark().position,
            counts=self.checkpoint.counts(),
            last_success=last.finished_at if succeeded and last else None,
        )

    def _scheduled_pass(self) -> None:
        try:
            self.run_once()
        except Interrupted:
            log.info("pass.interrupted")
        finally:
            self.notifier.status(self._status_line())

    def _status_line(self) -> str:
        """systemd's STATUS=, shown by `systemctl status`."""
        counts = self.checkpoint.counts()
        last = self.checkpoint.last_pass("pass")
        return (
            f"watermark {self.checkpoint.watermark()}, {counts['archived']} archived, "
            f"{counts['pending']} pending, {counts['failed']} dead-lettered"
            + (f", last pass {last.outcome}" if last else "")
        )

    def dead_lettered(self) -> int:
        return self.checkpoint.counts()["failed"]


@dataclass
class VerifyReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    wrong_size: list[str] = field(default_factory=list)
    wrong_sha256: list[str] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return len(self.missing) + len(self.wrong_size) + len(self.wrong_sha256)


def verify(
    checkpoint: Any, sink: Any, since: datetime | None, until: datetime | None
) -> VerifyReport:
    """Every recording the checkpoint calls archived must be in S3 with the recorded size."""
    report = VerifyReport()
    for row in checkpoint.archived(since=since, until=until):
        report.checked += 1
        stored = sink.head(row.key)
        recording_id = row.recording.recording_id
        if stored is None:
            report.missing.append(row.key)
            log.error("verify.missing", recording_id=recording_id, key=row.key)
        elif stored.size != row.size:
            report.wrong_size.append(row.key)
            log.error(
                "verify.wrong_size",
                recording_id=recording_id,
                key=row.key,
                expected=row.size,
                found=stored.size,
            )
        elif stored.sha256 and stored.sha256 != row.sha256:
            report.wrong_sha256.append(row.key)
            log.error("verify.wrong_sha256", recording_id=recording_id, key=row.key)
    return report
