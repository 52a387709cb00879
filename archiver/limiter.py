"""The rate limiter every Cradle request goes through: list calls, downloads, retries, redirects.

Request starts are spaced evenly, `1 / rate` seconds apart plus a small margin. Even spacing is
stricter than a sliding window (no burst of ten followed by a pause), so the server, which
measures arrivals and not our clock, sees at most `rate` starts in any one-second window even
with a few milliseconds of network jitter. The limiter spaces *starts*; it never sleeps after a
response, so a slow response costs nothing extra.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        margin: float = 0.02,
        startup_quiet: float = 1.0,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = (1.0 + margin) / rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        # A process restarted at once after a crash must not add to the dead one's last second
        # as the server counts it, so the first start waits out one full window.
        self._next_start = clock() + startup_quiet
        self.paused_until = 0.0

    def pause_until(self, deadline: float) -> None:
        """Hold every request until `deadline` (a 429 pauses the whole client)."""
        with self._lock:
            self.paused_until = max(self.paused_until, deadline)
            self._next_start = max(self._next_start, deadline)

    def pause_for(self, seconds: float) -> None:
        self.pause_until(self._clock() + seconds)

    def acquire(self) -> float:
        """Block until a request may start; return how long it waited."""
        with self._lock:
            now = self._clock()
            wait = max(0.0, self._next_start - now)
            self._next_start = max(now, self._next_start) + self.interval
        if wait > 0:
            self._sleep(wait)
        return wait
