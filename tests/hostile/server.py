"""A Cradle API that lies, and a canary host that tells on whoever reaches it.

`HostileApi` speaks just enough of the Cradle API (the list call and recording downloads, with
the CRADLE_ID/CRADLE_API_KEY check) for the archiver to run against it, and lets a test script
every answer at the byte level: a `Reply` is written to the socket by hand, not through
http.server's helpers, so a test can send a lying Content-Length, a chunked body that never ends,
a gzip bomb, a redirect to anywhere, or a status line that arrives one byte every two seconds.

List entries are raw JSON text, not dicts, so a test can write what Python's `json` would never
emit on its own (`Infinity`, `1e999`) or would emit differently. Each entry carries the time the
server files it under, apart from its `startedAt`, so an entry whose `startedAt` is garbage is
still listed in exactly one window, as a real API would list it.

`Canary` answers anything with a 3,000-byte MP3-looking body, so a client that wrongly follows a
url there believes it succeeded, and it records every request: the suite asserts it saw none.
"""

from __future__ import annotations

import functools
import http
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from archiver.simulator.body import iter_body

LIST_PATH = "/api/v1/public/recordings"
_DOWNLOAD = re.compile(r"^/api/v1/public/recordings/([^/?#]+)\.mp3$")
CANARY_BODY = b"".join(iter_body(0, "canary", 3000))

# A body: bytes, or a factory of an iterable of pieces (so an endless body can be served twice).
Body = bytes | Callable[[], Iterable[bytes]]


@dataclass(frozen=True)
class Seen:
    """One request as a server received it."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    at: float  # time.monotonic()

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    @property
    def kind(self) -> str:
        path = urlsplit(self.path).path
        if path == LIST_PATH:
            return "list"
        return "download" if _DOWNLOAD.match(path) else "other"

    @property
    def recording_id(self) -> str | None:
        found = _DOWNLOAD.match(urlsplit(self.path).path)
        return found.group(1).lower() if found else None


@dataclass
class Reply:
    """One HTTP response, written byte for byte.

    `length`: the Content-Length to declare; None means the body's own length for a bytes body
    and no Content-Length at all (the body ends when the connection closes) for a streamed one.
    `chunked` sends Transfer-Encoding: chunked instead. `head_delay` and `byte_delay` are the
    seconds between two bytes of the status line and headers, and of the body: a trickle.
    Every response says `Connection: close`, and the connection is closed after it.
    """

    status: int = 200
    body: Body = b""
    headers: Sequence[tuple[str, str]] = ()
    length: int | None = None
    chunked: bool = False
    head_delay: float = 0.0
    byte_delay: float = 0.0

    def head(self) -> bytes:
        try:
            phrase = http.HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Whatever"
        lines = [f"HTTP/1.1 {self.status} {phrase}", *(f"{k}: {v}" for k, v in self.headers)]
        if self.chunked:
            lines.append("Transfer-Encoding: chunked")
        elif self.length is not None:
            lines.append(f"Content-Length: {self.length}")
        elif isinstance(self.body, bytes):
            lines.append(f"Content-Length: {len(self.body)}")
        lines.append("Connection: close")
        # latin-1, as HTTP/1.1 headers are read: a test may put any byte 0-255 in a value.
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def pieces(self) -> Iterator[bytes]:
        if isinstance(self.body, bytes):
            yield self.body
        else:
            yield from self.body()

    def write(self, send: Callable[[bytes, float], bool]) -> None:
        """Send the response through `send(data, delay)`, which returns False once the peer
        has gone (or the server is closing), and stop there."""
        if not send(self.head(), self.head_delay):
            return
        for piece in self.pieces():
            if not piece:
                continue
            data = f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if self.chunked else piece
            if not send(data, self.byte_delay):
                return
        if self.chunked:
            send(b"0\r\n\r\n", self.byte_delay)


def redirect(location: str, status: int = 302) -> Reply:
    return Reply(status, b"", [("Location", location), ("Content-Type", "text/plain")])


def endless(head: bytes, piece: int = 2**20) -> Callable[[], Iterator[bytes]]:
    """`head`, then zeros for ever, as fast as the peer reads them."""

    def pieces() -> Iterator[bytes]:
        yield head
        zeros = bytes(piece)
        while True:
            yield zeros

    return pieces


@functools.cache
def gzip_bomb(prefix: bytes, decoded: int, suffix: bytes) -> bytes:
    """A well-formed gzip stream of `prefix`, then `decoded` bytes of b"a" (a multiple of
    1 MiB), then `suffix`, built without ever holding the decoded bytes: each MiB of b"a"
    after a full flush deflates to the very same ~1 KB, so it is compressed once and repeated.
    1 GiB decoded is about 1 MB compressed."""
    block = b"a" * 2**20
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: the gzip frame is ours
    first = squeeze.compress(prefix) + squeeze.flush(zlib.Z_FULL_FLUSH)
    repeated = squeeze.compress(block) + squeeze.flush(zlib.Z_FULL_FLUSH)
    assert squeeze.compress(block) + squeeze.flush(zlib.Z_FULL_FLUSH) == repeated
    last = squeeze.compress(suffix) + squeeze.flush()
    count = decoded // len(block)
    crc = zlib.crc32(prefix)
    for _ in range(count):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(suffix, crc)
    size = len(prefix) + count * len(block) + len(suffix)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = crc.to_bytes(4, "little") + (size % 2**32).to_bytes(4, "little")
    return header + first + repeated * count + last + trailer


# -- the listeners -------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a trickling handler must not hold up the test's teardown
    owner: _Listener


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _any(self) -> None:
        self.close_connection = True
        self.server.owner.handle(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _any

    def log_message(self, *args: object) -> None:
        pass


class _Listener:
    """A ThreadingHTTPServer on a free loopback port that records every request it gets."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.port: int = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> _Listener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.closing.set()  # ends trickles and endless bodies
        self._httpd.shutdown()
        self._httpd.server_close()

    def record(self, handler: _Handler) -> Seen:
        length = int(handler.headers.get("Content-Length") or 0)
        if 0 < length <= 2**20:
            handler.rfile.read(length)
        seen = Seen(handler.command, handler.path, tuple(handler.headers.items()), time.monotonic())
        with self._lock:
            self.seen.append(seen)
        return seen

    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    def handle(self, handler: _Handler) -> None:
        raise NotImplementedError

    def send(self, handler: _Handler, reply: Reply) -> None:
        sock = handler.connection

        def send(data: bytes, delay: float) -> bool:
            try:
                if delay <= 0:
                    sock.sendall(data)
                    return not self.closing.is_set()
                for i in range(len(data)):
                    sock.sendall(data[i : i + 1])
                    if self.closing.wait(delay):
                        return False
            except OSError:  # the client gave up on us: that is often the point
                return False
            return True

        reply.write(send)


