"""The command line: parses arguments, calls the work, prints, and exits. The only module that
prints to the user or exits; everything it calls returns values or raises grouped errors."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import structlog

from archiver import logs
from archiver.config import (
    DEFAULT_PATH,
    Config,
    S3Config,
    load_config,
    parse_config,
    readable_secret,
)
from archiver.errors import (
    EXIT_CONFIG,
    EXIT_DEAD_LETTERS,
    EXIT_OK,
    EXIT_RUNTIME,
    ConfigError,
    FatalError,
    Interrupted,
    SinkUnavailable,
    UsageError,
)
from archiver.holds import HoldRule, Selector, period_rule, to_change
from archiver.models import parse_time, utc_now
from archiver.retention import Period, parse_period

if TYPE_CHECKING:  # for annotations only: each command imports what it runs when it runs
    from archiver.extend import Extension
    from archiver.models import RecordingRow
    from archiver.retention import Lock
    from archiver.trail import TrailStore

log = structlog.get_logger("archiver.cli")
PROG = "cradle-archiver"


def _time_arg(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 UTC time ({exc})") from exc


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[common], description="Archive Cradle call recordings to S3."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments) in _COMMAND_ARGUMENTS.items():
        add_arguments(commands.add_parser(name, parents=[common], help=help_text))
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


def _run_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--once", action="store_true", help="one pass, then exit (cron, CronJobs, scripts)"
    )


def _backfill_arguments(backfill: argparse.ArgumentParser) -> None:
    backfill.add_argument("--from", dest="since", type=_time_arg, required=True, metavar="T")
    backfill.add_argument(
        "--until", type=_time_arg, default=None, metavar="T", help="default: the horizon"
    )


def _status_arguments(status: argparse.ArgumentParser) -> None:
    status.add_argument("--json", action="store_true", help="one JSON object")


def _verify_arguments(verify: argparse.ArgumentParser) -> None:
    verify.add_argument("--from", dest="since", type=_time_arg, default=None, metavar="T")
    verify.add_argument("--until", type=_time_arg, default=None, metavar="T")


def _day_arg(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day (YYYY-MM-DD)") from exc


def _percent_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage in (0, 100]")
    return value


def _audit_arguments(audit: argparse.ArgumentParser) -> None:
    audit.add_argument("--from", dest="since", type=_day_arg, default=None, metavar="DAY")
    audit.add_argument("--until", type=_day_arg, default=None, metavar="DAY")
    audit.add_argument(
        "--read-data",
        nargs="?",
        const=100.0,
        default=0.0,
        type=_percent_arg,
        metavar="PERCENT",
        help="download and hash every body, or a seeded random PERCENT of them",
    )
    audit.add_argument(
        "--seed", type=int, default=None, help="the --read-data draw (reproduce one)"
    )
    audit.add_argument("--public-key", default=None, metavar="F", help="Ed25519 key (PEM)")
    audit.add_argument("--report", default=None, metavar="F.html|F.json")
    audit.add_argument("--bucket", default=None, help="audit this bucket; no config is read")
    audit.add_argument("--prefix", default=None)
    audit.add_argument("--endpoint-url", default=None, metavar="URL")
    audit.add_argument("--region", default=None)


def _retry_arguments(retry: argparse.ArgumentParser) -> None:
    retry.add_argument("--all", action="store_true", help="every dead-lettered recording")
    retry.add_argument("ids", nargs="*", metavar="ID")


def _reconcile_arguments(reconcile: argparse.ArgumentParser) -> None:
    reconcile.add_argument("--from", dest="since", type=_time_arg, required=True, metavar="T")
    reconcile.add_argument("--until", type=_time_arg, required=True, metavar="T")
    reconcile.add_argument("--json", action="store_true", help="one JSON object")


def _retention_arguments(retention: argparse.ArgumentParser) -> None:
    actions = retention.add_subparsers(dest="retention_action", required=True, metavar="ACTION")
    extend = actions.add_parser(
        "extend", help="move the Object Lock of archived recordings on (never back)"
    )
    target = extend.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--period", type=_period_arg, metavar="P", help='each call plus P ("7y", "2555d")'
    )
    target.add_argument(
        "--until-date", type=_time_arg, metavar="T", help="one date for every recording"
    )
    extend.add_argument("--from", dest="since", type=_time_arg, default=None, metavar="T")
    extend.add_argument("--until", type=_time_arg, default=None, metavar="T")
    extend.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")


def _hold_arguments(hold: argparse.ArgumentParser) -> None:
    actions = hold.add_subparsers(dest="hold_action", required=True, metavar="ACTION")
    for name, help_text in (
        ("add", "put matching recordings on legal hold, now and as they are archived"),
        ("remove", "lift a hold (recordings another hold still matches stay held)"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("ids", nargs="*", metavar="ID", help="recording ids")
        action.add_argument("--number", help="the Cradle number or the third party's")
        action.add_argument("--agent", metavar="EMAIL", help="agent1 or agent2")
        action.add_argument("--from", dest="since", type=_time_arg, metavar="T")
        action.add_argument("--until", type=_time_arg, metavar="T")
        action.add_argument("--reason", required=True, metavar="TEXT", help="why (audit trail)")
    actions.add_parser("list", help="the holds in force")


def _period_arg(text: str) -> Period:
    try:
        return parse_period(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _rebuild_arguments(rebuild: argparse.ArgumentParser) -> None:
    rebuild.add_argument(
        "--force", action="store_true", help="move an existing checkpoint aside first"
    )


def _simulate_arguments(simulate: argparse.ArgumentParser) -> None:
    from archiver.simulator import add_arguments  # only `simulate` pays for the import

    add_arguments(simulate)


# Each command: its help line and what adds its own arguments, in the order `--help` lists them.
_COMMAND_ARGUMENTS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "run": ("the daemon: an archive pass every schedule.interval", _run_arguments),
    "backfill": ("archive a past period once", _backfill_arguments),
    "status": ("watermark, lag, counts, last pass, failures", _status_arguments),
    "verify": ("check archived recordings exist in S3", _verify_arguments),
    "retry": ("put dead-lettered recordings back to pending", _retry_arguments),
    "reconcile": (
        "list a period again; compare the API, the checkpoint and S3",
        _reconcile_arguments,
    ),
    "check": ("validate the config, the API credentials and S3 write access", lambda p: None),
    "audit": ("verify the manifest chain and every sealed recording (read-only)", _audit_arguments),
    "simulate": ("serve a local Cradle API simulator", _simulate_arguments),
    "rebuild-state": ("rebuild a lost checkpoint from the bucket", _rebuild_arguments),
    "hold": ("hold add|remove|list: legal holds on recordings", _hold_arguments),
    "retention": (
        "retention extend: lengthen the Object Lock of archived recordings",
        _retention_arguments,
    ),
}


def main(argv: Sequence[str] | None = None) -> NoReturn:
    sys.exit(run(argv))


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.REDACTOR.update([os.environ.get("CRADLE_API_KEY", "")])
    logs.configure(getattr(args, "log_format", None), getattr(args, "log_level", "info"))
    command: Callable[[argparse.Namespace], int] = COMMANDS[args.command]
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


def _config(args: argparse.Namespace, require_credentials: bool = True) -> Config:
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


def cmd_run(args: argparse.Namespace) -> int:
    from archiver.app import Archiver

    config = _config(args)
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

    config = _config(args)
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


def cmd_status(args: argparse.Namespace) -> int:
    from archiver.checkpoint import Checkpoint
    from archiver.status import build_report, render_text

    config = _config(args, require_credentials=False)
    with Checkpoint.open(config.state.path, writer=False, create=False) as checkpoint:
        report = build_report(checkpoint, utc_now())
    print(json.dumps(report, sort_keys=True) if args.json else render_text(report))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from archiver.app import verify
    from archiver.checkpoint import Checkpoint
    from archiver.sink import S3Sink

    config = _config(args, require_credentials=False)
    with Checkpoint.open(config.state.path, writer=False, create=False) as checkpoint:
        report = verify(checkpoint, S3Sink(config.s3), args.since, args.until)
    print(
        f"checked {report.checked}: {len(report.missing)} missing, "
        f"{len(report.wrong_size)} wrong size, {len(report.wrong_sha256)} wrong sha256, "
        f"{len(report.wrong_lock)} locked short"
    )
    for label, keys in (
        ("missing", report.missing),
        ("wrong size", report.wrong_size),
        ("wrong sha256", report.wrong_sha256),
        ("locked short", report.wrong_lock),
    ):
        for key in keys:
            print(f"  {label}: {key}")
    return EXIT_DEAD_LETTERS if report.problems else EXIT_OK


def cmd_reconcile(args: argparse.Namespace) -> int:
    from archiver.app import Archiver
    from archiver.reconcile import render_text

    if args.until <= args.since:
        raise UsageError("reconcile: --until must be later than --from")
    config = _config(args)
    shutdown = Shutdown(config.schedule.shutdown_timeout.total_seconds())
    with Archiver(config, stop=shutdown.stop) as archiver:
        result = archiver.reconcile(args.since, args.until)
    print(json.dumps(result.to_dict(), sort_keys=True) if args.json else render_text(result))
    return EXIT_DEAD_LETTERS if result.unexplained else EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    from archiver.checkpoint import Checkpoint
    from archiver.sink import S3Sink
    from archiver.trail import Action, record

    if args.all == bool(args.ids):
        raise UsageError("retry: give either --all or one or more recording ids")
    config = _config(args, require_credentials=False)
    started = utc_now()
    with Checkpoint.open(config.state.path, writer=False, create=False) as checkpoint:
        changed = checkpoint.retry(None if args.all else [i.lower() for i in args.ids])
    action = Action(
        action="retry",
        arguments=sys.argv[1:],
        started_at=started,
        finished_at=utc_now(),
        counts={"retried": len(changed)},
        recordings=changed,
    )
    key = record(S3Sink(config.s3), config.s3.prefix, action, config.retention, utc_now())
    print(f"{len(changed)} recordings put back to pending; the next pass retries them")
    print(f"audit record {key}")
    unknown = sorted({i.lower() for i in args.ids} - set(changed))
    for recording_id in unknown:
        print(f"  not dead-lettered (unknown, pending or archived): {recording_id}")
    return EXIT_OK


def cmd_retention(args: argparse.Namespace) -> int:
    from archiver.checkpoint import Checkpoint
    from archiver.extend import Target, extend
    from archiver.sink import S3Sink

    config = _config(args, require_credentials=False)
    mode = config.retention.mode
    if mode is None:
        raise UsageError(
            "retention extend: retention.mode is not set in the config; set it to the mode the"
            ' bucket\'s objects are locked with ("governance" or "compliance")'
        )
    target = Target(period=args.period, until_date=args.until_date)
    shutdown = Shutdown(config.schedule.shutdown_timeout.total_seconds())
    started = utc_now()
    with Checkpoint.open(config.state.path, writer=False, create=False) as checkpoint:
        rows = checkpoint.archived(since=args.since, until=args.until)
        if args.dry_run:
            _print_extension_plan(extend(rows, target, mode, None, shutdown.stop))
            return EXIT_OK
        sink = S3Sink(config.s3)

        def apply(row: RecordingRow, lock: Lock) -> None:
            sink.extend_retention(row.key or sink.key_for(row.recording), lock)
            checkpoint.set_lock(row.recording.recording_id, lock)

        done = extend(rows, target, mode, apply, shutdown.stop)
        key = _record_extension(config, sink, done, started)
    print(
        f"{done.extended} extended, {done.already_later} already locked as long or longer,"
        f" {done.checked} checked; audit record {key}"
    )
    return EXIT_OK


def _print_extension_plan(plan: Extension) -> None:
    print(
        f"dry run: {plan.extended} of {plan.checked} archived recordings would be locked"
        f" longer ({plan.already_later} already locked as long or longer)"
    )
    if plan.earliest and plan.latest:
        print(f"new retain-until dates from {plan.earliest:%Y-%m-%d} to {plan.latest:%Y-%m-%d}")


def _record_extension(config: Config, sink: TrailStore, done: Extension, started: datetime) -> str:
    from archiver.trail import Action, record

    action = Action(
        action="retention-extend",
        arguments=sys.argv[1:],
        started_at=started,
        finished_at=utc_now(),
        counts=done.counts(),
        recordings=done.recordings,
        latest_date=done.latest,
    )
    return record(sink, config.s3.prefix, action, config.retention, utc_now())


def hold_rule(args: argparse.Namespace) -> HoldRule:
    """The one selector the arguments give, or a usage error naming what is wrong."""
    given = [
        name
        for name, value in (
            ("ID", args.ids),
            ("--number", args.number),
            ("--agent", args.agent),
            ("--from/--until", args.since or args.until),
        )
        if value
    ]
    if len(given) != 1:
        raise UsageError(
            f"hold {args.hold_action}: select recordings one way: ID ..., --number, --agent,"
            f" or --from T --until T (got {', '.join(given) or 'none'})"
        )
    if args.ids:
        return HoldRule(Selector.IDS, tuple(sorted({i.lower() for i in args.ids})), args.reason)
    if args.number:
        return HoldRule(Selector.NUMBER, (args.number,), args.reason)
    if args.agent:
        return HoldRule(Selector.AGENT, (args.agent.lower(),), args.reason)
    if not (args.since and args.until and args.since < args.until):
        raise UsageError(f"hold {args.hold_action}: give both --from and --until, --from first")
    return period_rule(args.since, args.until, args.reason)


def cmd_hold(args: argparse.Namespace) -> int:
    from archiver.checkpoint import Checkpoint
    from archiver.sink import S3Sink
    from archiver.trail import Action, record

    config = _config(args, require_credentials=False)
    with Checkpoint.open(config.state.path, writer=False, create=False) as checkpoint:
        if args.hold_action == "list":
            return _print_holds(checkpoint.holds())
        rule = hold_rule(args)
        started = utc_now()
        adding = args.hold_action == "add"
        changed_rules = checkpoint.add_hold(rule) if adding else checkpoint.remove_hold(rule)
        if not adding and not changed_rules:
            raise UsageError(f"hold remove: no hold on {rule.describe()} (see `hold list`)")
        others = checkpoint.holds()
        sink = S3Sink(config.s3)
        since, until = rule.bounds()
        archived = checkpoint.archived(since=since, until=until)
        touched = []
        for row in to_change(rule, archived, others, adding=adding):
            sink.set_legal_hold(row.key or sink.key_for(row.recording), adding)
            touched.append(row.recording.recording_id)
        action = Action(
            action=f"hold-{args.hold_action}",
            arguments=sys.argv[1:],
            started_at=started,
            finished_at=utc_now(),
            counts={"recordings": len(touched)},
            recordings=touched,
            rule=rule.to_record(),
        )
        key = record(sink, config.s3.prefix, action, config.retention, utc_now())
    state = "on" if adding else "off"
    print(f"legal hold {state} for {len(touched)} archived recordings ({rule.describe()})")
    if adding:
        print("recordings it matches that are archived later are held as they are uploaded")
    print(f"audit record {key}")
    return EXIT_OK


def _print_holds(rules: Sequence[HoldRule]) -> int:
    for rule in rules:
        print(f"{rule.describe()}  (reason: {rule.reason})")
    print(f"{len(rules)} holds in force")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from archiver.cradle import CradleClient
    from archiver.retention import judge_bucket
    from archiver.sink import S3Sink

    config = _config(args)
    print(f"config      ok ({config.source})")
    exposed = readable_secret(config)
    if exposed is not None:  # a warning, not a failure: the archiver works, the key is exposed
        print(f"warning     {exposed}")
    client = CradleClient(config.cradle)
    try:
        listed = client.probe()
    finally:
        client.close()
    print(
        f"cradle api  ok ({config.cradle.base_url}, credentials accepted, "
        f"{listed} recordings in the last minute)"
    )
    sink = S3Sink(config.s3)
    sink.check_write()
    print(f"s3          ok (bucket {config.s3.bucket} exists and accepts writes)")
    problems, warnings = judge_bucket(config.retention, sink.lock_configuration())
    for warning in warnings:
        print(f"warning     {warning}")
    if problems:
        raise SinkUnavailable(f"bucket {config.s3.bucket}: " + "; ".join(problems))
    if config.retention.mode is not None:
        print(
            f"retention   ok (versioning and Object Lock on; {config.retention.mode.value} locks"
            f" until each call's start + {config.retention.period})"
        )
    _check_signing_key(config)
    return EXIT_OK


def _check_signing_key(config: Config) -> None:
    from archiver.errors import Problem
    from archiver.signing import KeyFileError, Signer

    path = config.manifest.sign_key_file
    if not config.manifest.enabled or path is None:
        return
    try:
        Signer.from_file(path)
    except KeyFileError as exc:
        raise ConfigError(config.source, [Problem("manifest.sign_key_file", str(exc))]) from None
    print(f"manifests   ok (each signed with the Ed25519 key in {path})")


def _audit_s3(args: argparse.Namespace) -> S3Config:
    """`--bucket` and friends alone (no config read), else the config's [s3] with any of them
    overriding; only [s3] is needed: an auditor has no Cradle credentials or checkpoint."""
    flags = {
        "bucket": args.bucket,
        "prefix": args.prefix,
        "endpoint_url": args.endpoint_url,
        "region": args.region,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    if args.bucket is not None and getattr(args, "config", None) is None:
        return parse_config({"s3": given}, "command line", {}, require_credentials=False).s3
    return dataclasses.replace(_config(args, require_credentials=False).s3, **given)


def cmd_audit(args: argparse.Namespace) -> int:
    import random

    from archiver import audit_report
    from archiver.audit import WORKERS, Options, audit
    from archiver.signing import KeyFileError, Verifier
    from archiver.sink import BucketReader

    if args.since and args.until and args.since > args.until:
        raise UsageError("audit: --from must not be later than --until")
    report = Path(args.report) if args.report else None
    if report is not None and audit_report.report_kind(report) is None:
        raise UsageError(f"audit: --report {report}: name a .html or a .json file")
    try:
        verifier = Verifier.from_file(Path(args.public_key)) if args.public_key else None
    except KeyFileError as exc:
        raise UsageError(f"audit: --public-key: {exc}") from exc
    s3 = _audit_s3(args)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    options = Options(args.since, args.until, args.read_data, seed, verifier)
    reader = BucketReader(s3, connections=WORKERS)
    result = audit(reader, options, utc_now, endpoint=s3.endpoint_url)
    for line in audit_report.text_lines(result):
        print(line)
    if options.read_percent:
        print(f"--read-data {options.read_percent:g}: seed {seed} (--seed {seed} draws the same)")
    if report is not None:
        audit_report.write(result, report)
        print(f"report written to {report}")
    return EXIT_DEAD_LETTERS if result.problems else EXIT_OK


def cmd_rebuild_state(args: argparse.Namespace) -> int:
    from archiver.rebuild import rebuild

    config = _config(args, require_credentials=False)
    report = rebuild(config, force=args.force, arguments=sys.argv[1:])
    if report.moved_aside is not None:
        print(f"moved the old checkpoint aside to {report.moved_aside}")
    print(
        f"restored {report.recordings} archived recordings ({report.from_manifests} from"
        f" manifests, {report.from_objects} from their objects), {report.manifests} manifests"
        f" (last sealed day {report.last_sealed_day or 'none'}), {len(report.holds)} holds,"
        f" {report.conversations} conversations of the call history ({report.parts} parts)"
    )
    print(f"watermark {report.watermark}; audit record {report.audit_key}")
    for label, keys in (
        ("skipped, not a recording of ours", report.skipped),
        ("listed by a manifest, missing from the bucket", report.missing),
        ("unreadable", report.unreadable),
    ):
        for key in keys:
            print(f"  {label}: {key}")
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from archiver.simulator import OptionError, Simulator, options_from_args

    try:
        options = options_from_args(args)
    except (argparse.ArgumentTypeError, OptionError) as exc:
        raise UsageError(f"simulate {exc}") from exc
    simulator = Simulator(options).start()
    print(
        f"simulator serving {simulator.base_url} (canary {simulator.canary_url}); Ctrl-C stops it",
        flush=True,
    )
    simulator.serve_forever()
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "backfill": cmd_backfill,
    "status": cmd_status,
    "verify": cmd_verify,
    "retry": cmd_retry,
    "reconcile": cmd_reconcile,
    "check": cmd_check,
    "retention": cmd_retention,
    "hold": cmd_hold,
    "simulate": cmd_simulate,
    "rebuild-state": cmd_rebuild_state,
    "audit": cmd_audit,
}
