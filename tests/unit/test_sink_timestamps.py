"""The S3 client's timestamp parser: the fast path for ISO 8601 reads what botocore's default
reads, and everything else still goes to the default."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from botocore.utils import parse_timestamp

from archiver.sink.connection import _timestamp


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-30T08:19:56.000Z",
        "2026-11-30T08:19:56Z",
        "2024-02-29T23:59:59.123456+00:00",
        "2029-06-01T00:00:00+02:00",
        "Wed, 21 Oct 2015 07:28:00 GMT",  # an HTTP date (Last-Modified of a HEAD)
        "1700000000",  # an epoch
    ],
)
def test_every_timestamp_reads_as_botocore_reads_it(value: str) -> None:
    parsed = _timestamp(value)

    assert parsed == parse_timestamp(value)
    assert parsed.tzinfo is not None


def test_a_listing_timestamp_takes_the_fast_path() -> None:
    parsed = _timestamp("2026-11-30T08:19:56.000Z")

    assert parsed == datetime(2026, 11, 30, 8, 19, 56, tzinfo=UTC)
    assert parsed.tzinfo is UTC  # the standard library's, not dateutil's tzutc
