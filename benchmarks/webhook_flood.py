"""Webhook floods against the receiver alone: every request answered, memory bounded.

    python -m benchmarks.webhook_flood [--requests 1000] [--seconds 10]

The receiver (with its queue, and no worker draining it) runs in a child process, so its memory
is its own: the child reports its resident set after each flood and its peak (VmHWM). Each
flood sends `--requests` POSTs paced evenly over `--seconds` from 16 client threads:

- `spread`: small valid conversations, each from one of 50 loopback addresses (127.0.0.x), so
  the per-address rate never bites: every one is queued until the queue is full;
- `one source`: the same from one address: the token bucket answers most with 429;
- `largest`: 256 KiB bodies (valid JSON, padded) from 50 addresses: the most each request may
  make the receiver read and parse;
- `hostile`: bodies nested 100,000 deep, wrong tokens and over-limit Content-Lengths, mixed.

Printed: the answers by status, the answer time (p50, p99, max), the outcomes the receiver
counted, the queue's length and the child's memory.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOKEN = "flood-token-0123456789abcdef"  # noqa: S105 - a loopback test token, not a secret
ADDRESSES = tuple(f"127.0.0.{i}" for i in range(2, 52))
ROOT = Path(__file__).resolve().parents[1]

Request = Callable[[int], tuple[str, str, bytes]]  # i -> source address, path, body


@dataclass(frozen=True)
class Flood:
    name: str
    request: Request


def serve() -> None:
    """The child: a receiver on a free port; prints the port, then a report per stdin line."""
    import structlog

    from archiver.hints import HintQueue
    from archiver.webhook import WebhookReceiver

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def count(outcome: str) -> None:
        with lock:
            outcomes[outcome] += 1

    queue = HintQueue(count=count)
    receiver = WebhookReceiver(("0.0.0.0", 0), TOKEN, queue, count=count)
    receiver.start()
    print(receiver.address[1], flush=True)
    for _ in sys.stdin:
        with lock:
            report = {"outcomes": dict(outcomes), "queued": len(queue), **_memory()}
        print(json.dumps(report), flush=True)
    receiver.stop()


def _memory() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def conversation(i: int, flood: str) -> dict[str, Any]:
    return {
        "uuid": f"{flood}-{i:06d}",
        "startedAt": "2026-01-01T00:00:00.000Z",
        "durationSeconds": 60,
        "recordings": [{"url": "http://canary.invalid/x.mp3"}],
    }


def floods() -> list[Flood]:
    path = f"/webhook/{TOKEN}"
    padding = 256 * 1024

    def spread(i: int) -> tuple[str, str, bytes]:
        return ADDRESSES[i % len(ADDRESSES)], path, json.dumps(conversation(i, "spread")).encode()

    def one(i: int) -> tuple[str, str, bytes]:
        return "127.0.0.60", path, json.dumps(conversation(i, "one")).encode()

    def largest(i: int) -> tuple[str, str, bytes]:
        body = json.dumps(conversation(i, "largest")).encode()
        return ADDRESSES[i % len(ADDRESSES)], path, body + b" " * (padding - len(body))

    def hostile(i: int) -> tuple[str, str, bytes]:
        source = ADDRESSES[i % len(ADDRESSES)]
        kind = i % 3
        if kind == 0:
            return source, path, b"[" * 100_000 + b"]" * 100_000
        if kind == 1:
            return source, "/webhook/" + "x" * len(TOKEN), json.dumps(conversation(i, "h")).encode()
        return source, path, b"{" * (padding + 1)

    return [
        Flood("spread", spread),
        Flood("one source", one),
        Flood("largest", largest),
        Flood("hostile", hostile),
    ]


def post(port: int, source: str, path: str, body: bytes) -> tuple[int, float]:
    started = time.monotonic()
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=30, source_address=(source, 0)
    )
    try:
        connection.request("POST", path, body=body)
        response = connection.getresponse()
        response.read()
        status = response.status
    except OSError:
        status = 0  # no answer
    finally:
        connection.close()
    return status, time.monotonic() - started


def flood(port: int, request: Request, count: int, seconds: float) -> list[tuple[int, float]]:
    start = time.monotonic() + 0.2

    def one(i: int) -> tuple[int, float]:
        time.sleep(max(0.0, start + i * seconds / count - time.monotonic()))
        return post(port, *request(i))

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, range(count)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.webhook_flood", "--serve"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    port = int(child.stdout.readline())

    def report() -> dict[str, Any]:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("report\n")
        child.stdin.flush()
        found: dict[str, Any] = json.loads(child.stdout.readline())
        return found

    try:
        base = report()
        print(f"receiver at start: {base['VmRSS'] / 2**20:.1f} MiB resident")
        for chosen in floods():
            began = time.monotonic()
            answers = flood(port, chosen.request, args.requests, args.seconds)
            took = time.monotonic() - began
            state = report()
            statuses = Counter(status for status, _ in answers)
            times = sorted(t for _, t in answers)
            print(
                f"{chosen.name}: {len(answers)} POSTs in {took:.1f} s;"
                f" answers {dict(sorted(statuses.items()))};"
                f" answer time p50 {statistics.median(times) * 1000:.1f} ms,"
                f" p99 {times[int(len(times) * 0.99) - 1] * 1000:.1f} ms,"
                f" max {times[-1] * 1000:.1f} ms;"
                f" queued {state['queued']}; resident {state['VmRSS'] / 2**20:.1f} MiB,"
                f" peak {state['VmHWM'] / 2**20:.1f} MiB"
            )
        print(f"outcomes counted: {dict(sorted(state['outcomes'].items()))}")
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
