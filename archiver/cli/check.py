"""`check`: proves, before the first pass, that the config loads, the API takes the credentials,
the bucket takes writes and is locked as the config says, and the signing key is usable. It
stops at the first part that fails, naming it, so an operator fixes one thing at a time."""

from __future__ import annotations

import argparse

from archiver.cli.process import load
from archiver.config import Config, readable_secret
from archiver.errors import EXIT_OK, ConfigError, SinkUnavailable


def cmd_check(args: argparse.Namespace) -> int:
    from archiver.cradle import CradleClient
    from archiver.retention import judge_bucket
    from archiver.sink import S3Sink

    config = load(args)
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