class HostileApi(_Listener):
    """The fake Cradle API. Script it through the attributes below before a run:

    - `entries`: (time filed under, raw JSON of the entry); the default list answer holds those
      filed within the call's [from, until], and `size` (raw JSON; default: their count);
    - `list_reply`: how a list call is answered; default `listing`, which a script may wrap;
    - `bodies`: recording id -> the MP3 served for it (200, Content-Length);
    - `downloads`: recording id -> a Reply (or a function of the request) instead;
    - `routes`: any other path -> a Reply (e.g. the target of an on-host redirect).
    """

    def __init__(self, cradle_id: str, api_key: str) -> None:
        super().__init__()
        self.cradle_id = cradle_id
        self.api_key = api_key
        self.entries: list[tuple[datetime, str]] = []
        self.size: str | None = None
        self.bodies: dict[str, bytes] = {}
        self.downloads: dict[str, Reply | Callable[[Seen], Reply]] = {}
        self.routes: dict[str, Reply] = {}
        self.list_reply: Callable[[Seen], Reply] = self.listing
        self.refused: list[Seen] = []  # requests without the right credentials

    def handle(self, handler: _Handler) -> None:
        seen = self.record(handler)
        if (
            handler.headers.get("CRADLE_ID") != self.cradle_id
            or handler.headers.get("CRADLE_API_KEY") != self.api_key
        ):
            self.refused.append(seen)
            reply = Reply(401, b'{"error": "unauthorized"}', [("Content-Type", "application/json")])
        elif seen.kind == "list":
            reply = self.list_reply(seen)
        elif seen.kind == "download":
            reply = self._download(seen)
        else:
            reply = self.routes.get(urlsplit(seen.path).path, Reply(404, b"not found"))
        self.send(handler, reply)

    def _download(self, seen: Seen) -> Reply:
        rid = seen.recording_id or ""
        scripted = self.downloads.get(rid)
        if scripted is not None:
            return scripted(seen) if callable(scripted) else scripted
        if rid in self.bodies:
            return Reply(200, self.bodies[rid], [("Content-Type", "audio/mpeg")])
        return Reply(404, b"no such recording")

    def listing(self, seen: Seen) -> Reply:
        return Reply(200, self.list_body(seen), [("Content-Type", "application/json")])

    def list_body(self, seen: Seen) -> bytes:
        """The entries filed within the call's [from, until] (both ends inclusive)."""
        query = parse_qs(urlsplit(seen.path).query)
        low = datetime.fromisoformat(query["from"][0].replace("Z", "+00:00"))
        high = datetime.fromisoformat(query["until"][0].replace("Z", "+00:00"))
        listed = [raw for when, raw in self.entries if low <= when <= high]
        size = self.size if self.size is not None else str(len(listed))
        return ('{"recordings": [' + ", ".join(listed) + '], "size": ' + size + "}").encode()

    def list_calls(self) -> list[Seen]:
        return [seen for seen in self.requests() if seen.kind == "list"]

    def downloads_of(self, recording_id: str) -> list[Seen]:
        return [seen for seen in self.requests() if seen.recording_id == recording_id]


class Canary(_Listener):
    """Another host: answers anything with a plausible MP3 and remembers who asked."""

    def handle(self, handler: _Handler) -> None:
        self.record(handler)
        self.send(handler, Reply(200, CANARY_BODY, [("Content-Type", "audio/mpeg")]))

    def leaks(self, api_key: str) -> list[Seen]:
        """Requests that carried a Cradle credential header, or the key anywhere."""
        return [
            seen
            for seen in self.requests()
            if seen.header("CRADLE_API_KEY") is not None
            or seen.header("CRADLE_ID") is not None
            or api_key in seen.path
            or any(api_key in value for _, value in seen.headers)
        ]
