"""The list bodies: `/recordings` and `/conversations` answers read into Listings.

A list body comes from a server we do not control, so reading it fails in two ways only: a body
of the wrong shape fails the call (RetriableError, so the window is listed again), while one bad
entry is set aside as malformed with its evidence, and never costs the rest of the window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from archiver.conversations import Conversation
from archiver.errors import MalformedEntry, RetriableError
from archiver.models import Recording, Window

# One logger for the whole client, as before it was split into modules.
log = structlog.get_logger("archiver.cradle")

# How much of a hostile value goes into a log line or an error: enough to recognise it.
SHOWN_BODY_CHARS = 80
EVIDENCE_CHARS = 2000  # a malformed entry as kept in the checkpoint
# Integers longer than this in a list body are read as floats (so as infinity when huge): Python
# refuses to parse an int of over 4,300 digits, which would fail the whole list for one entry.
MAX_INT_DIGITS = 30


@dataclass(frozen=True)
class Listing:
    """One list call's answer: valid recordings, malformed entries, and whether it looked cut."""

    window: Window
    recordings: list[Recording]
    malformed: list[tuple[str, str]] = field(default_factory=list)  # (reason, raw entry)
    truncated: bool = False

    @property
    def size(self) -> int:
        return len(self.recordings) + len(self.malformed)

    @property
    def ids(self) -> list[str]:
        return [recording.recording_id for recording in self.recordings]


@dataclass(frozen=True)
class ConversationListing:
    """One `/conversations` call's answer. The endpoint gives no `size`, so only a count at
    `split_threshold` makes it look full."""

    window: Window
    conversations: list[Conversation]
    malformed: list[tuple[str, str]] = field(default_factory=list)
    truncated: bool = False

    @property
    def size(self) -> int:
        return len(self.conversations) + len(self.malformed)

    @property
    def ids(self) -> list[str]:
        return [conversation.uuid for conversation in self.conversations]


def decode_json(body: bytes) -> Any:
    """A list body as JSON. JSON is UTF-8 (RFC 8259), whatever charset the header claims: a
    bogus or Latin-1 charset would otherwise crash the decode or garble every name."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RetriableError(
            f"list response is not UTF-8 (byte {exc.start})", reason="malformed_list"
        ) from exc
    try:
        return json.loads(text, parse_int=_bounded_int)
    except (ValueError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the interpreter's stack.
        raise RetriableError(
            f"list response is not JSON ({type(exc).__name__}): {text[:SHOWN_BODY_CHARS]!r}",
            reason="malformed_list",
        ) from exc


def _bounded_int(digits: str) -> int | float:
    return int(digits) if len(digits) <= MAX_INT_DIGITS else float(digits)


def parse_listing(window: Window, body: Any, now: datetime) -> Listing:
    """Validate a list response; a bad shape fails the call, a bad entry is set aside."""
    if not isinstance(body, dict) or not isinstance(body.get("recordings"), list):
        raise RetriableError("list response has no recordings array", reason="malformed_list")
    recordings: list[Recording] = []
    malformed: list[tuple[str, str]] = []
    for entry in body["recordings"]:
        try:
            recording = Recording.from_api(entry, now=now)
        except MalformedEntry as exc:
            malformed.append((str(exc), _evidence(entry)))
            continue
        except Exception as exc:  # a validator bug must cost one entry, never the window
            log.exception("entry.unreadable", window=str(window))
            malformed.append((f"entry could not be read: {type(exc).__name__}", _evidence(entry)))
            continue
        if recording.duration_seconds is None:
            log.warning("entry.no_duration", recording_id=recording.recording_id)
        recordings.append(recording)
    size = body.get("size")
    # A `size` larger than what came back means the server cut the list short. A bool is not
    # a count, whatever Python thinks of True.
    truncated = (
        isinstance(size, int) and not isinstance(size, bool) and size > len(body["recordings"])
    )
    return Listing(window, recordings, malformed, truncated)


def parse_conversations(window: Window, body: Any, now: datetime) -> ConversationListing:
    """Validate a conversations response as `parse_listing` does a recordings one."""
    if not isinstance(body, dict) or not isinstance(body.get("conversations"), list):
        raise RetriableError(
            "conversations response has no conversations array", reason="malformed_list"
        )
    conversations: list[Conversation] = []
    malformed: list[tuple[str, str]] = []
    for entry in body["conversations"]:
        try:
            conversations.append(Conversation.from_api(entry, now=now))
        except MalformedEntry as exc:
            malformed.append((str(exc), _evidence(entry)))
        except Exception as exc:  # a validator bug must cost one entry, never the window
            log.exception("conversation.unreadable", window=str(window))
            malformed.append((f"entry could not be read: {type(exc).__name__}", _evidence(entry)))
    return ConversationListing(window, conversations, malformed)


def _evidence(entry: Any) -> str:
    """The raw entry as kept in the checkpoint: JSON, cut to EVIDENCE_CHARS."""
    try:
        return json.dumps(entry, sort_keys=True, default=str)[:EVIDENCE_CHARS]
    except (ValueError, TypeError, RecursionError):
        return f"<{type(entry).__name__} that cannot be shown>"
