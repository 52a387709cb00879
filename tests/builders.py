"""Builders shared by every test tier: real MP3 bodies, the list entries and recordings that name
them, the staged files the sink is handed, and config files for the CLI.

Each builds a complete, valid value; a test names only what it is about (`recording(agent1=...)`)
and leaves the rest to the defaults here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from archiver.models import Recording, StagedFile
from archiver.simulator.body import iter_body

RECORDING_ID = "0b6a3c1e-8f7d-4c2a-9e1b-5d4f3a2b1c0d"
CRADLE_URL = "https://api.cradle.io"


def mp3(size: int = 10_240, name: str = "test") -> bytes:
    """A real MP3 of `size` bytes: an ID3v2 tag, then MPEG-1 Layer III frames (128 kbps,
    44.1 kHz), the same bytes the simulator serves; the same for the same name."""
    return b"".join(iter_body(7, name, size))


def entry(
    recording_id: str = RECORDING_ID, *, base_url: str = CRADLE_URL, **fields: object
) -> dict[str, object]:
    """A Cradle API list entry with every field, for `recording_id` served from `base_url`.
    `fields` replace values by their API names (`startedAt="..."`); None leaves a field out."""
    values: dict[str, object] = {
        "url": f"{base_url}/api/v1/public/recordings/{recording_id}.mp3?source=api",
        "startedAt": "2022-06-01T10:15:30.250Z",
        "durationSeconds": 93,
        "nature": "in",
        "agent1": "Alice Smith",
        "agent2": "Bob Jones",
        "cradleNumber": "+4930123456",
        "thirdPartyNumber": "+4940987654",
        **fields,
    }
    return {name: value for name, value in values.items() if value is not None}


def recording(
    recording_id: str = RECORDING_ID, *, base_url: str = CRADLE_URL, **fields: object
) -> Recording:
    """The recording `entry(...)` lists, read as the client reads it."""
    return Recording.from_api(entry(recording_id, base_url=base_url, **fields))


def leap_day_recording(recording_id: str = RECORDING_ID) -> Recording:
    """Started at 00:30 on 1 March 2024 in Paris, which is 29 February in UTC: the day its key
    must carry. Its agent's name is not ASCII."""
    return recording(recording_id, startedAt="2024-03-01T00:30:00+01:00", agent1="Zoë O'Neill")


def stage(directory: Path, body: bytes, name: str = "staged.mp3") -> StagedFile:
    """`body` written to `directory` as the spool leaves a verified download."""
    path = directory / name
    path.write_bytes(body)
    return StagedFile(path=path, size=len(body), sha256=hashlib.sha256(body).hexdigest())


def write_toml(
    path: Path,
    tables: Mapping[str, Mapping[str, Any]],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """`tables` as a TOML file, each table in `overrides` merged into its own key by key (a
    table of its own when new). Values are strings, numbers and booleans, whose JSON is TOML."""
    merged = {name: dict(values) for name, values in tables.items()}
    for name, values in (overrides or {}).items():
        merged[name] = {**merged.get(name, {}), **values}
    path.write_text(toml(merged))
    return path


def toml(tables: Mapping[str, Mapping[str, Any]]) -> str:
    lines = []
    for name, values in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"
