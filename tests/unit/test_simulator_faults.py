"""The simulator's fault switches, poison recordings, canary and admin endpoints."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import pytest
import requests

from archiver.models import format_time
from archiver.simulator import OptionError, Simulator, SimulatorOptions

START = datetime(2024, 1, 1, tzinfo=UTC)
END = START + timedelta(hours=3)
AUTH = {"CRADLE_ID": "demo-id", "CRADLE_API_KEY": "demo-key"}
WINDOW = {"from": format_time(START), "until": format_time(END)}


def options(**changes: object) -> SimulatorOptions:
    base: dict[str, object] = {
        "seed": 3,
        "start": START,
        "end": END,
        "rps": 1000,
        "size": 50_000,
        "clock": lambda: END + timedelta(days=1),
    }
    return SimulatorOptions(**{**base, **changes})  # type: ignore[arg-type]


@pytest.fixture
def api() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers.update(AUTH)
        yield session


def list_url(sim: Simulator) -> str:
    return f"{sim.base_url}/api/v1/public/recordings"


# -- injected faults -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "header"),
    [("seconds", "1"), ("none", None)],
)
def test_injected_429_carries_retry_after_as_configured(
    api: requests.Session, mode: str, header: str | None
) -> None:
    with Simulator(options(fault_429=1.0, retry_after=mode)) as sim:
        response = api.get(list_url(sim), params=WINDOW)

        assert response.status_code == 429
        assert response.headers.get("Retry-After") == header
        stats = sim.stats()
        assert stats["faults"]["429"] == 1
        assert stats["violations"] == 0


def test_injected_429_can_carry_an_http_date(api: requests.Session) -> None:
    with Simulator(options(fault_429=1.0, retry_after="date")) as sim:
        response = api.get(list_url(sim), params=WINDOW)

        when = parsedate_to_datetime(response.headers["Retry-After"])
        assert datetime.now(UTC) < when <= datetime.now(UTC) + timedelta(seconds=3)


def test_mixed_retry_after_uses_every_form(api: requests.Session) -> None:
    with Simulator(options(fault_429=1.0, retry_after="mixed")) as sim:
        headers = [api.get(list_url(sim), params=WINDOW).headers for _ in range(30)]

        forms = {
            "none"
            if "Retry-After" not in h
            else "seconds"
            if h["Retry-After"].isdigit()
            else "date"
            for h in headers
        }
        assert forms == {"seconds", "date", "none"}


def test_injected_5xx_is_500_502_or_503(api: requests.Session) -> None:
    with Simulator(options(fault_5xx=1.0)) as sim:
        statuses = {api.get(list_url(sim), params=WINDOW).status_code for _ in range(20)}

        assert statuses <= {500, 502, 503}
        assert len(statuses) > 1
        assert sim.stats()["faults"]["5xx"] == 20


def test_dropped_headers_close_the_connection_without_a_response(api: requests.Session) -> None:
    with Simulator(options(fault_drop_headers=1.0)) as sim:
        with pytest.raises(requests.ConnectionError):
            api.get(list_url(sim), params=WINDOW)

        assert sim.stats()["faults"]["drop_headers"] == 1


@pytest.mark.parametrize("fault", ["fault_drop_body", "fault_truncate"])
def test_cut_bodies_are_shorter_than_content_length(api: requests.Session, fault: str) -> None:
    with Simulator(options(**{fault: 1.0})) as sim:
        recording = sim.recordings()[0]
        response = api.get(recording.url, stream=True)
        received = bytearray()

        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(recording.size)
        with pytest.raises(requests.RequestException):
            for chunk in response.iter_content(8192):
                received.extend(chunk)

        assert 0 < len(received) < recording.size
        stats = sim.stats()
        assert stats["faults"][fault.removeprefix("fault_")] == 1
        assert stats["downloads_completed"] == 0


def test_slow_bodies_arrive_at_the_slow_rate(api: requests.Session) -> None:
    with Simulator(options(slow_body=1.0, slow_bytes_per_second=250_000)) as sim:
        began = time.monotonic()
        response = api.get(sim.recordings()[0].url)
        elapsed = time.monotonic() - began

        assert response.status_code == 200 and len(response.content) == 50_000
        assert 0.15 <= elapsed < 2
        assert sim.stats()["faults"]["slow_body"] == 1


def test_bandwidth_caps_every_body_and_latency_delays_every_request(
    api: requests.Session,
) -> None:
    with Simulator(options(bandwidth=500_000, latency=0.1)) as sim:
        began = time.monotonic()
        api.get(sim.recordings()[0].url)
        download = time.monotonic() - began
        began = time.monotonic()
        api.get(list_url(sim), params=WINDOW)
        listing = time.monotonic() - began

        assert 0.18 <= download < 2
        assert 0.1 <= listing < 1


@pytest.mark.parametrize("listed", ["recordings", "conversations"])
def test_malformed_lists_are_200_but_unusable(api: requests.Session, listed: str) -> None:
    with Simulator(options(fault_malformed_list=1.0)) as sim:
        usable = 0
        for _ in range(12):
            response = api.get(f"{sim.base_url}/api/v1/public/{listed}", params=WINDOW)
            assert response.status_code == 200
            try:
                document = json.loads(response.content)
            except ValueError:
                continue
            usable += isinstance(document.get(listed), list)

        assert usable == 0
        assert sim.stats()["faults"]["malformed_list"] == 12


def test_faults_repeat_for_the_same_requests_and_retries_eventually_succeed(
    api: requests.Session,
) -> None:
    def statuses(sim: Simulator) -> list[int]:
        return [api.get(list_url(sim), params=WINDOW).status_code for _ in range(15)]

    switches = {"fault_429": 0.3, "fault_5xx": 0.3}
    with Simulator(options(**switches)) as one, Simulator(options(**switches)) as two:
        first, second = statuses(one), statuses(two)

    assert first == second
    assert 200 in first and set(first) - {200}


def test_faults_can_be_switched_at_run_time(api: requests.Session) -> None:
    with Simulator(options()) as sim:
        assert api.get(list_url(sim), params=WINDOW).status_code == 200
        sim.set_faults(fault_5xx=1.0)
        assert api.get(list_url(sim), params=WINDOW).status_code >= 500
        requests.post(f"{sim.base_url}/_sim/faults", json={"fault_5xx": 0}, timeout=5)
        assert api.get(list_url(sim), params=WINDOW).status_code == 200


def test_unknown_or_invalid_switches_are_refused() -> None:
    with Simulator(options()) as sim:
        with pytest.raises(OptionError) as unknown:
            sim.set_faults(seed=4)
        with pytest.raises(OptionError) as invalid:
            sim.set_faults(fault_429=2)
        response = requests.post(f"{sim.base_url}/_sim/faults", json={"nope": 1}, timeout=5)

        assert unknown.value.option == "seed"
        assert invalid.value.option == "fault_429"
        assert response.status_code == 400
        assert sim.switches.fault_429 == 0


# -- poison and the canary -----------------------------------------------------------------


def poisoned(sim: Simulator, kind: str) -> str:
    return next(r.url for r in sim.recordings() if r.poison == kind)


def test_poison_recordings_fail_in_their_own_ways(api: requests.Session) -> None:
    counts = {"poison_html": 1, "poison_offhost": 1, "poison_redirect": 1, "poison_404": 1}
    with Simulator(options(**counts)) as sim:
        html = api.get(poisoned(sim, "html"))
        missing = api.get(poisoned(sim, "404"))
        redirect = api.get(poisoned(sim, "redirect"), allow_redirects=False)

        assert html.status_code == 200 and html.headers["Content-Type"].startswith("text/html")
        assert missing.status_code == 404
        assert redirect.status_code == 302
        assert redirect.headers["Location"].startswith(f"{sim.canary_url}/")
        assert poisoned(sim, "offhost").startswith(f"{sim.canary_url}/")
        assert sorted(r.poison or "" for r in sim.recordings() if r.poison) == [
            "404",
            "html",
            "offhost",
            "redirect",
        ]


def test_canary_counts_requests_that_carry_credentials(api: requests.Session) -> None:
    with Simulator(options(poison_redirect=1)) as sim:
        followed = api.get(poisoned(sim, "redirect"))
        clean = requests.get(f"{sim.canary_url}/anything", timeout=5)

        assert followed.status_code == clean.status_code == 200
        assert clean.content.startswith(b"ID3")
        stats = sim.stats()
        assert stats["canary_requests"] == 2
        assert stats["canary_credential_requests"] == 1


# -- admin endpoints -----------------------------------------------------------------------


def test_admin_endpoints_skip_auth_and_rate_rules(api: requests.Session) -> None:
    with Simulator(options(rps=1)) as sim:
        api.get(list_url(sim), params=WINDOW)
        for _ in range(5):
            stats = requests.get(f"{sim.base_url}/_sim/stats", timeout=5).json()

        assert stats == sim.stats()
        assert stats["requests"] == 1 and stats["violations"] == 0
        assert stats["responses"] == {"200": 1}


def test_admin_lists_recordings_with_their_sha256() -> None:
    with Simulator(options(poison_404=1)) as sim:
        listed = requests.get(f"{sim.base_url}/_sim/recordings?sha256=1", timeout=5).json()

        assert [r["id"] for r in listed] == [r.recording_id for r in sim.recordings()]
        assert listed[0]["sha256"] == sim.body_sha256(listed[0]["id"])
        assert sum(r["poison"] == "404" for r in listed) == 1
        assert {"startedAt", "size", "visible_at", "poison"} <= set(listed[0])


def test_reset_stats_zeroes_the_counters(api: requests.Session) -> None:
    with Simulator(options()) as sim:
        api.get(list_url(sim), params=WINDOW)
        response = requests.post(f"{sim.base_url}/_sim/reset-stats", timeout=5)

        assert response.status_code == 200
        assert sim.stats()["requests"] == 0
        assert requests.get(f"{sim.base_url}/_sim/nothing", timeout=5).status_code == 404


def test_stop_cuts_off_a_slow_download_promptly(api: requests.Session) -> None:
    sim = Simulator(options(size=1_000_000, bandwidth=10_000)).start()
    response = api.get(sim.recordings()[0].url, stream=True)
    began = time.monotonic()
    sim.stop()

    assert time.monotonic() - began < 2
    with pytest.raises(requests.RequestException):
        response.content  # noqa: B018  reading is what fails
