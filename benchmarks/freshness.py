"""`make bench`: how fresh webhook hints keep the archive. From a webhook to its recording in S3.

    python -m benchmarks.freshness [--seconds 120] [--per-hour 1200] [--processing-delay 5]

The daemon (`run`, the real CLI in a child process, a 1 h interval so its first pass is its
only one) listens for webhooks; the simulator, in this process, posts each live call's
conversation when the call ends, and lists its recordings `--processing-delay` seconds later,
as Cradle does; moto's S3 runs in a child. Calls end over `--seconds` (1 to 60 s long, 80 KB a
second of call: up to 4.8 MB each). For each recording of a live call it reports, from the
daemon's JSON log:

- from the webhook's arrival (the receiver's `webhook.hint`) to the recording archived
  (`recording.archived`), and
- from the call's end (the simulator's) to archived,

as p50, p95 and max; the goal is a p95 of at most 15 s from the webhook. Logs of the last run
are kept in benchmarks/.cache/freshness/.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import structlog

from archiver.models import parse_time
from archiver.simulator import Simulator, SimulatorOptions
from benchmarks.harness import API_KEY, CRADLE_ID, PREFIX, MotoServer, child_env, free_port

HERE = Path(__file__).resolve().parent
RUN_DIR = HERE / ".cache" / "freshness"
TOKEN = "bench-webhook-token-0123456789"  # noqa: S105  a test token, on loopback
GOAL_P95 = 15.0  # seconds from the webhook, the goal
MAX_DURATION = 60  # seconds of call at most ...
BYTES_PER_SECOND = 80_000  # ... so at most 4.8 MB a recording
# After the last call ends: long enough for a hint's third try (30 s) and its download.
GRACE = timedelta(seconds=60)


@dataclass(frozen=True)
class Spec:
    seconds: float  # calls end over this long
    per_hour: float
    processing_delay: float  # a call's recordings are listed this long after it ends


class DaemonLog:
    """The daemon's JSON log lines, read on a thread as they come, and kept in a file."""

    def __init__(self, stream: IO[str], copy: Path) -> None:
        self.events: list[dict[str, Any]] = []
        self.ended = False  # the daemon closed its stderr: it exited
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream, copy), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str], copy: Path) -> None:
        with copy.open("w") as kept:
            for line in stream:
                kept.write(line)
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()
        with self._changed:
            self.ended = True
            self._changed.notify_all()

    def wait_archived(self, recording_ids: set[str], deadline: datetime) -> None:
        """Until every one of `recording_ids` is archived, the daemon exits, or `deadline`."""

        def done() -> bool:
            archived = {e.get("recording_id") for e in self.named("recording.archived")}
            return recording_ids <= archived

        with self._changed:
            while not done() and not self.ended:
                left = (deadline - datetime.now(UTC)).total_seconds()
                if left <= 0:
                    return
                self._changed.wait(min(left, 1.0))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == name]

    def join(self) -> None:
        self._thread.join(timeout=10)


