"""structlog set-up: JSON lines for log shippers, a readable console on a terminal, no secrets.

Logs go to stderr so that stdout carries only what a command prints (`status --json` is parsed
by scripts).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "[redacted]"
_SECRET_FIELDS = frozenset(
    {"api_key", "cradle_api_key", "password", "secret", "token", "authorization"}
)


class Redactor:
    """Replaces every known secret value, wherever it appears in an event, before rendering.

    Keys named like secrets are masked too, so a careless `log.info(..., api_key=...)` is safe.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: tuple[str, ...] = ()
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret containing another is masked whole.
        found = {s for s in secrets if s and len(s) >= 4}
        self.secrets = tuple(sorted(found | set(self.secrets), key=len, reverse=True))

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.scrub(v) for v in value)
        if isinstance(value, BaseException):
            return self.scrub(f"{type(value).__name__}: {value}")
        return value

    def __call__(
        self, logger: Any, name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event):
            if key.lower() in _SECRET_FIELDS:
                event[key] = REDACTED
            else:
                event[key] = self.scrub(event[key])
        return event


REDACTOR = Redactor()


def configure(fmt: str | None = None, level: str = "info", stream: TextIO | None = None) -> None:
    """`fmt` is "json", "console", or None for console on a terminal and JSON otherwise."""
    stream = stream or sys.stderr
    if fmt is None:
        fmt = "console" if stream.isatty() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, REDACTOR, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # Libraries (APScheduler, botocore, urllib3) log through the standard library: render their
    # records the same way, so a JSON log stays JSON lines only.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                REDACTOR,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Their info is noise (each S3 request, each scheduler tick) and their debug is dangerous
    # (botocore logs whole signed requests, session tokens included): warnings only, always.
    root.setLevel(max(logging.getLevelNamesMapping()[level.upper()], logging.WARNING))
