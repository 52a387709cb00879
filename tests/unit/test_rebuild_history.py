"""The call history read back for a lost checkpoint: a part's lines become the revisions they
record, with the digest the exporter keeps, so a rebuilt checkpoint exports only what changed."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from archiver import conversations
from archiver.checkpoint import Checkpoint
from archiver.conversations import Conversation, Exported, Revision, canonical, read_part
from archiver.export import ConversationExporter
from archiver.models import Window
from archiver.rebuild_history import History, fold
from tests.fakes import FakeStore

PREFIX = "cradle/"
NOW = datetime(2026, 3, 10, tzinfo=UTC)
WINDOW = Window(datetime(2026, 3, 1, 23, tzinfo=UTC), datetime(2026, 3, 2, 1, tzinfo=UTC))
FIRST = "31e66015-9edd-47bc-b505-7ea306436744"


def raw(uuid: str = FIRST, **fields: Any) -> dict[str, Any]:
    """An API object with what a round trip through JSON could change: non-ASCII text, floats,
    nulls, nested arrays, keys out of order."""
    entry: dict[str, Any] = {
        "uuid": uuid,
        "startedAt": "2026-03-01T23:30:00Z",
        "status": "completed",
        "users": [{"name": "Zoë O'Neill", "email": "zoe@cradle.io"}],
        "durationSeconds": 13.1,
        "score": 1e-7,
        "thirdPartyNumbers": [],
        "tags": None,
        "recordings": [{"url": "https://api.cradle.io/api/v1/public/recordings/a1b2c3d4.mp3"}],
        "nature": "in",
    }
    entry.update(fields)
    return entry


def conversation(uuid: str = FIRST, **fields: Any) -> Conversation:
    return Conversation.from_api(raw(uuid, **fields), now=NOW)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Iterator[Checkpoint]:
    with Checkpoint.open(tmp_path / "state.db") as opened:
        yield opened


def export(checkpoint: Checkpoint, store: FakeStore, *conversations: Conversation) -> int:
    exporter = ConversationExporter(PREFIX, checkpoint, store, clock=lambda: NOW)
    kept = exporter.keep(WINDOW, list(conversations))
    exporter.flush()
    return kept


def test_a_line_read_back_has_the_digest_the_exporter_computed_for_its_api_object(
    checkpoint: Checkpoint,
) -> None:
    store = FakeStore(prefix=PREFIX)
    export(
        checkpoint, store, conversation(), conversation("later", startedAt="2026-03-01T23:50:00Z")
    )
    export(checkpoint, store, conversation(status="missed"))  # FIRST at revision 2

    read = {}
    for body, _ in store.objects.values():
        revisions, problems = read_part(body, now=NOW)
        assert problems == []
        read.update({(r.conversation.uuid, r.revision): r for r in revisions})

    assert sorted(read) == [(FIRST, 1), (FIRST, 2), ("later", 1)]
    assert read[(FIRST, 2)].conversation.digest == conversation(status="missed").digest
    assert read[(FIRST, 1)].conversation.digest == conversation().digest
    assert read[(FIRST, 1)].conversation.raw == raw()
    assert read[(FIRST, 1)].conversation.recording_ids == conversation().recording_ids
    assert checkpoint.conversation_revisions([FIRST, "later"]) == {
        FIRST: (2, conversation(status="missed").digest),
        "later": (1, conversation("later", startedAt="2026-03-01T23:50:00Z").digest),
    }


def test_a_rebuilt_checkpoint_exports_only_what_changed(tmp_path: Path) -> None:
    store = FakeStore(prefix=PREFIX)
    same, changed = conversation(), conversation("later", status="ringing")
    with Checkpoint.open(tmp_path / "lost.db") as lost:
        export(lost, store, same, changed)
    history = History()
    for key, (body, _) in store.objects.items():
        fold(history, key, body, NOW)

    with Checkpoint.open(tmp_path / "rebuilt.db") as rebuilt:
        assert rebuilt.restore_conversations(history.parts, history.latest.values()) == 2
        kept = export(rebuilt, store, same, conversation("later", status="completed"))
        assert rebuilt.unwritten_parts() == []

    assert kept == 1  # the changed one alone, as its revision 2
    lines = [
        json.loads(line)
        for body, _ in store.objects.values()
        for line in gzip.decompress(body).splitlines()
    ]
    assert sorted((line["uuid"], line["revision"]) for line in lines) == [
        (FIRST, 1),
        ("later", 1),
        ("later", 2),
    ]


def test_each_uuid_keeps_its_highest_revision_whatever_order_the_parts_come_in() -> None:
    history = History()
    history.add("part-b", [Revision(conversation(status="missed"), 2)])
    history.add("part-a", [Revision(conversation(), 1)])
    history.add("part-c", [])

    assert history.parts == {"part-b": 1, "part-a": 1, "part-c": 0}
    assert history.latest == {
        FIRST: Exported.of(Revision(conversation(status="missed"), 2), "part-b")
    }


def line(**fields: Any) -> bytes:
    exported = {**raw(), "schema_version": 1, "revision": 1, "archived_at": "2026-03-10T00:00:00Z"}
    exported.update(fields)
    return canonical(exported) + b"\n"


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (b"not json\n", "line 2: Expecting value"),
        (b"[1, 2]\n", "line 2: line is a list"),
        (line(schema_version=2), "line 2: schema_version is not 1"),
        (line(revision=0), "line 2: revision is not a positive integer"),
        (line(revision=True), "line 2: revision is not a positive integer"),
        (line(uuid="../x"), "line 2: conversation uuid has characters"),
        (b"[" * 100_000 + b"\n", "line 2: maximum recursion depth"),
        (line(schema_version=True), "line 2: schema_version is not 1"),
        (line(schema_version=1.0), "line 2: schema_version is not 1"),
        (line(revision=2**70), "line 2: revision is not a positive integer"),
    ],
)
def test_an_unreadable_line_is_named_and_the_others_are_kept(bad: bytes, why: str) -> None:
    body = gzip.compress(line() + bad + line(uuid="later", revision=3))

    revisions, problems = read_part(body, now=NOW)

    assert [(r.conversation.uuid, r.revision) for r in revisions] == [(FIRST, 1), ("later", 3)]
    assert len(problems) == 1 and problems[0].startswith(why)


def test_a_part_cut_short_keeps_the_lines_read_before_and_says_where_it_ended() -> None:
    whole = gzip.compress(line() + line(uuid="later") * 2000, mtime=0)
    history = History()

    fold(history, "cut", whole[: len(whole) // 2], NOW)
    fold(history, "junk", b"not gzip at all", NOW)
    fold(history, "gone", None, NOW)

    assert history.parts["cut"] >= 1 and "junk" not in history.parts
    assert history.latest[FIRST].part == "cut"
    assert [u.split(" ")[0] for u in history.unreadable] == ["cut", "junk", "gone"]
    assert "not readable as gzip after line" in history.unreadable[0]


def test_a_line_past_the_limit_ends_the_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conversations, "MAX_LINE_BYTES", len(line()))
    body = gzip.compress(line() + line(uuid="x" * 50) + line(uuid="later"))

    revisions, problems = read_part(body, now=NOW)

    assert [r.conversation.uuid for r in revisions] == [FIRST]
    assert problems == [f"line 2 is over {len(line())} bytes; not read on"]


def test_the_export_cursor_goes_to_the_latest_part_s_window_never_past_the_watermark() -> None:
    history = History()
    assert history.cursor(NOW) is None
    day = "cradle/conversations/year=2026/month=03/day=01"
    history.add(f"{day}/part-20260301T230000Z-0123456789ab.jsonl.gz", [])
    history.add(f"{day}/part-20260301T210000Z-0123456789ab.jsonl.gz", [])
    history.add(f"{day}/part-2026030123-0123456789ab.jsonl.gz", [])  # not a window: no cursor

    assert history.last_window == datetime(2026, 3, 1, 23, tzinfo=UTC)
    assert history.cursor(NOW) == datetime(2026, 3, 1, 23, tzinfo=UTC)
    assert history.cursor(datetime(2026, 3, 1, 22, tzinfo=UTC)) == datetime(
        2026, 3, 1, 22, tzinfo=UTC
    )


def test_a_part_that_unpacks_past_its_bound_ends_the_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gzip bomb: a few bytes in the bucket, without end unpacked."""
    monkeypatch.setattr(conversations, "MAX_PART_BYTES", 2 * len(line()))
    body = gzip.compress(line() + line(uuid="second") + line(uuid="third") * 1000)

    revisions, problems = read_part(body, now=NOW)

    assert [r.conversation.uuid for r in revisions] == [FIRST, "second"]
    assert problems == [f"over {2 * len(line())} bytes unpacked at line 3"]
