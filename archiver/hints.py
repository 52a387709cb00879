"""Webhook hints: what a webhook may tell the worker, the queue that holds it, and its budget.

A webhook is not signed, so its body is hostile input and never the truth (SPEC guarantee 11).
From it we keep only what tells the worker *where to look*: the conversation's uuid (to
deduplicate), its start (the 2-second window to list), and two numbers that tell whether that
listing found what was announced (`durationSeconds`, how many recordings). Everything else,
urls included, is dropped while parsing: a Hint has no field that could hold a url, so nothing
downstream can follow one. A field we keep that is malformed is fatal only for the two we need
(`uuid`, `startedAt`); a bad `durationSeconds` or `recordings` is read as absent.

What a forged, repeated or flooding sender can cost is bounded three ways:

- the queue holds at most `capacity` hints, one per uuid, and remembers the last `memory`
  finished uuids: a repeat costs nothing, and a flood pushes out its own oldest hints;
- a hint is tried at most 1 + len(RETRY_OFFSETS) times, all within 5 minutes of its first try;
- HintBudget gives hints at most a fixed share of the API's requests while a pass is running,
  so the sweep, which is the proof, always gets the rest.

A lost hint costs nothing: the sweep lists every window anyway.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from archiver.conversations import checked_uuid
from archiver.errors import MalformedEntry
from archiver.models import MAX_DURATION_SECONDS, Window, checked_started_at

# Half the listed window on each side of startedAt: the API's bound semantics are unknown, and
# its startedAt may be rounded differently in the webhook and in the list.
HALF_WINDOW = timedelta(seconds=1)
MAX_SPAN = timedelta(hours=4)  # of a call's window past its start (calls may be hours long)
# After the first try, when the announced recordings are not listed yet (they appear seconds
# after the call ends). Offsets from the first try, not gaps: a worker busy past one goes on to
# the next, so a late worker never makes two tries back to back.
RETRY_OFFSETS = tuple(timedelta(seconds=s) for s in (10, 30, 60, 120, 300))
CAPACITY = 1_000  # hints held: about 200 bytes each
MEMORY = 10_000  # finished uuids remembered, to count a repeat as a duplicate: about 100 bytes each


class HintOutcome(StrEnum):
    """The `outcome` label of cradle_archiver_webhook_hints_total."""

    ACCEPTED = "accepted"  # queued
    DUPLICATE = "duplicate"  # its uuid is queued, or was finished recently: not queued again
    NOT_FOUND = "not_found"  # wrong path or wrong token (one answer for both: 404)
    TOO_LARGE = "too_large"  # a body over the limit (413)
    MALFORMED = "malformed"  # not a JSON object with a usable uuid and startedAt (400)
    RATE_LIMITED = "rate_limited"  # too many from one source (429)
    TIMED_OUT = "timed_out"  # a request too slow to arrive whole: cut, not answered
    DROPPED_FULL = "dropped_full"  # the oldest hint, pushed out of a full queue
    EXPIRED = "expired"  # tried on the whole retry schedule without finding what it announced
    ARCHIVED = "archived"  # a recording archived because of a hint (the worker reports it)


Count = Callable[[HintOutcome], None]


def ignore(outcome: HintOutcome) -> None:
    """The counter of a queue or receiver nobody scrapes."""


@dataclass(frozen=True)
class Hint:
    """What a webhook told us; `received_at` is our clock's, for the hint-to-archive time."""

    uuid: str
    started_at: datetime
    duration_seconds: float | None
    recordings: int | None  # how many the body's `recordings` list held; None without a list
    received_at: datetime

    @property
    def window(self) -> Window:
        """What the worker lists: a second either side of startedAt, and on to the call's end
        when its duration is known (a transfer's second recording starts later in the call),
        at most MAX_SPAN on: a forged duration buys no wider listing than that."""
        length = min(timedelta(seconds=self.duration_seconds or 0), MAX_SPAN)
        return Window(self.started_at - HALF_WINDOW, self.started_at + length + HALF_WINDOW)


