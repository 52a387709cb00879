"""The simulator's data, listing, auth, bodies and rate rules, over real loopback HTTP."""

from __future__ import annotations

import hashlib
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from archiver.errors import MalformedEntry
from archiver.models import Recording, format_time, parse_time
from archiver.simulator import Simulator, SimulatorOptions
from archiver.simulator.options import MAX_BODY_SIZE, MIN_BODY_SIZE

START = datetime(2024, 1, 1, tzinfo=UTC)
END = START + timedelta(hours=6)
LATER = END + timedelta(days=1)
AUTH = {"CRADLE_ID": "demo-id", "CRADLE_API_KEY": "demo-key"}


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def options(**changes: object) -> SimulatorOptions:
    # rps is raised so tests about other things can make quick requests.
    base: dict[str, object] = {
        "seed": 7,
        "start": START,
        "end": END,
        "rps": 1000,
        "clock": FakeClock(LATER),
    }
    return SimulatorOptions(**{**base, **changes})  # type: ignore[arg-type]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(options()) as simulator:
        yield simulator


@pytest.fixture
def api() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers.update(AUTH)
        yield session


def list_recordings(
    api: requests.Session, sim: Simulator, since: datetime = START, until: datetime = END
) -> requests.Response:
    window = {"from": format_time(since), "until": format_time(until)}
    return api.get(f"{sim.base_url}/api/v1/public/recordings", params=window)


def listed_ids(api: requests.Session, sim: Simulator, since: datetime, until: datetime) -> set[str]:
    response = list_recordings(api, sim, since, until)
    assert response.status_code == 200
    return {Recording.from_api(e).recording_id for e in response.json()["recordings"]}


# -- generated data -------------------------------------------------------------------------


def test_same_seed_generates_same_recordings_and_bodies() -> None:
    with Simulator(options()) as one, Simulator(options()) as two:
        first = [(r.recording_id, r.started_at, r.size, r.poison) for r in one.recordings()]
        second = [(r.recording_id, r.started_at, r.size, r.poison) for r in two.recordings()]
        assert first == second
        assert [r.entry["agent1"] for r in one.recordings()] == [
            r.entry["agent1"] for r in two.recordings()
        ]
        some = first[0][0]
        assert one.body_sha256(some) == two.body_sha256(some)


def test_other_seed_generates_other_recordings() -> None:
    with Simulator(options()) as one, Simulator(options(seed=8)) as two:
        assert {r.recording_id for r in one.recordings()}.isdisjoint(
            {r.recording_id for r in two.recordings()}
        )


def test_turning_on_late_arrivals_does_not_reshuffle_the_data() -> None:
    with Simulator(options()) as plain, Simulator(options(late_fraction=0.5)) as late:
        assert [(r.recording_id, r.started_at) for r in plain.recordings()] == [
            (r.recording_id, r.started_at) for r in late.recordings()
        ]


