"""Properties of a whole pass against generated hostile answers, over real HTTP.

Hypothesis writes list entries (any JSON value in any field, hostile urls) and recording bodies
(anything); the real client lists and downloads them from a loopback server, and the real pass
archives into an in-memory store with a real checkpoint. Whatever it writes:
- the pass never raises;
- every entry ends archived, dead-lettered or recorded as malformed; none stays pending;
- the watermark moves to the horizon;
- nothing reaches the canary, another host.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archiver.archive import ArchivePass
from archiver.checkpoint import Checkpoint
from archiver.config import ArchiveConfig
from archiver.errors import MalformedEntry
from archiver.models import Recording, RecordingState
from archiver.spool import Spool
from tests.fakes import FakeStore
from tests.unit.test_hostile_client import MP3, Server, client_for, reply

NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)
START = NOW - timedelta(hours=2)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Server, Server]]:
    api, canary = Server(), Server()
    canary.routes["/"] = lambda h: reply(h, 200, MP3)
    yield api, canary
    api.close()
    canary.close()


# Any code point, lone surrogates and controls included: JSON can carry every one of them.
ANY_CHAR = st.characters(codec=None, categories=["L", "M", "N", "P", "S", "Z", "C"])
JSON_ANY = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(ANY_CHAR, max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
GOOD_TIMES = st.integers(min_value=0, max_value=2 * 3600 - 1).map(
    lambda s: (START + timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%SZ")
)
BAD_TIMES = st.sampled_from(
    [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "9999-06-01T00:00:00Z",
        "2024-05-01T10:00:00",
        "yesterday",
        "",
    ]
)
# Long values (past S3's 2 KB of metadata) made cheaply: repeated, not drawn one by one.
NASTY = st.sampled_from(
    [
        "",
        " ",
        "\ud800",
        "Zo\udfffe",
        "\x00",
        "a\r\nb",
        "\u202eevil",
        "=?UTF-8?B?AA==?=",
        "Zoë Müller",
    ]
)
TEXT = (
    NASTY
    | st.text(ANY_CHAR, max_size=40)
    | st.builds(
        lambda chars, times: chars * times,
        st.text(ANY_CHAR, min_size=1, max_size=3),
        st.integers(500, 4000),
    )
)
BODIES = st.sampled_from([MP3, b"", b"<html>oops</html>", b"\xff\xfb" + bytes(100)]) | st.binary(
    max_size=64
)


def url_kinds(api: str, canary: str, rid: str) -> st.SearchStrategy[Any]:
    path = f"/api/v1/public/recordings/{rid}.mp3"
    api_hostport, canary_hostport = api[7:], canary[7:]
    return st.sampled_from(
        [
            f"{api}{path}?source=api",
            f"{canary}{path}",
            f"http://{canary_hostport}\\@{api_hostport}{path}",
            f"http://x@{api_hostport}{path}",
            f"http://{api_hostport}\t{path}",
            f"http://{api_hostport.split(':')[0]}:99999{path}",
            f"http://{api_hostport.split(':')[0]}:abc{path}",
            f"http://{canary_hostport}#@{api_hostport}{path}",
            f"http://{api_hostport.replace('.', '%2e')}{path}",
            f"http://[::1{path}",
            f"ftp://{api_hostport}{path}",
        ]
    ) | JSON_ANY.filter(lambda value: not isinstance(value, str))


@st.composite
def hostile_entries(draw: st.DrawFn, api: str, canary: str) -> tuple[list[Any], dict[str, bytes]]:
    entries: list[Any] = []
    bodies: dict[str, bytes] = {}
    for _ in range(draw(st.integers(min_value=1, max_value=5))):
        if draw(st.integers(0, 9)) == 0:
            entries.append(draw(JSON_ANY))  # not even an object
            continue
        rid = str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1))))
        # A plausible entry (free text may hold any code point), then one or two fields made
        # hostile or left out: one odd field beside good ones is what must cost only the entry.
        fields: dict[str, Any] = {
            "url": f"{api}/api/v1/public/recordings/{rid}.mp3?source=api",
            "startedAt": draw(GOOD_TIMES),
            "durationSeconds": draw(st.integers(0, 7200)),
            "nature": draw(st.sampled_from(["in", "out", "team"])),
            "agent1": draw(TEXT),
            "agent2": draw(st.none() | TEXT),
            "cradleNumber": draw(st.none() | TEXT),
            "thirdPartyNumber": draw(st.none() | TEXT),
        }
        hostile = {
            "url": url_kinds(api, canary, rid),
            "startedAt": BAD_TIMES | JSON_ANY,
            "durationSeconds": JSON_ANY,
            "nature": JSON_ANY,
            "agent1": JSON_ANY,
            "agent2": JSON_ANY,
            "cradleNumber": JSON_ANY,
            "thirdPartyNumber": JSON_ANY,
        }
        for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=2, unique=True)):
            if draw(st.booleans()):
                fields[name] = draw(hostile[name])
            else:
                del fields[name]
        entries.append(fields)
        bodies[rid] = draw(BODIES)
    return entries, bodies


def served(api: Server, entries: list[Any], bodies: dict[str, bytes]) -> None:
    listing = json.dumps({"recordings": entries, "size": len(entries)}).encode()

    def download(handler: Any) -> None:
        rid = handler.path.split("?")[0].rsplit("/", 1)[-1].removesuffix(".mp3")
        body = bodies.get(rid)
        reply(handler, 200 if body is not None else 404, body or b"")

    api.routes = {
        "/api/v1/public/recordings?": lambda h: reply(h, 200, listing),
        "/api/v1/public/recordings/": download,
    }


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_no_hostile_answer_stops_the_pass_or_leaves_an_entry_behind(
    servers: tuple[Server, Server], data: st.DataObject
) -> None:
    api, canary = servers
    entries, bodies = data.draw(hostile_entries(api.url, canary.url))
    served(api, entries, bodies)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Checkpoint.open(Path(tmp) / "state.db")
        client = client_for(api.url, timeout=5, attempts=2)
        config = ArchiveConfig(
            start=START,
            settle_delay=timedelta(0),
            lookback=timedelta(0),
            max_attempts=1,
        )
        archive_pass = ArchivePass(
            config, client, checkpoint, FakeStore(), Spool(Path(tmp) / "spool"), clock=lambda: NOW
        )
        archive_pass.run()  # must not raise

        assert checkpoint.watermark().position == NOW
        assert checkpoint.counts()[RecordingState.PENDING] == 0
        malformed = 0
        for entry in entries:
            try:
                recording = Recording.from_api(entry, now=NOW)
            except MalformedEntry:
                malformed += 1
                continue
            row = checkpoint.get(recording.recording_id)
            assert row is not None and row.state in ("archived", "failed"), entry
        assert checkpoint.malformed_count() >= min(malformed, 1)
        client.close()
        checkpoint.close()
    assert canary.requests == []
