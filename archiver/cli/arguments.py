"""Argument types the commands share: each turns one command-line word into a value, or into
argparse's one-line usage error naming the word, so a bad value never reaches the work."""

from __future__ import annotations

import argparse
from datetime import date, datetime

from archiver.models import parse_time
from archiver.retention import Period, parse_period


def time_arg(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 UTC time ({exc})") from exc


def day_arg(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day (YYYY-MM-DD)") from exc


def percent_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage in (0, 100]")
    return value


def period_arg(text: str) -> Period:
    try:
        return parse_period(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
