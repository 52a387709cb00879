"""The simulator's end-of-call webhooks, received by a small HTTP server in the test: a live
feed of calls ending after start-up, each the conversation as listed, with drop, repeat and
delay switches honoured the same way for a seed."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from archiver.models import format_time
from archiver.simulator import SimConversation, Simulator, SimulatorOptions
from tests.ports import free_port

START = datetime(2024, 1, 1, tzinfo=UTC)
END = START + timedelta(hours=6)
STARTED = START + timedelta(hours=3)  # when the simulator starts: half the calls are live
AFTER = END + timedelta(hours=3)  # every call has ended
AUTH = {"CRADLE_ID": "demo-id", "CRADLE_API_KEY": "demo-key"}


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class Post:
    body: dict[str, Any]
    content_type: str


class Receiver:
    """Keeps every POST it is sent and answers 202."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver._lock:
                    receiver.posts.append(Post(body, self.headers["Content-Type"]))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/webhook/secret"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def uuids(self) -> list[str]:
        with self._lock:
            return [post.body["uuid"] for post in self.posts]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[[], Receiver]]:
    made: list[Receiver] = []

    def make() -> Receiver:
        made.append(Receiver())
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def options(clock: FakeClock, url: str, **changes: object) -> SimulatorOptions:
    base: dict[str, object] = {
        "seed": 5,
        "start": START,
        "end": END,
        "rps": 1000,
        "size": 1024,
        "clock": clock,
        "webhook_url": url,
    }
    return SimulatorOptions(**{**base, **changes})  # type: ignore[arg-type]


def wait_until(done: Callable[[], bool], timeout: float = 20.0) -> None:
    """Until `done` holds, checked every few milliseconds; fails after `timeout` seconds."""
    give_up = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < give_up, "timed out waiting for the webhooks"
        time.sleep(0.01)


def live(sim: Simulator) -> list[SimConversation]:
    """The calls ending after start-up, in the order they end."""
    calls = [c for c in sim.conversations() if c.ended_at > sim.started_at]
    return sorted(calls, key=lambda c: (c.ended_at, c.uuid))


def test_each_call_ending_after_start_up_is_posted_as_listed(
    receivers: Callable[[], Receiver],
) -> None:
    clock = FakeClock(STARTED)
    receiver = receivers()
    with Simulator(options(clock, receiver.url)) as sim, requests.Session() as api:
        expected = live(sim)
        assert 0 < len(expected) < len(sim.conversations())
        clock.now = AFTER
        wait_until(lambda: len(receiver.posts) == len(expected))
        window = {"from": format_time(START), "until": format_time(END)}
        response = api.get(
            f"{sim.base_url}/api/v1/public/conversations", params=window, headers=AUTH
        )
        listed = {c["uuid"]: c for c in response.json()["conversations"]}
        stats = sim.stats()

    assert receiver.uuids() == [c.uuid for c in expected]
    assert [post.body for post in receiver.posts] == [listed[c.uuid] for c in expected]
    assert {post.content_type for post in receiver.posts} == {"application/json"}
    assert stats["webhooks"] == {"sent": len(expected), "dropped": 0, "repeated": 0, "failed": 0}
    assert stats["requests"] == 1  # the list call above: webhooks are no API requests


def dropping_and_repeating(receiver: Receiver, clock: FakeClock) -> tuple[set[str], dict[str, int]]:
    """Runs a simulator that drops and repeats a share until every live call's webhook is out:
    the live calls' uuids and the webhook counts."""
    switches = {"webhook_drop": 0.3, "webhook_repeat": 0.3}
    with Simulator(options(clock, receiver.url, **switches)) as sim:
        expected = {c.uuid for c in live(sim)}
        clock.now = AFTER

        def delivered() -> bool:
            counts = sim.stats()["webhooks"]
            return counts["sent"] + counts["dropped"] == len(expected) + counts["repeated"]

        wait_until(delivered)
        return expected, sim.stats()["webhooks"]


def test_drop_and_repeat_pick_the_same_webhooks_for_a_seed(
    receivers: Callable[[], Receiver],
) -> None:
    received = []
    for _ in range(2):
        clock = FakeClock(STARTED)
        receiver = receivers()
        expected, counts = dropping_and_repeating(receiver, clock)
        posted = Counter(receiver.uuids())
        assert set(posted) <= expected
        assert set(posted.values()) == {1, 2}
        assert sum(1 for n in posted.values() if n == 2) == counts["repeated"] > 0
        assert len(expected) - len(posted) == counts["dropped"] > 0
        received.append(posted)

    assert received[0] == received[1]


def test_delayed_webhooks_arrive_only_the_delay_after_their_call_ended(
    receivers: Callable[[], Receiver],
) -> None:
    delay = timedelta(seconds=600)
    clock = FakeClock(STARTED)
    receiver = receivers()
    with Simulator(options(clock, receiver.url, webhook_delay=600)) as sim:
        now = STARTED + timedelta(hours=2)
        due = [c for c in live(sim) if c.ended_at + delay <= now]
        waiting = [c for c in live(sim) if c.ended_at <= now < c.ended_at + delay]
        assert due
        assert waiting
        clock.now = now
        wait_until(lambda: len(receiver.posts) == len(due))

    assert receiver.uuids() == [c.uuid for c in due]


def test_a_receiver_that_is_not_there_counts_as_failed_and_the_api_goes_on() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"  # nobody listens there
    clock = FakeClock(STARTED)
    with Simulator(options(clock, url)) as sim, requests.Session() as api:
        expected = live(sim)
        clock.now = AFTER
        wait_until(lambda: sim.stats()["webhooks"]["failed"] == len(expected))
        window = {"from": format_time(START), "until": format_time(END)}
        response = api.get(f"{sim.base_url}/api/v1/public/recordings", params=window, headers=AUTH)

    assert response.status_code == 200
    assert sim.stats()["webhooks"]["sent"] == 0
