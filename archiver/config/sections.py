"""The config's sections, one frozen dataclass each, and the enums their keys choose from.

They are plain values with their defaults on them, so code and tests can build one directly
(`S3Config(bucket="calls")`) without a file; the readers in load.py and credentials.py fall back to
these same defaults when a key is absent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from archiver.retention import RetentionPolicy

MAX_REQUESTS_PER_SECOND = 10.0


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
