"""What a command takes from the process it runs in: its config (found from `--config`, then
$CRADLE_ARCHIVER_CONFIG, then the default path, its secrets handed to the log redactor before
anything can log them) and its way to stop on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

import structlog

from archiver import logs
from archiver.config import DEFAULT_PATH, Config, load_config
from archiver.errors import EXIT_OK

log = structlog.get_logger("archiver.cli")


def load(args: argparse.Namespace, require_credentials: bool = True) -> Config:
    path = getattr(args, "config", None) or os.environ.get("CRADLE_ARCHIVER_CONFIG") or DEFAULT_PATH
    config = load_config(path, require_credentials=require_credentials)
    logs.REDACTOR.update(config.secrets)
    return config


class Shutdown:
    """SIGTERM/SIGINT set `stop`, which every command's work watches. If the work has not
    stopped within `timeout` (a stalled read, a long upload), the process leaves anyway: every
    checkpoint write so far is a committed transaction, so leaving loses nothing."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.stop = threading.Event()
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        log.info("stopping", signal=signal.Signals(signum).name, timeout=self.timeout)
        if not self.stop.is_set():
            self.stop.set()
            timer = threading.Timer(self.timeout, self.force)
            timer.daemon = True
            timer.start()

    def force(self) -> None:
        # The work's threads would hold the interpreter open; exit without waiting for them.
        log.warning("shutdown.forced", timeout=self.timeout)
        sys.stderr.flush()
        os._exit(EXIT_OK)
