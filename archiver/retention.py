"""Retention dated from each call: the Object Lock a recording is written with.

S3's bucket default retention counts from the upload, so a backfill of two-year-old calls under
a 5-year default would keep them 7 years, past what GDPR's storage limitation allows. Here each
recording's retain-until is its own `startedAt + period`, computed once, the same way everywhere
(the write, `verify`, `retention extend`, the manifests).

A period is whole calendar years in UTC ("5y") or days ("3650d"). Adding years to Feb 29 lands
on Mar 1 of a common year, never Feb 28: a lock may outlast the period by a day, never fall
short of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

_PERIOD = re.compile(r"^\s*(\d+)\s*([yd])\s*$")
MAX_YEARS = 100  # S3 accepts any date; a longer period is a typo, not a policy


class LockMode(StrEnum):
    """`retention.mode`: S3 Object Lock's modes, as the config spells them."""

    GOVERNANCE = "governance"  # removable by a principal with s3:BypassGovernanceRetention
    COMPLIANCE = "compliance"  # nobody, the root account included, can shorten or remove it

    @property
    def s3(self) -> str:
        return self.value.upper()


class Expired(StrEnum):
    """`retention.expired`: what to do with a recording already past its retain-until."""

    ARCHIVE = "archive"  # archived without a lock, logged and counted
    SKIP = "skip"  # not downloaded; recorded in the terminal state `expired`


@dataclass(frozen=True)
class Period:
    years: int = 0
    days: int = 0

    def __str__(self) -> str:
        return f"{self.years}y" if self.years else f"{self.days}d"

    def after(self, start: datetime) -> datetime:
        """`start + self`, in UTC."""
        start = start.astimezone(UTC)
        if self.days:
            return start + timedelta(days=self.days)
        year = start.year + self.years
        try:
            return start.replace(year=year)
        except ValueError:  # Feb 29 in a common year: Mar 1, so never less than the period
            return start.replace(year=year, month=3, day=1)


def parse_period(value: object) -> Period:
    """`"5y"` (calendar years) or `"3650d"` (days)."""
    match = _PERIOD.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f'{value!r} is not a period (write e.g. "5y" or "3650d")')
    amount, unit = int(match.group(1)), match.group(2)
    if amount < 1:
        raise ValueError(f"{value!r} must be at least one {'year' if unit == 'y' else 'day'}")
    if unit == "y":
        if amount > MAX_YEARS:
            raise ValueError(f"{value!r} is more than {MAX_YEARS} years")
        return Period(years=amount)
    if amount > MAX_YEARS * 366:
        raise ValueError(f"{value!r} is more than {MAX_YEARS} years")
    return Period(days=amount)


@dataclass(frozen=True)
class Lock:
    """The Object Lock one object is written with (or checked against)."""

    mode: LockMode
    retain_until: datetime


@dataclass(frozen=True)
class RetentionPolicy:
    """`[retention]`: None for `mode` means no lock is written."""

    mode: LockMode | None = None
    period: Period = Period(years=5)
    expired: Expired = Expired.ARCHIVE

    def retain_until(self, started_at: datetime) -> datetime:
        return self.period.after(started_at)

    def lock_for(self, started_at: datetime, now: datetime) -> Lock | None:
        """The lock for a call that started at `started_at`; None when no lock is due: retention
        is off, or the date has passed (the caller applies `expired`)."""
        if self.mode is None:
            return None
        until = self.retain_until(started_at)
        return Lock(self.mode, until) if until > now else None

    def is_expired(self, started_at: datetime, now: datetime) -> bool:
        return self.mode is not None and self.retain_until(started_at) <= now


@dataclass(frozen=True)
class BucketLock:
    """What a bucket says of itself: versioning, Object Lock, and any default retention."""

    versioning: bool
    object_lock: bool
    default_retention: str | None = None  # e.g. "COMPLIANCE 5 years"


def judge_bucket(policy: RetentionPolicy, bucket: BucketLock) -> tuple[list[str], list[str]]:
    """(problems, warnings) for `check`: a lock the policy needs and the bucket cannot give is a
    problem; a bucket default retention is a warning, whatever the policy."""
    problems = []
    if policy.mode is not None:
        if not bucket.versioning:
            problems.append("versioning is not enabled (Object Lock needs it)")
        if not bucket.object_lock:
            problems.append(
                f"Object Lock is not enabled, so retention.mode = {policy.mode.value!r} cannot"
                " lock anything (it can only be turned on for a bucket, not per object)"
            )
    warnings = []
    if bucket.default_retention:
        warnings.append(
            f"the bucket has a default retention ({bucket.default_retention}); it counts from"
            " the upload, so a backfill of old calls would be kept that much past their date."
            " Locks from retention.mode are dated from each call; consider removing the default"
        )
    return problems, warnings
