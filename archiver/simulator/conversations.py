"""The call history: conversations that reference the generated recordings.

A real account's history is not one call per recording. Missed calls and voicemail leave no
recording, and a transferred call leaves two (the second, the transferee's leg) under one
conversation. So each hour's recordings are grouped into calls, and calls without a recording
are added, from a random stream of their own: the recordings, their ids and bodies stay exactly
what they were before there were conversations (e2e tests and benchmarks count them), and an
hour's calls, like its recordings, depend only on the seed and that hour.

A conversation is listed, like its recordings, once its call has ended and been processed (a
transfer once both legs are). With `conversation_updates` a share changes once after that (a
missed call becomes voicemail, corrected durations), so an exporter sees a second revision.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, NamedTuple

from archiver.simulator.data import Period, SimRecording, api_time
from archiver.simulator.options import SimulatorOptions

# The uuid of a conversation with recordings is uuid5(this, its first recording's id), as it
# was when every recording was a conversation of its own.
_NAMESPACE = uuid.UUID("13841652-9d15-4166-a389-1b8b47c7af30")
# Per recording: the chance its call was transferred to a second leg, and the chance of one
# call without a recording (missed or voicemail) beside it. With a partner found for most
# transfers, about 14 % of calls have no recording, 8 % two and the rest one.
TRANSFER_SHARE = 0.10
UNRECORDED_SHARE = 0.15
VOICEMAIL_SHARE = 0.35  # of the calls without a recording; the rest were missed
# A transfer's second leg starts no later than this after the first leg ends.
TRANSFER_GAP = timedelta(minutes=15)
_AGENTS = 12
_CRADLE_NUMBERS = ("+14152125161", "+442071838750", "+6498879333", "+61291234567")
_DRAWS = 8  # random values per recording, used or not, so one choice never shifts another


@dataclass(frozen=True)
class Version:
    """How a conversation is listed from `since` on."""

    since: datetime
    entry: dict[str, Any] = field(compare=False)


@dataclass(frozen=True)
class SimConversation:
    """One call as the conversations endpoint lists it (and its webhook posts it)."""

    uuid: str
    started_at: datetime
    ended_at: datetime
    nature: str
    recording_ids: tuple[str, ...]
    versions: tuple[Version, ...]  # the first from when it is listed, a change after it

    @property
    def visible_at(self) -> datetime:
        return self.versions[0].since

    @property
    def revision(self) -> int:
        """The revision an exporter ends on, having listed it after every change."""
        return len(self.versions)

    @property
    def status(self) -> str:
        """The status it ends with."""
        return str(self.versions[-1].entry["status"])

    @property
    def entry(self) -> dict[str, Any]:
        """The object it ends as."""
        return self.versions[-1].entry

    def revision_at(self, now: datetime) -> int:
        """How many versions have been listed by `now`: 0 before it is listed."""
        return sum(1 for version in self.versions if version.since <= now)

    def entry_at(self, now: datetime) -> dict[str, Any]:
        """The object listed at `now`; the first version before then (a webhook's body)."""
        return self.versions[max(self.revision_at(now), 1) - 1].entry


class Calls:
    """Every conversation sorted by start, with lookups by window."""

    def __init__(self, conversations: list[SimConversation]) -> None:
        self.items = sorted(conversations, key=lambda c: (c.started_at, c.uuid))
        self._times = [c.started_at for c in self.items]

    def window(
        self, since: datetime, until: datetime, bounds: str, now: datetime
    ) -> list[SimConversation]:
        """Conversations in the window under the given bound semantics, listed by `now`."""
        lo = (bisect_right if bounds == "exclusive" else bisect_left)(self._times, since)
        hi = (bisect_right if bounds == "inclusive" else bisect_left)(self._times, until)
        return [c for c in self.items[lo:hi] if c.visible_at <= now]

    def between(self, since: datetime | None, until: datetime | None) -> list[SimConversation]:
        """Those started in [since, until), whether listed yet or not."""
        lo = 0 if since is None else bisect_left(self._times, since)
        hi = len(self.items) if until is None else bisect_left(self._times, until)
        return self.items[lo:hi]


def generate(
    options: SimulatorOptions, period: Period, recordings: list[SimRecording], now: datetime
) -> Calls:
    """The call history over `period` for these recordings; `now` is when the simulator
    started (a change shows `conversation_update_delay` after it at the earliest)."""
    by_hour: dict[datetime, list[SimRecording]] = defaultdict(list)
    for recording in recordings:
        by_hour[recording.started_at.replace(minute=0, second=0, microsecond=0)].append(recording)
    made: list[SimConversation] = []
    hour = period.start.replace(minute=0, second=0, microsecond=0)
    while hour < period.end:
        made.extend(
            _conversation(options, call, now)
            for call in _hour(options, period, hour, by_hour[hour])
        )
        hour += timedelta(hours=1)
    return Calls(made)


class _Call(NamedTuple):
    legs: tuple[SimRecording, ...]
    entry: dict[str, Any]
    started_at: datetime
    ended_at: datetime


def _hour(
    options: SimulatorOptions, period: Period, hour: datetime, recordings: list[SimRecording]
) -> list[_Call]:
    """An hour's calls: its recordings alone or in transferred pairs, and unrecorded calls."""
    rng = random.Random(f"{options.seed}:conversations:{hour:%Y-%m-%dT%H}")
    taken: set[str] = set()
    calls: list[_Call] = []
    for index, recording in enumerate(recordings):
        draws = [rng.random() for _ in range(_DRAWS)]
        if draws[0] < UNRECORDED_SHARE:
            started_at = hour + timedelta(seconds=int(draws[1] * 3600))
            if period.start <= started_at < period.end:
                calls.append(_unrecorded(options, hour, index, started_at, draws[2:7]))
        if recording.recording_id in taken:
            continue  # already the second leg of an earlier call
        legs: tuple[SimRecording, ...] = (recording,)
        if draws[7] < TRANSFER_SHARE and (second := _second_leg(recordings, index, taken)):
            taken.add(second.recording_id)
            legs = (recording, second)
        calls.append(_recorded(legs))
    return calls


def _second_leg(recordings: list[SimRecording], index: int, taken: set[str]) -> SimRecording | None:
    """The next free recording (in start order) after `recordings[index]`, of the same nature,
    that starts while or soon after that one ran: the leg of the agent the call went to."""
    first = recordings[index]
    ends = _end(first) + TRANSFER_GAP
    for other in islice(recordings, index + 1, None):
        if other.started_at > ends:
            break
        if other.recording_id not in taken and other.entry["nature"] == first.entry["nature"]:
            return other
    return None


def _end(recording: SimRecording) -> datetime:
    return recording.started_at + timedelta(seconds=recording.duration_seconds)


def _recorded(legs: tuple[SimRecording, ...]) -> _Call:
    first = legs[0]
    entry = first.entry
    nature = entry["nature"]
    ended_at = max(_end(leg) for leg in legs)
    duration = int((ended_at - first.started_at).total_seconds())
    conversation: dict[str, Any] = {
        "uuid": str(uuid.uuid5(_NAMESPACE, first.recording_id)),
        "startedAt": entry["startedAt"],
        "nature": nature,
        "status": "completed" if nature == "out" else "successful",
        "durationSeconds": duration,
    }
    if nature != "team":
        conversation["cradleNumber"] = entry["cradleNumber"]
    numbers = [] if nature == "team" else [leg.entry["thirdPartyNumber"] for leg in legs]
    conversation["thirdPartyNumbers"] = [
        {"number": n, "durationSeconds": duration, "status": "completed", "direction": nature}
        for i, n in enumerate(numbers)
        if n not in numbers[:i]  # a transfer's legs may name the same caller
    ]
    conversation["users"] = _users(legs)
    conversation["recordings"] = [{"url": leg.url} for leg in legs]
    return _Call(legs, conversation, first.started_at, ended_at)


def _users(legs: tuple[SimRecording, ...]) -> list[dict[str, Any]]:
    first, nature = legs[0], legs[0].entry["nature"]
    duration, started = first.duration_seconds, first.entry["startedAt"]
    users = [_user(first.entry["agent1"], nature, duration, started, 0 if nature == "out" else 7)]
    if "agent2" in first.entry:
        joined = api_time(first.started_at + timedelta(seconds=min(duration, 30)))
        users.append(_user(first.entry["agent2"], nature, max(duration - 30, 0), joined, ring=5))
    for leg in legs[1:]:
        # The transferee answers the call handed over to them, whichever way it began.
        users.append(
            _user(leg.entry["agent1"], "in", leg.duration_seconds, leg.entry["startedAt"], 5)
        )
    return users


def _user(email: str, nature: str, duration: int, started: str, ring: int) -> dict[str, Any]:
    return {
        "email": email,
        "status": "dialled" if nature == "out" else "answered",
        "durationSeconds": duration,
        "rangForSeconds": ring,
        "presence": "available",
        "startedAt": started,
    }


def _unrecorded(
    options: SimulatorOptions,
    hour: datetime,
    index: int,
    started_at: datetime,
    draws: list[float],
) -> _Call:
    """An inbound or team call nobody answered: missed, or the caller left a voicemail."""
    seed = options.seed
    nature_roll, status_roll, ring_roll, agent_roll, number_roll = draws
    nature = "in" if nature_roll < 0.8 else "team"
    status = "voicemail" if status_roll < VOICEMAIL_SHARE else "missed"
    ring = 5 + int(ring_roll * 40)
    # A voicemail goes on after the ringing while the caller speaks.
    duration = ring + (10 + int(ring_roll * 1000) % 80 if status == "voicemail" else 0)
    if options.max_duration is not None:
        ring, duration = min(ring, options.max_duration), min(duration, options.max_duration)
    agent = int(agent_roll * _AGENTS) + 1
    started = api_time(started_at)
    conversation: dict[str, Any] = {
        "uuid": str(uuid.uuid5(_NAMESPACE, f"{seed}:{hour:%Y-%m-%dT%H}:unrecorded:{index}")),
        "startedAt": started,
        "nature": nature,
        "status": status,
        "durationSeconds": duration,
        "thirdPartyNumbers": [],
    }
    users = [_rang(f"agent{agent}@example.com", ring, started)]
    if nature == "in":
        conversation["cradleNumber"] = _CRADLE_NUMBERS[int(number_roll * len(_CRADLE_NUMBERS))]
        leg = "completed" if status == "voicemail" else "noanswer"
        area, line = 201 + int(number_roll * 788), int(number_roll * 1e13) % 10_000_000
        conversation["thirdPartyNumbers"] = [
            {"number": f"+1{area}{line:07d}", "durationSeconds": duration, "status": leg,
             "direction": "in"}
        ]  # fmt: skip
    else:
        caller = f"agent{agent % _AGENTS + 1}@example.com"
        users.insert(0, {**_user(caller, "out", duration, started, 0), "durationSeconds": 0})
    conversation["users"] = users
    conversation["recordings"] = []
    return _Call((), conversation, started_at, started_at + timedelta(seconds=duration))


def _rang(email: str, ring: int, started: str) -> dict[str, Any]:
    return {
        "email": email,
        "status": "noanswer",
        "durationSeconds": 0,
        "rangForSeconds": ring,
        "presence": "available",
        "startedAt": started,
    }


def _conversation(options: SimulatorOptions, call: _Call, now: datetime) -> SimConversation:
    legs, entry = call.legs, call.entry
    processed = call.ended_at + timedelta(seconds=options.processing_delay)
    # Listed with its last recording: a late one holds the whole conversation back.
    visible_at = max([processed, *(leg.visible_at for leg in legs)])
    versions = [Version(visible_at, entry)]
    if _changes(options, entry["uuid"]):
        since = max(visible_at, now) + timedelta(seconds=options.conversation_update_delay)
        versions.append(Version(since, _changed(entry)))
    return SimConversation(
        uuid=entry["uuid"],
        started_at=call.started_at,
        ended_at=call.ended_at,
        nature=entry["nature"],
        recording_ids=tuple(leg.recording_id for leg in legs),
        versions=tuple(versions),
    )


def _changes(options: SimulatorOptions, conversation_uuid: str) -> bool:
    """Whether this conversation changes: a roll of its own, so turning the switch on leaves
    every other conversation as it was (and at 0, the default, nothing is rolled)."""
    if options.conversation_updates <= 0:
        return False
    digest = hashlib.sha256(f"{options.seed}|{conversation_uuid}|update".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < options.conversation_updates


def _changed(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry after Cradle revised it: a missed call's voicemail was processed, or the
    users' durations were corrected (after-call work counted in)."""
    if entry["status"] == "missed":
        return {**entry, "status": "voicemail"}
    users = [{**user, "durationSeconds": user["durationSeconds"] + 15} for user in entry["users"]]
    return {**entry, "users": users}
