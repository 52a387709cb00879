"""The command line: parses arguments, calls the work, prints, and exits. The only package that
prints to the user or exits; everything it calls returns values or raises grouped errors.

This module holds what every command shares: the parser, built from one table of commands, the
global options, and the one place errors become a line on stderr and an exit code (SPEC.md's
table). Each command lives with its kin in a module of its own and imports the work it runs only
when it runs, so `status`, run often by monitoring, starts without loading the archiver."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NamedTuple, NoReturn

import structlog

from archiver import logs
from archiver.cli.archive import backfill_arguments, cmd_backfill, cmd_run, run_arguments
from archiver.cli.check import cmd_check
from archiver.cli.process import Shutdown
from archiver.cli.proof import audit_arguments, cmd_audit, cmd_reconcile, reconcile_arguments
from archiver.cli.retention import (
    cmd_hold,
    cmd_retention,
    hold_arguments,
    hold_rule,
    retention_arguments,
)
from archiver.cli.simulate import cmd_simulate, simulate_arguments
from archiver.cli.state import (
    cmd_rebuild_state,
    cmd_retry,
    cmd_status,
    cmd_verify,
    rebuild_arguments,
    retry_arguments,
    status_arguments,
    verify_arguments,
)
from archiver.config import DEFAULT_PATH
from archiver.errors import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, ConfigError, FatalError, Interrupted

__all__ = [
    "COMMANDS",
    "PROG",
    "Command",
    "Shutdown",
    "build_parser",
    "cmd_audit",
    "cmd_backfill",
    "cmd_check",
    "cmd_hold",
    "cmd_rebuild_state",
    "cmd_reconcile",
    "cmd_retention",
    "cmd_retry",
    "cmd_run",
    "cmd_simulate",
    "cmd_status",
    "cmd_verify",
    "hold_rule",
    "main",
    "run",
]

log = structlog.get_logger("archiver.cli")
PROG = "cradle-archiver"


class Command(NamedTuple):
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


# Each command: its help line, what adds its own arguments, and what runs it, in the order
# `--help` lists them.
COMMANDS: dict[str, Command] = {
    "run": Command("the daemon: an archive pass every schedule.interval", run_arguments, cmd_run),
    "backfill": Command("archive a past period once", backfill_arguments, cmd_backfill),
    "status": Command("watermark, lag, counts, last pass, failures", status_arguments, cmd_status),
    "verify": Command("check archived recordings exist in S3", verify_arguments, cmd_verify),
    "retry": Command("put dead-lettered recordings back to pending", retry_arguments, cmd_retry),
    "reconcile": Command(
        "list a period again; compare the API, the checkpoint and S3",
        reconcile_arguments,
        cmd_reconcile,
    ),
    "check": Command(
        "validate the config, the API credentials and S3 write access", _no_arguments, cmd_check
    ),
    "audit": Command(
        "verify the manifest chain and every sealed recording (read-only)",
        audit_arguments,
        cmd_audit,
    ),
    "simulate": Command("serve a local Cradle API simulator", simulate_arguments, cmd_simulate),
    "rebuild-state": Command(
        "rebuild a lost checkpoint from the bucket", rebuild_arguments, cmd_rebuild_state
    ),
    "hold": Command("hold add|remove|list: legal holds on recordings", hold_arguments, cmd_hold),
    "retention": Command(
        "retention extend: lengthen the Object Lock of archived recordings",
        retention_arguments,
        cmd_retention,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[common], description="Archive Cradle call recordings to S3."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.add_arguments(commands.add_parser(name, parents=[common], help=command.help))
    return parser


def _global_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS lets the global options go before or after the command without one
    # position's default overwriting the other's value.
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help=f"config file (default $CRADLE_ARCHIVER_CONFIG, else {DEFAULT_PATH})",
    )
    common.add_argument(
        "--log-format",
        choices=["json", "console"],
        default=argparse.SUPPRESS,
        help="default: console on a terminal, json otherwise",
    )
    common.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=argparse.SUPPRESS,
        help="default: info",
    )
    return common


def main(argv: Sequence[str] | None = None) -> NoReturn:
    sys.exit(run(argv))


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.REDACTOR.update([os.environ.get("CRADLE_API_KEY", "")])
    logs.configure(getattr(args, "log_format", None), getattr(args, "log_level", "info"))
    command = COMMANDS[args.command].run
    try:
        return command(args)
    except ConfigError as exc:
        for problem in exc.problems:
            _error(f"{exc.path}: {problem}")
        return EXIT_CONFIG
    except Interrupted:
        return EXIT_OK
    except FatalError as exc:
        log.debug("command.failed", traceback=traceback.format_exc())
        _error(str(exc))
        return exc.exit_code
    except Exception as exc:  # a bug: one line for the operator, the traceback in the log
        log.error("command.crashed", traceback=traceback.format_exc())
        _error(f"internal error: {type(exc).__name__}: {exc}")
        return EXIT_RUNTIME


def _error(message: str) -> None:
    print(f"{PROG}: {logs.REDACTOR.scrub(message)}", file=sys.stderr)
