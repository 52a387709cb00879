"""The Simulator: two listeners, the generated account, the webhook sender, and the switches
tests flip."""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import FrameType, TracebackType
from typing import Any

import structlog

from archiver.simulator import conversations, webhooks
from archiver.simulator.canary import CanaryHandler
from archiver.simulator.conversations import SimConversation
from archiver.simulator.data import BadEntry, Period, SimRecording, generate
from archiver.simulator.options import SimulatorOptions
from archiver.simulator.server import ApiHandler
from archiver.simulator.state import SimState
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
        # Checked again by the dataclass: a default may fall after an explicit end.
        self.options = dataclasses.replace(options, start=start, end=end)
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self._api = bind(self.options.listen, ApiHandler)
        try:
            self._canary = bind(self.options.canary_listen, CanaryHandler)
        except OSError:
            self._api.server_close()
            raise
        self.base_url = url_of(self._api)
        self.canary_url = url_of(self._canary)
        period = Period(start, end)
        catalog = generate(self.options, period, self.base_url, self.canary_url, self.started_at)
        calls = conversations.generate(self.options, period, catalog.recordings(), self.started_at)
        self.state = SimState(self.options, catalog, calls, self.base_url, self.canary_url)
        self._api.state = self._canary.state = self.state
        self.stopping = self.state.stopping
        self._webhooks: webhooks.WebhookSender | None = None
        if self.options.webhook_url:
            due = webhooks.schedule(calls.items, self.started_at, self.options.webhook_delay)
            self._webhooks = webhooks.WebhookSender(self.state, self.options.webhook_url, due)

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
        if self._webhooks:
            self._webhooks.start()
        recordings = self.recordings()
        log.info(
            "simulator.started",
            url=self.base_url,
            canary_url=self.canary_url,
            seed=self.options.seed,
            start=self.options.start.isoformat() if self.options.start else None,
            end=self.options.end.isoformat() if self.options.end else None,
            recordings=len(recordings),
            conversations=len(self.state.calls.items),
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
            if self._webhooks:
                self._webhooks.join()
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

    @property
    def switches(self) -> SimulatorOptions:
        return self.state.switches

    def set_faults(self, **changes: Any) -> SimulatorOptions:
        """Change fault switches while running; takes effect from the next request."""
        return self.state.set_faults(**changes)

    def stats(self) -> dict[str, Any]:
        return self.state.counters.snapshot()

    def reset_stats(self) -> None:
        self.state.counters.reset()

    def recordings(self) -> list[SimRecording]:
        return self.state.catalog.recordings()

    def conversations(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[SimConversation]:
        """The call history that started in [since, until), whether listed yet or not: each
        with its recording ids, nature, status and revision (see SimConversation)."""
        return self.state.calls.between(since, until)

    def bad_entries(self) -> list[BadEntry]:
        return self.state.catalog.bad_entries()

    def iter_body(self, recording_id: str) -> Iterator[bytes]:
        return self.state.body(recording_id)

    def body_sha256(self, recording_id: str) -> str:
        """The hex SHA-256 of the body a good download serves (computed once, then cached)."""
        return self.state.body_sha256(recording_id)


def _summary(stats: dict[str, Any]) -> dict[str, Any]:
    keys = ("requests", "violations", "bytes_served", "downloads_completed", "canary_requests")
    return {**{key: stats[key] for key in keys}, "webhooks": stats["webhooks"]}
