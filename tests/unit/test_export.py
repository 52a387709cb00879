"""The call history's export: checked entries, revisions, parts, and exactly-once writes."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from archiver.checkpoint import Checkpoint
from archiver.conversations import Conversation, part_day
from archiver.cradle import ConversationListing, parse_conversations
from archiver.errors import ApiUnavailable, MalformedEntry, SinkUnavailable
from archiver.export import CallHistory, ConversationExporter
from archiver.models import Window
from archiver.retention import Lock, LockMode, Period, RetentionPolicy
from tests.fakes import FakeStore

PREFIX = "cradle/"
NOW = datetime(2026, 3, 10, tzinfo=UTC)
WINDOW = Window(datetime(2026, 3, 1, 23, tzinfo=UTC), datetime(2026, 3, 2, 1, tzinfo=UTC))
RECORDING = "21f448c3-fda6-51b7-931c-559c3b2fd723"


def raw(uuid: Any = "31e66015-9edd-47bc-b505-7ea306436744", **fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "uuid": uuid,
        "startedAt": "2026-03-01T23:30:00Z",
        "nature": "out",
        "status": "completed",
        "durationSeconds": 13,
        "users": [{"email": "user1@cradle.io"}],
        "recordings": [
            {"url": f"https://api.cradle.io/api/v1/public/recordings/{RECORDING}.mp3?source=api"}
        ],
    }
    entry.update(fields)
    return entry


def conversation(**fields: Any) -> Conversation:
    return Conversation.from_api(raw(**fields), now=NOW)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Iterator[Checkpoint]:
    with Checkpoint.open(tmp_path / "state.db") as opened:
        yield opened


def exporter(checkpoint: Checkpoint, store: FakeStore, **options: Any) -> ConversationExporter:
    return ConversationExporter(PREFIX, checkpoint, store, clock=lambda: NOW, **options)


def lines(store: FakeStore) -> list[dict[str, Any]]:
    found = []
    for _, (body, _) in sorted(store.objects.items()):
        found += [json.loads(line) for line in gzip.decompress(body).splitlines()]
    return found


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"uuid": None}, "no usable uuid"),
        ({"uuid": 7}, "no usable uuid"),
        ({"uuid": "../../etc"}, "characters"),
        ({"startedAt": "yesterday"}, "invalid startedAt"),
        ({"startedAt": None}, "invalid startedAt"),
        ({"startedAt": "1999-12-31T23:59:59Z"}, "out of range"),
        ({"recordings": {"url": "x"}}, "not a list"),
        ({"nature": "\ud800"}, "not storable"),
        ({"durationSeconds": float("nan")}, "not storable"),
    ],
)
def test_a_bad_conversation_is_refused_naming_what_is_wrong(
    fields: dict[str, Any], reason: str
) -> None:
    with pytest.raises(MalformedEntry, match=reason):
        conversation(**fields)


def test_a_response_keeps_good_conversations_and_sets_bad_ones_aside() -> None:
    body = {"conversations": [raw(), raw(uuid=None), "junk", raw(uuid="b", recordings=None)]}
    listing = parse_conversations(WINDOW, body, NOW)
    assert listing.ids == ["31e66015-9edd-47bc-b505-7ea306436744", "b"]
    assert listing.conversations[0].recording_ids == (RECORDING,)
    assert listing.conversations[1].recording_ids == ()  # a missed call names none
    assert len(listing.malformed) == 2 and listing.size == 4


def test_new_conversations_are_written_once_as_a_gzip_part_per_day_of_their_start(
    checkpoint: Checkpoint,
) -> None:
    store = FakeStore(prefix=PREFIX)
    export = exporter(checkpoint, store)
    late = conversation(uuid="later", startedAt="2026-03-02T00:10:00Z")
    assert export.keep(WINDOW, [conversation(), late, conversation()]) == 2
    assert export.flush() == 2

    days = sorted(filter(None, (part_day(key) for key in store.objects)))
    assert days == [date(2026, 3, 1), date(2026, 3, 2)]
    key = min(store.objects)
    assert key.startswith(f"{PREFIX}conversations/year=2026/month=03/day=01/part-20260301T230000Z-")
    assert key.endswith(".jsonl.gz")
    exported = lines(store)
    assert [(line["uuid"], line["revision"]) for line in exported] == [
        ("31e66015-9edd-47bc-b505-7ea306436744", 1),
        ("later", 1),
    ]
    assert exported[0]["schema_version"] == 1
    assert exported[0]["archived_at"] == "2026-03-10T00:00:00.000Z"
    assert exported[0]["users"] == [{"email": "user1@cradle.io"}]  # as the API gave it
    assert checkpoint.conversation_count() == 2

    # Listed again (the lookback, an overlap): nothing new, nothing written.
    assert export.keep(WINDOW, [conversation(), late]) == 0
    assert export.flush() == 0 and len(store.objects) == 2


def test_a_conversation_that_changed_is_written_again_as_its_next_revision(
    checkpoint: Checkpoint,
) -> None:
    store = FakeStore(prefix=PREFIX)
    export = exporter(checkpoint, store)
    export.keep(WINDOW, [conversation(status="successful")])
    export.flush()
    export.keep(WINDOW, [conversation(status="voicemail")])
    export.flush()
    export.keep(WINDOW, [conversation(status="voicemail")])
    export.flush()

    revisions = [(line["status"], line["revision"]) for line in lines(store)]
    assert sorted(revisions, key=lambda r: r[1]) == [("successful", 1), ("voicemail", 2)]


def test_a_kill_after_the_write_writes_the_same_bytes_again_and_no_revision_twice(
    checkpoint: Checkpoint,
) -> None:
    store = FakeStore(prefix=PREFIX)

    class KilledAfterTheWrite(FakeStore):
        def write_once(self, key: str, body: bytes, *args: object, **kwargs: object) -> None:
            store.objects[key] = (body, "landed")
            raise SinkUnavailable("killed before the checkpoint heard of it")

    first = exporter(checkpoint, KilledAfterTheWrite(prefix=PREFIX))
    first.keep(WINDOW, [conversation()])
    with pytest.raises(SinkUnavailable):
        first.flush()
    # The next run lists the window again, the conversation changed meanwhile: it is revision 2,
    # and the kept part goes out with the bytes it was kept with.
    second = exporter(checkpoint, store)
    second.keep(WINDOW, [conversation(status="missed")])
    assert second.flush() == 2

    assert sorted((line["status"], line["revision"]) for line in lines(store)) == [
        ("completed", 1),
        ("missed", 2),
    ]
    assert checkpoint.unwritten_parts() == []


def test_parts_are_locked_as_long_as_the_day_s_recordings(checkpoint: Checkpoint) -> None:
    store = FakeStore(prefix=PREFIX)
    policy = RetentionPolicy(mode=LockMode.GOVERNANCE, period=Period(years=5))
    export = exporter(checkpoint, store, retention=policy)
    export.keep(WINDOW, [conversation()])
    export.flush()
    (key,) = store.objects
    assert store.locks[key] == Lock(LockMode.GOVERNANCE, datetime(2031, 3, 2, tzinfo=UTC))


def test_the_metric_counts_revisions_as_their_part_lands(checkpoint: Checkpoint) -> None:
    counted: list[int] = []
    export = exporter(checkpoint, FakeStore(prefix=PREFIX), on_exported=counted.append)
    export.keep(WINDOW, [conversation(), conversation(uuid="b")])
    assert counted == []
    export.flush()
    assert counted == [2]


class FlakyLister:
    """`/conversations` through the split rule's interface: it lists `conversations` by start
    time, failing while `down` is set."""

    def __init__(self, conversations: list[Conversation]) -> None:
        self.conversations = conversations
        self.down = False
        self.windows: list[Window] = []

    def once(self, window: Window, horizon: datetime) -> Any:
        if self.down:
            raise ApiUnavailable("conversations call refused: 503")
        self.windows.append(window)
        found = [c for c in self.conversations if window.start <= c.started_at < window.end]
        return ConversationListing(window, found)

    def leaves(self, window: Window, horizon: datetime) -> Any:
        yield window, self.once(window, horizon)


def test_the_history_catches_up_on_its_own_cursor_after_a_failure(
    checkpoint: Checkpoint,
) -> None:
    hour = timedelta(hours=1)
    origin = datetime(2026, 3, 1, tzinfo=UTC)
    calls = [conversation(uuid=f"c{n}", startedAt=f"2026-03-01T0{n}:30:00Z") for n in range(4)]
    lister = FlakyLister(calls)
    store = FakeStore(prefix=PREFIX)
    history = CallHistory(lister, exporter(checkpoint, store), checkpoint)

    def catch_up(until: datetime) -> int:
        return history.catch_up(
            origin=origin, until=until, horizon=until, rescan_from=until, width=hour
        )

    assert catch_up(origin + 2 * hour) == 2
    assert checkpoint.history_cursor() == origin + 2 * hour
    lister.down = True
    with pytest.raises(ApiUnavailable):
        catch_up(origin + 4 * hour)
    assert checkpoint.history_cursor() == origin + 2 * hour  # nothing skipped
    lister.down = False
    assert catch_up(origin + 4 * hour) == 2
    assert sorted(line["uuid"] for line in lines(store)) == ["c0", "c1", "c2", "c3"]
