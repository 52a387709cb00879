"""The daemon loop: runs at start and on its interval, survives failing passes, stops on request."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from archiver.daemon import Daemon


def test_a_failing_pass_does_not_stop_the_daemon_and_stop_is_clean() -> None:
    stop = threading.Event()
    calls: list[float] = []

    def tick() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("S3 unreachable")
        if len(calls) >= 3:
            stop.set()

    daemon = Daemon(
        tick,
        interval=timedelta(seconds=0.05),
        shutdown_timeout=timedelta(seconds=5),
        stop=stop,
        idle_every=0.01,
    )
    assert daemon.run() is True
    assert len(calls) >= 3
    assert daemon.passes >= 3


def test_stop_waits_for_the_running_pass_up_to_the_timeout() -> None:
    stop = threading.Event()
    release = threading.Event()

    def tick() -> None:
        stop.set()
        release.wait(5)

    daemon = Daemon(
        tick,
        interval=timedelta(hours=1),
        shutdown_timeout=timedelta(seconds=0.2),
        stop=stop,
        idle_every=0.01,
    )
    started = time.monotonic()
    assert daemon.run() is False  # the pass did not finish within shutdown_timeout
    assert time.monotonic() - started < 2
    release.set()


def test_idle_hook_runs_while_waiting() -> None:
    stop = threading.Event()
    idles: list[int] = []

    def idle() -> None:
        idles.append(1)
        if len(idles) == 3:
            stop.set()

    daemon = Daemon(
        lambda: None,
        interval=timedelta(hours=1),
        shutdown_timeout=timedelta(seconds=1),
        stop=stop,
        on_idle=idle,
        idle_every=0.01,
    )
    daemon.run()
    assert len(idles) == 3


def test_the_pass_and_the_work_between_passes_never_run_at_once() -> None:
    """One worker thread for every job (guarantee 4: the Cradle API sees one request at a
    time): the hints' job, due every 20 ms, never starts while a pass is running."""
    stop = threading.Event()
    lock = threading.Lock()
    running = {"now": 0, "most": 0}
    passes: list[int] = []
    turns: list[int] = []

    def job(done: list[int], seconds: float) -> None:
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        time.sleep(seconds)  # a job's length is what makes an overlap possible
        with lock:
            running["now"] -= 1
        done.append(1)
        if len(passes) >= 3 and len(turns) >= 3:
            stop.set()

    daemon = Daemon(
        lambda: job(passes, 0.15),
        interval=timedelta(seconds=0.2),
        shutdown_timeout=timedelta(seconds=5),
        stop=stop,
        idle_every=0.01,
        between=lambda: job(turns, 0.01),
        between_every=0.02,
    )
    assert daemon.run() is True
    assert len(passes) >= 3 and len(turns) >= 3
    assert running["most"] == 1