def parse_hint(body: bytes, received_at: datetime) -> Hint:
    """A hint from a webhook's body, or MalformedEntry saying what is missing (never quoting a
    value: the body is the sender's, and our logs are not its echo)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 and huge ints are ValueErrors too
        raise MalformedEntry("the body is not JSON") from exc
    if not isinstance(data, dict):
        raise MalformedEntry(f"the body is a JSON {type(data).__name__}, not an object")
    return Hint(
        uuid=checked_uuid(data.get("uuid")),
        started_at=checked_started_at(data.get("startedAt"), received_at, quote=False),
        duration_seconds=_duration(data.get("durationSeconds")),
        recordings=len(data["recordings"]) if isinstance(data.get("recordings"), list) else None,
        received_at=received_at,
    )


def _duration(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or not 0 <= value <= MAX_DURATION_SECONDS:
        return None
    return float(value)


@dataclass(slots=True)
class _Held:
    """A hint in the queue and where it stands on its schedule (the queue's own state)."""

    hint: Hint
    due: datetime
    first_try: datetime | None = None
    next_offset: int = 0  # the index into RETRY_OFFSETS of its next retry
    in_flight: bool = False  # handed to the worker by due(), not yet retried or done


class HintQueue:
    """The hints waiting for the worker: bounded, one per uuid, thread-safe.

    The receiver's threads `offer()`; the one worker takes `due(now)`, tries the hint, then calls
    `done(hint)` or `retry_later(hint, now)`. A full queue drops its oldest hint (by arrival;
    never the one in flight), counted `dropped_full`: under a flood, fresh hints are the likely
    real ones, and a dropped real one is still archived by the sweep.
    """

    def __init__(
        self,
        *,
        capacity: int = CAPACITY,
        memory: int = MEMORY,
        count: Count = ignore,
        retry_offsets: tuple[timedelta, ...] = RETRY_OFFSETS,
    ) -> None:
        if capacity < 2:
            raise ValueError("capacity must leave room beside the hint in flight")
        self.capacity = capacity
        self.memory = memory
        self.retry_offsets = retry_offsets
        self._count = count
        self._lock = threading.Lock()
        self._held: OrderedDict[str, _Held] = OrderedDict()  # by arrival
        self._finished: OrderedDict[str, None] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

    def offer(self, hint: Hint) -> HintOutcome:
        """Queue `hint`, due at once; ACCEPTED, or DUPLICATE when its uuid is known."""
        dropped = False
        with self._lock:
            if hint.uuid in self._held or hint.uuid in self._finished:
                outcome = HintOutcome.DUPLICATE
            else:
                if len(self._held) >= self.capacity:
                    dropped = self._drop_oldest()
                self._held[hint.uuid] = _Held(hint, due=hint.received_at)
                outcome = HintOutcome.ACCEPTED
        if dropped:
            self._count(HintOutcome.DROPPED_FULL)
        self._count(outcome)
        return outcome

    def due(self, now: datetime) -> Hint | None:
        """The hint to try now (the longest due, first come first served), or None; it stays
        held, in flight, until `done` or `retry_later`."""
        with self._lock:
            chosen = min(
                (h for h in self._held.values() if not h.in_flight and h.due <= now),
                key=lambda h: h.due,  # min() keeps the first of equals: the earliest arrival
                default=None,
            )
            if chosen is None:
                return None
            chosen.in_flight = True
            chosen.first_try = chosen.first_try or now
            return chosen.hint

    def retry_later(self, hint: Hint, now: datetime) -> datetime | None:
        """Put a tried hint back for its next retry on the schedule (offsets from its first
        try), and return when that is; None when the schedule is over (counted `expired`), or
        when the hint is not in flight (nothing is done then)."""
        with self._lock:
            held = self._held.get(hint.uuid)
            if held is None or not held.in_flight or held.first_try is None:
                return None
            offsets = self.retry_offsets
            index = held.next_offset
            while index < len(offsets) and held.first_try + offsets[index] <= now:
                index += 1  # the worker was busy past this one: go on to the next
            if index == len(offsets):
                self._forget(hint.uuid)
                when = None
            else:
                when = held.first_try + offsets[index]
                held.due, held.next_offset, held.in_flight = when, index + 1, False
        if when is None:
            self._count(HintOutcome.EXPIRED)
        return when

    def done(self, hint: Hint) -> None:
        """The hint found what it announced (or the worker gives up on it): forget it, and
        remember its uuid so a repeat is a duplicate."""
        with self._lock:
            self._forget(hint.uuid)

    def _forget(self, uuid: str) -> None:
        self._held.pop(uuid, None)
        self._finished[uuid] = None
        self._finished.move_to_end(uuid)
        while len(self._finished) > self.memory:
            self._finished.popitem(last=False)

    def _drop_oldest(self) -> bool:
        oldest = next((uuid for uuid, h in self._held.items() if not h.in_flight), None)
        if oldest is None:
            return False
        del self._held[oldest]  # not remembered: were it sent again, it may be queued again
        return True


class HintBudget:
    """The share of the Cradle API's requests hints may take while a pass runs.

    Hints and passes run on the one worker and share the one rate limiter, so every request a
    hint makes is one the pass waits for. While a pass runs, each of its requests earns hints
    `share / (1 - share)` of a request (0.25 at the default 20 %), up to `burst` saved; a hint
    may start while the credit is positive and is charged what it made (its 2 list calls, its
    downloads), so the credit may go negative until the pass has earned it back. Over a pass
    of P requests, hints make at most P/4 + `burst` + one hint's requests: 20 % of the total
    plus a constant, however many hints wait. Between passes hints are not limited: the rate
    limiter alone paces them.
    """

    def __init__(self, share: float = 0.2, burst: float = 4.0) -> None:
        if not 0 < share < 1:
            raise ValueError("share must be between 0 and 1")
        self.share = share
        self.burst = burst
        self._earn = share / (1 - share)
        self._credit = burst
        self._running = False
        self._lock = threading.Lock()

    @contextmanager
    def pass_running(self) -> Iterator[None]:
        """Around a pass: hints are held to their share inside."""
        with self._lock:
            self._running, self._credit = True, self.burst
        try:
            yield
        finally:
            with self._lock:
                self._running = False

    def charge_pass(self, requests: int = 1) -> None:
        """The pass made `requests` Cradle requests."""
        with self._lock:
            if self._running:
                self._credit = min(self.burst, self._credit + requests * self._earn)

    def allows_hint(self) -> bool:
        """Whether a hint may start now."""
        with self._lock:
            return not self._running or self._credit > 0

    def charge_hint(self, requests: int) -> None:
        """A hint made `requests` Cradle requests."""
        with self._lock:
            if self._running:
                self._credit -= requests
