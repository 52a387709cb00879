"""The bodies of the two list endpoints, built from the catalog."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from archiver.models import format_time, parse_time
from archiver.simulator.data import Item, SimRecording, api_time

_CONVERSATIONS = uuid.UUID("13841652-9d15-4166-a389-1b8b47c7af30")


def parse_window(query: dict[str, list[str]]) -> tuple[datetime, datetime]:
    """`from` and `until` of a list call; ValueError names the parameter that is wrong."""
    bounds = []
    for name in ("from", "until"):
        values = query.get(name)
        if not values or not values[0]:
            raise ValueError(f"missing query parameter {name!r}")
        try:
            bounds.append(parse_time(values[0]))
        except ValueError as exc:
            raise ValueError(f"invalid {name!r}: {exc}") from exc
    since, until = bounds
    if until < since:
        raise ValueError(f"'until' ({format_time(until)}) is before 'from' ({format_time(since)})")
    return since, until


def listed_entry(item: Item, root: str, base_url: str) -> dict[str, Any]:
    """The entry as listed to a client that reached us as `root`.

    Urls name the host the client used (a real API names its own host), so a client configured
    with `localhost` is not told to fetch from `127.0.0.1`. Off-host poison keeps the canary's.
    """
    entry = item.entry
    url = entry.get("url")
    if root != base_url and isinstance(url, str) and url.startswith(base_url + "/"):
        return {**entry, "url": root + url[len(base_url) :]}
    return entry


def recordings_body(items: list[Item], root: str, base_url: str, cap: int | None) -> dict[str, Any]:
    entries = [listed_entry(item, root, base_url) for item in items]
    if cap is not None:
        entries = entries[:cap]
    return {"recordings": entries, "size": len(entries)}


def conversations_body(
    items: list[Item], root: str, base_url: str, cap: int | None
) -> dict[str, Any]:
    """Call history in the collection's example shape, one conversation per recording."""
    conversations = [
        _conversation(item, listed_entry(item, root, base_url)["url"])
        for item in items
        if isinstance(item, SimRecording)
    ]
    if cap is not None:
        conversations = conversations[:cap]
    return {"conversations": conversations}


def _conversation(recording: SimRecording, url: str) -> dict[str, Any]:
    entry = recording.entry
    nature = entry["nature"]
    duration = recording.duration_seconds
    started = api_time(recording.started_at)
    conversation: dict[str, Any] = {
        "uuid": str(uuid.uuid5(_CONVERSATIONS, recording.recording_id)),
        "startedAt": started,
        "nature": nature,
        "status": "completed" if nature == "out" else "successful",
        "durationSeconds": duration,
    }
    if nature != "team":
        conversation["cradleNumber"] = entry["cradleNumber"]
        conversation["thirdPartyNumbers"] = [
            {
                "number": entry["thirdPartyNumber"],
                "durationSeconds": duration,
                "status": "completed",
                "direction": nature,
            }
        ]
    users = [_user(entry["agent1"], nature, duration, started, ring=0 if nature == "out" else 7)]
    if "agent2" in entry:
        joined = api_time(recording.started_at + timedelta(seconds=min(duration, 30)))
        users.append(_user(entry["agent2"], nature, max(duration - 30, 0), joined, ring=5))
    conversation["users"] = users
    conversation["recordings"] = [{"url": url}]
    return conversation


def _user(email: str, nature: str, duration: int, started: str, ring: int) -> dict[str, Any]:
    return {
        "email": email,
        "status": "dialled" if nature == "out" else "answered",
        "durationSeconds": duration,
        "rangForSeconds": ring,
        "presence": "available",
        "startedAt": started,
    }
