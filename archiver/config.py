"""The TOML config: parsed, checked all at once, and frozen.

Every problem names the file, the key and what is wrong, and all problems are reported together
(an operator fixing a config should not have to run the tool once per mistake).

The credentials are checked here, not at the first request: they travel as HTTP header values,
so one with a control character, a non-ASCII character or surrounding whitespace can never
authenticate, and finding that out at load time is an exit 2 with the key named instead of a
minute of retries on a request that cannot be sent. Messages about the API key never quote it.
"""

from __future__ import annotations

import grp
import os
import re
import stat
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from archiver.errors import ConfigError, Problem
from archiver.models import parse_time
from archiver.retention import Expired, LockMode, RetentionPolicy, parse_period
from archiver.urls import UrlRefused, origin_of

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
T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


class KeySource(StrEnum):
    """Where the API key was read from: tells `readable_secret` which file, if any, holds it."""

    NONE = ""
    CONFIG = "config"  # cradle.api_key, in the config file itself
    ENVIRONMENT = "environment"  # $CRADLE_API_KEY
    FILE = "api_key_file"  # cradle.api_key_file
    CREDENTIALS = "credentials"  # $CREDENTIALS_DIRECTORY/cradle-api-key (systemd)


@dataclass(frozen=True)
class CradleConfig:
    base_url: str = "https://api.cradle.io"
    id: str = ""
    api_key: str = field(default="", repr=False)
    api_key_file: str = ""
    requests_per_second: float = MAX_REQUESTS_PER_SECOND
    timeout: timedelta = timedelta(seconds=60)
    api_key_source: KeySource = KeySource.NONE
    # Bytes a second a response must average after `timeout` of grace: a trickle fails instead
    # of holding the pass (64 kbit/s audio is 8 KB a second of call; the API serves far faster).
    min_transfer_rate: float = 16 * 2**10


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


class Rebuild(StrEnum):
    """`state.rebuild`: what `run` and `backfill` do without a checkpoint when the bucket already
    holds this archive (starting again from a day ago would silently skip what lies between)."""

    REFUSE = "refuse"  # exit 2, naming `rebuild-state`
    AUTO = "auto"  # rebuild the checkpoint from the bucket, then run


@dataclass(frozen=True)
class StateConfig:
    path: Path = Path("/var/lib/cradle-archiver/state.db")
    spool_dir: Path = Path("/var/lib/cradle-archiver/spool")
    rebuild: Rebuild = Rebuild.REFUSE


@dataclass(frozen=True)
class ManifestConfig:
    enabled: bool = True
    sign_key_file: Path | None = None  # an Ed25519 private key (PEM): manifests are also signed


class ReconcileSchedule(StrEnum):
    OFF = "off"
    DAILY = "daily"  # the daemon reconciles yesterday (UTC) once a day, after sealing it


@dataclass(frozen=True)
class ReconcileConfig:
    schedule: ReconcileSchedule = ReconcileSchedule.DAILY


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:9108"

    @property
    def address(self) -> tuple[str, int] | None:
        if not self.listen:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


MIN_WEBHOOK_TOKEN_CHARS = 16
_URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]*$")  # RFC 3986 unreserved: the same in any URL


@dataclass(frozen=True)
class ConversationsConfig:
    enabled: bool = True  # also export the call history as JSON Lines (conversations.py)


@dataclass(frozen=True)
class WebhookConfig:
    """`[webhook]`: the listener for Cradle's end-of-call webhooks (hints, see hints.py)."""

    listen: str = ""  # "" turns it off
    token_file: str = ""
    token: str = field(default="", repr=False)  # the secret in the path: POST /webhook/<token>

    @property
    def address(self) -> tuple[str, int] | None:
        return ServerConfig(self.listen).address


class AudioCheck(StrEnum):
    """`audio.check`: what a walked length far from `durationSeconds` does."""

    OFF = "off"
    WARN = "warn"  # logged, counted, and marked `audio-mismatch: true` on the object
    FAIL = "fail"  # a failed attempt, reason `audio_mismatch`


@dataclass(frozen=True)
class AudioConfig:
    check: AudioCheck = AudioCheck.WARN


