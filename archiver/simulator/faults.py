"""Which faults a request gets, decided by hashing rather than by a shared random stream.

A decision depends on (seed, request target, how many times that target was requested, fault
kind). So two runs that make the same requests see the same faults whatever the thread timing,
and a retry of a failed request is a fresh roll that, at any rate below 1, eventually succeeds.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

from archiver.simulator.options import SimulatorOptions

BODY_KINDS = frozenset({"list", "download", "conversations"})
LIST_KINDS = frozenset({"list", "conversations"})
MALFORMED_SHAPES = 4


@dataclass(frozen=True)
class Plan:
    """What to do to one request; all False/None is a clean response."""

    drop_headers: bool = False
    status_429: bool = False
    retry_after: str = "none"  # "seconds", "date" or "none": the header to send with a 429
    status_5xx: int | None = None
    drop_body: bool = False
    truncate: bool = False
    cut_fraction: float = 0.5  # where a dropped or truncated body stops, as a share of it
    slow: bool = False
    malformed: int | None = None  # which malformed list shape to answer with


class FaultDice:
    """Counts requests per target and rolls the per-kind dice for the next one."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._counts: dict[str, int] = {}
        self._jitters: dict[str, int] = {}
        self._lock = threading.Lock()

    def jitter(self, limit: float, target: str) -> float:
        """How late this request reaches the server's edge: 0 .. `limit` seconds."""
        with self._lock:
            attempt = self._jitters.get(target, 0)
            self._jitters[target] = attempt + 1
        digest = hashlib.sha256(f"{self._seed}|{target}|{attempt}|jitter".encode()).digest()
        return limit * int.from_bytes(digest[:8], "big") / 2**64

    def plan(self, switches: SimulatorOptions, kind: str, target: str) -> Plan:
        with self._lock:
            attempt = self._counts.get(target, 0)
            self._counts[target] = attempt + 1

        def roll(fault: str) -> float:
            digest = hashlib.sha256(f"{self._seed}|{target}|{attempt}|{fault}".encode()).digest()
            return int.from_bytes(digest[:8], "big") / 2**64

        def hit(fault: str, rate: float) -> bool:
            # A rate of 0 never rolls, so switching a fault off is exact.
            return rate > 0 and roll(fault) < rate

        if hit("drop_headers", switches.fault_drop_headers):
            return Plan(drop_headers=True)
        if hit("429", switches.fault_429):
            return Plan(status_429=True, retry_after=_retry_after(switches.retry_after, roll))
        if hit("5xx", switches.fault_5xx):
            return Plan(status_5xx=(500, 502, 503)[int(roll("5xx-code") * 3)])
        if kind in LIST_KINDS and hit("malformed_list", switches.fault_malformed_list):
            return Plan(malformed=int(roll("malformed-shape") * MALFORMED_SHAPES))
        if kind not in BODY_KINDS or (
            switches.body_fault_scope == "downloads" and kind != "download"
        ):
            return Plan()
        return Plan(
            drop_body=hit("drop_body", switches.fault_drop_body),
            truncate=hit("truncate", switches.fault_truncate),
            cut_fraction=0.1 + 0.8 * roll("cut"),
            slow=hit("slow_body", switches.slow_body),
        )


def _retry_after(mode: str, roll: Callable[[str], float]) -> str:
    if mode != "mixed":
        return mode
    return ("seconds", "date", "none")[int(roll("retry-after") * 3)]


def malformed_list_body(shape: int, key: str = "recordings") -> bytes:
    """A 200 answer that is not a usable list of `key` (`recordings` or `conversations`):
    what a half-deployed backend sends."""
    return (
        b'{"%s": [{"url": "http://' % key.encode(),  # cut-off JSON
        b"<html><body>Service temporarily unavailable</body></html>",  # not JSON at all
        b'{"data": [], "total": 0}',  # JSON without the list
        b'{"%s": {"error": "timeout"}, "size": 0}' % key.encode(),  # the list not a list
    )[shape]
