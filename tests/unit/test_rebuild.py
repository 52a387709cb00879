"""The pure parts of `rebuild-state`: rows from manifest lines and from object metadata, the
holds replayed from the audit trail, where the watermark goes, and moving a checkpoint aside."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from archiver import layout
from archiver.errors import MalformedEntry
from archiver.holds import HoldRule, Selector, period_rule
from archiver.manifest import Entry, Manifest
from archiver.models import RecordingState, SealedManifest, StoredObject
from archiver.rebuild import move_aside
from archiver.rebuild_scan import (
    Found,
    _read_manifests,
    archived_row,
    latest_listings,
    origin_for,
    replay_holds,
    resting_place,
    row_from_object,
)
from archiver.retention import LockMode
from archiver.sink import ListedObject
from benchmarks import rebuild_scale
from tests.builders import RECORDING_ID, entry, recording

NOW = datetime(2026, 1, 10, 12, tzinfo=UTC)
SHA = "ab" * 32
OTHER_SHA = "cd" * 32
DAY = date(2022, 6, 1)
KEY = f"calls/2022/06/01/{RECORDING_ID}.mp3"


def line(sha256: str = SHA, retain: datetime | None = None, **fields: str) -> Entry:
    return Entry(
        id=RECORDING_ID,
        key=KEY,
        version_id="v1",
        sha256=sha256,
        size=1234,
        started_at=recording().started_at,
        duration_seconds=93,
        audio_seconds=92.5,
        retain_until=retain,
        entry=entry(**fields),
    )


def sealed(sequence: int, supplement: int, *lines: Entry) -> tuple[SealedManifest, Manifest]:
    key = f"calls/manifests/2022/06/01{f'.{supplement}' if supplement else ''}.jsonl"
    kept = SealedManifest(sequence, DAY, supplement, key, "00" * 32, len(lines), None)
    return kept, Manifest(DAY, supplement, sequence, None, lines)


def test_a_supplement_supersedes_the_days_own_listing_of_the_same_recording() -> None:
    rows, unusable = latest_listings(
        [sealed(5, 1, line(OTHER_SHA)), sealed(4, 0, line(SHA))], None, NOW
    )

    assert unusable == []
    row = rows[RECORDING_ID]
    assert (row.sha256, row.manifest_sequence) == (OTHER_SHA, 5)
    assert row.state is RecordingState.ARCHIVED
    assert (row.key, row.size, row.version_id, row.audio_seconds) == (KEY, 1234, "v1", 92.5)
    assert row.recording == recording()  # agents and numbers, what holds match on


def test_a_listed_retain_until_takes_the_configured_lock_mode_and_none_takes_none() -> None:
    until = datetime(2027, 6, 1, tzinfo=UTC)
    locked, _ = latest_listings([sealed(1, 0, line(retain=until))], LockMode.COMPLIANCE, NOW)
    unlocked, _ = latest_listings([sealed(1, 0, line())], LockMode.COMPLIANCE, NOW)

    assert (locked[RECORDING_ID].lock_mode, locked[RECORDING_ID].retain_until) == (
        "compliance",
        until,
    )
    assert (unlocked[RECORDING_ID].lock_mode, unlocked[RECORDING_ID].retain_until) == (None, None)


def test_a_line_whose_entry_is_unusable_is_left_to_a_head_of_its_object() -> None:
    other = "1b6a3c1e-8f7d-4c2a-9e1b-5d4f3a2b1c0d"
    bad = [
        line(nature="sideways"),
        line(url=f"https://api.cradle.io/api/v1/public/recordings/{other}.mp3"),
    ]

    for one in bad:
        rows, unusable = latest_listings([sealed(1, 0, one)], None, NOW)
        assert (rows, unusable) == ({}, [KEY])


def stored(metadata: dict[str, str], **fields: object) -> StoredObject:
    values: dict[str, object] = {
        "key": KEY,
        "size": 4321,
        "sha256": SHA,
        "recording_id": RECORDING_ID,
        "version_id": "v9",
        "metadata": metadata,
        **fields,
    }
    return StoredObject(**values)  # type: ignore[arg-type]


def test_an_objects_metadata_gives_back_its_recording_as_the_archiver_wrote_it() -> None:
    original = recording(agent1="Zoë O'Neill", startedAt="2022-06-01T10:15:30.250Z")
    metadata = layout.object_metadata(original, SHA, audio_seconds=92.46)
    until = datetime(2027, 6, 1, tzinfo=UTC)

    row = row_from_object(
        stored(metadata, lock_mode="GOVERNANCE", retain_until=until), "https://api.cradle.io/", NOW
    )

    assert row.recording.agent1 == "Zoë O'Neill"  # RFC 2047 decoded
    assert row.recording.to_api() == {
        **original.to_api(),
        "url": f"https://api.cradle.io/api/v1/public/recordings/{RECORDING_ID}.mp3",
    }
    assert (row.sha256, row.size, row.key, row.version_id) == (SHA, 4321, KEY, "v9")
    assert (row.lock_mode, row.retain_until, row.audio_seconds) == ("governance", until, 92.5)
    assert row.manifest_sequence is None  # unsealed: the next seal lists it


def test_a_team_call_without_numbers_or_second_agent_is_read_back_without_them() -> None:
    original = recording(nature="team", agent2=None, cradleNumber=None, thirdPartyNumber=None)

    row = row_from_object(stored(layout.object_metadata(original, SHA)), "http://sim", NOW)

    assert (row.recording.agent2, row.recording.cradle_number) == (None, None)
    assert row.recording.third_party_number is None


@pytest.mark.parametrize(
    "change",
    [
        {"recording-id": "1b6a3c1e-8f7d-4c2a-9e1b-5d4f3a2b1c0d"},  # not the key's
        {"sha256": "not-a-digest"},
        {"nature": "sideways"},
    ],
)
def test_an_object_that_is_no_recording_of_ours_is_refused(change: dict[str, str]) -> None:
    metadata = {**layout.object_metadata(recording(), SHA), **change}

    with pytest.raises((ValueError, MalformedEntry)):
        row_from_object(stored(metadata), "http://sim", NOW)


def test_an_object_without_metadata_is_refused() -> None:
    with pytest.raises(ValueError, match="recording-id"):
        row_from_object(stored({}), "http://sim", NOW)


def hold_record(rule: HoldRule) -> dict[str, object]:
    return {"schema": "cradle-archiver.audit/1", "rule": rule.to_record()}


def test_holds_are_replayed_in_time_order_whatever_order_they_are_read_in() -> None:
    number = HoldRule(Selector.NUMBER, ("+4930123456",), "case 1")
    agent = HoldRule(Selector.AGENT, ("alice smith",), "case 2")
    ids = HoldRule(Selector.IDS, (RECORDING_ID,), "case 3")
    records = [
        ("audit/2026/01/03/20260103T000000000000Z-hold-remove.json", False, hold_record(number)),
        ("audit/2026/01/01/20260101T000000000000Z-hold-add.json", True, hold_record(number)),
        ("audit/2026/01/02/20260102T000000000000Z-hold-add.json", True, hold_record(agent)),
        ("audit/2026/01/04/20260104T000000000000Z-hold-add.json", True, hold_record(ids)),
    ]

    active, unreadable = replay_holds(records)

    assert (active, unreadable) == ([agent, ids], [])


def test_a_hold_added_twice_keeps_its_first_reason_and_one_removal_lifts_it() -> None:
    first = period_rule(datetime(2022, 1, 1, tzinfo=UTC), datetime(2023, 1, 1, tzinfo=UTC), "a")
    again = HoldRule(first.selector, first.values, "b")
    add, remove = "-hold-add.json", "-hold-remove.json"

    kept, _ = replay_holds(
        [("1" + add, True, hold_record(first)), ("2" + add, True, hold_record(again))]
    )
    lifted, _ = replay_holds(
        [("1" + add, True, hold_record(first)), ("2" + remove, False, hold_record(again))]
    )

    assert (kept, lifted) == ([first], [])


@pytest.mark.parametrize(
    "document",
    [
        {"rule": {"selects": "agent alice", "reason": "written before rules were kept"}},
        {"rule": {"selector": "number", "values": ["1", "2"], "reason": "two numbers"}},
        {"rule": {"selector": "period", "values": ["2022-01-01", "2021-01-01"], "reason": "x"}},
        {"rule": {"selector": "colour", "values": ["red"], "reason": "x"}},
        {"rule": None},
        None,
    ],
)
def test_a_hold_record_without_a_readable_rule_is_named_not_guessed(document: object) -> None:
    active, unreadable = replay_holds([("k-hold-add.json", True, document)])

    assert (active, unreadable) == ([], ["k-hold-add.json"])


def test_every_kind_of_rule_survives_the_trail() -> None:
    rules = [
        HoldRule(Selector.IDS, (RECORDING_ID, "1b6a3c1e-8f7d-4c2a-9e1b-5d4f3a2b1c0d"), "r"),
        HoldRule(Selector.NUMBER, ("+4930123456",), "r"),
        HoldRule(Selector.AGENT, ("bob jones",), "r"),
        period_rule(datetime(2022, 1, 1, tzinfo=UTC), datetime(2022, 2, 1, tzinfo=UTC), "r"),
    ]

    assert [HoldRule.from_record(rule.to_record()) for rule in rules] == rules


LOOKBACK = timedelta(hours=6)


def test_the_watermark_goes_to_the_end_of_the_last_sealed_day() -> None:
    latest = datetime(2022, 6, 2, 3, tzinfo=UTC)  # minus the lookback: before the day's end

    assert resting_place(DAY, latest, LOOKBACK) == datetime(2022, 6, 2, tzinfo=UTC)


def test_without_manifests_the_watermark_goes_a_lookback_before_the_latest_call() -> None:
    latest = datetime(2022, 6, 9, 3, tzinfo=UTC)

    assert resting_place(None, latest, LOOKBACK) == latest - LOOKBACK
    assert resting_place(None, None, LOOKBACK) is None


def test_with_manifests_the_watermark_never_passes_the_last_sealed_day() -> None:
    # Sealing lagged (a recording stayed pending): the days after it are listed again.
    latest = datetime(2022, 6, 9, 3, tzinfo=UTC)

    assert resting_place(DAY, latest, LOOKBACK) == datetime(2022, 6, 2, tzinfo=UTC)


def test_the_origin_is_the_first_day_the_bucket_shows() -> None:
    found = Found(
        listed={"a": archived_row(recording(), key=KEY, sha256=SHA, size=1, now=NOW)},
        manifests=[sealed(1, 0)[0]],
    )
    late = datetime(2022, 6, 5, tzinfo=UTC)

    assert origin_for(found, late) == datetime(2022, 6, 1, tzinfo=UTC)
    assert origin_for(found, datetime(2022, 5, 31, 20, tzinfo=UTC)) == datetime(
        2022, 5, 31, 20, tzinfo=UTC
    )


def test_a_checkpoint_is_moved_aside_with_its_wal_and_shm_under_one_name(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    for suffix, body in (("", b"db"), ("-wal", b"wal"), ("-shm", b"shm")):
        Path(f"{state}{suffix}").write_bytes(body)

    first = move_aside(state, NOW)
    state.write_bytes(b"second")
    second = move_aside(state, NOW)

    assert first == tmp_path / "state.db.bak-20260110T120000Z"
    assert [Path(f"{first}{s}").read_bytes() for s in ("", "-wal", "-shm")] == [
        b"db",
        b"wal",
        b"shm",
    ]
    assert second == tmp_path / "state.db.bak-20260110T120000Z-2"
    assert second.read_bytes() == b"second"
    assert not state.exists()
    assert move_aside(state, NOW) is None


def test_the_benchmark_bucket_holds_its_unsealed_calls_after_the_last_sealed_day() -> None:
    calls = list(rebuild_scale.recordings(250, 50))
    sealed_end = rebuild_scale.FIRST_DAY + timedelta(days=rebuild_scale.DAYS)

    assert len({call.recording_id for call in calls}) == 250
    assert sum(call.started_at < sealed_end for call in calls) == 200
    assert all(call.started_at.date() == sealed_end.date() for call in calls[200:])


@pytest.mark.parametrize(
    "key",
    [
        "calls/2022/06/02/" + RECORDING_ID + ".mp3",  # another day's key
        "other-archive/2022/06/01/" + RECORDING_ID + ".mp3",  # outside the prefix
        "calls/2022/06/01/../../secret.mp3",
    ],
)
def test_a_line_whose_key_is_not_its_recordings_own_is_never_restored(key: str) -> None:
    """A rebuilt row's key is where `retention extend` and `hold` write: a planted line must
    not point them at another object."""
    rows, _ = latest_listings([sealed(1, 0, replace(line(), key=key))], None, NOW)
    assert rows == {}


class ManifestBucket:
    """The two reads `_read_manifests` makes of a bucket, over a dict of keys to bytes."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def list(self, prefix: str) -> list[ListedObject]:
        return [
            ListedObject(k, len(v), None) for k, v in self.objects.items() if k.startswith(prefix)
        ]

    def read(self, key: str, limit: int, version_id: str | None = None) -> bytes | None:
        return self.objects.get(key)


@pytest.mark.parametrize(
    ("key", "day"),
    [
        ("calls/manifests/2022/06/01.jsonl", date(2999, 1, 1)),  # a header from the far future
        ("calls/manifests/2022/06/01.jsonl", date(2022, 6, 2)),  # another day than its key
        ("calls/manifests/2999/01/01.jsonl", date(2999, 1, 1)),  # a day not over yet
    ],
)
def test_a_manifest_for_another_or_a_future_day_is_unreadable_not_a_watermark(
    key: str, day: date
) -> None:
    """The rebuilt watermark goes to the end of the last sealed day and never moves back: a
    planted manifest must not move it on past days nobody listed."""
    body = Manifest(day, 0, 1, None, (line(),)).body()
    found = Found()
    with ThreadPoolExecutor(max_workers=2) as pool:
        parsed = _read_manifests(ManifestBucket({key: body}), "calls/", pool, found, NOW)  # type: ignore[arg-type]
    assert parsed == [] and found.unreadable == [key]
