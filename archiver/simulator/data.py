"""The generated account: recordings, poison ones and malformed list entries.

Each hour of the period is generated from its own seed, so a recording depends only on the seed
and its hour: moving `end` (which defaults to now) adds or removes hours without changing the
others. Every recording draws the same number of random values whatever the options, so turning
on late arrivals, say, does not reshuffle start times or agents.
"""

from __future__ import annotations

import random
import uuid
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from archiver.simulator.body import vbr_body_size
from archiver.simulator.options import MAX_BODY_SIZE, MIN_BODY_SIZE, POISON_KINDS, SimulatorOptions

_NAMESPACE = uuid.UUID("6ac27f15-a68a-48df-82b2-d1f917f5cc14")
_CRADLE_NUMBERS = ("+14152125161", "+442071838750", "+6498879333", "+61291234567")
_AGENTS = 12
_BAD_STARTED_AT = ("not-a-time", "2021-13-45T25:61:00Z", "", None, 1700000000, "yesterday")
RECORDING_PATH = "/api/v1/public/recordings/"


@dataclass(frozen=True)
class SimRecording:
    """One generated recording, as listed and as served."""

    recording_id: str
    started_at: datetime
    duration_seconds: int
    size: int
    visible_at: datetime
    poison: str | None
    entry: dict[str, Any] = field(compare=False)
    late: bool = False
    short_audio: bool = False  # the body holds half the audio the list claims
    vbr: bool = False  # served as VBR frames after a Xing frame, not as CBR 128 kbps

    @property
    def url(self) -> str:
        return str(self.entry["url"])


@dataclass(frozen=True)
class BadEntry:
    """A list entry the archiver must skip: no url, or a startedAt that is not a time.

    `hidden_at` places it in windows the way the server's own database would.
    """

    hidden_at: datetime
    visible_at: datetime
    entry: dict[str, Any] = field(compare=False)


Item = SimRecording | BadEntry


def api_time(value: datetime) -> str:
    """The API's listing format, e.g. 2021-03-11T00:18:39Z."""
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def recording_url(root: str, recording_id: str) -> str:
    return f"{root}{RECORDING_PATH}{recording_id}.mp3?source=api"


class Catalog:
    """Every item sorted by time, with lookups by id and by window."""

    def __init__(self, items: list[Item]) -> None:
        self.items = sorted(items, key=_sort_key)
        self._times = [_time_of(item) for item in self.items]
        self.by_id = {i.recording_id: i for i in self.items if isinstance(i, SimRecording)}

    def recordings(self) -> list[SimRecording]:
        return [i for i in self.items if isinstance(i, SimRecording)]

    def bad_entries(self) -> list[BadEntry]:
        return [i for i in self.items if isinstance(i, BadEntry)]

    def window(self, since: datetime, until: datetime, bounds: str, now: datetime) -> list[Item]:
        """Items in the window under the given bound semantics that are visible at `now`."""
        lo = (bisect_right if bounds == "exclusive" else bisect_left)(self._times, since)
        hi = (bisect_right if bounds == "inclusive" else bisect_left)(self._times, until)
        return [item for item in self.items[lo:hi] if item.visible_at <= now]


def _time_of(item: Item) -> datetime:
    return item.started_at if isinstance(item, SimRecording) else item.hidden_at


def _sort_key(item: Item) -> tuple[datetime, str]:
    if isinstance(item, SimRecording):
        return item.started_at, item.recording_id
    return item.hidden_at, "~"


@dataclass(frozen=True)
class Period:
    """The resolved [start, end) the account's calls fall in."""

    start: datetime
    end: datetime


def generate(
    options: SimulatorOptions, period: Period, api_root: str, canary_root: str, now: datetime
) -> Catalog:
    """The whole account for `options` over `period`.

    `now` is when the simulator started: late recordings become visible `late_delay` after it.
    """
    recordings: list[SimRecording] = []
    hour = period.start.replace(minute=0, second=0, microsecond=0)
    while hour < period.end:
        recordings.extend(_hour(options, period, hour, api_root, now))
        hour += timedelta(hours=1)
    recordings.sort(key=lambda r: (r.started_at, r.recording_id))
    recordings = _poison(options, recordings, canary_root)
    return Catalog([*recordings, *_bad_entries(options, period, api_root)])


