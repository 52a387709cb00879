"""Retention dated from the call: calendar years in UTC, Feb 29, days, and the expired rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archiver.retention import Expired, Lock, LockMode, Period, RetentionPolicy, parse_period

T = datetime(2024, 5, 1, 10, 30, 15, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "period"),
    [("5y", Period(years=5)), (" 7y ", Period(years=7)), ("3650d", Period(days=3650))],
)
def test_periods_parse(text: str, period: Period) -> None:
    assert parse_period(text) == period


@pytest.mark.parametrize("text", ["5", "5 years", "0y", "0d", "-1y", "101y", "5m", 5, None, "y"])
def test_bad_periods_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match=r"period|at least|more than"):
        parse_period(text)


def test_years_are_calendar_years_in_utc() -> None:
    assert Period(years=5).after(T) == T.replace(year=2029)
    local = datetime(2024, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-2)))
    assert Period(years=1).after(local) == datetime(2026, 1, 1, 1, 30, tzinfo=UTC)


def test_feb_29_plus_whole_years_is_mar_1_never_less_than_the_period() -> None:
    leap = datetime(2024, 2, 29, 12, tzinfo=UTC)
    assert Period(years=5).after(leap) == datetime(2029, 3, 1, 12, tzinfo=UTC)
    assert Period(years=4).after(leap) == datetime(2028, 2, 29, 12, tzinfo=UTC)


def test_days_are_days() -> None:
    assert Period(days=3650).after(T) == T + timedelta(days=3650)


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1)),  # noqa: DTZ001  hypothesis wants naive bounds
    st.integers(1, 50),
)
def test_a_lock_never_falls_short_of_the_period(start: datetime, years: int) -> None:
    start = start.replace(tzinfo=UTC)
    until = Period(years=years).after(start)
    assert until >= start.replace(year=start.year + years, day=min(start.day, 28))
    assert (until - start).days >= 365 * years


def test_the_policy_locks_from_the_call_and_knows_an_expired_one() -> None:
    policy = RetentionPolicy(LockMode.COMPLIANCE, Period(years=1), Expired.SKIP)
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert policy.lock_for(T, now) == Lock(LockMode.COMPLIANCE, T.replace(year=2025))
    old = T - timedelta(days=400)
    assert policy.lock_for(old, now) is None and policy.is_expired(old, now)
    assert not policy.is_expired(T, now)
    off = RetentionPolicy()
    assert off.lock_for(T, now) is None and not off.is_expired(old, now)
    assert LockMode.GOVERNANCE.s3 == "GOVERNANCE"


def test_check_names_what_a_locking_policy_lacks_and_warns_of_a_default() -> None:
    from archiver.retention import BucketLock, judge_bucket

    locking = RetentionPolicy(LockMode.COMPLIANCE)
    problems, warnings = judge_bucket(locking, BucketLock(versioning=False, object_lock=False))
    assert [p.split(" ")[0] for p in problems] == ["versioning", "Object"] and warnings == []
    problems, warnings = judge_bucket(
        RetentionPolicy(), BucketLock(True, True, default_retention="COMPLIANCE 5 years")
    )
    assert problems == [] and "backfill" in warnings[0] and "COMPLIANCE 5 years" in warnings[0]
    assert judge_bucket(locking, BucketLock(True, True)) == ([], [])
