"""`audit` and `reconcile`: the commands that prove the archive complete. `audit` reads only the
bucket (an auditor needs no Cradle credentials and no checkpoint); `reconcile` lists a period
again and compares the API, the checkpoint and S3. Both answer 3 when something is unexplained."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from archiver.cli.arguments import day_arg, percent_arg, time_arg
from archiver.cli.process import Shutdown, load
from archiver.config import S3Config, parse_config
from archiver.errors import EXIT_DEAD_LETTERS, EXIT_OK, UsageError
from archiver.models import utc_now


def audit_arguments(audit: argparse.ArgumentParser) -> None:
    audit.add_argument("--from", dest="since", type=day_arg, default=None, metavar="DAY")
    audit.add_argument("--until", type=day_arg, default=None, metavar="DAY")
    audit.add_argument(
        "--read-data",
        nargs="?",
        const=100.0,
        default=0.0,
        type=percent_arg,
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


def reconcile_arguments(reconcile: argparse.ArgumentParser) -> None:
    reconcile.add_argument("--from", dest="since", type=time_arg, required=True, metavar="T")
    reconcile.add_argument("--until", type=time_arg, required=True, metavar="T")
    reconcile.add_argument("--json", action="store_true", help="one JSON object")


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
    return dataclasses.replace(load(args, require_credentials=False).s3, **given)


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


def cmd_reconcile(args: argparse.Namespace) -> int:
    from archiver.app import Archiver
    from archiver.reconcile import render_text

    if args.until <= args.since:
        raise UsageError("reconcile: --until must be later than --from")
    config = load(args)
    shutdown = Shutdown(config.schedule.shutdown_timeout.total_seconds())
    with Archiver(config, stop=shutdown.stop) as archiver:
        result = archiver.reconcile(args.since, args.until)
    print(json.dumps(result.to_dict(), sort_keys=True) if args.json else render_text(result))
    return EXIT_DEAD_LETTERS if result.unexplained else EXIT_OK
