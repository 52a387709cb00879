"""`retention extend` and `hold`: the commands that change how long, and whether, the bucket
keeps archived recordings. Each change goes to S3 and the checkpoint recording by recording, and
ends in an audit-trail record, so what was changed, by whom and why is in the bucket itself."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from archiver.cli.arguments import period_arg, time_arg
from archiver.cli.process import Shutdown, load
from archiver.config import Config
from archiver.errors import EXIT_OK, UsageError
from archiver.holds import HoldRule, Selector, period_rule, to_change
from archiver.models import utc_now

if TYPE_CHECKING:  # for annotations only: each command imports what it runs when it runs
    from archiver.extend import Extension
    from archiver.models import RecordingRow
    from archiver.retention import Lock
    from archiver.trail import TrailStore


def retention_arguments(retention: argparse.ArgumentParser) -> None:
    actions = retention.add_subparsers(dest="retention_action", required=True, metavar="ACTION")
    extend = actions.add_parser(
        "extend", help="move the Object Lock of archived recordings on (never back)"
    )
    target = extend.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--period", type=period_arg, metavar="P", help='each call plus P ("7y", "2555d")'
    )
    target.add_argument(
        "--until-date", type=time_arg, metavar="T", help="one date for every recording"
    )
    extend.add_argument("--from", dest="since", type=time_arg, default=None, metavar="T")
    extend.add_argument("--until", type=time_arg, default=None, metavar="T")
    extend.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")


def hold_arguments(hold: argparse.ArgumentParser) -> None:
    actions = hold.add_subparsers(dest="hold_action", required=True, metavar="ACTION")
    for name, help_text in (
        ("add", "put matching recordings on legal hold, now and as they are archived"),
        ("remove", "lift a hold (recordings another hold still matches stay held)"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("ids", nargs="*", metavar="ID", help="recording ids")
        action.add_argument("--number", help="the Cradle number or the third party's")
        action.add_argument("--agent", metavar="EMAIL", help="agent1 or agent2")
        action.add_argument("--from", dest="since", type=time_arg, metavar="T")
        action.add_argument("--until", type=time_arg, metavar="T")
        action.add_argument("--reason", required=True, metavar="TEXT", help="why (audit trail)")
    actions.add_parser("list", help="the holds in force")


def cmd_retention(args: argparse.Namespace) -> int:
    from archiver.checkpoint import Checkpoint
    from archiver.extend import Target, extend
    from archiver.sink import S3Sink

    config = load(args, require_credentials=False)
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

    config = load(args, require_credentials=False)
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
