"""What the request handlers share: the generated account (recordings and conversations), the
fault switches and the counters.

Handlers see this, never the Simulator: the listeners, threads and signals stay in
`simulator.py`, the only module that ties the HTTP side (`server`, `admin` and `canary`, over
`transport`) to a state. So every import points one way, towards the data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Iterator
from typing import Any

import structlog

from archiver.simulator.body import iter_body
from archiver.simulator.conversations import Calls
from archiver.simulator.data import Catalog
from archiver.simulator.faults import FaultDice
from archiver.simulator.options import RUNTIME_FIELDS, OptionError, SimulatorOptions
from archiver.simulator.stats import RateGate, Stats

log = structlog.get_logger()


class SimState:
    """One simulator's account and switches. All but `switches` stay the same objects."""

    def __init__(
        self,
        options: SimulatorOptions,
        catalog: Catalog,
        calls: Calls,
        base_url: str,
        canary_url: str,
    ) -> None:
        self.options = options
        self.catalog = catalog
        self.calls = calls
        self.base_url = base_url
        self.canary_url = canary_url
        # Replaced whole by `set_faults`, so a request reads one snapshot, never a mix.
        self.switches = options
        self.counters = Stats()
        self.gate = RateGate(self.counters)
        self.dice = FaultDice(options.seed)
        self.stopping = threading.Event()
        self._switch_lock = threading.Lock()
        self._sha256: dict[str, str] = {}

    def set_faults(self, **changes: Any) -> SimulatorOptions:
        """Change fault switches; takes effect from the next request."""
        unknown = sorted(set(changes) - RUNTIME_FIELDS)
        if unknown:
            allowed = ", ".join(sorted(RUNTIME_FIELDS))
            raise OptionError(unknown[0], f"is not a fault switch (switches: {allowed})")
        with self._switch_lock:
            # Validated by the dataclass.
            self.switches = dataclasses.replace(self.switches, **changes)
        log.info("simulator.faults_changed", **changes)
        return self.switches

    def body(self, recording_id: str) -> Iterator[bytes]:
        """The body a good download of this recording serves."""
        recording = self.catalog.by_id[recording_id]
        return iter_body(self.options.seed, recording_id, recording.size, vbr=recording.vbr)

    def body_sha256(self, recording_id: str) -> str:
        """The hex SHA-256 of `body` (computed once, then cached)."""
        cached = self._sha256.get(recording_id)
        if cached is None:
            digest = hashlib.sha256()
            for chunk in self.body(recording_id):
                digest.update(chunk)
            cached = self._sha256[recording_id] = digest.hexdigest()
        return cached
