"""Serving webhook hints on the one worker that runs the passes.

The Cradle API allows one request in flight, so hints are never served beside a pass: the
daemon's single worker thread serves them between passes (a job every second) and a running pass
hands over between two windows (its interlude), where nothing of its own is in flight. While a
pass runs, hints are held to their share of the requests (hints.HintBudget, 20 %), so a flood of
webhooks can slow the sweep by a fifth at most, never stop it.

A hint that finds its call's recordings all settled is done; one that finds them not listed yet
is tried again on the queue's schedule (10 s, 30 s, 1 min, 2 min, 5 min), then dropped: the sweep
stays the truth.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import structlog

from archiver.archive import ArchivePass
from archiver.conversations import Conversation
from archiver.errors import Interrupted
from archiver.hints import Count, Hint, HintBudget, HintOutcome, HintQueue
from archiver.listing import OVERLAP
from archiver.models import Recording, RecordingState, utc_now

log = structlog.get_logger(__name__)

# A turn between passes serves at most this many hints, then hands the worker back, so a pass
# that came due waits seconds for it, never the length of a flood.
HINTS_PER_TURN = 10


@dataclass(frozen=True)
class HintResult:
    """What serving a hint did: whether the call's recordings are all settled now, and the ids
    of the call's recordings it archived."""

    complete: bool
    archived: list[str]


class HintPass(ArchivePass):
    """An archive pass over one call's window, for a webhook hint. It spends one list call on
    the conversations and one on the recordings, never split (a full answer is the sweep's to
    split), and downloads only the recordings the call's conversation names: a forged hint
    costs two list calls a try, and archives nothing the API does not list."""

    def serve(self, hint: Hint) -> HintResult:
        window = hint.window
        horizon = self._now()
        if window.start - OVERLAP >= horizon:
            return HintResult(False, [])  # a call in the future: nothing can be listed yet
        conversation = None
        if self.history is not None:
            listed = self.history.list_once(window, horizon)
            conversation = next((c for c in listed if c.uuid == hint.uuid), None)
        listing = self.source.list_recordings(
            window, window.start - OVERLAP, min(window.end + OVERLAP, horizon)
        )
        self._record(window, listing)
        if conversation is not None:
            wanted = set(conversation.recording_ids)
        else:  # no call history to go by: what started with the call
            wanted = {r.recording_id for r in listing.recordings if _with(hint, r)}
        rows = [self.ledger.get(recording_id) for recording_id in sorted(wanted)]
        self._archive_rows([r for r in rows if r is not None and r.state is RecordingState.PENDING])
        archived = [i for i in self.archived_ids if i in wanted]
        return HintResult(self._complete(hint, conversation, wanted), archived)

    def _complete(self, hint: Hint, conversation: Conversation | None, wanted: set[str]) -> bool:
        """Whether what the call announced is all settled (archived, dead-lettered, expired)."""
        if conversation is None and (self.history is not None or hint.recordings is None):
            return self.history is None  # not listed yet; without history, one try is all
        rows = [self.ledger.get(recording_id) for recording_id in wanted]
        settled = [r for r in rows if r is not None and r.state is not RecordingState.PENDING]
        if conversation is not None:
            return len(settled) == len(wanted)
        return len(settled) >= (hint.recordings or 0)


def _with(hint: Hint, recording: Recording) -> bool:
    return abs(recording.started_at - hint.started_at) <= OVERLAP


class HintWorker:
    def __init__(
        self,
        queue: HintQueue,
        budget: HintBudget,
        serve: Callable[[Hint], HintResult],
        *,
        count: Count,
        observe: Callable[[float], None],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.queue = queue
        self.budget = budget
        self.serve = serve
        self.count = count
        self.observe = observe
        self.clock = clock
        self._serving = threading.local()

    @property
    def serving(self) -> bool:
        """Whether this thread is serving a hint now (its requests are charged to hints)."""
        return bool(getattr(self._serving, "on", False))

    def charge(self, requests: int = 1) -> None:
        """A Cradle request was made: charged to whoever made it."""
        if self.serving:
            self.budget.charge_hint(requests)
        else:
            self.budget.charge_pass(requests)

    @contextmanager
    def pass_running(self) -> Iterator[None]:
        with self.budget.pass_running():
            yield

    def work(self, limit: int | None = None) -> int:
        """Serve the hints that are due while the budget allows (and at most `limit` of them);
        returns how many were tried."""
        tried = 0
        while self.budget.allows_hint() and (limit is None or tried < limit):
            hint = self.queue.due(self.clock())
            if hint is None:
                break
            self._try(hint)
            tried += 1
        return tried

    def _try(self, hint: Hint) -> None:
        self._serving.on = True
        try:
            result = self.serve(hint)
        except Interrupted:
            self.queue.retry_later(hint, self.clock())
            raise
        except Exception as exc:  # the API or S3 failing: the hint waits its next turn
            log.warning("hint.failed", uuid=hint.uuid, error=f"{type(exc).__name__}: {exc}")
            self.queue.retry_later(hint, self.clock())
            return
        finally:
            self._serving.on = False
        now = self.clock()
        for recording_id in result.archived:
            self.count(HintOutcome.ARCHIVED)
            seconds = (now - hint.received_at).total_seconds()
            self.observe(seconds)
            log.info("hint.archived", uuid=hint.uuid, recording_id=recording_id, seconds=seconds)
        if result.complete:
            self.queue.done(hint)
            log.info("hint.done", uuid=hint.uuid, archived=len(result.archived))
            return
        retry_at = self.queue.retry_later(hint, now)
        log.info(
            "hint.waiting",
            uuid=hint.uuid,
            archived=len(result.archived),
            retry_at=retry_at.isoformat() if retry_at else None,
        )
