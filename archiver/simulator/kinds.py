"""What a simulator option may hold: each kind checks a value and reads its flag's text.

A kind is the one place an option's range is written. `SimulatorOptions` asks it about values
and the `simulate` flags ask it about text, so the two cannot drift apart (they had: the flag
took any --large-size above the minimum, and only the options refused one over 100 MB).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import Field, dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from archiver.models import parse_time

T = TypeVar("T")


@dataclass(frozen=True)
class Kind:
    """Any value (the seed); its flag's text is read by `type`. Subclasses narrow it."""

    type: Callable[[str], Any] = str

    def problem(self, value: object) -> str | None:
        """What is wrong with `value`, worded to follow the option's name; None if nothing."""
        return None

    def flag(self) -> dict[str, Any]:
        """How argparse reads the flag. `int` goes bare, as argparse words its error itself;
        the readers below raise ArgumentTypeError, whose message argparse shows."""
        return {"type": self.type}


@dataclass(frozen=True)
class Text(Kind):
    def problem(self, value: object) -> str | None:
        return None if isinstance(value, str) else "must be a string"


@dataclass(frozen=True)
class OnOff(Kind):
    """On or off; the flag takes no value and turns it on."""

    def flag(self) -> dict[str, Any]:
        return {"action": "store_true"}


@dataclass(frozen=True)
class Choice(Kind):
    choices: tuple[str, ...] = ()

    def problem(self, value: object) -> str | None:
        if value in self.choices:
            return None
        return f"must be one of {', '.join(self.choices)}, got {value!r}"

    def flag(self) -> dict[str, Any]:
        return {"choices": self.choices}


@dataclass(frozen=True)
class Number(Kind):
    """`type` (int, or float which also takes an int) from `low` up to `high`, both included.

    The options' message writes bounds as a person would ("must be 0..1, got 2"), the flag's as
    Python does ("must be 0.0..1.0, got 2"): both read as they did before they were derived.
    """

    low: float = 0
    high: float | None = None
    # What a value must be, with {low} and {high}; by default the bare range.
    words: str = ""

    def problem(self, value: object) -> str | None:
        number = (int,) if self.type is int else (int, float)
        if isinstance(value, number) and not isinstance(value, bool) and self._within(value):
            return None
        words = self.words or ("{low}..{high}" if self.high is not None else ">= {low}")
        low, high = (f"{b:g}" if isinstance(b, float) else b for b in (self.low, self.high))
        return f"must be {words.format(low=low, high=high)}, got {value!r}"

    def flag(self) -> dict[str, Any]:
        return {"type": self._read}

    def _within(self, value: Any) -> bool:
        # Written as a range, not as two refusals, so NaN is outside it.
        return self.low <= value and (self.high is None or value <= self.high)

    def _read(self, text: str) -> Any:
        try:
            value = self.type(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
        if not self._within(value):
            span = f"{self.low}..{self.high}" if self.high is not None else f">= {self.low}"
            raise argparse.ArgumentTypeError(f"must be {span}, got {text}")
        return value


@dataclass(frozen=True)
class Checked(Kind):
    """Text whose flag is refused with the same words as the option (`problem`)."""

    def flag(self) -> dict[str, Any]:
        return {"type": self._read}

    def _read(self, text: str) -> str:
        if problem := self.problem(text):
            raise argparse.ArgumentTypeError(problem)
        return text


@dataclass(frozen=True)
class Listen(Checked):
    """`HOST:PORT` to listen on."""

    def problem(self, value: object) -> str | None:
        try:
            split_listen(value)
        except ValueError as exc:
            return str(exc)
        return None


@dataclass(frozen=True)
class Url(Checked):
    """An http:// or https:// url with a host."""

    def problem(self, value: object) -> str | None:
        parts = urlsplit(value) if isinstance(value, str) else None
        if parts and parts.scheme in ("http", "https") and parts.hostname:
            return None
        return f"must be an http:// or https:// url, got {value!r}"


@dataclass(frozen=True)
class Time(Kind):
    """A timezone-aware datetime; the flag takes ISO 8601 in UTC."""

    def problem(self, value: object) -> str | None:
        if isinstance(value, datetime) and value.tzinfo is not None:
            return None
        return f"must be a timezone-aware datetime, got {value!r}"

    def flag(self) -> dict[str, Any]:
        return {"type": self._read}

    def _read(self, text: str) -> datetime:
        try:
            return parse_time(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc} (e.g. 2024-06-01T00:00:00Z)") from exc


@dataclass(frozen=True)
class Declared:
    """One option's declaration, kept in its dataclass field's metadata under "option"."""

    kind: Kind
    help: str
    flag: str  # "" for "--" and the field's name with dashes
    runtime: bool  # `set_faults` may change it while the simulator runs
    flag_default: Any  # None for the field's own default


def option(
    default: T,
    kind: Kind,
    help: str,
    *,
    flag: str = "",
    runtime: bool = False,
    flag_default: Any = None,
    repr: bool = True,
) -> T:
    """A field declared once: default, kind, help, flag. None is valid only for an option
    whose default is None, where it means "not set"."""
    declared = Declared(kind, help, flag, runtime, flag_default)
    return field(default=default, repr=repr, metadata={"option": declared})


def switch(default: T, kind: Kind, help: str) -> T:
    """An option that `set_faults` (and POST /_sim/faults) may change while the simulator runs."""
    return option(default, kind, help, runtime=True)


def declared(f: Field[Any]) -> Declared | None:
    return f.metadata.get("option")


def split_listen(text: object) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 hosts in brackets) into its parts; port 0 picks a free one."""
    if not isinstance(text, str) or ":" not in text:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    host, _, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be 0..65535, got {port_text!r}")
    return host or "0.0.0.0", int(port_text)
