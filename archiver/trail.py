"""The audit trail: one object per administrative action, written once, under Object Lock.

SEC 17a-4 and FINRA accept a complete audit trail in place of (or beside) WORM storage; every
action that changes what is kept or how long (`retention extend`, `hold`, `retry`) leaves an
object `{prefix}audit/{YYYY}/{MM}/{DD}/{timestamp}-{action}.json` saying who (the OS user and
host), what (the command and its arguments, the recordings or the rule it touched), when, and
how it ended. It is written with `If-None-Match` (a second writer cannot replace it) and, when
retention is on, locked until the latest date it touches or `period` from now, whichever is
later, so the record of a change lives as long as what it changed.
"""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from archiver.models import format_time
from archiver.retention import Lock, RetentionPolicy

log = structlog.get_logger(__name__)

SCHEMA = "cradle-archiver.audit/1"
AUDIT_DIR = "audit/"


class TrailStore(Protocol):
    def write_once(
        self, key: str, body: bytes, content_type: str, lock: Lock | None = None
    ) -> str | None: ...


@dataclass(frozen=True)
class Action:
    """One administrative action, as it ended."""

    action: str  # "retention-extend", "hold-add", "hold-remove", "retry"
    arguments: Sequence[str]
    started_at: datetime
    finished_at: datetime
    counts: dict[str, int] = field(default_factory=dict)
    recordings: Sequence[str] = ()
    rule: dict[str, Any] | None = None
    latest_date: datetime | None = None  # the furthest retain-until it set, if any


def who() -> dict[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        user = "unknown"
    return {"user": user, "host": socket.gethostname()}


def key_for(prefix: str, action: Action) -> str:
    at = action.finished_at.astimezone(UTC)
    stamp = at.strftime("%Y%m%dT%H%M%S") + f"{at.microsecond:06d}Z"
    return f"{prefix}{AUDIT_DIR}{at:%Y/%m/%d}/{stamp}-{action.action}.json"


def body_of(action: Action) -> bytes:
    document = {
        "schema": SCHEMA,
        "action": action.action,
        "who": who(),
        "command": ["cradle-archiver", *action.arguments],
        "started_at": format_time(action.started_at),
        "finished_at": format_time(action.finished_at),
        "counts": action.counts,
        "recordings": sorted(action.recordings),
        "rule": action.rule,
    }
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()


def record(
    store: TrailStore, prefix: str, action: Action, policy: RetentionPolicy, now: datetime
) -> str:
    """Write the action's object once; returns its key."""
    lock = None
    if policy.mode is not None:
        until = max(d for d in (action.latest_date, policy.period.after(now)) if d is not None)
        lock = Lock(policy.mode, until)
    key = key_for(prefix, action)
    store.write_once(key, body_of(action), "application/json", lock)
    log.info("audit.recorded", key=key, action=action.action, **action.counts)
    return key
