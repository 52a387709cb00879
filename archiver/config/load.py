"""Reading a TOML file into a `Config`: one reader per section, every problem collected, and a
ConfigError raised once, listing them all.

Unknown sections and unknown keys are problems too: a misspelt key silently left at its default
is a config that does something other than what its author wrote.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from archiver.config.credentials import _read_cradle, _read_webhook
from archiver.config.sections import (
    ArchiveConfig,
    AudioCheck,
    AudioConfig,
    Config,
    ConversationsConfig,
    ManifestConfig,
    Rebuild,
    ReconcileConfig,
    ReconcileSchedule,
    S3Config,
    ScheduleConfig,
    ServerConfig,
    StateConfig,
)
from archiver.config.values import (
    _boolean,
    _choice,
    _endpoint_url,
    _listen,
    _one_of,
    _part_threshold,
    _positive_duration,
    _positive_int,
    _Reader,
    _string,
    _time,
    parse_duration,
)
from archiver.errors import ConfigError, Problem
from archiver.retention import Expired, LockMode, RetentionPolicy, parse_period

DEFAULT_PATH = "/etc/cradle-archiver/config.toml"
MAX_REQUESTS_PER_SECOND = 10.0
STORAGE_CLASSES = frozenset(
    {
        "STANDARD",
        "REDUCED_REDUNDANCY",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "GLACIER",
        "DEEP_ARCHIVE",
        "GLACIER_IR",
        "EXPRESS_ONEZONE",
    }
)


def load_config(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    require_credentials: bool = True,
) -> Config:
    """Load and check the config at `path`; raise ConfigError listing every problem."""
    env = os.environ if env is None else env
    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(source, [Problem("", "file not found")]) from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(source, [Problem("", f"cannot be read: {exc}")]) from exc
    return parse_config(data, source, env, require_credentials)


def parse_config(
    data: Mapping[str, Any],
    source: str,
    env: Mapping[str, str],
    require_credentials: bool = True,
) -> Config:
    problems: list[Problem] = []
    # One reader per section, named as Config's fields are; each reports every problem it sees.
    readers: dict[str, Callable[[_Reader], Any]] = {
        "cradle": lambda read: _read_cradle(read, env, require_credentials),
        "s3": _read_s3,
        "archive": _read_archive,
        "schedule": _read_schedule,
        "state": _read_state,
        "server": _read_server,
        "retention": _read_retention,
        "audio": _read_audio,
        "manifest": _read_manifest,
        "reconcile": _read_reconcile,
        "webhook": lambda read: _read_webhook(read, env),
        "conversations": _read_conversations,
    }
    for name in sorted(set(data) - set(readers)):
        problems.append(Problem(name, "unknown section"))
    values = {}
    for name, reader in readers.items():
        table = data.get(name, {})
        if not isinstance(table, Mapping):
            problems.append(Problem(name, f"must be a table ([{name}])"))
            table = {}
        values[name] = reader(_Reader(table, name, problems))
    if problems:
        raise ConfigError(source, problems)
    return Config(source, **values)


def _read_server(read: _Reader) -> ServerConfig:
    server = ServerConfig(listen=read.get("listen", ServerConfig.listen, _listen))
    read.unknown()
    return server


def _read_audio(read: _Reader) -> AudioConfig:
    audio = AudioConfig(check=read.get("check", AudioConfig.check, _choice(AudioCheck)))
    read.unknown()
    return audio


def _read_reconcile(read: _Reader) -> ReconcileConfig:
    schedule = read.get("schedule", ReconcileConfig.schedule, _choice(ReconcileSchedule))
    read.unknown()
    return ReconcileConfig(schedule=schedule)


def _read_conversations(read: _Reader) -> ConversationsConfig:
    enabled = read.get("enabled", ConversationsConfig.enabled, _boolean)
    read.unknown()
    return ConversationsConfig(enabled=enabled)


def _read_s3(read: _Reader) -> S3Config:
    d = S3Config()
    bucket = read.get("bucket", "", _string)
    if not bucket:
        read.problem("bucket", "is required")
    elif not re.match(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$", bucket):
        read.problem("bucket", f"{bucket!r} is not a valid bucket name")
    prefix = read.get("prefix", d.prefix, _string)
    if prefix.startswith("/"):
        read.problem("prefix", f"{prefix!r} must not start with '/'")
    config = S3Config(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=read.get("endpoint_url", d.endpoint_url, _endpoint_url),
        region=read.get("region", d.region, _string),
        storage_class=read.get("storage_class", d.storage_class, _one_of(*sorted(STORAGE_CLASSES))),
        sse=read.get("sse", d.sse, _one_of("", "AES256", "aws:kms")),
        kms_key_id=read.get("kms_key_id", d.kms_key_id, _string),
        tags=read.get("tags", d.tags, _boolean),
        multipart_threshold=read.get("multipart_threshold", d.multipart_threshold, _part_threshold),
    )
    if config.kms_key_id and config.sse != "aws:kms":
        read.problem("kms_key_id", 'is set but s3.sse is not "aws:kms"')
    read.unknown()
    return config


def _read_archive(read: _Reader) -> ArchiveConfig:
    d = ArchiveConfig()
    config = ArchiveConfig(
        start=read.get("start", d.start, _time),
        window=read.get("window", d.window, _positive_duration),
        settle_delay=read.get("settle_delay", d.settle_delay, parse_duration),
        lookback=read.get("lookback", d.lookback, parse_duration),
        split_threshold=read.get("split_threshold", d.split_threshold, _positive_int),
        max_attempts=read.get("max_attempts", d.max_attempts, _positive_int),
    )
    if config.split_threshold < 2:
        read.problem("split_threshold", "must be at least 2")
    read.unknown()
    return config


def _read_schedule(read: _Reader) -> ScheduleConfig:
    d = ScheduleConfig()
    config = ScheduleConfig(
        interval=read.get("interval", d.interval, _positive_duration),
        shutdown_timeout=read.get("shutdown_timeout", d.shutdown_timeout, _positive_duration),
    )
    read.unknown()
    return config


def _read_retention(read: _Reader) -> RetentionPolicy:
    d = RetentionPolicy()
    mode = read.get("mode", "", _one_of("", *(m.value for m in LockMode)))
    policy = RetentionPolicy(
        mode=LockMode(mode) if mode else None,
        period=read.get("period", d.period, parse_period),
        expired=read.get("expired", d.expired, _choice(Expired)),
    )
    read.unknown()
    return policy


def _read_state(read: _Reader) -> StateConfig:
    path = Path(read.get("path", str(StateConfig.path), _string) or str(StateConfig.path))
    spool = read.get("spool_dir", "", _string)
    rebuild = read.get("rebuild", StateConfig.rebuild, _choice(Rebuild))
    read.unknown()
    # Beside the state file by default, so one volume holds everything the daemon writes.
    spool_dir = Path(spool) if spool else path.parent / "spool"
    return StateConfig(path=path, spool_dir=spool_dir, rebuild=rebuild)


def _read_manifest(read: _Reader) -> ManifestConfig:
    enabled = read.get("enabled", ManifestConfig.enabled, _boolean)
    key_file = read.get("sign_key_file", "", _string)
    if key_file and not os.access(key_file, os.R_OK):
        read.problem("sign_key_file", f"{key_file} cannot be read")
    read.unknown()
    return ManifestConfig(enabled=enabled, sign_key_file=Path(key_file) if key_file else None)
