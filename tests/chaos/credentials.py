"""Scenario 4, credentials: they go to the API host only, and the key is never shown.

Recordings listed with an off-host url and ones that redirect off-host must be dead-lettered as
`off_host_url` without a single request reaching the canary (which counts any that carry
CRADLE_ID or CRADLE_API_KEY). With the key read from `api_key_file` and debug logging, the key
must not appear in any log line, error message, `status` output or byte of the SQLite files,
and neither must a wrong key given in the environment.
"""

from __future__ import annotations

import os

from tests.chaos.audit import audit, valid_recordings
from tests.chaos.lab import Lab
from tests.chaos.report import Report
from tests.e2e.harness import API_KEY

WRONG_KEY = "wrong-key-0d9e4b71"


def credentials(lab: Lab, hours: float = 2, per_hour: float = 8) -> Report:
    report = Report("credentials")
    sim = lab.simulator(
        hours=hours, per_hour=per_hour, seed=17, poison_offhost=2, poison_redirect=2
    )
    bucket = lab.bucket()
    key_file = lab.root / "cradle-api-key"
    key_file.write_text(API_KEY + "\n")
    os.chmod(key_file, 0o600)
    config = lab.config("credentials", sim, bucket)
    text = config.read_text().replace(f'api_key = "{API_KEY}"', f'api_key_file = "{key_file}"')
    config.write_text(text)

    debug = ("--log-level", "debug")
    run = lab.cli("run", "--once", *debug, config=config)
    report.clean_exit(run, (3,), "run --once with off-host poison")
    with lab.checkpoint(config) as checkpoint:
        reasons = {
            rec.recording_id: (checkpoint.get(rec.recording_id) or None)
            for rec in sim.recordings()
            if rec.poison
        }
    for recording_id, row in reasons.items():
        report.check(
            row is not None and row.state == "failed" and row.reason == "off_host_url",
            f"{recording_id}: {row and (row.state, row.reason)}, expected failed off_host_url",
        )
    stats = sim.stats()
    report.check(
        stats["canary_requests"] == 0,
        f"{stats['canary_requests']} requests reached the canary (another host)",
    )
    report.add_audit(audit(bucket, sim, valid_recordings(sim)))

    for args in (("status", "--json"), ("check", *debug)):
        lab.cli(*args, config=config)
    for command in (("run", "--once", *debug), ("check", *debug)):
        refused = lab.cli(*command, config=config, CRADLE_API_KEY=WRONG_KEY)
        report.clean_exit(refused, (1,), f"`{' '.join(command)}` with a wrong key")
    wrong = lab.secret_sightings(WRONG_KEY)
    report.check(not wrong, f"the wrong key appears in: {wrong}")
    report.figures["leaks"] += len(wrong)
    report.close(lab)
    return report


AWS_SECRET = "aws-secret-key-6c2e90d4"
AWS_TOKEN = "aws-session-token-8b1f37a5"


def aws_secrets(lab: Lab) -> Report:
    """The AWS credentials (boto3's chain: here the environment) never reach a log line, even
    at `--log-level debug`, where libraries such as botocore log whole signed requests."""
    report = Report("AWS credentials in debug logs")
    sim = lab.simulator(hours=1, per_hour=4, seed=19)
    bucket = lab.bucket()
    config = lab.config("aws-secrets", sim, bucket)
    # `check` makes every kind of S3 request the archiver makes: HEAD, a conditional PUT, DELETE.
    run = lab.cli(
        "check",
        "--log-level",
        "debug",
        config=config,
        AWS_SECRET_ACCESS_KEY=AWS_SECRET,
        AWS_SESSION_TOKEN=AWS_TOKEN,
    )
    report.clean_exit(
        run, (0,), "`check --log-level debug` with AWS credentials in the environment"
    )
    for secret in (AWS_SECRET, AWS_TOKEN):
        seen = lab.secret_sightings(secret)
        report.figures["leaks"] += len(seen)
        report.check(not seen, f"an AWS credential ({secret[:14]}...) appears in: {seen}")
    report.close(lab)
    return report