def test_recordings_per_hour_and_durations_are_realistic() -> None:
    with Simulator(options(end=START + timedelta(days=2), per_hour=20)) as sim:
        recordings = sim.recordings()
        assert 48 * 20 * 0.9 <= len(recordings) <= 48 * 20 * 1.1
        durations = sorted(r.duration_seconds for r in recordings)
        median = durations[len(durations) // 2]
        assert 30 <= median <= 600
        assert durations[-1] <= 7200
        natures = {r.entry["nature"] for r in recordings}
        assert natures == {"in", "out", "team"}
        for recording in recordings:
            assert recording.size == min(max(recording.duration_seconds * 16000, 512), 100_000_000)


def test_a_share_of_recordings_starts_exactly_on_the_hour() -> None:
    with Simulator(options(end=START + timedelta(days=2), boundary_fraction=0.1)) as sim:
        on_hour = [r for r in sim.recordings() if r.started_at.minute == r.started_at.second == 0]
        assert len(on_hour) >= 0.05 * len(sim.recordings())


def test_fixed_size_overrides_duration_and_sizes_are_bounded() -> None:
    with Simulator(options(size=5000)) as fixed:
        assert {r.size for r in fixed.recordings()} == {5000}
    with Simulator(options(bytes_per_second=1)) as tiny:
        assert min(r.size for r in tiny.recordings()) == MIN_BODY_SIZE
    with Simulator(options(bytes_per_second=10**7)) as huge:
        assert max(r.size for r in huge.recordings()) == MAX_BODY_SIZE


# -- listing -------------------------------------------------------------------------------


def test_list_has_the_api_shape(sim: Simulator, api: requests.Session) -> None:
    response = list_recordings(api, sim)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    document = response.json()
    entries = document["recordings"]
    assert document["size"] == len(entries) == len(sim.recordings())
    started = [parse_time(e["startedAt"]) for e in entries]
    assert started == sorted(started)
    for entry in entries:
        recording = Recording.from_api(entry)
        assert entry["url"] == (
            f"{sim.base_url}/api/v1/public/recordings/{recording.recording_id}.mp3?source=api"
        )
        assert entry["startedAt"].endswith("Z") and len(entry["startedAt"]) == 20
        assert entry["agent1"].endswith("@example.com")
        if entry["nature"] == "team":
            assert "cradleNumber" not in entry and "thirdPartyNumber" not in entry
            assert entry["agent2"] != entry["agent1"]
        else:
            assert entry["cradleNumber"].startswith("+")
            assert entry["thirdPartyNumber"][1:].isdigit()
    assert entries == [r.entry for r in sim.recordings()]


@pytest.mark.parametrize(
    ("bounds", "in_window_before", "in_window_after"),
    [("half-open", False, True), ("inclusive", True, True), ("exclusive", False, False)],
)
def test_bounds_decide_whether_a_recording_on_the_boundary_is_listed(
    api: requests.Session, bounds: str, in_window_before: bool, in_window_after: bool
) -> None:
    with Simulator(options(bounds=bounds, boundary_fraction=0.3)) as sim:
        hour = next(
            r for r in sim.recordings() if r.started_at.minute == 0 and r.started_at > START
        )
        at = hour.started_at
        before = listed_ids(api, sim, at - timedelta(hours=1), at)
        after = listed_ids(api, sim, at, at + timedelta(hours=1))

        assert (hour.recording_id in before) is in_window_before
        assert (hour.recording_id in after) is in_window_after


@pytest.mark.parametrize(
    "query",
    [
        {"until": "2024-01-01T01:00:00.000Z"},
        {"from": "2024-01-01T00:00:00.000Z"},
        {"from": "yesterday", "until": "2024-01-01T01:00:00.000Z"},
        {"from": "2024-01-01T00:00:00", "until": "2024-01-01T01:00:00Z"},
        {"from": "2024-01-01T02:00:00Z", "until": "2024-01-01T01:00:00Z"},
    ],
)
def test_bad_window_is_answered_400(
    sim: Simulator, api: requests.Session, query: dict[str, str]
) -> None:
    response = api.get(f"{sim.base_url}/api/v1/public/recordings", params=query)

    assert response.status_code == 400
    assert "error" in response.json()


def test_recording_is_listed_only_after_its_call_ended_and_was_processed(
    api: requests.Session,
) -> None:
    clock = FakeClock(START)
    with Simulator(options(clock=clock, processing_delay=60)) as sim:
        first = sim.recordings()[0]
        ends = first.started_at + timedelta(seconds=first.duration_seconds)
        clock.now = ends + timedelta(seconds=59)
        assert first.recording_id not in listed_ids(api, sim, START, END)

        clock.now = ends + timedelta(seconds=60)
        assert first.recording_id in listed_ids(api, sim, START, END)
        assert first.visible_at == clock.now


def test_late_recordings_appear_only_late_delay_after_start_up(api: requests.Session) -> None:
    clock = FakeClock(LATER)
    with Simulator(options(clock=clock, late_fraction=0.3, late_delay=600)) as sim:
        late = {r.recording_id for r in sim.recordings() if r.late}
        everything = {r.recording_id for r in sim.recordings()}
        assert 0 < len(late) < len(everything)
        assert listed_ids(api, sim, START, END) == everything - late

        clock.now = LATER + timedelta(seconds=600)
        assert listed_ids(api, sim, START, END) == everything


def test_list_cap_silently_truncates_the_list(api: requests.Session) -> None:
    with Simulator(options(list_cap=5)) as sim:
        document = list_recordings(api, sim).json()

        assert document["size"] == len(document["recordings"]) == 5
        assert document["recordings"] == [r.entry for r in sim.recordings()[:5]]
        assert sim.stats()["faults"]["list_cap"] == 1


def test_urls_name_the_host_the_client_used(sim: Simulator, api: requests.Session) -> None:
    localhost = sim.base_url.replace("127.0.0.1", "localhost")
    response = api.get(
        f"{localhost}/api/v1/public/recordings",
        params={"from": format_time(START), "until": format_time(END)},
    )

    assert response.json()["recordings"][0]["url"].startswith(f"{localhost}/api/v1/public/")


def test_bad_entries_are_listed_and_fail_validation(api: requests.Session) -> None:
    with Simulator(options(bad_entries=6)) as sim:
        entries = list_recordings(api, sim).json()["recordings"]
        malformed = 0
        for entry in entries:
            try:
                Recording.from_api(entry)
            except MalformedEntry:
                malformed += 1

        assert malformed == 6
        assert len(entries) == len(sim.recordings()) + 6
        assert sum("url" not in e for e in entries) == 3


# -- auth ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"CRADLE_ID": "demo-id"}, {"CRADLE_ID": "demo-id", "CRADLE_API_KEY": "wrong"}],
)
def test_missing_or_wrong_credentials_are_answered_401(
    sim: Simulator, headers: dict[str, str]
) -> None:
    response = requests.get(
        f"{sim.base_url}/api/v1/public/recordings",
        params={"from": format_time(START), "until": format_time(END)},
        headers=headers,
        timeout=5,
    )

    assert response.status_code == 401
    assert sim.stats()["responses"] == {"401": 1}


