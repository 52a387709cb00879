"""Loopback ports for servers a test starts itself, safe when tests run in parallel.

A port found free by binding to port 0 and closing is only free until someone else binds it,
and under `pytest -n` another worker asks the kernel at the same moment (it may be handed the
same port before our daemon binds it). So each worker draws from its own slice of a range below
the kernel's ephemeral ports (32768-60999 on Linux), which the kernel never hands to anyone,
and checks each port with a bind before giving it out. `SLICE` ports a worker, cycled.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading

BASE = 5_000  # below SeaweedFS's range (tests/seaweed.py: 15,000 on, gRPC partners 25,000 on)
SLICE = 1_000
WORKERS = 10  # slices up to 14,999
_lock = threading.Lock()


def worker_index() -> int:
    """0 for a plain run, N for pytest-xdist's worker gwN."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = name.removeprefix("gw")
    return int(digits) % WORKERS if digits.isdigit() else 0


def worker_slice(ports: range) -> range:
    """This worker's share of `ports` (SeaweedFS's range is shared out the same way)."""
    size = len(ports) // WORKERS
    start = ports.start + worker_index() * size
    return range(start, start + size)


_next = itertools.cycle(range(SLICE))


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now, and no other test worker will be given."""
    base = BASE + worker_index() * SLICE
    with _lock:
        for _ in range(SLICE):
            port = base + next(_next)
            if bindable(host, port):
                return port
    raise RuntimeError(f"no free port in {base}-{base + SLICE - 1}")


def bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True
