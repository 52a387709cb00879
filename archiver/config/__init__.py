"""The TOML config: parsed, checked all at once, and frozen.

Every problem names the file, the key and what is wrong, and all problems are reported together
(an operator fixing a config should not have to run the tool once per mistake).

sections.py holds the frozen dataclasses, one per section, and their defaults; values.py how one
key is read and converted (durations, sizes, rates, URLs); credentials.py the sections that carry
a secret (`[cradle]`, `[webhook]`) and `readable_secret`; load.py the file, the table of section
readers and the rest of them. Import from `archiver.config`, not from the modules.
"""

from __future__ import annotations

from archiver.config.credentials import (
    MIN_WEBHOOK_TOKEN_CHARS,
    ReadableSecret,
    header_value_problem,
    readable_secret,
    webhook_token_problem,
)
from archiver.config.load import DEFAULT_PATH, STORAGE_CLASSES, load_config, parse_config
from archiver.config.sections import (
    MAX_REQUESTS_PER_SECOND,
    ArchiveConfig,
    AudioCheck,
    AudioConfig,
    Config,
    ConversationsConfig,
    CradleConfig,
    KeySource,
    ManifestConfig,
    Rebuild,
    ReconcileConfig,
    ReconcileSchedule,
    S3Config,
    ScheduleConfig,
    ServerConfig,
    StateConfig,
    WebhookConfig,
)
from archiver.config.values import MIN_PART_SIZE, parse_duration, parse_size

__all__ = [
    "DEFAULT_PATH",
    "MAX_REQUESTS_PER_SECOND",
    "MIN_PART_SIZE",
    "MIN_WEBHOOK_TOKEN_CHARS",
    "STORAGE_CLASSES",
    "ArchiveConfig",
    "AudioCheck",
    "AudioConfig",
    "Config",
    "ConversationsConfig",
    "CradleConfig",
    "KeySource",
    "ManifestConfig",
    "ReadableSecret",
    "Rebuild",
    "ReconcileConfig",
    "ReconcileSchedule",
    "S3Config",
    "ScheduleConfig",
    "ServerConfig",
    "StateConfig",
    "WebhookConfig",
    "header_value_problem",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
    "readable_secret",
    "webhook_token_problem",
]
