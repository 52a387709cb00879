"""The simulator's call history: conversations of 0, 1 or 2 recordings, listed like recordings,
changing once when asked; and the recordings a seed generates, unchanged by all of it."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from archiver.models import format_time
from archiver.simulator import SimConversation, Simulator, SimulatorOptions

START = datetime(2024, 1, 1, tzinfo=UTC)
END = START + timedelta(hours=6)
LATER = END + timedelta(days=1)
AUTH = {"CRADLE_ID": "demo-id", "CRADLE_API_KEY": "demo-key"}
SHAPE = {"uuid", "startedAt", "nature", "status", "durationSeconds", "thirdPartyNumbers"}


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def options(**changes: object) -> SimulatorOptions:
    base: dict[str, object] = {
        "seed": 7,
        "start": START,
        "end": END,
        "rps": 1000,
        "clock": FakeClock(LATER),
    }
    return SimulatorOptions(**{**base, **changes})  # type: ignore[arg-type]


@pytest.fixture
def api() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers.update(AUTH)
        yield session


def listed(
    api: requests.Session, sim: Simulator, since: datetime = START, until: datetime = END
) -> list[dict[str, Any]]:
    window = {"from": format_time(since), "until": format_time(until)}
    response = api.get(f"{sim.base_url}/api/v1/public/conversations", params=window)
    assert response.status_code == 200
    conversations: list[dict[str, Any]] = response.json()["conversations"]
    return conversations


@pytest.fixture(scope="module")
def account() -> Iterator[Simulator]:
    """Two days of seed 1's calls, shared: generating them is the slow part."""
    with Simulator(options(seed=1, end=START + timedelta(days=2))) as sim:
        yield sim


def test_the_recordings_a_seed_generates_are_what_they_were_before_conversations(
    account: Simulator,
) -> None:
    # Captured from the simulator before it had a call history: e2e tests and benchmarks
    # count these recordings, so grouping them into conversations must not move one.
    lines = [
        f"{r.recording_id} {r.entry['startedAt']} {r.duration_seconds} {r.size}"
        for r in account.recordings()
    ]

    assert len(lines) == 960
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    assert digest == "b5971329a96bb9fc8c8b1cc93da7d5eb001f3c556ea390af26771bd19a0173df"


def test_conversations_hold_zero_one_or_two_recordings_in_realistic_shares(
    account: Simulator,
) -> None:
    conversations, recordings = account.conversations(), account.recordings()

    held = Counter(len(c.recording_ids) for c in conversations)
    assert set(held) == {0, 1, 2}
    assert 0.08 <= held[0] / len(conversations) <= 0.20  # missed calls and voicemail
    assert 0.03 <= held[2] / len(conversations) <= 0.12  # transfers
    every_id = [i for c in conversations for i in c.recording_ids]
    assert sorted(every_id) == sorted(r.recording_id for r in recordings)


def test_statuses_follow_the_nature_and_unrecorded_calls_were_missed_or_voicemail(
    account: Simulator,
) -> None:
    conversations = account.conversations()

    seen = Counter((c.nature, c.status, bool(c.recording_ids)) for c in conversations)
    assert set(seen) == {
        ("out", "completed", True),
        ("in", "successful", True),
        ("team", "successful", True),
        ("in", "missed", False),
        ("in", "voicemail", False),
        ("team", "missed", False),
        ("team", "voicemail", False),
    }


def test_a_transfer_spans_both_legs_and_names_the_second_agent(account: Simulator) -> None:
    by_id = {r.recording_id: r for r in account.recordings()}
    transfers = [c for c in account.conversations() if len(c.recording_ids) == 2]

    assert transfers
    for conversation in transfers:
        first, second = (by_id[i] for i in conversation.recording_ids)
        entry = conversation.entry
        assert entry["startedAt"] == first.entry["startedAt"]
        assert first.started_at <= second.started_at
        assert first.entry["nature"] == second.entry["nature"] == conversation.nature
        second_ends = second.started_at + timedelta(seconds=second.duration_seconds)
        assert conversation.ended_at >= second_ends
        assert entry["users"][-1]["email"] == second.entry["agent1"]
        assert entry["recordings"] == [{"url": first.url}, {"url": second.url}]
        assert conversation.visible_at == max(first.visible_at, second.visible_at)


