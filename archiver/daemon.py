"""`run`: the archive pass on an APScheduler interval job, until its stop event is set
(by the CLI, on SIGTERM/SIGINT).

The only module that imports apscheduler. A failed pass is logged and the next tick tries again;
it never takes the daemon down (a revoked key or an S3 outage is fixed from outside, and the
daemon must then carry on by itself).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

log = structlog.get_logger(__name__)


class Daemon:
    def __init__(
        self,
        tick: Callable[[], Any],
        *,
        interval: timedelta,
        shutdown_timeout: timedelta,
        stop: threading.Event,
        on_idle: Callable[[], None] | None = None,
        idle_every: float = 5.0,
        on_ready: Callable[[], object] | None = None,
        on_stopping: Callable[[], object] | None = None,
        between: Callable[[], Any] | None = None,
        between_every: float = 1.0,
    ) -> None:
        self.tick = tick
        self.between = between
        self.between_every = between_every
        self.interval = interval
        self.shutdown_timeout = shutdown_timeout
        self.stop = stop
        self.on_idle = on_idle or (lambda: None)
        self.on_ready = on_ready or (lambda: None)
        self.on_stopping = on_stopping or (lambda: None)
        self.idle_every = idle_every
        self.passes = 0
        self.running = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        # One worker thread for every job: the pass and the work between passes (webhook hints)
        # never run at once, so the Cradle API never sees two requests in flight.
        self.scheduler = BackgroundScheduler(
            timezone=UTC, executors={"default": ThreadPoolExecutor(max_workers=1)}
        )

    def _job(self) -> None:
        self._run_job(self.tick, "daemon.pass_failed", count=True)

    def _between_job(self) -> None:
        if self.between is not None:
            self._run_job(self.between, "daemon.between_failed", count=False)

    def _run_job(self, work: Callable[[], Any], failed: str, *, count: bool) -> None:
        if self.stop.is_set():
            return
        self._idle.clear()
        try:
            work()
        except Exception as exc:  # a failed pass must not stop the daemon
            log.error(failed, error=f"{type(exc).__name__}: {exc}")
        finally:
            self.passes += int(count)
            self._idle.set()

    def alive(self) -> bool:
        """For /healthz: the scheduler is running and the daemon has not begun to stop."""
        return self.running.is_set() and bool(self.scheduler.running)

    def run(self) -> bool:
        """Run until stopped; True when the last pass finished within shutdown_timeout."""
        self.scheduler.add_job(
            self._job,
            "interval",
            seconds=self.interval.total_seconds(),
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            id="archive-pass",
        )
        if self.between is not None:
            self.scheduler.add_job(
                self._between_job,
                "interval",
                seconds=self.between_every,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                id="between-passes",
            )
        self.scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES)
        self.scheduler.start()
        self.running.set()
        log.info("daemon.started", interval=self.interval.total_seconds())
        self.on_ready()
        try:
            while not self.stop.wait(self.idle_every):
                self.on_idle()
        finally:
            self.on_stopping()
            self.scheduler.shutdown(wait=False)
            self.running.clear()
        deadline = time.monotonic() + self.shutdown_timeout.total_seconds()
        clean = self._idle.wait(max(0.0, deadline - time.monotonic()))
        log.info("daemon.stopped", clean=clean, passes=self.passes)
        return clean

    def _skipped(self, event: JobEvent) -> None:
        if event.job_id == "archive-pass":  # the work between passes waits for a pass quietly
            log.warning("daemon.pass_skipped", reason="the worker is still busy with a pass")
