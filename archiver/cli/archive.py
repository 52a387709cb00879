"""`run` and `backfill`: the commands that archive. Both hold the process until the work is done
or a signal stops it, and answer 3 when a recording was dead-lettered."""

from __future__ import annotations

import argparse
import sys

import structlog

from archiver.cli.arguments import time_arg
from archiver.cli.process import Shutdown, load
from archiver.config import readable_secret
from archiver.errors import EXIT_DEAD_LETTERS, EXIT_OK, UsageError

log = structlog.get_logger("archiver.cli")


def run_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--once", action="store_true", help="one pass, then exit (cron, CronJobs, scripts)"
    )


def backfill_arguments(backfill: argparse.ArgumentParser) -> None:
    backfill.add_argument("--from", dest="since", type=time_arg, required=True, metavar="T")
    backfill.add_argument(
        "--until", type=time_arg, default=None, metavar="T", help="default: the horizon"
    )


def cmd_run(args: argparse.Namespace) -> int:
    from archiver.app import Archiver

    config = load(args)
    exposed = readable_secret(config)
    if exposed is not None:  # once per start, not per pass; where the key lies open, never it
        log.warning(
            "config.secret_readable",
            path=exposed.path,
            mode=f"{exposed.mode:04o}",
            readers=exposed.readers,
        )
    shutdown = Shutdown(config.schedule.shutdown_timeout.total_seconds())
    with Archiver(config, stop=shutdown.stop) as archiver:
        if not args.once:
            if not archiver.serve():
                shutdown.force()  # the pass is stuck past shutdown_timeout
            return EXIT_OK
        archiver.run_once()
        return EXIT_DEAD_LETTERS if archiver.dead_lettered() else EXIT_OK


def cmd_backfill(args: argparse.Namespace) -> int:
    from archiver.app import Archiver

    if args.until is not None and args.until <= args.since:
        raise UsageError("backfill: --until must be later than --from")
    from archiver.progress import ProgressDisplay

    config = load(args)
    display = ProgressDisplay(sys.stderr, interactive=sys.stderr.isatty())
    shutdown = Shutdown(config.schedule.shutdown_timeout.total_seconds())
    with Archiver(config, stop=shutdown.stop) as archiver:
        try:
            result = archiver.backfill(args.since, args.until, on_progress=display)
        finally:
            display.close()
        print(
            f"backfill {result.outcome}: {result.archived} archived, "
            f"{result.failed} dead-lettered, {result.listed} listed"
        )
        return EXIT_DEAD_LETTERS if archiver.dead_lettered() else EXIT_OK
