"""Listing one window completely: the list call, and the split while the answer looks full.

The API may cut a large window silently, so a window whose answer looks full (marked cut, or
`size` at `split_threshold` or more) is listed again as two halves, and so on down. Two caps keep
the cost of a window bounded whatever the API answers: a window is not split below MIN_WINDOW or
deeper than MAX_SPLIT_DEPTH, and halves that hold nothing the parent did not (while neither is
full by count) show the parent was complete whatever its `size` claimed.

The archive pass and `reconcile` both list through here, so a reconciliation lists a period
exactly as the pass did: the same overlap, the same splitting, the same rate limiter (the
source's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Generic, Protocol, TypeVar

import structlog

from archiver.config import ArchiveConfig
from archiver.models import Recording, Window

log = structlog.get_logger(__name__)

# Each list call reaches this far past both ends of its window, so a recording exactly on a
# boundary is listed whatever the API's bound semantics (inclusive, half-open or exclusive).
OVERLAP = timedelta(seconds=1)
# Below this width, or this many halvings deep, a window is not split further even if it still
# looks full: what a window costs in list calls stays bounded whatever the API answers.
MIN_WINDOW = timedelta(seconds=1)
MAX_SPLIT_DEPTH = 16


class Listed(Protocol):
    """What the split rule needs of any list call's answer (recordings or conversations)."""

    @property
    def ids(self) -> list[str]: ...
    @property
    def malformed(self) -> list[tuple[str, str]]: ...
    @property
    def truncated(self) -> bool: ...
    @property
    def size(self) -> int: ...


class Listing(Listed, Protocol):
    @property
    def recordings(self) -> list[Recording]: ...


class Lister(Protocol):
    """The Cradle API's list call."""

    def list_recordings(
        self, window: Window, listed_from: datetime, listed_until: datetime
    ) -> Listing: ...


L = TypeVar("L", bound=Listed)
ListCall = Callable[[Window, datetime, datetime], L]


def _distinct(listings: Iterable[Listed]) -> int:
    """Entries across listings, each counted once: neighbouring windows overlap by OVERLAP."""
    ids: set[str] = set()
    raws: set[str] = set()
    for listing in listings:
        ids.update(listing.ids)
        raws.update(raw for _, raw in listing.malformed)
    return len(ids) + len(raws)


class WindowLister(Generic[L]):
    """Lists windows through one list call (`list_recordings`, `list_conversations`);
    `check_stop` runs before every call and raises to stop."""

    def __init__(
        self, call: ListCall[L], config: ArchiveConfig, check_stop: Callable[[], None]
    ) -> None:
        self.call = call
        self.config = config
        self.check_stop = check_stop

    def leaves(self, window: Window, horizon: datetime) -> Iterator[tuple[Window, L]]:
        """Every (window, listing) that together list `window` completely, in order, each
        listed as it is reached. No call reaches past `horizon`."""
        yield from self._leaves(window, horizon, 0, self.once(window, horizon))

    def _leaves(
        self, window: Window, horizon: datetime, depth: int, listing: L
    ) -> Iterator[tuple[Window, L]]:
        threshold = self.config.split_threshold
        if not (listing.truncated or listing.size >= threshold):
            yield window, listing
            return
        if window.width / 2 < MIN_WINDOW or depth >= MAX_SPLIT_DEPTH:
            # Full by count, this may be a cut list nobody can recover: an error. Full only by
            # its `size` claim, it is the API's word against what it returned: a warning.
            level = log.error if listing.size >= threshold else log.warning
            level("window.unsplittable", window=str(window), listed=listing.size, depth=depth)
            yield window, listing
            return
        log.info(
            "window.split", window=str(window), listed=listing.size, truncated=listing.truncated
        )
        halves = [(half, self.once(half, horizon)) for half in window.halves()]
        if _distinct(listing for _, listing in halves) <= _distinct([listing]) and all(
            half_listing.size < threshold for _, half_listing in halves
        ):
            # The halves hold nothing the parent did not, and neither is full by count: the
            # parent was complete, whatever its `size` claimed (a lying `size` would otherwise
            # split down to one-second windows). A half full by count is split on as usual.
            log.warning(
                "window.size_mismatch",
                window=str(window),
                listed=listing.size,
                halves=[half_listing.size for _, half_listing in halves],
            )
            yield window, listing
            yield from halves
            return
        for half, half_listing in halves:
            yield from self._leaves(half, horizon, depth + 1, half_listing)

    def once(self, window: Window, horizon: datetime) -> L:
        """One list call for `window`, split or not: what a webhook hint spends."""
        self.check_stop()
        return self.call(window, window.start - OVERLAP, min(window.end + OVERLAP, horizon))