def test_the_list_has_the_collection_shape_and_follows_the_window(
    api: requests.Session,
) -> None:
    middle = START + timedelta(hours=3)
    with Simulator(options()) as sim:
        whole = listed(api, sim)
        halves = listed(api, sim, START, middle) + listed(api, sim, middle, END)

        assert [c["uuid"] for c in whole] == [c.uuid for c in sim.conversations()]
        assert halves == whole
        assert [c["uuid"] for c in listed(api, sim, START, middle)] == [
            c.uuid for c in sim.conversations(START, middle)
        ]
        assert sim.stats()["requests_by_kind"]["conversations"] == 4
    for conversation in whole:
        assert SHAPE <= set(conversation) <= {*SHAPE, "cradleNumber", "users", "recordings"}
        assert ("cradleNumber" in conversation) == (conversation["nature"] != "team")
        assert all(set(r) == {"url"} for r in conversation["recordings"])
        assert conversation["users"]


def test_a_conversation_is_listed_once_its_call_ended_and_every_recording_is_listed(
    api: requests.Session,
) -> None:
    clock = FakeClock(START)
    with Simulator(options(clock=clock, processing_delay=60)) as sim:
        transfer = next(c for c in sim.conversations() if len(c.recording_ids) == 2)
        unrecorded = next(c for c in sim.conversations() if not c.recording_ids)
        for conversation in (transfer, unrecorded):
            assert conversation.visible_at >= conversation.ended_at + timedelta(seconds=60)
            clock.now = conversation.visible_at - timedelta(seconds=1)
            assert conversation.uuid not in {c["uuid"] for c in listed(api, sim)}

            clock.now = conversation.visible_at
            assert conversation.uuid in {c["uuid"] for c in listed(api, sim)}


def test_the_conversations_endpoint_keeps_its_faults(api: requests.Session) -> None:
    with Simulator(options(list_cap=3)) as sim:
        assert len(listed(api, sim)) == 3
        sim.set_faults(list_cap=None, fault_5xx=1.0)
        window = {"from": format_time(START), "until": format_time(END)}
        response = api.get(f"{sim.base_url}/api/v1/public/conversations", params=window)

        assert response.status_code in (500, 502, 503)
        assert sim.stats()["faults"] == {**sim.stats()["faults"], "list_cap": 1, "5xx": 1}


def changed(conversation: SimConversation) -> bool:
    return conversation.revision == 2


def first_listing(conversation: SimConversation) -> dict[str, Any]:
    """How it was first listed, but for its recording urls (each simulator has its own port)."""
    entry = conversation.versions[0].entry
    return {**entry, "recordings": len(entry["recordings"])}


def test_a_share_of_conversations_changes_once_after_it_is_listed(
    api: requests.Session,
) -> None:
    clock = FakeClock(LATER)
    with (
        Simulator(options(clock=clock, conversation_updates=0.3)) as sim,
        Simulator(options(conversation_updates=0.3)) as again,
        Simulator(options()) as plain,
    ):
        first = {c["uuid"]: c for c in listed(api, sim)}
        clock.now = LATER + timedelta(seconds=120)
        second = {c["uuid"]: c for c in listed(api, sim)}
        conversations = sim.conversations()
        plain_entries = [first_listing(c) for c in plain.conversations()]
        again_changed = [c.uuid for c in again.conversations() if changed(c)]

    updated = [c for c in conversations if changed(c)]
    assert 0.15 * len(conversations) <= len(updated) <= 0.45 * len(conversations)
    assert [c.uuid for c in updated] == again_changed  # the same ones for the seed
    assert [first_listing(c) for c in conversations] == plain_entries
    for conversation in conversations:
        uuid = conversation.uuid
        assert first[uuid] == conversation.versions[0].entry
        assert second[uuid] == conversation.entry
        assert conversation.revision_at(LATER) == 1
        assert conversation.revision_at(clock.now) == conversation.revision
    assert all(first[c.uuid] != second[c.uuid] for c in updated)
    missed = [c for c in updated if c.versions[0].entry["status"] == "missed"]
    assert missed
    assert {c.status for c in missed} == {"voicemail"}


def test_the_admin_api_lists_the_truth_without_auth() -> None:
    with Simulator(options(conversation_updates=0.3)) as sim:
        described = requests.get(f"{sim.base_url}/_sim/conversations", timeout=5).json()
        conversations = sim.conversations()

    assert [(d["uuid"], d["status"], d["revision"], d["recording_ids"]) for d in described] == [
        (c.uuid, c.status, c.revision, list(c.recording_ids)) for c in conversations
    ]
    assert {d["revision"] for d in described} == {1, 2}