def _hour(
    options: SimulatorOptions, period: Period, hour: datetime, api_root: str, now: datetime
) -> list[SimRecording]:
    rng = random.Random(f"{options.seed}:{hour:%Y-%m-%dT%H}")
    whole = int(options.per_hour)
    count = whole + (1 if rng.random() < options.per_hour - whole else 0)
    made = []
    for index in range(count):
        draws = [rng.random() for _ in range(12)]
        started_at = hour + timedelta(
            seconds=_offset(draws[0], draws[1], options.boundary_fraction)
        )
        duration = _duration(draws[2], draws[3])
        if options.max_duration is not None:
            duration = min(duration, options.max_duration)
        if not period.start <= started_at < period.end:
            continue
        recording_id = str(uuid.uuid5(_NAMESPACE, f"{options.seed}:{hour:%Y-%m-%dT%H}:{index}"))
        entry = _entry(draws[4:10], started_at, duration)
        entry = {"url": recording_url(api_root, recording_id), **entry}
        late = draws[10] < options.late_fraction
        visible_at = started_at + timedelta(seconds=duration + options.processing_delay)
        if late:
            visible_at = max(visible_at, now + timedelta(seconds=options.late_delay))
        # A draw of its own, so turning the switch on leaves every other recording as it was.
        short = random.Random(f"{options.seed}:short:{recording_id}").random()
        short_audio = short < options.short_audio
        vbr = random.Random(f"{options.seed}:vbr:{recording_id}").random() < options.vbr
        size = _size(options, duration, draws[11], recording_id if vbr else None)
        made.append(
            SimRecording(
                recording_id=recording_id,
                started_at=started_at,
                duration_seconds=duration,
                size=max(size // 2, MIN_BODY_SIZE) if short_audio else size,
                visible_at=visible_at,
                poison=None,
                entry=entry,
                late=late,
                short_audio=short_audio,
                vbr=vbr,
            )
        )
    return made


def _size(options: SimulatorOptions, duration: int, large_roll: float, vbr_id: str | None) -> int:
    """A fixed or large size wins; otherwise the duration's worth of bytes: `bytes_per_second`
    for CBR, whole VBR frames (`vbr_id` names a VBR recording) for VBR, within the bounds."""
    if options.size is not None:
        return options.size
    if large_roll < options.large_fraction:
        return options.large_size
    natural = duration * options.bytes_per_second
    if vbr_id is not None:
        natural = vbr_body_size(vbr_id, duration)
    return min(max(natural, MIN_BODY_SIZE), MAX_BODY_SIZE)


def _offset(roll: float, where: float, boundary_fraction: float) -> int:
    """Seconds into the hour; a share lands exactly on the hour, half hour or a minute."""
    if roll < boundary_fraction:
        return 0
    if roll < 2 * boundary_fraction:
        return 1800 if where < 0.5 else int(where * 60) * 60
    return int(where * 3600)


def _duration(shape: float, value: float) -> int:
    """Mostly 30 s to 10 min (skewed short), some longer, a few up to two hours."""
    if shape < 0.03:
        return 3 + int(value * 27)
    if shape < 0.90:
        return 30 + int(570 * value * value)
    if shape < 0.98:
        return 600 + int(value * 1200)
    return 1800 + int(value * 5400)


def _entry(draws: list[float], started_at: datetime, duration: int) -> dict[str, Any]:
    nature_roll, agent_roll, other_roll, number_roll, third_roll, transfer_roll = draws
    nature = "in" if nature_roll < 0.45 else "out" if nature_roll < 0.85 else "team"
    agent1 = int(agent_roll * _AGENTS) + 1
    agent2 = (agent1 + int(other_roll * (_AGENTS - 1))) % _AGENTS + 1
    entry: dict[str, Any] = {"startedAt": api_time(started_at), "durationSeconds": duration}
    if nature != "team":
        entry["cradleNumber"] = _CRADLE_NUMBERS[int(number_roll * len(_CRADLE_NUMBERS))]
        area, line = 201 + int(third_roll * 788), int(third_roll * 1e13) % 10_000_000
        entry["thirdPartyNumber"] = f"+1{area}{line:07d}"
    entry["agent1"] = f"agent{agent1}@example.com"
    # Team calls always have a second agent; a few external calls were transferred.
    if nature == "team" or transfer_roll < 0.08:
        entry["agent2"] = f"agent{agent2}@example.com"
    entry["nature"] = nature
    return entry


def _poison(
    options: SimulatorOptions, recordings: list[SimRecording], canary_root: str
) -> list[SimRecording]:
    # More poison than recordings just poisons them all.
    wanted = [k for k in POISON_KINDS for _ in range(getattr(options, f"poison_{k}"))]
    wanted = wanted[: len(recordings)]
    picks = random.Random(f"{options.seed}:poison").sample(range(len(recordings)), len(wanted))
    result = list(recordings)
    for index, kind in zip(picks, wanted, strict=True):
        recording = result[index]
        entry = recording.entry
        if kind == "offhost":
            entry = {**entry, "url": recording_url(canary_root, recording.recording_id)}
        result[index] = replace(recording, poison=kind, entry=entry)
    return result


def _bad_entries(options: SimulatorOptions, period: Period, api_root: str) -> list[BadEntry]:
    rng = random.Random(f"{options.seed}:bad")
    span = (period.end - period.start).total_seconds()
    made = []
    for index in range(options.bad_entries):
        hidden_at = period.start + timedelta(seconds=int(rng.random() * span))
        # Even ones lack the url altogether; odd ones have one but no usable startedAt.
        entry = _entry([rng.random() for _ in range(6)], hidden_at, 60)
        if index % 2:
            bad_id = uuid.uuid5(_NAMESPACE, f"{options.seed}:bad:{index}")
            entry = {"url": recording_url(api_root, str(bad_id)), **entry}
            entry["startedAt"] = _BAD_STARTED_AT[index // 2 % len(_BAD_STARTED_AT)]
        visible_at = hidden_at + timedelta(seconds=options.processing_delay)
        made.append(BadEntry(hidden_at=hidden_at, visible_at=visible_at, entry=entry))
    return made
