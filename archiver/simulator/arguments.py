"""The `simulate` subcommand's flags, one per SimulatorOptions field."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import MISSING, fields
from datetime import datetime
from typing import Any

from archiver.models import parse_time
from archiver.simulator.options import (
    BODY_FAULT_SCOPES,
    BOUNDS,
    MIN_BODY_SIZE,
    RETRY_AFTER_MODES,
    OptionError,
    SimulatorOptions,
    split_listen,
)

_DEFAULTS = {f.name: f.default for f in fields(SimulatorOptions) if f.default is not MISSING}


def _listen(text: str) -> str:
    try:
        split_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _time(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (e.g. 2024-06-01T00:00:00Z)") from exc


def _number(
    kind: Callable[[str], Any], low: float, high: float | None = None
) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
        if value < low or (high is not None and value > high):
            span = f"{low}..{high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {span}, got {text}")
        return value

    return convert


_RATE = _number(float, 0.0, 1.0)
_SECONDS = _number(float, 0.0)
_COUNT = _number(int, 0)
_BYTES_PER_SECOND = _number(int, 1)

# (flag, field, type, help); the default shown is the dataclass's.
_FLAGS: list[tuple[str, str, Callable[[str], Any] | None, str]] = [
    ("--listen", "listen", _listen, "API listen address HOST:PORT (default 127.0.0.1:8080)"),
    ("--canary-listen", "canary_listen", _listen, "the off-host canary's HOST:PORT (0: any port)"),
    ("--seed", "seed", int, "seed of the generated data and of fault decisions"),
    ("--start", "start", _time, "first call time, ISO 8601 UTC (default: a day before --end)"),
    ("--end", "end", _time, "end of the call period (default: now; later simulates live calls)"),
    ("--per-hour", "per_hour", _number(float, 0.0), "recordings per hour"),
    ("--bytes-per-second", "bytes_per_second", _BYTES_PER_SECOND, "body bytes per call second"),
    ("--size", "size", _number(int, MIN_BODY_SIZE), "fixed body size in bytes (benchmarks)"),
    ("--large-fraction", "large_fraction", _RATE, "share of recordings of --large-size bytes"),
    ("--large-size", "large_size", _number(int, MIN_BODY_SIZE), "body size of the large share"),
    ("--id", "cradle_id", str, "the CRADLE_ID the API accepts"),
    ("--api-key", "api_key", str, "the CRADLE_API_KEY the API accepts"),
    ("--rps", "rps", _number(int, 1), "request starts allowed per second before 429"),
    ("--bounds", "bounds", None, "how from/until bound a list window"),
    ("--processing-delay", "processing_delay", _SECONDS, "seconds after a call ends it is listed"),
    ("--late-fraction", "late_fraction", _RATE, "share of recordings that are listed late"),
    ("--late-delay", "late_delay", _SECONDS, "late ones appear this many seconds after start-up"),
    ("--boundary-fraction", "boundary_fraction", _number(float, 0.0, 0.5), "share on the hour"),
    ("--latency", "latency", _SECONDS, "seconds before every API response"),
    ("--arrival-jitter", "arrival_jitter", _SECONDS, "requests reach the rate gate 0..N s late"),
    ("--bandwidth", "bandwidth", _BYTES_PER_SECOND, "cap on body bytes per second"),
    ("--list-cap", "list_cap", _COUNT, "silently truncate list responses to N entries"),
    ("--fault-429", "fault_429", _RATE, "share of requests answered 429"),
    ("--retry-after", "retry_after", None, "Retry-After on injected 429s"),
    ("--fault-5xx", "fault_5xx", _RATE, "share of requests answered 500/502/503"),
    ("--fault-drop-headers", "fault_drop_headers", _RATE, "share closed without a response"),
    ("--fault-drop-body", "fault_drop_body", _RATE, "share reset part-way through the body"),
    ("--fault-truncate", "fault_truncate", _RATE, "share whose body is shorter than promised"),
    ("--slow-body", "slow_body", _RATE, "share of bodies sent at --slow-bytes-per-second"),
    ("--slow-bytes-per-second", "slow_bytes_per_second", _BYTES_PER_SECOND, "speed of slow bodies"),
    ("--fault-malformed-list", "fault_malformed_list", _RATE, "share of lists that are malformed"),
    ("--body-fault-scope", "body_fault_scope", None, "responses body faults may cut or slow"),
    ("--poison-html", "poison_html", _COUNT, "recordings whose download is an HTML page"),
    ("--poison-offhost", "poison_offhost", _COUNT, "recordings listed with a url on another host"),
    ("--poison-redirect", "poison_redirect", _COUNT, "recordings whose download redirects away"),
    ("--poison-404", "poison_404", _COUNT, "recordings whose download is always 404"),
    ("--bad-entries", "bad_entries", _COUNT, "list entries without url or with a bad startedAt"),
]
_CHOICES = {
    "bounds": BOUNDS,
    "retry_after": RETRY_AFTER_MODES,
    "body_fault_scope": BODY_FAULT_SCOPES,
}
_FLAG_OF = {name: flag for flag, name, _, _ in _FLAGS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every simulator option to `parser` (the `simulate` subcommand)."""
    for flag, name, kind, text in _FLAGS:
        default = "127.0.0.1:8080" if name == "listen" else _DEFAULTS.get(name)
        extra: dict[str, Any] = {"choices": _CHOICES[name]} if name in _CHOICES else {"type": kind}
        shown = "" if default is None or name == "listen" else f" (default {default})"
        parser.add_argument(flag, dest=name, default=default, help=text + shown, **extra)
    parser.add_argument(
        "--forbid",
        dest="forbid",
        action="store_true",
        help="answer every API request 403, as for a key without access",
    )


def options_from_args(ns: argparse.Namespace) -> SimulatorOptions:
    """SimulatorOptions from parsed flags; ArgumentTypeError names the flag that is wrong."""
    values = {name: getattr(ns, name) for _, name, _, _ in _FLAGS if hasattr(ns, name)}
    values["forbid"] = bool(getattr(ns, "forbid", False))
    try:
        return SimulatorOptions(**values)
    except OptionError as exc:
        flag = _FLAG_OF.get(exc.option, f"--{exc.option.replace('_', '-')}")
        raise argparse.ArgumentTypeError(f"{flag}: {exc.message}") from exc
