"""Errors grouped by what the caller must do about them.

- FatalError: stop the pass (or the process); retrying now will not help. Carries an exit code.
- RetriableError: transient; retry with backoff. Only this group reaches tenacity.
- SkippableError: this one entry or recording failed; record it and go on with the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2
EXIT_DEAD_LETTERS = 3


class ArchiverError(Exception):
    """Base of every error the archiver raises on purpose."""


class FatalError(ArchiverError):
    exit_code = EXIT_RUNTIME


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where (`s3.bucket`, `CRADLE_API_KEY (environment)`) and
    what. Kept as a value so nothing has to parse a message back."""

    key: str  # "" for the file as a whole
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


class ConfigError(FatalError):
    """Every problem of a config file at once, each naming the file, the key and the problem."""

    exit_code = EXIT_CONFIG

    def __init__(self, path: str, problems: Sequence[Problem]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__("; ".join(f"{path}: {p}" for p in problems))


class UsageError(FatalError):
    exit_code = EXIT_CONFIG


class AuthError(FatalError):
    """401/403: the credentials are wrong or revoked; retrying will not fix it."""


class CheckpointLocked(FatalError):
    """Another process holds the checkpoint."""


class CheckpointError(FatalError):
    """The checkpoint file cannot be opened or has an unknown schema."""


class ApiUnavailable(FatalError):
    """The Cradle API kept failing after every retry; the pass stops and the next one resumes."""

    def __init__(self, message: str, reason: str = "api_unavailable") -> None:
        super().__init__(message)
        self.reason = reason


class SinkUnavailable(FatalError):
    """S3 kept failing after every retry, or refuses writes; nothing is marked archived."""


class ObjectConflict(FatalError):
    """One of our own write-once objects (a manifest, an audit record) is already in the bucket
    with other bytes: never overwritten, and loud, since something else wrote our key."""


class StagingError(FatalError):
    """The staging directory cannot be written."""


class Interrupted(FatalError):
    """A shutdown was asked for; the pass stops between (or inside) downloads."""

    exit_code = EXIT_OK


class RetriableError(ArchiverError):
    """Transient: a 429, a 5xx, a dropped connection or a truncated body."""

    def __init__(self, message: str, retry_after: float | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.reason = reason or "transient"


class RateLimited(RetriableError):
    """A 429; the whole client pauses for `retry_after` (or a backoff when absent)."""


class SkippableError(ArchiverError):
    """One item failed; the rest of the pass goes on."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class MalformedEntry(SkippableError):
    """A list entry that cannot be archived as it stands (no url, bad startedAt ...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="malformed_entry")


class RecordingFailed(SkippableError):
    """An attempt at one recording failed; `permanent` ones are dead-lettered at once."""

    def __init__(self, message: str, reason: str, permanent: bool = False) -> None:
        super().__init__(message, reason)
        self.permanent = permanent
