"""What a response's headers and body are taken to mean: a Retry-After, a Content-Length, and
whether a downloaded body is the MP3 it claims to be.

Each reads a value a server chose, so each bounds it: a Retry-After past MAX_RETRY_AFTER is cut
to it, a Content-Length that is not a plain short number counts as absent.
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime

import requests

MAX_RETRY_AFTER = 900.0


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delta seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def looks_like_mp3(head: bytes) -> bool:
    """An ID3v2 tag or an MPEG audio frame sync (11 set bits)."""
    return head.startswith(b"ID3") or (
        len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0
    )


def content_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length")
    # isascii: str.isdigit() is true of '²', which int() refuses (headers decode as Latin-1).
    return (
        int(value) if value and value.isascii() and value.isdigit() and len(value) <= 20 else None
    )


def verify_body(size: int, wire: int, expected: int | None, head: bytes) -> str | None:
    """`wire` counts the bytes as sent (Content-Length's unit), `size` the decoded ones."""
    if expected is not None and wire != expected:
        return "truncated"
    if size == 0:
        return "empty"
    if not looks_like_mp3(head):
        return "not_mp3"
    return None
