"""The archive pass: walk the watermark through windows, list, archive, advance.

The pass knows the Cradle client, the checkpoint and the S3 sink only through the small
protocols in archiver/ports.py, so tests can swap any of them; the per-recording work (download,
upload, what a failure costs) is archiver/recordings.py's. It fixes its horizon once, at its
start, and the watermark moves only after everything in the window it covers is archived or
dead-lettered, in a checkpoint transaction of its own after theirs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog

from archiver.config import ArchiveConfig, AudioCheck
from archiver.conversations import Conversation
from archiver.errors import ArchiverError, Interrupted
from archiver.listing import OVERLAP, Listing, WindowLister
from archiver.models import (
    PassOutcome,
    PassResult,
    RecordingRow,
    RecordingState,
    Watermark,
    Window,
    utc_now,
    walk,
)
from archiver.ports import (
    History,
    Ledger,
    NullEvents,
    PassEvents,
    Progress,
    Source,
    Store,
)
from archiver.recordings import RecordingArchiver, Tally
from archiver.retention import RetentionPolicy
from archiver.spool import Spool

# What other modules and tests import from here, from before the ports and the per-recording
# work had modules of their own.
__all__ = [
    "ArchivePass",
    "History",
    "Ledger",
    "NullEvents",
    "PassEvents",
    "Progress",
    "Source",
    "Store",
    "Tally",
]

log = structlog.get_logger(__name__)

OPEN_END = datetime(9999, 12, 31, tzinfo=UTC)
# With no checkpoint and no `archive.start`, the walk starts this far behind the horizon.
DEFAULT_START_BEHIND = timedelta(days=1)
LOGGED_ENTRY_CHARS = 300  # of a malformed entry in its log line (the checkpoint keeps more)


class ArchivePass:
    def __init__(
        self,
        config: ArchiveConfig,
        source: Source,
        ledger: Ledger,
        store: Store,
        spool: Spool,
        *,
        clock: Callable[[], datetime] = utc_now,
        stop: threading.Event | None = None,
        events: PassEvents | None = None,
        retention: RetentionPolicy | None = None,
        audio_check: AudioCheck = AudioCheck.WARN,
        history: History | None = None,
        interlude: Callable[[], object] | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.ledger = ledger
        self.store = store
        self.spool = spool
        self.clock = clock
        self.stop = stop or threading.Event()
        self.events: PassEvents = events or NullEvents()
        self.retention = retention or RetentionPolicy()
        self.audio_check = audio_check
        self.history = history
        # Between two windows (nothing in flight): where webhook hints get their turn.
        self.interlude = interlude or (lambda: None)
        self.tally = Tally()
        self._span: tuple[datetime, datetime, datetime] | None = None
        self.recordings = RecordingArchiver(
            config,
            source,
            ledger,
            store,
            spool,
            clock,
            self.events,
            self.retention,
            audio_check,
            self.tally,
            check_stop=self._check_stop,
            report=self._report,
        )

    # -- entry points ----------------------------------------------------------------------

    def run(self) -> PassResult:
        """One daemon pass: catch up to the horizon, rescan the lookback, retry what is due."""
        return self._guarded("pass", self._run)

    def backfill(self, start: datetime, until: datetime | None = None) -> PassResult:
        """Archive [start, until) without moving the daemon's watermark; resumable."""
        return self._guarded("backfill", lambda horizon: self._backfill(start, until, horizon))

    def horizon(self) -> datetime:
        now = self.clock() - self.config.settle_delay
        return now.replace(microsecond=(now.microsecond // 1000) * 1000)

    def _now(self) -> datetime:
        now = self.clock()
        return now.replace(microsecond=(now.microsecond // 1000) * 1000)

    # -- the walks -------------------------------------------------------------------------

    def _run(self, horizon: datetime) -> None:
        watermark = self.ledger.watermark()
        start = watermark.position or self.config.start or (horizon - DEFAULT_START_BEHIND)
        if watermark.is_zero:
            # Persist the starting point now: recomputing it next pass would skip what lies between.
            self.ledger.set_watermark(start)
        log.info("pass.started", watermark=str(watermark), horizon=str(Watermark(horizon)))
        for window in walk(start, horizon, self.config.window):
            self._list(window, horizon)
            self._archive(until=window.end)
            if not self._advance(window):
                break
            self.interlude()
        rescan_end = min(start, horizon)
        for window in walk(horizon - self.config.lookback, rescan_end, self.config.window):
            self._list(window, horizon)
            self.interlude()
        self._archive(until=horizon)
        self._catch_up_history(start, horizon)

    def _backfill(self, start: datetime, until: datetime | None, horizon: datetime) -> None:
        # A backfill "up to the horizon" is one job however far the horizon has moved since.
        key = (start, until or OPEN_END)
        end = min(until or horizon, horizon)
        cursor = self.ledger.backfill_cursor(*key) or start
        log.info(
            "backfill.started",
            start=str(Watermark(start)),
            end=str(Watermark(end)),
            cursor=str(Watermark(cursor)),
        )
        self._span = (start, cursor, end)
        for window in walk(cursor, end, self.config.window):
            self._list(window, horizon)
            conversations = self._list_history(window, horizon)
            self._report()
            self._archive(until=window.end, since=start - OVERLAP)
            if self.history is not None:
                # A backfill is one job run by hand: a failure here fails it, before its cursor
                # moves, and running it again lists this window again.
                self.tally.conversations += self.history.export(window, conversations)
            self.ledger.set_backfill_cursor(*key, window.end)
            self._span = (start, window.end, end)
            self._report()
        # Stragglers from an earlier, interrupted run of the same backfill.
        self._archive(until=end, since=start - OVERLAP)

    # -- listing ---------------------------------------------------------------------------

    def _list(self, window: Window, horizon: datetime) -> None:
        """List a window (split while it looks full) and record every new recording as pending."""
        for leaf, listing in WindowLister(
            self.source.list_recordings, self.config, self._check_stop
        ).leaves(window, horizon):
            self._record(leaf, listing)

    def _list_history(self, window: Window, horizon: datetime) -> list[Conversation]:
        """The window's conversations, listed beside its recordings (none when not exported)."""
        return [] if self.history is None else self.history.list_window(window, horizon)

    def _catch_up_history(self, start: datetime, horizon: datetime) -> None:
        """The call history, on its own cursor up to the watermark: a failing `/conversations`
        (an outage, a key without access to it) is logged and caught up on by a later pass,
        and never holds up the recordings."""
        position = self.ledger.watermark().position
        if self.history is None or position is None:
            return
        try:
            self.tally.conversations += self.history.catch_up(
                origin=start,
                until=position,
                horizon=horizon,
                rescan_from=horizon - self.config.lookback,
                width=self.config.window,
            )
        except Interrupted:
            raise
        except ArchiverError as exc:
            log.error("conversations.export_failed", error=str(exc), error_type=type(exc).__name__)

    def _record(self, window: Window, listing: Listing) -> None:
        for reason, raw in listing.malformed:
            log.error(
                "entry.malformed", window=str(window), reason=reason, entry=raw[:LOGGED_ENTRY_CHARS]
            )
            self.ledger.record_malformed(window, reason, raw)
        new = self.ledger.add_listed(listing.recordings)
        self.tally.listed += len(listing.recordings)
        self.tally.queued += len(new)
        self.tally.windows += 1
        if new:
            log.info("window.new_recordings", window=str(window), new=len(new))

    # -- archiving -------------------------------------------------------------------------

    def _archive(self, *, until: datetime, since: datetime | None = None) -> None:
        """Archive every pending recording in range, oldest first."""
        self._archive_rows(self.ledger.pending(until=until, since=since))

    def _archive_rows(self, rows: list[RecordingRow]) -> None:
        """Archive `rows` in order, the next downloading while the previous one uploads."""
        self.recordings.archive(rows)

    @property
    def archived_ids(self) -> list[str]:
        """The recordings this pass archived, in order."""
        return self.recordings.archived_ids

    def _advance(self, window: Window) -> bool:
        """Move the watermark past `window` if nothing before its end is still pending."""
        left = self.ledger.count_pending(until=window.end)
        if left:
            # An upload S3 refused leaves its recording pending for the next pass; the
            # watermark waits rather than pass unarchived work.
            log.warning("watermark.held", window=str(window), pending=left)
            return False
        self.ledger.set_watermark(window.end)
        log.info("watermark.advanced", watermark=str(Watermark(window.end)))
        return True

    def _report(self) -> None:
        if self._span is None:  # a daemon pass has no span to show progress through
            return
        t = self.tally
        self.events.progress(Progress(t.archived + t.failed, t.queued, t.bytes, *self._span))

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Interrupted("shutdown asked for")

    # -- bookkeeping -----------------------------------------------------------------------

    def _guarded(self, kind: str, body: Callable[[datetime], None]) -> PassResult:
        started = self.clock()
        horizon = self.horizon()
        self.spool.prepare(keep=self._still_pending)
        error = ""
        try:
            self.store.abort_stale_uploads(
                lambda recording_id: self.ledger.get(recording_id) is not None
            )
            body(horizon)
        except Exception as exc:
            error = str(exc) or type(exc).__name__
            outcome = (
                PassOutcome.INTERRUPTED if isinstance(exc, Interrupted) else PassOutcome.FAILED
            )
            result = self._result(kind, started, outcome, error)
            self.ledger.record_pass(result)
            log.error(
                f"{kind}.failed", error=error, error_type=type(exc).__name__, **vars(self.tally)
            )
            raise
        outcome = PassOutcome.DEAD_LETTERS if self.tally.failed else PassOutcome.OK
        result = self._result(kind, started, outcome, error)
        self.ledger.record_pass(result)
        log.info(
            f"{kind}.finished",
            outcome=outcome,
            seconds=round((result.finished_at - started).total_seconds(), 3),
            **vars(self.tally),
        )
        return result

    def _result(self, kind: str, started: datetime, outcome: PassOutcome, error: str) -> PassResult:
        t = self.tally
        return PassResult(
            kind, started, self.clock(), outcome, t.archived, t.failed, t.listed, error
        )

    def _still_pending(self, recording_id: str) -> bool:
        row = self.ledger.get(recording_id)
        return row is not None and row.state is RecordingState.PENDING