def write_config(directory: Path, sim: Simulator, endpoint: str, bucket: str, port: int) -> Path:
    token_file = directory / "webhook-token"
    token_file.write_text(TOKEN + "\n")
    assert sim.options.start is not None
    tables: dict[str, dict[str, Any]] = {
        "cradle": {"base_url": sim.base_url, "id": CRADLE_ID, "api_key": API_KEY},
        "s3": {"bucket": bucket, "endpoint_url": endpoint, "prefix": PREFIX},
        "archive": {
            "start": (sim.options.start - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "settle_delay": "0s",
            "lookback": "10m",
        },
        "schedule": {"interval": "1h", "shutdown_timeout": "10s"},
        "state": {"path": str(directory / "state.db")},
        "server": {"listen": ""},
        "webhook": {"listen": f"127.0.0.1:{port}", "token_file": str(token_file)},
    }
    lines = []
    for name, values in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path = directory / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def daemon(config: Path) -> Iterator[DaemonLog]:
    """`run` in a child process until the block ends (then SIGTERM)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "archiver", "--log-format", "json", "--config", str(config), "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert process.stderr is not None
    log = DaemonLog(process.stderr, RUN_DIR / "daemon.log")
    try:
        yield log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.join()


def measure(spec: Spec) -> dict[str, Any]:
    with MotoServer(RUN_DIR / "moto.log") as moto:
        bucket = moto.new_bucket("freshness")
        port = free_port()
        now = datetime.now(UTC).replace(microsecond=0)
        sim = Simulator(
            SimulatorOptions(
                seed=5,
                start=now - timedelta(seconds=30),
                end=now + timedelta(seconds=spec.seconds),
                per_hour=spec.per_hour,
                max_duration=MAX_DURATION,
                bytes_per_second=BYTES_PER_SECOND,
                boundary_fraction=0.0,
                processing_delay=spec.processing_delay,
                webhook_url=f"http://127.0.0.1:{port}/webhook/{TOKEN}",
                api_key=API_KEY,
                cradle_id=CRADLE_ID,
            )
        ).start()
        try:
            live = [c for c in sim.conversations() if c.ended_at > sim.started_at]
            wanted = {rid for c in live for rid in c.recording_ids}
            last_end = max(c.ended_at for c in live)
            config = write_config(RUN_DIR, sim, moto.endpoint, bucket, port)
            with daemon(config) as log:
                log.wait_archived(wanted, last_end + GRACE)
            stats = sim.stats()
            sizes = {r.recording_id: r.size for r in sim.recordings()}
        finally:
            sim.stop()
    return figures(live, log, sizes, stats)


def figures(
    live: list[Any], log: DaemonLog, sizes: dict[str, int], stats: dict[str, Any]
) -> dict[str, Any]:
    """The freshness of each live recording a hint archived, and what else became of them."""
    arrived = {e["uuid"]: parse_time(e["timestamp"]) for e in log.named("webhook.hint")}
    archived = {
        e["recording_id"]: parse_time(e["timestamp"]) for e in log.named("recording.archived")
    }
    # Which hint archived it: its own call's, or a neighbour's whose window covered it.
    by_hint = {e["recording_id"]: e["uuid"] for e in log.named("hint.archived")}
    from_webhook, from_end, own, missed, by_pass = [], [], [], [], 0
    for call in live:
        for rid in call.recording_ids:
            if rid not in archived:
                missed.append(rid)
            elif rid not in by_hint:
                by_pass += 1  # listed by the first pass, before its hint came
            elif call.uuid in arrived:
                seconds = (archived[rid] - arrived[call.uuid]).total_seconds()
                from_webhook.append(seconds)
                from_end.append((archived[rid] - call.ended_at).total_seconds())
                if by_hint[rid] == call.uuid:
                    own.append(seconds)
    live_ids = [rid for call in live for rid in call.recording_ids]
    return {
        "live_calls": len(live),
        "live_recordings": len(live_ids),
        "largest_bytes": max((sizes[rid] for rid in live_ids), default=0),
        "archived_by_hint": len(from_webhook),
        "archived_by_pass": by_pass,
        "missed": len(missed),
        "from_webhook": summary(from_webhook),
        "from_call_end": summary(from_end),
        "by_own_hint": summary(own) | {"count": len(own)},
        "within_5s_of_webhook": sum(1 for s in from_webhook if s < 5),
        "hint_tries": len(log.named("hint.waiting")) + len(log.named("hint.done")),
        "webhooks": stats["webhooks"],
        "violations": stats["violations"],
        "api_requests": stats["requests"],
    }


def summary(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {
        "p50": percentile(ordered, 50),
        "p95": percentile(ordered, 95),
        "max": ordered[-1] if ordered else None,
    }


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.freshness")
    parser.add_argument("--seconds", type=float, default=120.0, help="calls end over this long")
    parser.add_argument("--per-hour", type=float, default=1200.0, help="recorded calls per hour")
    parser.add_argument("--processing-delay", type=float, default=5.0)
    parser.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir(parents=True)
    print("bench: freshness, webhooks into the daemon ...", file=sys.stderr, flush=True)
    found = measure(Spec(args.seconds, args.per_hour, args.processing_delay))
    (RUN_DIR / "figures.json").write_text(json.dumps(found, indent=2) + "\n")
    hint, end, own = found["from_webhook"], found["from_call_end"], found["by_own_hint"]
    met = hint["p95"] is not None and hint["p95"] <= GOAL_P95 and found["missed"] == 0
    print(
        f"freshness: {found['archived_by_hint']} recordings (up to"
        f" {found['largest_bytes'] / 1e6:.1f} MB) archived by hints; webhook -> archived"
        f" p50 {_s(hint['p50'])}, p95 {_s(hint['p95'])}, max {_s(hint['max'])} (goal p95 <="
        f" {GOAL_P95:.0f} s: {'met' if met else 'MISSED'}); call end -> archived p50"
        f" {_s(end['p50'])}, p95 {_s(end['p95'])}, max {_s(end['max'])}"
    )
    print(
        f"  {found['live_calls']} live calls, listed {args.processing_delay:g} s after they end;"
        f" {found['within_5s_of_webhook']} archived within 5 s of the webhook;"
        f" {own['count']} by their own call's hint (p50 {_s(own['p50'])}, max"
        f" {_s(own['max'])}), the rest by a neighbour's whose window held them;"
        f" {found['archived_by_pass']} by the first pass, {found['missed']} missed;"
        f" {found['hint_tries']} hint tries, {found['api_requests']} API requests,"
        f" {found['violations']} violations; webhooks {found['webhooks']}"
    )
    if found["missed"]:
        return 1
    return 1 if args.strict and not met else 0


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


if __name__ == "__main__":
    sys.exit(main())
