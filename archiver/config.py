"""The TOML config: parsed, checked all at once, and frozen.

Every problem names the file, the key and what is wrong, and all problems are reported together
(an operator fixing a config should not have to run the tool once per mistake).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from archiver.errors import ConfigError
from archiver.models import parse_time

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
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


@dataclass(frozen=True)
class CradleConfig:
    base_url: str = "https://api.cradle.io"
    id: str = ""
    api_key: str = field(default="", repr=False)
    api_key_file: str = ""
    requests_per_second: float = 10.0
    timeout: timedelta = timedelta(seconds=60)


@dataclass(frozen=True)
class S3Config:
    bucket: str = ""
    prefix: str = "cradle/"
    endpoint_url: str = ""
    region: str = ""
    storage_class: str = "STANDARD"
    sse: str = ""
    kms_key_id: str = ""
    tags: bool = True
    # One streamed PutObject (with the whole body's SHA-256) up to here, multipart above.
    # Recordings are at most 100 MB, so by default every one goes up in one request: our parts
    # would go up one at a time anyway, and assembling them makes the next download wait.
    multipart_threshold: int = 100 * 2**20


@dataclass(frozen=True)
class ArchiveConfig:
    start: datetime | None = None
    window: timedelta = timedelta(hours=1)
    settle_delay: timedelta = timedelta(minutes=10)
    lookback: timedelta = timedelta(hours=6)
    split_threshold: int = 500
    max_attempts: int = 5


@dataclass(frozen=True)
class ScheduleConfig:
    interval: timedelta = timedelta(minutes=5)
    shutdown_timeout: timedelta = timedelta(seconds=30)


@dataclass(frozen=True)
class StateConfig:
    path: Path = Path("/var/lib/cradle-archiver/state.db")
    spool_dir: Path = Path("/var/lib/cradle-archiver/spool")


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:9108"

    @property
    def address(self) -> tuple[str, int] | None:
        if not self.listen:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Config:
    source: str
    cradle: CradleConfig
    s3: S3Config
    archive: ArchiveConfig
    schedule: ScheduleConfig
    state: StateConfig
    server: ServerConfig

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never be logged or printed."""
        return tuple(s for s in (self.cradle.api_key,) if s)


def parse_duration(value: Any) -> timedelta:
    """`"30s"`, `"15m"`, `"1h"`, `"2d"`, combinations such as `"1h30m"`, or integer seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return timedelta(seconds=int(text))
        match = _DURATION.match(text)
        if match and text:
            days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
            return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    raise ValueError(f'{value!r} is not a duration (write e.g. "30s", "15m", "1h", "2d")')


class _Reader:
    """Reads one TOML table, collecting problems instead of stopping at the first."""

    def __init__(self, table: Mapping[str, Any], section: str, problems: list[str]) -> None:
        self.table = table
        self.section = section
        self.problems = problems
        self.seen: set[str] = set()

    def get(self, key: str, default: Any, convert: Callable[[Any], Any]) -> Any:
        self.seen.add(key)
        if key not in self.table:
            return default
        raw = self.table[key]
        try:
            return convert(raw)
        except (ValueError, TypeError) as exc:
            self.problems.append(f"{self.section}.{key}: {exc}")
            return default

    def unknown(self) -> None:
        for key in sorted(set(self.table) - self.seen):
            self.problems.append(f"{self.section}.{key}: unknown key")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    return value


def _secret(value: Any) -> str:
    if not isinstance(value, str):
        # Never echo the value: it is meant to be a secret.
        raise TypeError(f"must be a string, not a {type(value).__name__}")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{value!r} is not true or false")
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{value!r} is not a positive integer")
    return value


def _rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{value!r} is not a positive number")
    if value > MAX_REQUESTS_PER_SECOND:
        raise ValueError(f"{value} is above the API's limit of 10 requests a second")
    return float(value)


_SIZE = re.compile(r"^(\d+)\s*(B|KiB|MiB|GiB)?$")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
MIN_PART_SIZE = 5 * 2**20  # S3 refuses smaller multipart parts


def parse_size(value: Any) -> int:
    """Bytes, as an integer or a string such as `"16MiB"` or `"1GiB"`."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise ValueError(f'{value!r} is not a size (write e.g. "16MiB", "1GiB" or bytes)')
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def _part_threshold(value: Any) -> int:
    size = parse_size(value)
    if size < MIN_PART_SIZE:
        raise ValueError(f"{value!r} is below S3's smallest multipart part (5MiB)")
    return size


def _positive_duration(value: Any) -> timedelta:
    duration = parse_duration(value)
    if duration <= timedelta(0):
        raise ValueError(f"{value!r} must be longer than zero")
    return duration


def _time(value: Any) -> datetime | None:
    text = _string(value)
    return parse_time(text) if text else None


