"""The webhook receiver, over real loopback HTTP: every row of its answer table, the limits that
bound a hostile sender, and what a hint keeps of a body."""

from __future__ import annotations

import dataclasses
import hmac
import http.client
import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from structlog.testing import capture_logs

from archiver import webhook
from archiver.hints import Hint, HintOutcome, HintQueue
from archiver.metrics import GaugeState, Metrics
from archiver.webhook import MAX_HEAD, Limits, WebhookReceiver, source_of

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
TOKEN = "0123456789abcdef0123456789abcdef"
PATH = f"/webhook/{TOKEN}"
UUID = "8f14e45f-ceea-467f-a0e6-3c1b2b8e4c5a"
LIMIT = 256 * 1024
WAIT = 10.0  # the longest any answer or event may take before the test fails


@dataclass
class Outcomes:
    """The counter callback: what the receiver and the queue counted, and a way to wait."""

    seen: Counter[HintOutcome] = field(default_factory=Counter)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, outcome: HintOutcome) -> None:
        with self.changed:
            self.seen[outcome] += 1
            self.changed.notify_all()

    def wait_for(self, outcome: HintOutcome, count: int = 1) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.seen[outcome] >= count, WAIT), self.seen


@dataclass
class Ticks:
    """The receiver's monotonic clock, moved by hand."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Site:
    receiver: WebhookReceiver
    queue: HintQueue
    outcomes: Outcomes
    ticks: Ticks

    @property
    def port(self) -> int:
        return self.receiver.address[1]


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def start(limits: Limits | None = None, capacity: int = 1000) -> Site:
    outcomes, ticks = Outcomes(), Ticks()
    queue = HintQueue(capacity=capacity, count=outcomes)
    receiver = WebhookReceiver(
        ("127.0.0.1", 0),
        TOKEN,
        queue,
        count=outcomes,
        clock=lambda: NOW,
        monotonic=ticks,
        limits=limits,
    )
    receiver.start()
    return Site(receiver, queue, outcomes, ticks)


@pytest.fixture
def site() -> Iterator[Site]:
    running = start()
    yield running
    running.receiver.stop()


def conversation(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "uuid": UUID,
        "startedAt": "2026-11-30T07:58:00.000Z",
        "durationSeconds": 95,
        "nature": "in",
        "status": "answered",
        "recordings": [{"url": f"https://api.cradle.io/api/v1/public/recordings/{UUID}.mp3"}],
    }
    body.update(fields)
    return body


def send(
    site: Site,
    body: bytes = b"",
    *,
    path: str = PATH,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    chunked: bool = False,
    source: str = "127.0.0.1",
) -> Reply:
    connection = http.client.HTTPConnection(
        "127.0.0.1", site.port, timeout=WAIT, source_address=(source, 0)
    )
    try:
        payload: Any = [body[i : i + 1000] for i in range(0, len(body), 1000)] if chunked else body
        connection.request(
            method, path, body=payload, headers=headers or {}, encode_chunked=chunked
        )
        response = connection.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


def post(site: Site, payload: Any, **options: Any) -> Reply:
    return send(site, json.dumps(payload).encode(), **options)


def raw(site: Site, head: bytes) -> socket.socket:
    """A connection that has sent `head` and nothing more."""
    sock = socket.create_connection(("127.0.0.1", site.port), timeout=WAIT)
    sock.sendall(head)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset counts as closing)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def head(content_length: int | None, *, path: str = PATH, extra: str = "") -> bytes:
    length = "" if content_length is None else f"Content-Length: {content_length}\r\n"
    return f"POST {path} HTTP/1.1\r\nHost: x\r\n{length}{extra}\r\n".encode()


def test_a_conversation_is_answered_202_and_queued_as_a_hint(site: Site) -> None:
    reply = post(site, conversation())
    assert reply.status == 202
    assert site.queue.due(NOW) == Hint(
        uuid=UUID,
        started_at=datetime(2026, 11, 30, 7, 58, tzinfo=UTC),
        duration_seconds=95.0,
        recordings=1,
        received_at=NOW,
    )
    assert site.outcomes.seen == {HintOutcome.ACCEPTED: 1}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/webhook/" + "f" * len(TOKEN)),  # wrong token, same length
        ("POST", "/webhook/" + TOKEN[:-1]),  # a prefix of the token
        ("POST", PATH + "x"),
        ("POST", PATH + "/"),
        ("POST", "/webhook/"),
        ("POST", "/"),
        ("POST", "/metrics"),
        ("POST", "/WEBHOOK/" + TOKEN),
        ("GET", PATH),
        ("PUT", PATH),
    ],
)
def test_a_wrong_path_or_token_gets_the_one_404(site: Site, method: str, path: str) -> None:
    wrong = send(site, json.dumps(conversation()).encode(), method=method, path=path)
    baseline = send(site, json.dumps(conversation()).encode(), path="/nothing-here")
    assert wrong.status == 404
    assert (wrong.body, _without_date(wrong.headers)) == (
        baseline.body,
        _without_date(baseline.headers),
    )
    assert len(site.queue) == 0
    assert site.outcomes.seen == {HintOutcome.NOT_FOUND: 2}


def _without_date(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != "Date"}


def test_the_path_is_compared_whole_in_constant_time_for_a_wrong_path_and_a_wrong_token(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(webhook.hmac, "compare_digest", spy)
    for path in ("/elsewhere", "/webhook/" + "0" * len(TOKEN), PATH + "?source=cradle"):
        send(site, json.dumps(conversation(uuid=path[-5:])).encode(), path=path)
    expected = PATH.encode()
    assert compared == [
        (b"/elsewhere", expected),
        (("/webhook/" + "0" * len(TOKEN)).encode(), expected),
        (expected, expected),  # the query is not part of the path
    ]


def test_a_body_of_exactly_the_limit_is_read_and_one_byte_more_is_413(site: Site) -> None:
    document = json.dumps(conversation()).encode()
    at_limit = document + b" " * (LIMIT - len(document))
    assert send(site, at_limit).status == 202
    over = json.dumps(conversation(uuid="another")).encode()
    assert send(site, over + b" " * (LIMIT + 1 - len(over))).status == 413
    assert len(site.queue) == 1
    assert site.outcomes.seen == {HintOutcome.ACCEPTED: 1, HintOutcome.TOO_LARGE: 1}


def test_a_content_length_over_the_limit_is_answered_before_any_body_is_sent(site: Site) -> None:
    with raw(site, head(10 * 2**30)) as sock:  # 10 GiB announced, not a byte of it sent
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_expect_100_continue_learns_of_a_wrong_token_before_sending_its_body(site: Site) -> None:
    wrong = head(100, path="/webhook/nope", extra="Expect: 100-continue\r\n")
    with raw(site, wrong) as sock:
        assert read_all(sock).startswith(b"HTTP/1.1 404 ")
    with raw(site, head(LIMIT + 1, extra="Expect: 100-continue\r\n")) as sock:
        assert read_all(sock).startswith(b"HTTP/1.1 413 ")
    body = json.dumps(conversation()).encode()
    with raw(site, head(len(body), extra="Expect: 100-continue\r\n")) as sock:
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        assert read_all(sock).startswith(b"HTTP/1.1 202 ")


def test_a_chunked_body_is_read_up_to_the_limit(site: Site) -> None:
    assert send(site, json.dumps(conversation()).encode(), chunked=True).status == 202
    document = json.dumps(conversation(uuid="big")).encode()
    big = document + b" " * (LIMIT + 1 - len(document))
    assert send(site, big, chunked=True).status == 413
    assert len(site.queue) == 1


def test_a_body_in_tiny_chunks_is_held_to_the_limit_with_its_framing(site: Site) -> None:
    def one_byte_chunks(body: bytes) -> bytes:
        return b"".join(b"1\r\n" + body[i : i + 1] + b"\r\n" for i in range(len(body))) + (
            b"0\r\n\r\n"
        )

    small = json.dumps(conversation()).encode()
    framing = "Transfer-Encoding: chunked\r\n"
    with raw(site, head(None, extra=framing) + one_byte_chunks(small)) as sock:
        assert read_all(sock).startswith(b"HTTP/1.1 202 ")
    padded = json.dumps(conversation(uuid="padded")).encode() + b" " * (60 * 1024)
    with raw(site, head(None, extra=framing) + one_byte_chunks(padded)) as sock:
        assert read_all(sock).startswith(b"HTTP/1.1 413 ")  # 60 KiB of body, 360 KiB on the wire
    assert len(site.queue) == 1


def test_headers_past_their_cap_are_not_read(site: Site) -> None:
    padding = "".join(f"X-Pad-{i}: {'a' * 1000}\r\n" for i in range(MAX_HEAD // 1000 + 1))
    body = json.dumps(conversation()).encode()
    request = f"POST {PATH} HTTP/1.1\r\nHost: x\r\n{padding}Content-Length: {len(body)}\r\n\r\n"
    with raw(site, request.encode() + body) as sock:
        assert read_all(sock).startswith(b"HTTP/1.1 400 ")  # its length was never seen
    assert len(site.queue) == 0


def test_a_head_request_gets_the_404_without_a_body(site: Site) -> None:
    with raw(site, f"HEAD {PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode()) as sock:
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 404 ") and answer.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("address", "source"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not an address", "not an address"),
    ],
)
def test_an_ipv6_sender_is_one_source_per_64(address: str, source: str) -> None:
    assert source_of(address) == source


@pytest.mark.parametrize(
    "body",
    [
        b"",  # no Content-Length, not chunked: no body (RFC 9112)
        b"not json",
        b"\xff\xfe\x00garbage",
        b"[" * 100_000 + b"]" * 100_000,  # nested deeper than any parser's stack
        b'{"uuid": "a", "startedAt": "2026-11-30T07:58:00Z", "x": 1' + b"9" * 5000 + b"}",
        json.dumps([conversation()]).encode(),
        b'"a string"',
        b"null",
        json.dumps(conversation(uuid=None)).encode(),
        json.dumps(conversation(uuid=42)).encode(),
        json.dumps(conversation(uuid="")).encode(),
        json.dumps(conversation(uuid="a" * 101)).encode(),
        json.dumps(conversation(uuid="../../etc/passwd")).encode(),
        json.dumps(conversation(uuid="a\u0000b")).encode(),
        json.dumps(conversation(startedAt=None)).encode(),
        json.dumps(conversation(startedAt=1701331200)).encode(),
        json.dumps(conversation(startedAt="yesterday")).encode(),
        json.dumps(conversation(startedAt="2026-11-30T07:58:00")).encode(),  # no zone
        json.dumps(conversation(startedAt="1999-12-31T23:59:59Z")).encode(),
        json.dumps(conversation(startedAt="2026-12-02T08:00:01Z")).encode(),  # > a day ahead
        json.dumps(conversation(startedAt=["2026-11-30T07:58:00Z"])).encode(),
    ],
)
def test_a_body_that_is_not_a_usable_conversation_is_400(site: Site, body: bytes) -> None:
    if body:
        assert send(site, body).status == 400
    else:
        with raw(site, head(None)) as sock:
            assert read_all(sock).startswith(b"HTTP/1.1 400 ")
    assert len(site.queue) == 0
    assert site.outcomes.seen == {HintOutcome.MALFORMED: 1}


def test_ambiguous_framing_is_400(site: Site) -> None:
    smuggle = head(5, extra="Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n"
    with raw(site, smuggle) as sock:
        assert read_all(sock).startswith(b"HTTP/1.1 400 ")
    twice = head(5, extra="Content-Length: 6\r\n") + b"{}"
    with raw(site, twice) as sock:
        assert read_all(sock).startswith(b"HTTP/1.1 400 ")
    for chunk_line in (b"zz\r\n", b"-5\r\n", b"0x10\r\n", b"\r\n"):
        not_hex = head(None, extra="Transfer-Encoding: chunked\r\n") + chunk_line + b"{}\r\n"
        with raw(site, not_hex) as sock:
            assert read_all(sock).startswith(b"HTTP/1.1 400 "), chunk_line
    assert site.outcomes.seen == {HintOutcome.MALFORMED: 6}


@pytest.mark.parametrize(
    ("fields", "duration", "recordings"),
    [
        ({"durationSeconds": "95"}, None, 1),
        ({"durationSeconds": True}, None, 1),
        ({"durationSeconds": -1}, None, 1),
        ({"durationSeconds": 32 * 86400}, None, 1),
        ({"durationSeconds": 12.5}, 12.5, 1),
        ({"recordings": "many"}, 95.0, None),
        ({"recordings": []}, 95.0, 0),
        ({"recordings": [1, "x", None]}, 95.0, 3),
    ],
)
def test_a_bad_optional_field_is_read_as_absent(
    site: Site, fields: dict[str, Any], duration: float | None, recordings: int | None
) -> None:
    assert post(site, conversation(**fields)).status == 202
    hint = site.queue.due(NOW)
    assert hint is not None
    assert (hint.duration_seconds, hint.recordings) == (duration, recordings)


def test_non_finite_durations_are_read_as_absent(site: Site) -> None:
    for uuid, literal in (("a", b"NaN"), ("b", b"Infinity"), ("c", b"1e400")):
        body = json.dumps(conversation(uuid=uuid, durationSeconds=0)).encode()
        assert send(site, body.replace(b'"durationSeconds": 0', b'"durationSeconds": ' + literal))
    durations = []
    while hint := site.queue.due(NOW):
        durations.append(hint.duration_seconds)
    assert durations == [None, None, None]


def test_too_many_from_one_source_are_429_and_other_sources_are_not_held_back() -> None:
    site = start(Limits(rate=1.0, burst=3.0))
    try:
        answers = [post(site, conversation(uuid=f"u{i}")).status for i in range(5)]
        assert answers == [202, 202, 202, 429, 429]
        limited = post(site, conversation(uuid="u9"))
        assert limited.headers["Retry-After"] == "1"
        assert post(site, conversation(uuid="v1"), source="127.0.0.2").status == 202
        site.ticks.now += 2.0  # two tokens back at one a second
        assert [post(site, conversation(uuid=f"w{i}")).status for i in range(3)] == [
            202,
            202,
            429,
        ]
        assert site.outcomes.seen[HintOutcome.RATE_LIMITED] == 4
        assert len(site.queue) == 6
    finally:
        site.receiver.stop()


def test_requests_without_the_token_do_not_use_up_a_sources_rate() -> None:
    site = start(Limits(rate=1.0, burst=2.0))
    try:
        assert {send(site, b"{}", path="/guess").status for _ in range(10)} == {404}
        assert post(site, conversation()).status == 202
    finally:
        site.receiver.stop()


def test_too_many_connections_from_one_source_are_refused_at_once() -> None:
    site = start(Limits(max_connections_per_source=2))
    idle = [raw(site, b"POST ") for _ in range(2)]  # two slow senders hold their slots
    try:
        with raw(site, b"") as third:
            assert read_all(third).startswith(b"HTTP/1.1 429 ")
        assert post(site, conversation(), source="127.0.0.2").status == 202
    finally:
        for sock in idle:
            sock.close()
        site.receiver.stop()


def test_a_body_still_trickling_in_at_the_deadline_is_cut() -> None:
    site = start(Limits(request_deadline=10.0, read_timeout=WAIT))
    try:
        trickle = head(1000, extra="Expect: 100-continue\r\n")
        with raw(site, trickle) as sock:
            # The handler is reading: it has answered the Expect.
            assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")
            sock.sendall(b'{"uuid": "')  # ... and the rest comes a byte a minute
            site.ticks.now += 10.5  # the reaper's clock passes the deadline
            assert read_all(sock) == b""  # cut, unanswered
        site.outcomes.wait_for(HintOutcome.TIMED_OUT)
        assert len(site.queue) == 0
        assert post(site, conversation()).status == 202  # the receiver goes on
    finally:
        site.receiver.stop()


def test_a_sender_gone_silent_mid_body_is_cut_by_the_read_timeout() -> None:
    site = start(Limits(read_timeout=0.2))
    try:
        with raw(site, head(1000) + b'{"uuid": ') as sock:
            assert read_all(sock) == b""
        site.outcomes.wait_for(HintOutcome.TIMED_OUT)
    finally:
        site.receiver.stop()


class _Canary(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    do_POST = do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_url_in_the_body_is_kept_nowhere_and_never_fetched(site: Site) -> None:
    canary = ThreadingHTTPServer(("127.0.0.1", 0), _Canary)
    threading.Thread(target=partial(canary.serve_forever, 0.05), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{canary.server_address[1]}/{UUID}.mp3"
        forged = conversation(url=url, recordings=[{"url": url}], callback=url, links={"u": url})
        assert post(site, forged).status == 202
        hint = site.queue.due(NOW)
        assert hint is not None
        assert [f.name for f in dataclasses.fields(hint)] == [
            "uuid",
            "started_at",
            "duration_seconds",
            "recordings",
            "received_at",
        ]
        assert not any(str(canary.server_address[1]) in str(v) for v in vars(hint).values())
        # Served after the forged hint: had anything fetched its url, the canary would show it.
        assert send(site, b"", path="/after").status == 404
        assert _Canary.hits == []
    finally:
        canary.shutdown()
        canary.server_close()


def test_a_repeated_webhook_is_answered_202_and_counted_a_duplicate(site: Site) -> None:
    assert [post(site, conversation()).status for _ in range(3)] == [202, 202, 202]
    assert len(site.queue) == 1
    assert site.outcomes.seen == {HintOutcome.ACCEPTED: 1, HintOutcome.DUPLICATE: 2}


def test_a_full_queue_drops_its_oldest_hint_and_counts_it() -> None:
    site = start(capacity=3)
    try:
        for i in range(5):
            assert post(site, conversation(uuid=f"u{i}")).status == 202
        held = []
        while hint := site.queue.due(NOW):
            held.append(hint.uuid)
        assert held == ["u2", "u3", "u4"]
        assert site.outcomes.seen[HintOutcome.DROPPED_FULL] == 2
    finally:
        site.receiver.stop()


def test_the_token_is_never_logged(site: Site) -> None:
    with capture_logs() as logs:
        post(site, conversation())
        send(site, b"", path=PATH + "x")
        send(site, b"x" * 10, path=PATH, headers={"Content-Type": "text/plain"})
    assert logs
    assert TOKEN not in repr(logs)


def test_a_receiver_needs_a_token_and_a_free_port(site: Site) -> None:
    with pytest.raises(ValueError):
        WebhookReceiver(("127.0.0.1", 0), "", HintQueue())
    with pytest.raises(webhook.FatalError) as taken:
        WebhookReceiver(("127.0.0.1", site.port), TOKEN, HintQueue())
    assert "webhook.listen" in str(taken.value)


def test_the_metrics_count_outcomes_and_time_hints_to_archive() -> None:
    metrics = Metrics(lambda: GaugeState(None, {}))
    queue = HintQueue(count=metrics.webhook_hint)
    hint = Hint(UUID, NOW, None, None, NOW)
    queue.offer(hint)
    queue.offer(hint)
    metrics.webhook_hint(HintOutcome.ARCHIVED)
    metrics.observe_hint_to_archive((NOW + timedelta(seconds=7) - hint.received_at).seconds)
    text = metrics.exposition().decode()
    assert "# TYPE cradle_archiver_webhook_hints_total counter\n" in text
    assert "# TYPE cradle_archiver_hint_to_archive_seconds histogram\n" in text
    for outcome in ("accepted", "duplicate", "archived"):
        assert f'cradle_archiver_webhook_hints_total{{outcome="{outcome}"}} 1.0\n' in text
    assert 'cradle_archiver_hint_to_archive_seconds_bucket{le="5.0"} 0.0\n' in text
    assert 'cradle_archiver_hint_to_archive_seconds_bucket{le="10.0"} 1.0\n' in text


@pytest.mark.parametrize("length", ["\u00b2", "1" * 5000, "+5", "-1"])
def test_a_content_length_of_anything_but_a_few_ascii_digits_is_400(
    site: Site, length: str
) -> None:
    request = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
    with raw(site, request.encode("latin-1") + b"{}") as sock:
        assert read_all(sock).startswith(b"HTTP/1.1 400 ")
    assert len(site.queue) == 0
