"""Wiring: builds the client, checkpoint and sink from a Config, and runs each command's work.

Commands return results; the CLI turns them into output and exit codes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

import structlog

from archiver import manifest
from archiver.archive import ArchivePass, Progress
from archiver.checkpoint import Checkpoint
from archiver.config import Config, ReconcileSchedule
from archiver.cradle import CradleClient
from archiver.daemon import Daemon
from archiver.errors import ConfigError, Interrupted, Problem
from archiver.export import CallHistory, ConversationExporter
from archiver.hint_worker import HINTS_PER_TURN, HintPass, HintWorker
from archiver.hints import HintBudget, HintQueue
from archiver.listing import WindowLister
from archiver.metrics import GaugeState, Metrics
from archiver.models import (
    PassResult,
    Recording,
    RecordingRow,
    RecordingState,
    SealedManifest,
    StoredObject,
    utc_now,
)
from archiver.notify import Notifier
from archiver.probe import ProbeServer
from archiver.rebuild import ensure_checkpoint
from archiver.reconcile import Reconciler, Reconciliation, due_day
from archiver.seal import Sealer
from archiver.signing import KeyFileError, Signer
from archiver.sink import BucketReader, S3Sink
from archiver.spool import Spool
from archiver.webhook import WebhookReceiver

log = structlog.get_logger(__name__)
P = TypeVar("P", bound=ArchivePass)
RECONCILE_RETRY = timedelta(hours=1)


@dataclass
class ObservedPass:
    """The events of a pass, to the metrics and, for a backfill on a terminal, a progress bar."""

    metrics: Metrics
    display: Callable[[Progress], None] | None = None

    def archived(
        self, recording: Recording, size: int, download_seconds: float, upload_seconds: float | None
    ) -> None:
        self.metrics.recording_archived(size, download_seconds, upload_seconds)

    def failed(self, recording: Recording, reason: str) -> None:
        self.metrics.recording_failed(reason)

    def audio_mismatch(self, recording: Recording) -> None:
        self.metrics.audio_mismatch()

    def progress(self, progress: Progress) -> None:
        if self.display is not None:
            self.display(progress)


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
        # A missing checkpoint while the bucket holds this archive: refused, or rebuilt first.
        ensure_checkpoint(config, clock=clock)
        self.checkpoint = Checkpoint.open(config.state.path, writer=True)
        self.metrics = Metrics(self._gauge_state, clock=clock)
        self.notifier = Notifier()
        self.hints = self._hint_worker(config)
        self._reconcile_after: datetime | None = None  # a failed daily reconcile waits till then
        try:
            self.client = CradleClient(config.cradle, stop=self.stop, on_response=self._response)
            self.sink = S3Sink(config.s3)
            self.sealer = self._sealer(config)
        except BaseException:
            self.checkpoint.close()
            raise

    def _hint_worker(self, config: Config) -> HintWorker | None:
        """With `webhook.listen` set: the hints' queue and their worker (the passes' own)."""
        if config.webhook.address is None:
            return None
        return HintWorker(
            HintQueue(count=self.metrics.webhook_hint),
            HintBudget(),
            lambda hint: self._build(HintPass).serve(hint),
            count=self.metrics.webhook_hint,
            observe=self.metrics.observe_hint_to_archive,
            clock=self.clock,
        )

    def _response(self, endpoint: str, code: int) -> None:
        """Every Cradle response: counted, and charged to a pass or a hint (their shares)."""
        self.metrics.api_response(endpoint, code)
        if self.hints is not None:
            self.hints.charge()

    def _sealer(self, config: Config) -> Sealer | None:
        if not config.manifest.enabled:
            return None
        signer = None
        if config.manifest.sign_key_file is not None:
            try:
                signer = Signer.from_file(config.manifest.sign_key_file)
            except KeyFileError as exc:
                problem = Problem("manifest.sign_key_file", str(exc))
                raise ConfigError(config.source, [problem]) from None
        return Sealer(
            config.s3.prefix,
            self.checkpoint,
            self.sink,
            lookback=config.archive.lookback,
            retention=config.retention,
            signer=signer,
            clock=self.clock,
        )

    def __enter__(self) -> Archiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()
        self.checkpoint.close()

    def new_pass(self, on_progress: Callable[[Progress], None] | None = None) -> ArchivePass:
        return self._build(ArchivePass, on_progress)

    def _build(self, kind: type[P], on_progress: Callable[[Progress], None] | None = None) -> P:
        return kind(
            self.config.archive,
            self.client,
            self.checkpoint,
            self.sink,
            Spool(self.config.state.spool_dir),
            clock=self.clock,
            stop=self.stop,
            events=ObservedPass(self.metrics, on_progress),
            retention=self.config.retention,
            audio_check=self.config.audio.check,
            history=self._history(),
            interlude=self.hints.work if self.hints is not None else None,
        )

    def _history(self) -> CallHistory | None:
        if not self.config.conversations.enabled:
            return None
        exporter = ConversationExporter(
            self.config.s3.prefix,
            self.checkpoint,
            self.sink,
            retention=self.config.retention,
            clock=self.clock,
            on_exported=self.metrics.conversations_exported,
        )
        lister = WindowLister(self.client.list_conversations, self.config.archive, self._check_stop)
        return CallHistory(lister, exporter, self.checkpoint)

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Interrupted("shutdown asked for")

    def run_once(self) -> PassResult:
        with self.hints.pass_running() if self.hints is not None else nullcontext():
            result = self.new_pass().run()  # raises unless it finished (ok or dead_letters)
        self.metrics.pass_succeeded(result.finished_at)
        self.seal()
        return result

    def backfill(
        self,
        since: datetime,
        until: datetime | None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> PassResult:
        result = self.new_pass(on_progress).backfill(since, until)
        self.seal()
        return result

    def seal(self) -> list[SealedManifest]:
        """Seal the days the watermark has left behind (nothing with `manifest.enabled` off).
        A failure raises like a failed pass: the next pass seals what is still due."""
        if self.sealer is None:
            return []
        return self.sealer.seal()

    def reconcile(self, since: datetime, until: datetime) -> Reconciliation:
        """List [since, until) again and compare the API, the checkpoint and the bucket."""
        reconciler = Reconciler(
            self.config.archive,
            self.client,
            self.checkpoint,
            BucketReader(self.config.s3),
            self.sink,
            prefix=self.config.s3.prefix,
            retention=self.config.retention,
            clock=self.clock,
            stop=self.stop,
            conversations=self.config.conversations.enabled,
        )
        return reconciler.run(since, until)

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
            between=self._between_passes if self.hints is not None else None,
        )
        probe = self._probe(daemon)  # binds first: a taken port fails before any pass
        receiver = None
        try:
            receiver = self._receiver()
            return daemon.run()
        finally:
            if receiver is not None:
                receiver.stop()
            if probe is not None:
                probe.stop()

    def _receiver(self) -> WebhookReceiver | None:
        address = self.config.webhook.address
        if self.hints is None or address is None:
            return None
        receiver = WebhookReceiver(
            address, self.config.webhook.token, self.hints.queue, count=self.metrics.webhook_hint
        )
        receiver.start()
        return receiver

    def _between_passes(self) -> None:
        """The worker's turn between passes: a few of the hints that are due (a pass that comes
        due meanwhile runs next, not after the whole queue)."""
        if self.hints is not None:
            try:
                self.hints.work(limit=HINTS_PER_TURN)
            except Interrupted:
                log.info("hints.interrupted")

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
        succeeded = last is not None and last.outcome.finished
        sealed = self.checkpoint.last_sealed_day()
        return GaugeState(
            watermark=self.checkpoint.watermark().position,
            counts=self.checkpoint.counts(),
            last_success=last.finished_at if succeeded and last else None,
            last_sealed_day=manifest.day_bounds(sealed)[0] if sealed else None,
            reconcile=(self.checkpoint.last_reconcile() or {}).get("counts"),
        )

    def _scheduled_pass(self) -> None:
        try:
            self.run_once()
            self._daily_reconcile()
        except Interrupted:
            log.info("pass.interrupted")
        finally:
            self.notifier.status(self._status_line())

    def _daily_reconcile(self) -> None:
        """With `[reconcile] schedule = "daily"`, reconcile yesterday once it is sealed. On the
        pass's own thread, so never beside a pass; a failure is logged and tried again an hour
        later (nothing is recorded until one finishes: a day's list calls are not spent after
        every pass on a fault that persists), never the daemon's end."""
        if self.config.reconcile.schedule is not ReconcileSchedule.DAILY:
            return
        now = self.clock()
        if self._reconcile_after is not None and now < self._reconcile_after:
            return
        day = due_day(now, self.checkpoint.last_sealed_day(), self.checkpoint.reconciled)
        if day is None:
            return
        try:
            self.reconcile(day.start, day.end)
        except Interrupted:
            raise
        except Exception as exc:
            self._reconcile_after = now + RECONCILE_RETRY
            log.error(
                "reconcile.failed",
                day=str(day),
                error=str(exc),
                retry_at=self._reconcile_after.isoformat(),
                exc_info=exc,
            )
        else:
            self._reconcile_after = None

    def _status_line(self) -> str:
        """systemd's STATUS=, shown by `systemctl status`."""
        counts = self.checkpoint.counts()
        last = self.checkpoint.last_pass("pass")
        return (
            f"watermark {self.checkpoint.watermark()}, {counts[RecordingState.ARCHIVED]} archived, "
            f"{counts[RecordingState.PENDING]} pending, {counts[RecordingState.FAILED]} dead-lettered"
            + (f", last pass {last.outcome}" if last else "")
        )

    def dead_lettered(self) -> int:
        return self.checkpoint.counts()[RecordingState.FAILED]