@dataclass(frozen=True)
class Config:
    source: str
    cradle: CradleConfig
    s3: S3Config
    archive: ArchiveConfig
    schedule: ScheduleConfig
    state: StateConfig
    server: ServerConfig
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    audio: AudioConfig = field(default_factory=AudioConfig)
    manifest: ManifestConfig = field(default_factory=ManifestConfig)
    reconcile: ReconcileConfig = field(default_factory=ReconcileConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    conversations: ConversationsConfig = field(default_factory=ConversationsConfig)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never be logged or printed."""
        return tuple(s for s in (self.cradle.api_key, self.webhook.token) if s)


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

    def __init__(self, table: Mapping[str, Any], section: str, problems: list[Problem]) -> None:
        self.table = table
        self.section = section
        self.problems = problems
        self.seen: set[str] = set()

    def get(self, key: str, default: T, convert: Callable[[Any], T]) -> T:
        self.seen.add(key)
        if key not in self.table:
            return default
        raw = self.table[key]
        try:
            return convert(raw)
        except (ValueError, TypeError) as exc:
            self.problem(key, str(exc))
            return default

    def problem(self, key: str, message: str) -> None:
        """A problem with this table's `key`."""
        self.problems.append(Problem(f"{self.section}.{key}", message))

    def unknown(self) -> None:
        for key in sorted(set(self.table) - self.seen):
            self.problem(key, "unknown key")


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
MIN_PART_SIZE = 5 * 2**20  # S3 refuses smaller multipart parts, except the last one


def parse_size(value: Any) -> int:
    """Bytes, as an integer or a string such as `"16MiB"` or `"1GiB"`."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise ValueError(f'{value!r} is not a size (write e.g. "16MiB", "1GiB" or bytes)')
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def _transfer_rate(value: Any) -> float:
    """Bytes a second, written as a size: `"16KiB"` means 16 KiB a second."""
    rate = parse_size(value)
    if rate < 1:
        raise ValueError(f"{value!r} must be at least one byte a second")
    return float(rate)


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
    """An http(s) origin, optionally with a path, held to the rules of `archiver.urls`: the same
    parser and checks that decide where every request goes, so the origin the credentials are
    bound to cannot be read two ways (no userinfo, backslash, whitespace, control or non-ASCII
    character, percent-escape in the host, or port outside 1 to 65535)."""
    url = _string(value).rstrip("/")
    try:
        origin_of(url)
    except UrlRefused as exc:
        raise ValueError(str(exc)) from None
    if "?" in url or "#" in url:
        raise ValueError(f"{value!r} has a query or a fragment: give the API's root URL")
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


def _read_cradle(read: _Reader, env: Mapping[str, str], require_credentials: bool) -> CradleConfig:
    d = CradleConfig()
    base_url = read.get("base_url", d.base_url, _base_url)
    before = len(read.problems)
    cradle_id = _read_id(read, env)
    id_reported = len(read.problems) > before
    before = len(read.problems)
    api_key, api_key_file, source = _read_api_key(read, env)
    key_reported = len(read.problems) > before
    rate = read.get("requests_per_second", d.requests_per_second, _rate)
    timeout = read.get("timeout", d.timeout, _positive_duration)
    min_rate = read.get("min_transfer_rate", d.min_transfer_rate, _transfer_rate)
    read.unknown()
    if require_credentials:
        if not cradle_id and not id_reported:
            read.problem("id", "is empty (set it, or the CRADLE_ID environment variable)")
        if not api_key and not key_reported:
            read.problem(
                "api_key",
                "is empty (set api_key, api_key_file, or the CRADLE_API_KEY environment variable)",
            )
    return CradleConfig(
        base_url,
        cradle_id,
        api_key,
        api_key_file,
        rate,
        timeout,
        source,
        min_transfer_rate=min_rate,
    )


def _read_id(read: _Reader, env: Mapping[str, str]) -> str:
    read.seen.add("id")
    if env.get("CRADLE_ID"):
        label, cradle_id = "CRADLE_ID (environment)", env["CRADLE_ID"]
    else:
        label, cradle_id = "cradle.id", read.get("id", "", _string)
    problem = header_value_problem(cradle_id)
    if problem:  # the id is not a secret: quoting it shows the stray character
        read.problems.append(Problem(label, f"{cradle_id!r} {problem}"))
        return ""
    return cradle_id


def _read_api_key(read: _Reader, env: Mapping[str, str]) -> tuple[str, str, KeySource]:
    """The key, `api_key_file` as configured, and where the key came from, first found wins:
    $CRADLE_API_KEY, cradle.api_key, cradle.api_key_file, $CREDENTIALS_DIRECTORY/cradle-api-key."""
    read.seen.add("api_key")
    api_key_file = read.get("api_key_file", "", _string)
    if env.get("CRADLE_API_KEY"):
        key = _checked_key(read, "CRADLE_API_KEY (environment)", env["CRADLE_API_KEY"])
        return key, api_key_file, KeySource.ENVIRONMENT
    key = read.get("api_key", "", _secret)
    if key:
        return _checked_key(read, "cradle.api_key", key), api_key_file, KeySource.CONFIG
    if api_key_file:
        key = _read_key_file(read, "cradle.api_key_file", api_key_file)
        return key, api_key_file, KeySource.FILE
    credentials_dir = env.get("CREDENTIALS_DIRECTORY")
    if credentials_dir:
        # systemd's LoadCredential=cradle-api-key:... puts the key here for the unit only.
        candidate = Path(credentials_dir) / "cradle-api-key"
        if candidate.exists():
            key = _read_key_file(read, "$CREDENTIALS_DIRECTORY/cradle-api-key", str(candidate))
            return key, api_key_file, KeySource.CREDENTIALS
    return "", api_key_file, KeySource.NONE


def _read_key_file(read: _Reader, label: str, path: str) -> str:
    try:
        # Bytes, not text mode, which would turn a stray \r\n inside into \n. strip(): the
        # newline an editor or `echo` leaves at the end is not part of the key.
        key = Path(path).read_bytes().decode("utf-8").strip()
    except UnicodeDecodeError:
        # Not str(exc): it quotes the offending byte, which is a byte of the key.
        read.problems.append(Problem(label, f"{path} is not UTF-8 text"))
        return ""
    except OSError as exc:
        read.problems.append(Problem(label, f"cannot read {path}: {exc.strerror or exc}"))
        return ""
    if not key:
        read.problems.append(Problem(label, f"{path} is empty"))
    return _checked_key(read, label, key, where=path)


def _checked_key(read: _Reader, label: str, key: str, where: str = "") -> str:
    problem = header_value_problem(key)
    if problem:  # never the key itself
        read.problems.append(Problem(label, f"{where}: {problem}" if where else problem))
        return ""
    return key


def header_value_problem(value: str) -> str | None:
    """Why `value` cannot be sent as a credential header, without quoting it; None if it can."""
    if value != value.strip():
        return "has leading or trailing whitespace, which HTTP strips from a header"
    control = next((ch for ch in value if ch < " " or ch == "\x7f"), None)
    if control is not None:
        return f"contains a control character (U+{ord(control):04X}), which a header cannot carry"
    if not value.isascii():
        return "contains a non-ASCII character, which a header cannot carry"
    return None


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


def _choice(kind: type[E]) -> Callable[[Any], E]:
    """A converter to one of a StrEnum's values, naming them all when the value is none."""
    convert = _one_of(*(member.value for member in kind))

    def to_member(value: Any) -> E:
        return kind(convert(value))

    return to_member


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


def _read_webhook(read: _Reader, env: Mapping[str, str]) -> WebhookConfig:
    """The listener and its token, from `token_file` or else systemd's credential
    `$CREDENTIALS_DIRECTORY/cradle-webhook-token`; a listener needs a token."""
    listen = read.get("listen", "", _listen)
    token_file = read.get("token_file", "", _string)
    read.unknown()
    token, label = "", "webhook.token_file"
    if token_file:
        token = _read_key_file(read, label, token_file)
    elif listen and env.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(env["CREDENTIALS_DIRECTORY"]) / "cradle-webhook-token"
        if candidate.exists():
            label = "$CREDENTIALS_DIRECTORY/cradle-webhook-token"
            token = _read_key_file(read, label, str(candidate))
    problem = webhook_token_problem(token) if token else None
    if problem:  # never the token itself
        read.problems.append(Problem(label, problem))
        token = ""
    if listen and not token and not any(p.key.startswith(label) for p in read.problems):
        read.problem(
            "token_file",
            "is empty, and webhook.listen needs a token (a file holding it, or the systemd"
            " credential cradle-webhook-token)",
        )
    return WebhookConfig(listen=listen, token_file=token_file, token=token)


def webhook_token_problem(token: str) -> str | None:
    """Why `token` cannot be the webhook's secret, without quoting it; None if it can. It is a
    path segment a sender copies into a URL, so only characters every URL keeps as they are."""
    if len(token) < MIN_WEBHOOK_TOKEN_CHARS:
        return (
            f"the token has {len(token)} characters, fewer than {MIN_WEBHOOK_TOKEN_CHARS}"
            " (generate one with `openssl rand -hex 32`)"
        )
    if not _URL_SAFE.match(token):
        return (
            "the token may hold only letters, digits and . _ ~ - (generate one with"
            " `openssl rand -hex 32`)"
        )
    return None


@dataclass(frozen=True)
class ReadableSecret:
    """A file holding the API key that someone other than the archiver's user can read."""

    path: str
    mode: int  # the permission bits, e.g. 0o644
    readers: str  # "everyone", or "group NAME"

    def __str__(self) -> str:
        return (
            f"{self.path} holds the API key and is readable by {self.readers}"
            f" (mode {self.mode:04o}); chmod 600 it"
        )


def readable_secret(config: Config, groups: Collection[int] | None = None) -> ReadableSecret | None:
    """The file holding the API key, if others can read it: the config file when the key is in
    it, or `api_key_file`. `groups` are the archiver's own (default: this process's).

    A group the archiver itself belongs to does not count: a Kubernetes secret mounted 0440 with
    the pod's fsGroup, or a key file `root:cradle-archiver 0640`, is the usual way to hand the key
    to a service user. The environment and systemd's credentials directory are not files we judge.
    """
    holders = {KeySource.CONFIG: config.source, KeySource.FILE: config.cradle.api_key_file}
    path = holders.get(config.cradle.api_key_source)
    if not path:
        return None
    try:
        found = os.stat(path)  # follows links: a mounted secret is a link to the real file
    except OSError:
        return None
    mode = stat.S_IMODE(found.st_mode)
    own = {os.getegid(), *os.getgroups()} if groups is None else set(groups)
    if mode & stat.S_IROTH:
        return ReadableSecret(path, mode, "everyone")
    if mode & stat.S_IRGRP and found.st_gid not in own:
        return ReadableSecret(path, mode, f"group {_group_name(found.st_gid)}")
    return None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