def test_forbid_answers_every_api_request_403(api: requests.Session) -> None:
    with Simulator(options(forbid=True)) as sim:
        assert list_recordings(api, sim).status_code == 403
        assert api.get(sim.recordings()[0].url).status_code == 403


# -- bodies --------------------------------------------------------------------------------


def test_download_is_an_mp3_whose_sha256_matches(sim: Simulator, api: requests.Session) -> None:
    recording = sim.recordings()[0]
    response = api.get(recording.url)

    body = response.content
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "audio/mpeg"
    assert int(response.headers["Content-Length"]) == len(body) == recording.size
    assert body.startswith(b"ID3\x03\x00")
    tag_size = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(body[6:10]))
    assert body[tag_size : tag_size + 2] == b"\xff\xfb"
    assert body[tag_size + 417 : tag_size + 419] == b"\xff\xfb"
    assert hashlib.sha256(body).hexdigest() == sim.body_sha256(recording.recording_id)
    assert b"".join(sim.iter_body(recording.recording_id)) == body
    stats = sim.stats()
    assert stats["downloads_completed"] == 1
    assert stats["bytes_served"] == recording.size


def test_frame_headers_survive_chunk_boundaries() -> None:
    with Simulator(options(size=300_000)) as sim:
        recording = sim.recordings()[0]
        body = b"".join(sim.iter_body(recording.recording_id))
        first = body.index(b"\xff\xfb")

        assert len(body) == 300_000
        frames = range(first, len(body) - 4, 417)
        assert all(body[i : i + 4] == b"\xff\xfb\x90\x64" for i in frames)


def test_unknown_recording_is_answered_404(sim: Simulator, api: requests.Session) -> None:
    url = f"{sim.base_url}/api/v1/public/recordings/00000000-0000-5000-8000-000000000000.mp3"

    response = api.get(url)

    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"


# -- rate rules ----------------------------------------------------------------------------


def test_eleven_quick_requests_break_the_rate_rule(api: requests.Session) -> None:
    with Simulator(options(rps=10)) as sim:
        statuses = [list_recordings(api, sim).status_code for _ in range(11)]

        assert statuses == [200] * 10 + [429]
        stats = sim.stats()
        assert stats["violations"] == stats["rate_violations"] == 1
        assert stats["in_flight_violations"] == 0
        assert stats["faults"]["429"] == 0


def test_rule_violations_still_count_as_arrivals(api: requests.Session) -> None:
    with Simulator(options(rps=2)) as sim:
        statuses = [list_recordings(api, sim).status_code for _ in range(5)]

        assert statuses == [200, 200, 429, 429, 429]
        assert sim.stats()["rate_violations"] == 3


def test_rate_violation_is_answered_with_retry_after(api: requests.Session) -> None:
    with Simulator(options(rps=1)) as sim:
        list_recordings(api, sim)
        response = list_recordings(api, sim)

        assert response.status_code == 429
        assert response.headers["Retry-After"] == "1"


def test_two_concurrent_requests_break_the_in_flight_rule() -> None:
    with Simulator(options(latency=0.3)) as sim:
        statuses: list[int] = []

        def fetch() -> None:
            response = requests.get(sim.recordings()[0].url, headers=AUTH, timeout=5)
            statuses.append(response.status_code)

        threads = [threading.Thread(target=fetch) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert sorted(statuses) == [200, 429]
        stats = sim.stats()
        assert stats["in_flight_violations"] == stats["violations"] == 1
        assert stats["max_in_flight"] == 2


def test_spaced_serial_requests_on_keep_alive_are_never_violations(
    api: requests.Session,
) -> None:
    with Simulator(options(rps=10, size=200_000)) as sim:
        recordings = sim.recordings()
        for index in range(12):
            # Downloads and list calls alternate, as in an archive pass.
            response = api.get(recordings[index].url) if index % 2 else list_recordings(api, sim)
            assert response.status_code == 200
            time.sleep(0.12)

        stats = sim.stats()
        assert stats["violations"] == 0
        assert stats["max_in_flight"] == 1


def test_back_to_back_requests_on_fresh_connections_are_not_overlaps() -> None:
    # Each urllib request opens a new connection the moment the previous body is read, the
    # case where late bookkeeping on the server would look like two requests in flight.
    with Simulator(options(size=100_000)) as sim:
        url = sim.recordings()[0].url
        for _ in range(40):
            request = urllib.request.Request(url, headers=AUTH)
            with urllib.request.urlopen(request, timeout=5) as response:
                assert len(response.read()) == 100_000

        stats = sim.stats()
        assert stats["violations"] == 0
        assert stats["downloads_completed"] == 40


def test_a_request_after_abandoning_a_download_is_not_an_overlap(
    api: requests.Session,
) -> None:
    # Closing a response part-way is how a client gives up on a download; the server's thread,
    # here pacing a throttled body, has not noticed yet when the next request arrives.
    with Simulator(options(size=1_000_000, bandwidth=200_000)) as sim:
        for _ in range(3):
            response = api.get(sim.recordings()[0].url, stream=True)
            next(response.iter_content(1024))
            response.close()
            assert list_recordings(api, sim).status_code == 200

        assert sim.stats()["violations"] == 0
