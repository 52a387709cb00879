"""The Cradle client against a hostile server on loopback: lying lengths, encodings, trickles,
endless bodies, bombs, odd charsets and poison entries. A canary on another port must never
hear from it, and each bad answer must cost at most the one entry or attempt it is about."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from archiver import cradle
from archiver.config import CradleConfig
from archiver.cradle import CradleClient, RetryPolicy
from archiver.cradle import client as cradle_client
from archiver.errors import ApiUnavailable, RecordingFailed
from archiver.limiter import RateLimiter
from archiver.models import Recording, Window
from archiver.spool import Spool
from tests import builders
from tests.builders import mp3

MP3 = mp3(10_250)
RID = "935f1dc8-b56a-535c-b678-95edf74c593c"
NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)
WINDOW = Window(NOW - timedelta(hours=1), NOW)
KEY = "hostile-test-key-31"

Respond = Callable[[BaseHTTPRequestHandler], None]


class Server:
    """A loopback server; `routes` maps a path prefix to a function that writes the raw answer."""

    def __init__(self) -> None:
        self.routes: dict[str, Respond] = {}
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.requests.append({"path": self.path, "headers": dict(self.headers)})
                for prefix, respond in server.routes.items():
                    if self.path.startswith(prefix):
                        respond(self)
                        return
                reply(self, 404, b"")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    length: int | None = None,
) -> None:
    handler.send_response(status)
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    handler.end_headers()
    handler.wfile.write(body)


def listing_of(*entries: Any, size: Any = None) -> bytes:
    return json.dumps({"recordings": list(entries), "size": size or len(entries)}).encode()


@pytest.fixture
def api() -> Iterator[Server]:
    server = Server()
    yield server
    server.close()


@pytest.fixture
def canary() -> Iterator[Server]:
    """Another host: whatever reaches it is a leak."""
    server = Server()
    server.routes["/"] = lambda h: reply(h, 200, MP3)
    yield server
    server.close()
    assert server.requests == [], "a request reached the canary"


def client_for(base_url: str, *, timeout: float = 20, attempts: int = 2) -> CradleClient:
    config = CradleConfig(
        base_url=base_url,
        id="acme",
        api_key=KEY,
        timeout=timedelta(seconds=timeout),
        min_transfer_rate=16 * 1024,
    )
    return CradleClient(
        config,
        limiter=RateLimiter(10, sleep=lambda s: None, startup_quiet=0),
        retry=RetryPolicy(attempts=attempts, sleep=lambda s: None),
        wall_clock=lambda: NOW,
    )


def entry(base_url: str, rid: str = RID, **fields: Any) -> dict[str, Any]:
    """A list entry for a recording the test server at `base_url` serves, started in WINDOW."""
    return builders.entry(rid, base_url=base_url, **{"startedAt": "2024-05-01T11:00:00Z", **fields})


def recording(base_url: str, rid: str = RID) -> Recording:
    return Recording.from_api(entry(base_url, rid))


def list_once(client: CradleClient) -> Any:
    return client.list_recordings(WINDOW, WINDOW.start, WINDOW.end)


# -- urls and redirects --------------------------------------------------------------------------


def test_the_backslash_trick_sends_nothing_anywhere(
    api: Server, canary: Server, tmp_path: Path
) -> None:
    port = canary.url.rsplit(":", 1)[1]
    tricked = Recording.from_api(
        entry(
            api.url,
            url=f"http://127.0.0.1:{port}\\@{api.url[7:]}/api/v1/public/recordings/{RID}.mp3",
        )
    )
    with pytest.raises(RecordingFailed) as caught:
        client_for(api.url).download(tricked, Spool(tmp_path))
    assert caught.value.reason == "bad_url" and caught.value.permanent
    assert api.requests == []


@pytest.mark.parametrize(
    "location",
    [
        "{canary}/steal.mp3",
        "http://127.0.0.1:{port}\\@{api_host}/x.mp3",
        "http://x@{api_host}/x.mp3",
        "//127.0.0.1:{port}/x.mp3",
        "/x .mp3",
        "http://127.0.0.1:{port}\\x/x.mp3",
    ],
)
def test_a_hostile_redirect_on_a_download_is_not_followed(
    api: Server, canary: Server, tmp_path: Path, location: str
) -> None:
    target = location.format(
        canary=canary.url, port=canary.url.rsplit(":", 1)[1], api_host=api.url[7:]
    )
    api.routes["/api/"] = lambda h: reply(h, 302, b"", {"Location": target})
    with pytest.raises(RecordingFailed) as caught:
        client_for(api.url).download(recording(api.url), Spool(tmp_path))
    assert caught.value.reason in ("bad_url", "off_host_url") and caught.value.permanent
    assert len(api.requests) == 1


def test_a_redirect_on_a_list_call_to_another_host_fails_the_window(
    api: Server, canary: Server
) -> None:
    api.routes["/api/"] = lambda h: reply(h, 302, b"", {"Location": canary.url + "/list"})
    with pytest.raises(ApiUnavailable) as caught:
        list_once(client_for(api.url))
    assert caught.value.reason == "off_host_url"


# -- list bodies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=x-bogus",
        "text/plain",
        "application/json; charset=iso-8859-1",
        "application/json; charset=utf-16",
    ],
)
def test_a_list_is_utf8_whatever_its_header_says(api: Server, content_type: str) -> None:
    body = listing_of(entry(api.url, agent1="Zoë Müller"))
    api.routes["/api/"] = lambda h: reply(h, 200, body, {"Content-Type": content_type})
    found = list_once(client_for(api.url))
    assert [r.agent1 for r in found.recordings] == ["Zoë Müller"]


def test_a_utf8_bom_is_accepted(api: Server) -> None:
    body = b"\xef\xbb\xbf" + listing_of(entry(api.url))
    api.routes["/api/"] = lambda h: reply(h, 200, body)
    assert len(list_once(client_for(api.url)).recordings) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"recordings": [], "x": "\xff\xfe"}',
        b"\x00" * 10,
    ],
    ids=["nested-100000-deep", "not-utf8", "nul-bytes"],
)
def test_a_body_that_cannot_be_read_is_a_malformed_list(api: Server, body: bytes) -> None:
    api.routes["/api/"] = lambda h: reply(h, 200, body)
    with pytest.raises(ApiUnavailable) as caught:
        list_once(client_for(api.url))
    assert caught.value.reason == "malformed_list"


def test_a_gzip_bomb_list_is_refused_at_the_cap(
    api: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cradle_client, "MAX_LIST_BYTES", 4 * 2**20)
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip stream
    bomb = packer.compress(b'{"recordings": [], "pad": "')
    bomb += b"".join(packer.compress(b"a" * 2**20) for _ in range(64)) + packer.flush()
    api.routes["/api/"] = lambda h: reply(h, 200, bomb, {"Content-Encoding": "gzip"})
    with pytest.raises(ApiUnavailable, match="over 4194304 bytes") as caught:
        list_once(client_for(api.url))
    assert caught.value.reason == "malformed_list"


def test_poison_entries_are_set_aside_and_their_neighbours_kept(api: Server) -> None:
    good = json.dumps(entry(api.url)).encode()
    other = "7d7e4f1e-7f44-4f4c-9f6e-2b1c9b0e6a11"
    poison = [
        entry(api.url, other, durationSeconds="__INF__"),
        entry(api.url, other, durationSeconds="__NAN__"),
        entry(api.url, other, durationSeconds="__HUGE__"),
        entry(api.url, other, durationSeconds="__LONGINT__"),
        entry(api.url, other, durationSeconds=-1),
        entry(api.url, other, startedAt="0001-01-01T00:00:00+01:00"),
        entry(api.url, other, startedAt="9999-12-31T23:59:59-01:00"),
        entry(api.url, other, startedAt="9999-06-01T00:00:00Z"),
        entry(api.url, other, startedAt="1969-12-31T23:59:59Z"),
        entry(api.url, other, startedAt=["2024"]),
        entry(api.url, other, agent1={"a": 1}),
        entry(api.url, other, nature=["in"]),
        entry(api.url, other, agent1="Zo\ud800"),
        entry(api.url, other, agent2="\udfff"),
        entry(api.url, other, url=f"{api.url}/api/v1/public/recordings/\ud800/{other}.mp3"),
        [1, 2],
        None,
    ]
    raw = json.dumps(poison).encode()
    for token, value in (
        (b'"__INF__"', b"Infinity"),
        (b'"__NAN__"', b"NaN"),
        (b'"__HUGE__"', b"1e999"),
        (b'"__LONGINT__"', b"9" * 5000),
    ):
        raw = raw.replace(token, value)
    body = b'{"recordings": [' + good + b", " + raw[1:-1] + b'], "size": 15}'
    api.routes["/api/"] = lambda h: reply(h, 200, body)
    found = list_once(client_for(api.url))
    assert [r.recording_id for r in found.recordings] == [RID]
    assert len(found.malformed) == len(poison)
    reasons = " | ".join(reason for reason, _ in found.malformed)
    assert "durationSeconds" in reasons and "startedAt" in reasons


def test_an_unparseable_url_still_names_its_recording_for_the_dead_letter(
    api: Server, tmp_path: Path
) -> None:
    body = listing_of(entry(api.url, url=f"http://[x/api/v1/public/recordings/{RID}.mp3"))
    api.routes["/api/"] = lambda h: reply(h, 200, body)
    client = client_for(api.url)
    (found,) = list_once(client).recordings
    with pytest.raises(RecordingFailed) as caught:
        client.download(found, Spool(tmp_path))
    assert caught.value.reason == "bad_url" and caught.value.permanent
    assert len(api.requests) == 1


def test_a_missing_duration_is_not_stored_as_zero(api: Server) -> None:
    fields = entry(api.url)
    del fields["durationSeconds"]
    api.routes["/api/"] = lambda h: reply(h, 200, listing_of(fields))
    (found,) = list_once(client_for(api.url)).recordings
    assert found.duration_seconds is None
    assert "durationSeconds" not in found.to_api()


@pytest.mark.parametrize("size", [True, "999999", 1.5e9, None, -1])
def test_a_size_that_is_not_a_count_never_marks_a_list_truncated(api: Server, size: Any) -> None:
    body = json.dumps({"recordings": [entry(api.url)], "size": size}).encode()
    api.routes["/api/"] = lambda h: reply(h, 200, body)
    assert not list_once(client_for(api.url)).truncated


# -- download bodies -----------------------------------------------------------------------------


def test_downloads_ask_for_identity_and_a_compressed_one_is_archived_decoded(
    api: Server, tmp_path: Path
) -> None:
    packed = gzip.compress(MP3)
    api.routes["/api/"] = lambda h: reply(h, 200, packed, {"Content-Encoding": "gzip"})
    staged = client_for(api.url).download(recording(api.url), Spool(tmp_path))
    assert staged.path.read_bytes() == MP3 and staged.size == len(MP3)
    assert api.requests[0]["headers"]["Accept-Encoding"] == "identity"


def test_a_declared_size_over_the_cap_is_refused_before_reading(
    api: Server, tmp_path: Path
) -> None:
    api.routes["/api/"] = lambda h: reply(h, 200, MP3, length=200 * 2**20)
    with pytest.raises(RecordingFailed) as caught:
        client_for(api.url).download(recording(api.url), Spool(tmp_path))
    assert caught.value.reason == "too_large"
    assert list(tmp_path.iterdir()) == []


def endless(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    chunk = b"\xff\xfb" + bytes(2**16 - 2)
    try:
        while True:
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    except OSError:
        pass


def test_an_endless_body_stops_at_the_cap_and_leaves_no_file(
    api: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cradle_client, "MAX_RECORDING_BYTES", 4 * 2**20)
    api.routes["/api/"] = endless
    with pytest.raises(RecordingFailed) as caught:
        client_for(api.url).download(recording(api.url), Spool(tmp_path))
    assert caught.value.reason == "too_large"
    assert list(tmp_path.iterdir()) == []


def trickle(body: bytes, every: float, *, headers_too: bool = False) -> Respond:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
        data = head + body if headers_too else body
        if not headers_too:
            handler.wfile.write(head)
        try:
            for i in range(len(data)):
                handler.wfile.write(data[i : i + 1])
                handler.wfile.flush()
                time.sleep(every)
        except OSError:
            pass
        handler.close_connection = True

    return respond


@pytest.mark.parametrize("headers_too", [False, True], ids=["body", "headers"])
def test_a_trickling_download_fails_the_attempt_in_bounded_time(
    api: Server, tmp_path: Path, headers_too: bool
) -> None:
    api.routes["/api/"] = trickle(MP3, 0.2, headers_too=headers_too)
    started = time.monotonic()
    with pytest.raises(RecordingFailed) as caught:
        client_for(api.url, timeout=1).download(recording(api.url), Spool(tmp_path))
    assert caught.value.reason == "too_slow" and not caught.value.permanent
    # a second of grace, then at most one more read (0.2 s) before the check
    assert time.monotonic() - started < 5
    assert list(tmp_path.iterdir()) == []
    assert len(api.requests) == 1


def test_a_trickling_list_is_retried_then_fails_in_bounded_time(api: Server) -> None:
    api.routes["/api/"] = trickle(listing_of(), 0.2)
    started = time.monotonic()
    with pytest.raises(ApiUnavailable) as caught:
        list_once(client_for(api.url, timeout=1, attempts=2))
    assert caught.value.reason == "too_slow"
    assert time.monotonic() - started < 8


def test_a_fast_large_body_is_not_too_slow(api: Server, tmp_path: Path) -> None:
    body = MP3 * 300  # 3 MB at loopback speed
    api.routes["/api/"] = lambda h: reply(h, 200, body)
    staged = client_for(api.url, timeout=1).download(recording(api.url), Spool(tmp_path))
    assert staged.size == len(body)


def test_the_watchdog_cuts_a_blocked_read() -> None:
    """The socket timeout alone would wait 30 s here; the watchdog cuts at its deadline."""
    left, right = socket.socketpair()
    watchdog = cradle.Watchdog()

    class Connection:
        sock = left

    connection = Connection()  # the pool holds its connections; the watchdog only watches
    watchdog.track(connection)  # type: ignore[arg-type]
    left.settimeout(30)
    watchdog.arm(time.monotonic() + 0.3)
    started = time.monotonic()
    assert left.recv(10) == b""
    assert 0.2 < time.monotonic() - started < 5 and watchdog.fired
    left.close()
    right.close()
