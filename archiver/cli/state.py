"""`status`, `verify`, `retry` and `rebuild-state`: the commands about the checkpoint, what it
says, whether the bucket agrees, putting dead letters back, and getting it back from the bucket.
`status` must start fast (monitoring runs it often), so each imports what it runs only when it
runs."""

from __future__ import annotations

import argparse
import json
import sys

from archiver.cli.arguments import time_arg
from archiver.cli.process import load
from archiver.errors import EXIT_DEAD_LETTERS, EXIT_OK, UsageError
from archiver.models import utc_now


def status_arguments(status: argparse.ArgumentParser) -> None:
    status.add_argument("--json", action="store_true", help="one JSON object")


def verify_arguments(verify: argparse.ArgumentParser) -> None:
    verify.add_argument("--from", dest="since", type=time_arg, default=None, metavar="T")
    verify.add_argument("--until", type=time_arg, default=None, metavar="T")


def retry_arguments(retry: argparse.ArgumentParser) -> None:
    retry.add_argument("--all", action="store_true", help="every dead-lettered recording")
    retry.add_argument("ids", nargs="*", metavar="ID")


def rebuild_arguments(rebuild: argparse.ArgumentParser) -> None:
    rebuild.add_argument(
        "--force", action="store_true", help="move an existing checkpoint aside first"
    )


def cmd_status(args: argparse.Namespace) -> int:
    from archiver.checkpoint import Checkpoint
    from archiver.status import build_report, render_text

    config = load(args, require_credentials=False)
    with Checkpoint.open(config.state.path, writer=False, create=False) as checkpoint:
        report = build_report(checkpoint, utc_now())
    print(json.dumps(report, sort_keys=True) if args.json else render_text(report))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from archiver.app import verify
    from archiver.checkpoint import Checkpoint
    from archiver.sink import S3Sink

    config = load(args, require_credentials=False)
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


def cmd_retry(args: argparse.Namespace) -> int:
    from archiver.checkpoint import Checkpoint
    from archiver.sink import S3Sink
    from archiver.trail import Action, record

    if args.all == bool(args.ids):
        raise UsageError("retry: give either --all or one or more recording ids")
    config = load(args, require_credentials=False)
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


def cmd_rebuild_state(args: argparse.Namespace) -> int:
    from archiver.rebuild import rebuild

    config = load(args, require_credentials=False)
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
