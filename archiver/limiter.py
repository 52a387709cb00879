"""The rate limiter every Cradle request goes through: list calls, downloads, retries, redirects.

Two rules, both enforced before a request starts:

- Even spacing: starts are at least `1 / rate` seconds apart (no burst of ten then a pause).
- A sliding window on what the server sees: the server counts *arrivals*, which we cannot
  observe, only bound. A request has certainly arrived by the time its response (or its failure)
  comes back, so the limiter keeps that moment for the last `rate` requests and starts the next
  one only a full second (plus a small margin) after the oldest of them. However late one
  request arrives (network, scheduling), no one-second window at the server holds more than
  `rate` arrivals.

It never sleeps after a response, so a slow response costs nothing extra.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        margin: float = 0.005,
        startup_quiet: float = 1.0,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self.window = 1.0 + margin
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        # Upper bounds of the server-side arrival times of the last floor(rate) requests.
        self._arrived: deque[float] = deque(maxlen=max(1, math.floor(rate)))
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
            earliest = self._next_start
            if len(self._arrived) == self._arrived.maxlen:
                earliest = max(earliest, self._arrived[0] + self.window)
            wait = max(0.0, earliest - now)
            self._next_start = max(now, earliest) + self.interval
        if wait > 0:
            self._sleep(wait)
        return wait

    def arrived(self) -> None:
        """The request started last has reached the server by now: its response (or its
        failure) is here. Called once per acquire()."""
        with self._lock:
            self._arrived.append(self._clock())
