"""The simulator's settings: one frozen value, each field declared once with its kind and help.

The declaration is the only place an option's default, range and help are written: validation
here and the `simulate` flags (`arguments`) are both read off it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime

from archiver.models import utc_now
from archiver.simulator.kinds import (
    Choice,
    Kind,
    Listen,
    Number,
    OnOff,
    Text,
    Time,
    Url,
    declared,
    option,
    switch,
)

POISON_KINDS = ("html", "offhost", "redirect", "404")
# Smallest body that still holds the ID3 tag and a whole MPEG frame.
MIN_BODY_SIZE = 512
# The API documents recordings "up to 100 MB".
MAX_BODY_SIZE = 100_000_000

LISTEN, TIME, TEXT = Listen(), Time(), Text()
RATE = Number(float, 0.0, 1.0)
SECONDS = Number(float, 0.0, words="seconds >= {low}")
COUNT = Number(int, 0, words="a count >= {low}")
INTEGER = Number(int, 1, words="an integer >= {low}")
BYTE_RATE = Number(int, 1, words="bytes per second >= {low}")
SIZE = Number(int, MIN_BODY_SIZE, words="at least {low} bytes")
LARGE_SIZE = Number(int, MIN_BODY_SIZE, MAX_BODY_SIZE, "{low}..{high} bytes")
BOUNDS = Choice(choices=("half-open", "inclusive", "exclusive"))
RETRY_AFTER = Choice(choices=("seconds", "date", "none", "mixed"))
# Which responses the body faults (drop_body, truncate, slow_body) may hit.
BODY_FAULT_SCOPE = Choice(choices=("all", "downloads"))


class OptionError(ValueError):
    """A setting out of range; `option` names the field so the CLI can name its flag."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


