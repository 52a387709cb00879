"""The bodies of the two list endpoints, built from the catalog."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from archiver.models import format_time, parse_time
from archiver.simulator.conversations import SimConversation
from archiver.simulator.data import Item


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
    if root != base_url and isinstance(url, str):
        return {**entry, "url": _rooted(url, root, base_url)}
    return entry


def recordings_body(items: list[Item], root: str, base_url: str, cap: int | None) -> dict[str, Any]:
    entries = [listed_entry(item, root, base_url) for item in items]
    if cap is not None:
        entries = entries[:cap]
    return {"recordings": entries, "size": len(entries)}


def conversations_body(
    conversations: list[SimConversation], now: datetime, root: str, base_url: str, cap: int | None
) -> dict[str, Any]:
    """Call history in the collection's example shape, each as listed at `now`."""
    listed = [_listed_conversation(c.entry_at(now), root, base_url) for c in conversations]
    if cap is not None:
        listed = listed[:cap]
    return {"conversations": listed}


def _listed_conversation(entry: dict[str, Any], root: str, base_url: str) -> dict[str, Any]:
    """Its recording urls name the host the client used, as `listed_entry` explains."""
    if root == base_url:
        return entry
    urls = [_rooted(recording["url"], root, base_url) for recording in entry["recordings"]]
    return {**entry, "recordings": [{"url": url} for url in urls]}


def _rooted(url: str, root: str, base_url: str) -> str:
    return root + url[len(base_url) :] if url.startswith(base_url + "/") else url
