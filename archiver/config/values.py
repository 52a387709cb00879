"""How one key's value is read: `_Reader` walks a table and collects problems, and the converters
turn a raw TOML value into what a section holds or raise ValueError/TypeError saying why not.

A converter's message is the problem the operator sees, after the key `_Reader` puts in front of
it, so it quotes the value (except for a secret) and says what would have been accepted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from archiver.config.sections import MAX_REQUESTS_PER_SECOND
from archiver.errors import Problem
from archiver.models import parse_time
from archiver.urls import UrlRefused, origin_of

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


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


def _choice(kind: type[E]) -> Callable[[Any], E]:
    """A converter to one of a StrEnum's values, naming them all when the value is none."""
    convert = _one_of(*(member.value for member in kind))

    def to_member(value: Any) -> E:
        return kind(convert(value))

    return to_member