@dataclass(frozen=True, kw_only=True)
class SimulatorOptions:
    """Everything the simulator can be told. Every field has a default; all faults are off.

    A `switch` may change while the simulator runs; an `option` is fixed, as the data (seed,
    time range, poison ...) is generated once.
    """

    # A person running `simulate` wants a port to point the archiver at; code wants any free one.
    listen: str = option(
        "127.0.0.1:0", LISTEN, "API listen address HOST:PORT", flag_default="127.0.0.1:8080"
    )
    canary_listen: str = option(
        "127.0.0.1:0", LISTEN, "the off-host canary's HOST:PORT (0: any port)"
    )
    seed: int = option(1, Kind(int), "seed of the generated data and of fault decisions")
    # None: end is now floored to the minute, start is a day before end.
    start: datetime | None = option(  # noqa: RUF009  a field specifier, as field() is
        None, TIME, "first call time, ISO 8601 UTC (default: a day before --end)"
    )
    end: datetime | None = option(  # noqa: RUF009  a field specifier, as field() is
        None, TIME, "end of the call period (default: now; later simulates live calls)"
    )
    per_hour: float = option(20.0, Number(float, 0.0), "recordings per hour")
    # Live calls that end within a test or a benchmark, not minutes after it.
    max_duration: int | None = option(None, INTEGER, "cap on a call's seconds")
    bytes_per_second: int = option(16_000, INTEGER, "body bytes per call second")
    size: int | None = option(None, SIZE, "fixed body size in bytes (benchmarks)")
    # A share of recordings gets `large_size` bytes whatever their duration, so one account
    # mixes small bodies with ones big enough for multipart uploads.
    large_fraction: float = option(0.0, RATE, "share of recordings of --large-size bytes")
    large_size: int = option(20 * 2**20, LARGE_SIZE, "body size of the large share")
    cradle_id: str = option("demo-id", TEXT, "the CRADLE_ID the API accepts", flag="--id")
    api_key: str = option("demo-key", TEXT, "the CRADLE_API_KEY the API accepts", repr=False)
    rps: int = switch(10, INTEGER, "request starts allowed per second before 429")
    bounds: str = switch("half-open", BOUNDS, "how from/until bound a list window")
    # A few seconds, as Cradle's recordings appear shortly after the end-of-call webhook.
    processing_delay: float = option(5.0, SECONDS, "seconds after a call ends it is listed")
    late_fraction: float = option(0.0, RATE, "share of recordings that are listed late")
    short_audio: float = option(
        0.0, RATE, "share of recordings whose audio is half what durationSeconds says"
    )
    vbr: float = option(0.0, RATE, "share of recordings served as VBR with a Xing frame")
    late_delay: float = option(120.0, SECONDS, "late ones appear this many seconds after start-up")
    boundary_fraction: float = option(0.05, Number(float, 0.0, 0.5), "share on the hour")
    conversation_updates: float = option(
        0.0, RATE, "share of conversations that change once after they are listed"
    )
    conversation_update_delay: float = option(
        120.0, SECONDS, "a change shows this long after the listing or start-up, the later"
    )
    # Posted from a thread of its own, outside the rate rules; only calls ending after start-up.
    webhook_url: str | None = option(
        None, Url(), "POST each conversation here when its call ends (default: no webhooks)"
    )
    webhook_delay: float = option(0.0, SECONDS, "extra seconds before each webhook is posted")
    webhook_drop: float = switch(0.0, RATE, "share of webhooks never posted")
    webhook_repeat: float = switch(0.0, RATE, "share of webhooks posted twice")
    latency: float = switch(0.0, SECONDS, "seconds before every API response")
    # Network jitter: each request reaches the rate gate up to this many seconds late (seeded).
    arrival_jitter: float = switch(0.0, SECONDS, "requests reach the rate gate 0..N s late")
    bandwidth: int | None = switch(None, BYTE_RATE, "cap on body bytes per second")
    list_cap: int | None = switch(None, COUNT, "silently truncate list responses to N entries")
    fault_429: float = switch(0.0, RATE, "share of requests answered 429")
    retry_after: str = switch("seconds", RETRY_AFTER, "Retry-After on injected 429s")
    fault_5xx: float = switch(0.0, RATE, "share of requests answered 500/502/503")
    fault_drop_headers: float = switch(0.0, RATE, "share closed without a response")
    fault_drop_body: float = switch(0.0, RATE, "share reset part-way through the body")
    fault_truncate: float = switch(0.0, RATE, "share whose body is shorter than promised")
    slow_body: float = switch(0.0, RATE, "share of bodies sent at --slow-bytes-per-second")
    slow_bytes_per_second: int = switch(32_000, BYTE_RATE, "speed of slow bodies")
    fault_malformed_list: float = switch(0.0, RATE, "share of lists that are malformed")
    body_fault_scope: str = switch("all", BODY_FAULT_SCOPE, "responses body faults may cut or slow")
    poison_html: int = option(0, COUNT, "recordings whose download is an HTML page")
    poison_offhost: int = option(0, COUNT, "recordings listed with a url on another host")
    poison_redirect: int = option(0, COUNT, "recordings whose download redirects away")
    poison_404: int = option(0, COUNT, "recordings whose download is always 404")
    bad_entries: int = option(0, COUNT, "list entries without url or with a bad startedAt")
    forbid: bool = switch(
        False, OnOff(), "answer every API request 403, as for a key without access"
    )
    # Injected so tests move time forward instead of sleeping; drives visibility only.
    clock: Callable[[], datetime] = field(default=utc_now, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One problem at a time is enough: the CLI names the flag, tests name the field.
        for f in fields(self):
            declaration, value = declared(f), getattr(self, f.name)
            unset = value is None and f.default is None
            if declaration and not unset and (problem := declaration.kind.problem(value)):
                raise OptionError(f.name, problem)
        if self.start is not None and self.end is not None and not self.start < self.end:
            raise OptionError("start", f"must be before end ({self.start} >= {self.end})")

    def runtime_switches(self) -> dict[str, object]:
        """The fields `set_faults` may change, with their current values."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in RUNTIME_FIELDS}


RUNTIME_FIELDS = frozenset(
    f.name for f in fields(SimulatorOptions) if (d := declared(f)) and d.runtime
)
