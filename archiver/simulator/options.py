"""The simulator's settings: one frozen value, validated when it is built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime

from archiver.models import utc_now

BOUNDS = ("half-open", "inclusive", "exclusive")
RETRY_AFTER_MODES = ("seconds", "date", "none", "mixed")
POISON_KINDS = ("html", "offhost", "redirect", "404")
# Which responses the body faults (drop_body, truncate, slow_body) may hit.
BODY_FAULT_SCOPES = ("all", "downloads")

# Smallest body that still holds the ID3 tag and a whole MPEG frame.
MIN_BODY_SIZE = 512
# The API documents recordings "up to 100 MB".
MAX_BODY_SIZE = 100_000_000

# What `set_faults` (and POST /_sim/faults) may change while the simulator runs; the data
# (seed, time range, poison ...) is generated once and stays fixed.
RUNTIME_FIELDS = frozenset(
    {
        "fault_429",
        "retry_after",
        "fault_5xx",
        "fault_drop_headers",
        "fault_drop_body",
        "fault_truncate",
        "slow_body",
        "slow_bytes_per_second",
        "fault_malformed_list",
        "body_fault_scope",
        "list_cap",
        "latency",
        "arrival_jitter",
        "bandwidth",
        "forbid",
        "rps",
        "bounds",
    }
)

_RATES = (
    "fault_429",
    "fault_5xx",
    "fault_drop_headers",
    "fault_drop_body",
    "fault_truncate",
    "slow_body",
    "fault_malformed_list",
    "late_fraction",
    "large_fraction",
)
_COUNTS = ("poison_html", "poison_offhost", "poison_redirect", "poison_404", "bad_entries")


class OptionError(ValueError):
    """A setting out of range; `option` names the field so the CLI can name its flag."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


