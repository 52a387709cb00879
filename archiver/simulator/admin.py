"""The /_sim/ endpoints: stats (webhooks too), the generated recordings and conversations, and
fault switches at run time.

They skip auth and the rate rules: tests and benchmarks poll them while the archiver runs, and
that must not disturb what is being measured.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from archiver.simulator.conversations import SimConversation
from archiver.simulator.data import SimRecording
from archiver.simulator.state import SimState
from archiver.simulator.transport import SimHandler

PREFIX = "/_sim/"
_MAX_BODY = 1 << 20


def handle(handler: SimHandler, method: str) -> None:
    state = handler.server.state
    target = urlsplit(handler.path)
    try:
        body = _read_body(handler) if method == "POST" else b""
        status, document = _route(state, method, target.path, parse_qs(target.query), body)
    except (ValueError, TypeError) as exc:
        status, document = 400, {"error": str(exc)}
    handler.send_json(status, document)


def _route(
    state: SimState, method: str, path: str, query: dict[str, list[str]], body: bytes
) -> tuple[int, Any]:
    if (method, path) == ("GET", "/_sim/stats"):
        return 200, state.counters.snapshot()
    if (method, path) == ("GET", "/_sim/recordings"):
        with_sha = query.get("sha256", ["0"])[0].lower() in ("1", "true", "yes")
        return 200, [describe(state, r, with_sha) for r in state.catalog.recordings()]
    if (method, path) == ("GET", "/_sim/conversations"):
        return 200, [describe_conversation(c) for c in state.calls.items]
    if (method, path) == ("GET", "/_sim/faults"):
        return 200, state.switches.runtime_switches()
    if (method, path) == ("POST", "/_sim/faults"):
        changes = json.loads(body or b"{}")
        if not isinstance(changes, dict):
            raise ValueError("expected a JSON object of fault switches")
        state.set_faults(**{key.replace("-", "_"): value for key, value in changes.items()})
        return 200, state.switches.runtime_switches()
    if (method, path) == ("POST", "/_sim/reset-stats"):
        state.counters.reset()
        return 200, {"ok": True}
    return 404, {"error": f"no such simulator endpoint: {method} {path}"}


def describe(state: SimState, recording: SimRecording, with_sha: bool) -> dict[str, Any]:
    """One recording as GET /_sim/recordings shows it."""
    described: dict[str, Any] = {
        "id": recording.recording_id,
        "startedAt": recording.entry["startedAt"],
        "durationSeconds": recording.duration_seconds,
        "size": recording.size,
        "visible_at": recording.visible_at.isoformat(),
        "late": recording.late,
        "poison": recording.poison,
        "url": recording.url,
    }
    if with_sha:
        described["sha256"] = state.body_sha256(recording.recording_id)
    return described


def describe_conversation(conversation: SimConversation) -> dict[str, Any]:
    """One conversation as GET /_sim/conversations shows it: the truth an exporter's output is
    held against (its final status and revision, and when each version is listed)."""
    return {
        "uuid": conversation.uuid,
        "startedAt": conversation.entry["startedAt"],
        "ended_at": conversation.ended_at.isoformat(),
        "nature": conversation.nature,
        "status": conversation.status,
        "revision": conversation.revision,
        "recording_ids": list(conversation.recording_ids),
        "visible_at": conversation.visible_at.isoformat(),
        "versions_since": [version.since.isoformat() for version in conversation.versions],
    }


def _read_body(handler: SimHandler) -> bytes:
    # Read it all even when unused, or a keep-alive connection would parse it as a request.
    length = int(handler.headers.get("Content-Length") or 0)
    if not 0 <= length <= _MAX_BODY:
        raise ValueError(f"request body of {length} bytes is not accepted")
    return handler.rfile.read(length)