@dataclass
class VerifyReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    wrong_size: list[str] = field(default_factory=list)
    wrong_sha256: list[str] = field(default_factory=list)
    wrong_lock: list[str] = field(default_factory=list)  # weaker than written, or none

    @property
    def problems(self) -> int:
        return (
            len(self.missing) + len(self.wrong_size) + len(self.wrong_sha256) + len(self.wrong_lock)
        )


class ArchivedRows(Protocol):
    def archived(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[RecordingRow]: ...


class ObjectHeads(Protocol):
    def head(self, key: str) -> StoredObject | None: ...


def verify(
    checkpoint: ArchivedRows, sink: ObjectHeads, since: datetime | None, until: datetime | None
) -> VerifyReport:
    """Every recording the checkpoint calls archived must be in S3 with the recorded size."""
    report = VerifyReport()
    for row in checkpoint.archived(since=since, until=until):
        report.checked += 1
        recording_id = row.recording.recording_id
        key = row.key or f"<no key recorded for {recording_id}>"  # the schema forbids it
        stored = sink.head(key) if row.key else None
        if stored is None:
            report.missing.append(key)
            log.error("verify.missing", recording_id=recording_id, key=key)
        elif stored.size != row.size:
            report.wrong_size.append(key)
            log.error(
                "verify.wrong_size",
                recording_id=recording_id,
                key=key,
                expected=row.size,
                found=stored.size,
            )
        elif stored.sha256 and stored.sha256 != row.sha256:
            report.wrong_sha256.append(key)
            log.error("verify.wrong_sha256", recording_id=recording_id, key=key)
        elif _lock_short(row, stored):
            report.wrong_lock.append(key)
            log.error(
                "verify.wrong_lock",
                recording_id=recording_id,
                key=key,
                expected=f"{row.lock_mode} until {row.retain_until}",
                found=f"{stored.lock_mode} until {stored.retain_until}",
            )
    return report


def _lock_short(row: RecordingRow, stored: StoredObject) -> bool:
    """The object is locked less than it was written: another mode, or an earlier date (a
    later one is fine: `retention extend` moves dates on)."""
    if row.lock_mode is None or row.retain_until is None:
        return False
    return (
        (stored.lock_mode or "").lower() != row.lock_mode
        or stored.retain_until is None
        or stored.retain_until < row.retain_until
    )