@dataclass(frozen=True, kw_only=True)
class SimulatorOptions:
    """Everything the simulator can be told. Every field has a default; all faults are off."""

    listen: str = "127.0.0.1:0"
    canary_listen: str = "127.0.0.1:0"
    seed: int = 1
    # None: end is now floored to the minute, start is a day before end.
    start: datetime | None = None
    end: datetime | None = None
    per_hour: float = 20.0
    bytes_per_second: int = 16_000
    size: int | None = None
    # A share of recordings gets `large_size` bytes whatever their duration, so one account
    # mixes small bodies with ones big enough for multipart uploads.
    large_fraction: float = 0.0
    large_size: int = 20 * 2**20
    cradle_id: str = "demo-id"
    api_key: str = field(default="demo-key", repr=False)
    rps: int = 10
    bounds: str = "half-open"
    processing_delay: float = 60.0
    late_fraction: float = 0.0
    late_delay: float = 120.0
    boundary_fraction: float = 0.05
    latency: float = 0.0
    # Network jitter: each request reaches the rate gate up to this many seconds late (seeded).
    arrival_jitter: float = 0.0
    bandwidth: int | None = None
    list_cap: int | None = None
    fault_429: float = 0.0
    retry_after: str = "seconds"
    fault_5xx: float = 0.0
    fault_drop_headers: float = 0.0
    fault_drop_body: float = 0.0
    fault_truncate: float = 0.0
    slow_body: float = 0.0
    slow_bytes_per_second: int = 32_000
    fault_malformed_list: float = 0.0
    body_fault_scope: str = "all"
    poison_html: int = 0
    poison_offhost: int = 0
    poison_redirect: int = 0
    poison_404: int = 0
    bad_entries: int = 0
    forbid: bool = False
    # Injected so tests move time forward instead of sleeping; drives visibility only.
    clock: Callable[[], datetime] = field(default=utc_now, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            # One at a time is enough: the CLI names the flag, tests name the field.
            raise problems[0]

    def runtime_switches(self) -> dict[str, object]:
        """The fields `set_faults` may change, with their current values."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in RUNTIME_FIELDS}


def _problems(o: SimulatorOptions) -> list[OptionError]:
    problems: list[OptionError] = []

    def check(ok: bool, option: str, message: str) -> None:
        if not ok:
            problems.append(OptionError(option, message))

    for name in _RATES:
        value = getattr(o, name)
        check(_is_number(value) and 0.0 <= value <= 1.0, name, f"must be 0..1, got {value!r}")
    for name in _COUNTS:
        value = getattr(o, name)
        check(_is_int(value) and value >= 0, name, f"must be a count >= 0, got {value!r}")
    check(o.bounds in BOUNDS, "bounds", f"must be one of {', '.join(BOUNDS)}, got {o.bounds!r}")
    check(
        o.retry_after in RETRY_AFTER_MODES,
        "retry_after",
        f"must be one of {', '.join(RETRY_AFTER_MODES)}, got {o.retry_after!r}",
    )
    check(
        o.body_fault_scope in BODY_FAULT_SCOPES,
        "body_fault_scope",
        f"must be one of {', '.join(BODY_FAULT_SCOPES)}, got {o.body_fault_scope!r}",
    )
    check(
        _is_int(o.large_size) and MIN_BODY_SIZE <= o.large_size <= MAX_BODY_SIZE,
        "large_size",
        f"must be {MIN_BODY_SIZE}..{MAX_BODY_SIZE} bytes, got {o.large_size!r}",
    )
    check(_is_int(o.rps) and o.rps >= 1, "rps", f"must be an integer >= 1, got {o.rps!r}")
    check(
        _is_number(o.per_hour) and o.per_hour >= 0, "per_hour", f"must be >= 0, got {o.per_hour!r}"
    )
    check(
        _is_int(o.bytes_per_second) and o.bytes_per_second >= 1,
        "bytes_per_second",
        f"must be an integer >= 1, got {o.bytes_per_second!r}",
    )
    check(
        o.size is None or (_is_int(o.size) and o.size >= MIN_BODY_SIZE),
        "size",
        f"must be at least {MIN_BODY_SIZE} bytes, got {o.size!r}",
    )
    for name in ("processing_delay", "late_delay", "latency", "arrival_jitter"):
        value = getattr(o, name)
        check(_is_number(value) and value >= 0, name, f"must be seconds >= 0, got {value!r}")
    check(
        _is_number(o.boundary_fraction) and 0.0 <= o.boundary_fraction <= 0.5,
        "boundary_fraction",
        f"must be 0..0.5, got {o.boundary_fraction!r}",
    )
    check(
        o.bandwidth is None or (_is_int(o.bandwidth) and o.bandwidth >= 1),
        "bandwidth",
        f"must be bytes per second >= 1, got {o.bandwidth!r}",
    )
    check(
        _is_int(o.slow_bytes_per_second) and o.slow_bytes_per_second >= 1,
        "slow_bytes_per_second",
        f"must be bytes per second >= 1, got {o.slow_bytes_per_second!r}",
    )
    check(
        o.list_cap is None or (_is_int(o.list_cap) and o.list_cap >= 0),
        "list_cap",
        f"must be a count >= 0, got {o.list_cap!r}",
    )
    for name in ("start", "end"):
        value = getattr(o, name)
        check(
            value is None or (isinstance(value, datetime) and value.tzinfo is not None),
            name,
            f"must be a timezone-aware datetime, got {value!r}",
        )
    if isinstance(o.start, datetime) and isinstance(o.end, datetime) and not problems:
        check(o.start < o.end, "start", f"must be before end ({o.start} >= {o.end})")
    for name in ("cradle_id", "api_key"):
        check(isinstance(getattr(o, name), str), name, "must be a string")
    for name in ("listen", "canary_listen"):
        try:
            split_listen(getattr(o, name))
        except ValueError as exc:
            problems.append(OptionError(name, str(exc)))
    return problems


def split_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 hosts in brackets) into its parts; port 0 picks a free one."""
    if not isinstance(text, str) or ":" not in text:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    host, _, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be 0..65535, got {port_text!r}")
    return host or "0.0.0.0", int(port_text)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
