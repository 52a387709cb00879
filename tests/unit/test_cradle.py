"""The Cradle client against a scripted HTTP server on loopback: auth, retries, verification."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from archiver.config import CradleConfig
from archiver.cradle import CradleClient, RetryPolicy, looks_like_mp3, parse_retry_after
from archiver.errors import ApiUnavailable, AuthError, Interrupted, RecordingFailed
from archiver.limiter import RateLimiter
from archiver.models import Recording, Window
from archiver.spool import Spool
from tests import builders
from tests.builders import mp3

MP3 = mp3(10_250)
RID = "935f1dc8-b56a-535c-b678-95edf74c593c"
NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)


class Script:
    """Responses served in order; each is (status, headers, body, declared_length)."""

    def __init__(self) -> None:
        self.responses: list[tuple[int, dict[str, str], bytes, int | None]] = []
        self.requests: list[dict[str, Any]] = []

    def add(
        self,
        status: int = 200,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        length: int | None = None,
    ) -> None:
        self.responses.append((status, headers or {}, body, length))


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            script.requests.append({"path": self.path, "headers": dict(self.headers)})
            status, headers, body, length = script.responses.pop(0)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(length if length is not None else len(body)))
            self.end_headers()
            self.wfile.write(body)
            if length is not None and length != len(body):
                self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def sleeps() -> list[float]:
    return []


def client_for(base_url: str, sleeps: list[float], attempts: int = 4) -> CradleClient:
    config = CradleConfig(base_url=base_url, id="acme", api_key="secret-key-42")
    limiter = RateLimiter(10, sleep=lambda s: None, startup_quiet=0)
    return CradleClient(
        config,
        limiter=limiter,
        retry=RetryPolicy(attempts=attempts, sleep=sleeps.append),
        wall_clock=lambda: NOW,
    )


def recording(base_url: str, rid: str = RID) -> Recording:
    """A recording served by the test server at `base_url`."""
    return builders.recording(rid, base_url=base_url, startedAt="2024-05-01T10:00:00Z")


WINDOW = Window(NOW - timedelta(hours=1), NOW)


def listing(*entries: dict[str, Any], size: int | None = None) -> bytes:
    return json.dumps(
        {"recordings": list(entries), "size": len(entries) if size is None else size}
    ).encode()


def test_every_request_carries_both_auth_headers(
    server: tuple[str, Script], sleeps: list[float], tmp_path: Path
) -> None:
    url, script = server
    script.add(body=listing())
    script.add(body=MP3)
    client = client_for(url, sleeps)
    client.list_recordings(WINDOW, WINDOW.start, WINDOW.end)
    client.download(recording(url), Spool(tmp_path))
    for request in script.requests:
        assert request["headers"]["CRADLE_ID"] == "acme"
        assert request["headers"]["CRADLE_API_KEY"] == "secret-key-42"
    assert "from=2024-05-01T11%3A00%3A00.000Z" in script.requests[0]["path"]


def test_download_streams_hashes_and_stages(
    server: tuple[str, Script], sleeps: list[float], tmp_path: Path
) -> None:
    url, script = server
    script.add(body=MP3, headers={"Content-Type": "audio/mpeg"})
    staged = client_for(url, sleeps).download(recording(url), Spool(tmp_path))
    assert staged.sha256 == hashlib.sha256(MP3).hexdigest()
    assert staged.size == len(MP3)
    assert staged.path.read_bytes() == MP3
    assert [p.name for p in tmp_path.iterdir()] == [f"{RID}.mp3"]


def test_a_truncated_body_is_retried_and_never_staged(
    server: tuple[str, Script], sleeps: list[float], tmp_path: Path
) -> None:
    url, script = server
    script.add(body=MP3[:100], length=len(MP3))
    script.add(body=MP3)
    staged = client_for(url, sleeps).download(recording(url), Spool(tmp_path))
    assert staged.size == len(MP3)
    assert len(sleeps) == 1


def test_an_html_page_is_rejected_as_not_mp3(
    server: tuple[str, Script], sleeps: list[float], tmp_path: Path
) -> None:
    url, script = server
    script.add(
        body=b"<html><body>Internal error</body></html>", headers={"Content-Type": "text/html"}
    )
    with pytest.raises(RecordingFailed) as caught:
        client_for(url, sleeps).download(recording(url), Spool(tmp_path))
    assert caught.value.reason == "not_mp3" and not caught.value.permanent
    assert list(tmp_path.iterdir()) == []


def test_an_empty_body_is_rejected(
    server: tuple[str, Script], sleeps: list[float], tmp_path: Path
) -> None:
    url, script = server
    script.add(body=b"")
    with pytest.raises(RecordingFailed) as caught:
        client_for(url, sleeps).download(recording(url), Spool(tmp_path))
    assert caught.value.reason == "empty"


def test_a_404_is_a_failed_attempt(
    server: tuple[str, Script], sleeps: list[float], tmp_path: Path
) -> None:
    url, script = server
    script.add(404, body=b'{"error": "not found"}')
    with pytest.raises(RecordingFailed) as caught:
        client_for(url, sleeps).download(recording(url), Spool(tmp_path))
    assert caught.value.reason == "http_404"


def test_429_honours_retry_after_seconds_and_pauses_the_client(
    server: tuple[str, Script], sleeps: list[float], tmp_path: Path
) -> None:
    url, script = server
    script.add(429, headers={"Retry-After": "7"})
    script.add(body=listing())
    client = client_for(url, sleeps)
    client.list_recordings(WINDOW, WINDOW.start, WINDOW.end)
    assert sleeps == [7.0]
    assert client.limiter.paused_until > 0


def test_429_honours_retry_after_as_an_http_date(
    server: tuple[str, Script], sleeps: list[float]
) -> None:
    url, script = server
    script.add(
        429, headers={"Retry-After": format_datetime(NOW + timedelta(seconds=12), usegmt=True)}
    )
    script.add(body=listing())
    client_for(url, sleeps).list_recordings(WINDOW, WINDOW.start, WINDOW.end)
    assert sleeps == [12.0]


def test_429_without_retry_after_backs_off_exponentially(
    server: tuple[str, Script], sleeps: list[float]
) -> None:
    url, script = server
    for _ in range(3):
        script.add(429)
    script.add(body=listing())
    client_for(url, sleeps).list_recordings(WINDOW, WINDOW.start, WINDOW.end)
    assert len(sleeps) == 3
    # exponential with jitter: base 0.5, 1, 2 plus up to 1 s of jitter each
    assert 0.5 <= sleeps[0] <= 1.5 and 2.0 <= sleeps[2] <= 3.0


def test_5xx_is_retried_then_gives_up(server: tuple[str, Script], sleeps: list[float]) -> None:
    url, script = server
    for _ in range(4):
        script.add(503)
    with pytest.raises(ApiUnavailable, match="failed 4 times"):
        client_for(url, sleeps).list_recordings(WINDOW, WINDOW.start, WINDOW.end)
    assert len(script.requests) == 4


def test_a_malformed_list_response_fails_the_call_after_retries(
    server: tuple[str, Script], sleeps: list[float]
) -> None:
    url, script = server
    script.add(body=b"{not json")
    script.add(body=b'{"items": []}')
    with pytest.raises(ApiUnavailable) as caught:
        client_for(url, sleeps, attempts=2).list_recordings(WINDOW, WINDOW.start, WINDOW.end)
    assert caught.value.reason == "malformed_list"


def test_malformed_entries_are_set_aside(server: tuple[str, Script], sleeps: list[float]) -> None:
    url, script = server
    good = recording(url).to_api()
    script.add(
        body=listing(
            good, {"startedAt": "2024-05-01T10:00:00Z"}, {**good, "startedAt": "yesterday"}
        )
    )
    result = client_for(url, sleeps).list_recordings(WINDOW, WINDOW.start, WINDOW.end)
    assert [r.recording_id for r in result.recordings] == [RID]
    assert [reason for reason, _ in result.malformed] == [
        "missing url",
        "invalid startedAt: 'yesterday'",
    ]


def test_a_short_size_field_marks_the_listing_truncated(
    server: tuple[str, Script], sleeps: list[float]
) -> None:
    url, script = server
    script.add(body=listing(size=500))
    assert client_for(url, sleeps).list_recordings(WINDOW, WINDOW.start, WINDOW.end).truncated


def test_401_is_an_auth_error_and_not_retried(
    server: tuple[str, Script], sleeps: list[float]
) -> None:
    url, script = server
    script.add(401)
    with pytest.raises(AuthError, match="credentials"):
        client_for(url, sleeps).list_recordings(WINDOW, WINDOW.start, WINDOW.end)
    assert sleeps == []


def test_an_off_host_url_is_never_fetched(
    server: tuple[str, Script], sleeps: list[float], tmp_path: Path
) -> None:
    url, script = server
    elsewhere = recording("http://127.0.0.1:9")
    with pytest.raises(RecordingFailed) as caught:
        client_for(url, sleeps).download(elsewhere, Spool(tmp_path))
    assert caught.value.reason == "off_host_url" and caught.value.permanent
    assert script.requests == []


def test_another_port_is_another_host(sleeps: list[float]) -> None:
    client = client_for("http://api.example:8080", sleeps)
    assert client.is_on_host("http://API.example:8080/x")
    assert not client.is_on_host("http://api.example:8081/x")
    assert not client.is_on_host("https://api.example:8080/x")
    assert client_for("https://api.example", sleeps).is_on_host("https://api.example:443/x")


def test_a_redirect_to_another_host_is_not_followed(
    server: tuple[str, Script], sleeps: list[float], tmp_path: Path
) -> None:
    url, script = server
    script.add(302, headers={"Location": "http://127.0.0.1:9/steal"})
    with pytest.raises(RecordingFailed) as caught:
        client_for(url, sleeps).download(recording(url), Spool(tmp_path))
    assert caught.value.reason == "off_host_url"
    assert len(script.requests) == 1


def test_a_redirect_on_the_same_host_is_followed_with_credentials(
    server: tuple[str, Script], sleeps: list[float], tmp_path: Path
) -> None:
    url, script = server
    script.add(302, headers={"Location": "/files/x.mp3"})
    script.add(body=MP3)
    client_for(url, sleeps).download(recording(url), Spool(tmp_path))
    assert script.requests[1]["path"] == "/files/x.mp3"
    assert script.requests[1]["headers"]["CRADLE_API_KEY"] == "secret-key-42"


def test_retry_after_parsing() -> None:
    assert parse_retry_after("3", NOW) == 3.0
    assert parse_retry_after(format_datetime(NOW + timedelta(seconds=30), usegmt=True), NOW) == 30.0
    assert parse_retry_after(format_datetime(NOW - timedelta(seconds=30), usegmt=True), NOW) == 0.0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None
    assert parse_retry_after("99999", NOW) == 900.0


def test_mp3_sniffing() -> None:
    assert looks_like_mp3(b"ID3\x04")
    assert looks_like_mp3(b"\xff\xfb\x90\x64")
    assert not looks_like_mp3(b"<htm")
    assert not looks_like_mp3(b"")


def test_a_retry_wait_ends_at_once_when_a_stop_is_asked_for(
    server: tuple[str, Script], sleeps: list[float]
) -> None:
    url, script = server
    script.add(503)
    config = CradleConfig(base_url=url, id="acme", api_key="secret-key-42")
    stop = threading.Event()
    client = CradleClient(
        config,
        limiter=RateLimiter(10, sleep=lambda s: None, startup_quiet=0),
        retry=RetryPolicy(attempts=3, initial=30, maximum=30),  # the default sleep: stop.wait
        stop=stop,
    )
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Interrupted):
        client.list_recordings(WINDOW, WINDOW.start, WINDOW.end)
    assert time.monotonic() - started < 10


def test_a_body_that_starts_like_an_mp3_but_holds_no_frame_is_not_an_mp3(
    server: tuple[str, Script], sleeps: list[float], tmp_path: Path
) -> None:
    url, script = server
    script.add(body=b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 40)
    with pytest.raises(RecordingFailed) as caught:
        client_for(url, sleeps).download(recording(url), Spool(tmp_path))
    assert caught.value.reason == "not_mp3"
    assert list(tmp_path.iterdir()) == []


def test_the_audio_is_walked_as_it_streams(
    server: tuple[str, Script], sleeps: list[float], tmp_path: Path
) -> None:
    url, script = server
    body = mp3(160_000)  # 10 s at 128 kbps, give or take a frame and the tag
    script.add(body=body)
    staged = client_for(url, sleeps).download(recording(url), Spool(tmp_path))
    assert staged.audio_seconds is not None and abs(staged.audio_seconds - 10.0) < 0.1