def _base_url(value: Any) -> str:
    url = _string(value).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return url


def _endpoint_url(value: Any) -> str:
    return _base_url(value) if _string(value) else ""


def _listen(value: Any) -> str:
    text = _string(value)
    if text:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r} is not HOST:PORT")
    return text


def _one_of(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = _string(value)
        if text not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(repr(c) for c in choices)}")
        return text

    return convert


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
        raise ConfigError(source, ["file not found"]) from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(source, [f"cannot be read: {exc}"]) from exc
    return parse_config(data, source, env, require_credentials)


def parse_config(
    data: Mapping[str, Any],
    source: str,
    env: Mapping[str, str],
    require_credentials: bool = True,
) -> Config:
    problems: list[str] = []
    sections = {"cradle", "s3", "archive", "schedule", "state", "server"}
    for name in sorted(set(data) - sections):
        problems.append(f"{name}: unknown section")
    tables: dict[str, Mapping[str, Any]] = {}
    for name in sections:
        table = data.get(name, {})
        if not isinstance(table, Mapping):
            problems.append(f"{name}: must be a table ([{name}])")
            table = {}
        tables[name] = table

    cradle = _read_cradle(_Reader(tables["cradle"], "cradle", problems), env, require_credentials)
    s3 = _read_s3(_Reader(tables["s3"], "s3", problems))
    archive = _read_archive(_Reader(tables["archive"], "archive", problems))
    schedule = _read_schedule(_Reader(tables["schedule"], "schedule", problems))
    state = _read_state(_Reader(tables["state"], "state", problems))
    read = _Reader(tables["server"], "server", problems)
    server = ServerConfig(listen=read.get("listen", ServerConfig.listen, _listen))
    read.unknown()
    if problems:
        raise ConfigError(source, problems)
    return Config(source, cradle, s3, archive, schedule, state, server)


def _read_cradle(read: _Reader, env: Mapping[str, str], require_credentials: bool) -> CradleConfig:
    d = CradleConfig()
    base_url = read.get("base_url", d.base_url, _base_url)
    cradle_id = env.get("CRADLE_ID") or read.get("id", "", _string)
    read.seen.add("id")
    api_key = env.get("CRADLE_API_KEY") or read.get("api_key", "", _secret)
    read.seen.add("api_key")
    api_key_file = read.get("api_key_file", "", _string)
    if not api_key and api_key_file:
        api_key = _read_key_file(read, api_key_file)
    credentials_dir = env.get("CREDENTIALS_DIRECTORY")
    if not api_key and not api_key_file and credentials_dir:
        # systemd's LoadCredential=cradle-api-key:... puts the key here for the unit only.
        candidate = Path(credentials_dir) / "cradle-api-key"
        if candidate.exists():
            api_key = _read_key_file(read, str(candidate))
    rate = read.get("requests_per_second", d.requests_per_second, _rate)
    timeout = read.get("timeout", d.timeout, _positive_duration)
    read.unknown()
    reported = {p.split(":", 1)[0] for p in read.problems}
    if require_credentials:
        if not cradle_id and "cradle.id" not in reported:
            read.problems.append(
                "cradle.id: is empty (set it, or the CRADLE_ID environment variable)"
            )
        if not api_key and not reported & {"cradle.api_key", "cradle.api_key_file"}:
            read.problems.append(
                "cradle.api_key: is empty (set api_key, api_key_file, "
                "or the CRADLE_API_KEY environment variable)"
            )
    return CradleConfig(base_url, cradle_id, api_key, api_key_file, rate, timeout)


def _read_key_file(read: _Reader, path: str) -> str:
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        read.problems.append(f"cradle.api_key_file: cannot read {path}: {reason}")
        return ""
    if not key:
        read.problems.append(f"cradle.api_key_file: {path} is empty")
    return key


def _read_s3(read: _Reader) -> S3Config:
    d = S3Config()
    bucket = read.get("bucket", "", _string)
    if not bucket:
        read.problems.append("s3.bucket: is required")
    elif not re.match(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$", bucket):
        read.problems.append(f"s3.bucket: {bucket!r} is not a valid bucket name")
    prefix = read.get("prefix", d.prefix, _string)
    if prefix.startswith("/"):
        read.problems.append(f"s3.prefix: {prefix!r} must not start with '/'")
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
        read.problems.append('s3.kms_key_id: is set but s3.sse is not "aws:kms"')
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
        read.problems.append("archive.split_threshold: must be at least 2")
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


def _read_state(read: _Reader) -> StateConfig:
    path = Path(read.get("path", str(StateConfig.path), _string) or str(StateConfig.path))
    spool = read.get("spool_dir", "", _string)
    read.unknown()
    # Beside the state file by default, so one volume holds everything the daemon writes.
    return StateConfig(path=path, spool_dir=Path(spool) if spool else path.parent / "spool")
