"""The Simulator: two listeners, the generated account, and the switches tests flip."""

from __future__ import annotations

import dataclasses
import hashlib
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, timedelta
from types import FrameType, TracebackType
from typing import Any

import structlog

from archiver.simulator.body import iter_body
from archiver.simulator.canary import CanaryHandler
from archiver.simulator.data import BadEntry, Catalog, Period, SimRecording, generate
from archiver.simulator.faults import FaultDice
from archiver.simulator.options import RUNTIME_FIELDS, OptionError, SimulatorOptions
from archiver.simulator.server import ApiHandler
from archiver.simulator.stats import RateGate, Stats
from archiver.simulator.transport import SimServer, bind, url_of

log = structlog.get_logger()


class Simulator:
    """A local Cradle API. Both ports are bound on construction, so the urls are known at once.

    Use as a context manager, or `start()` ... `stop()`; `serve_forever()` is for the CLI.
    """

    def __init__(self, options: SimulatorOptions | None = None) -> None:
        options = options or SimulatorOptions()
        self.started_at = options.clock()
        # In UTC, so hours (each generated from its own seed) and "Z" times line up.
        end = (options.end or self.started_at).astimezone(UTC)
        if options.end is None:
            end = end.replace(second=0, microsecond=0)
        start = (options.start or end - timedelta(days=1)).astimezone(UTC)
        if start >= end:
            raise OptionError("start", f"must be before end ({start} >= {end})")
        self.options = dataclasses.replace(options, start=start, end=end)
        self.switches = self.options
        self.counters = Stats()
        self.gate = RateGate(self.counters)
        self.dice = FaultDice(self.options.seed)
        self.stopping = threading.Event()
        self._switch_lock = threading.Lock()
        self._sha256: dict[str, str] = {}
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self._api = bind(self.options.listen, ApiHandler, self)
        try:
            self._canary = bind(self.options.canary_listen, CanaryHandler, self)
        except OSError:
            self._api.server_close()
            raise
        self.base_url = url_of(self._api)
        self.canary_url = url_of(self._canary)
        period = Period(start, end)
        self.catalog: Catalog = generate(
            self.options, period, self.base_url, self.canary_url, self.started_at
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Simulator:
        if self._threads or self._stopped:
            return self
        for server, name in ((self._api, "api"), (self._canary, "canary")):
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"simulator-{name}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        recordings = self.catalog.recordings()
        log.info(
            "simulator.started",
            url=self.base_url,
            canary_url=self.canary_url,
            seed=self.options.seed,
            start=self.options.start.isoformat() if self.options.start else None,
            end=self.options.end.isoformat() if self.options.end else None,
            recordings=len(recordings),
            bytes_total=sum(r.size for r in recordings),
            poison=sum(1 for r in recordings if r.poison),
            late=sum(1 for r in recordings if r.late),
            bad_entries=self.options.bad_entries,
        )
        return self

    def stop(self) -> None:
        """Stop both listeners and join their threads; in-flight bodies are cut off."""
        if self._stopped:
            return
        self._stopped = True
        self.stopping.set()
        servers: list[SimServer] = [self._api, self._canary]
        if self._threads:
            for server in servers:
                server.shutdown()
            for thread in self._threads:
                thread.join()
        for server in servers:
            server.server_close()
        log.info("simulator.stopped", url=self.base_url, **_summary(self.stats()))

    def serve_forever(self) -> None:
        """Serve until SIGINT, SIGTERM, KeyboardInterrupt or `stop()` from another thread."""
        self.start()
        wake = threading.Event()
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():

            def on_signal(signum: int, _frame: FrameType | None) -> None:
                log.info("simulator.signal", signal=signal.Signals(signum).name)
                wake.set()

            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, on_signal)
        try:
            # Short waits keep the main thread responsive to signals on every platform.
            while not wake.wait(0.2) and not self.stopping.is_set():
                pass
        except KeyboardInterrupt:
            pass
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.stop()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- inspection and control ----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return self.counters.snapshot()

    def reset_stats(self) -> None:
        self.counters.reset()

    def recordings(self) -> list[SimRecording]:
        return self.catalog.recordings()

    def bad_entries(self) -> list[BadEntry]:
        return self.catalog.bad_entries()

    def iter_body(self, recording_id: str) -> Iterator[bytes]:
        recording = self.catalog.by_id[recording_id]
        return iter_body(self.options.seed, recording_id, recording.size)

    def body_sha256(self, recording_id: str) -> str:
        """The hex SHA-256 of the body a good download serves (computed once, then cached)."""
        cached = self._sha256.get(recording_id)
        if cached is None:
            digest = hashlib.sha256()
            for chunk in self.iter_body(recording_id):
                digest.update(chunk)
            cached = self._sha256[recording_id] = digest.hexdigest()
        return cached

    def set_faults(self, **changes: Any) -> SimulatorOptions:
        """Change fault switches while running; takes effect from the next request."""
        unknown = sorted(set(changes) - RUNTIME_FIELDS)
        if unknown:
            allowed = ", ".join(sorted(RUNTIME_FIELDS))
            raise OptionError(unknown[0], f"is not a fault switch (switches: {allowed})")
        with self._switch_lock:
            # Validated by the dataclass; requests read one whole snapshot, never a mix.
            self.switches = dataclasses.replace(self.switches, **changes)
        log.info("simulator.faults_changed", **changes)
        return self.switches


def _summary(stats: dict[str, Any]) -> dict[str, Any]:
    keys = ("requests", "violations", "bytes_served", "downloads_completed", "canary_requests")
    return {key: stats[key] for key in keys}
