"""The webhook receiver: `POST /webhook/<token>` on `webhook.listen`, a listener of its own.

It only checks a request and queues a hint (hints.py); the worker does the rest. So it answers
at once, and nothing it receives can block archiving or reach the API by any other way than a
bounded queue the worker drains within its budget. Cradle's webhooks are not signed: the token
in the path is the only thing telling a sender apart from anyone who found the port, and the
body is hostile input whatever the token says.

| request | answer | outcome counted |
| --- | --- | --- |
| any path or method but `POST /webhook/<token>`, a wrong token | 404, the same bytes | not_found |
| more than `rate` a second from one client address (burst `burst`) | 429, Retry-After: 1 | rate_limited |
| a body over `max_body` (256 KiB) | 413 | too_large |
| not a JSON object with a usable `uuid` and `startedAt` | 400 | malformed |
| anything else | 202 | accepted or duplicate |

The path is compared whole with `hmac.compare_digest`, so a wrong path and a wrong token take
the same road and get the same answer. The token is checked first: requests without it do not
use up the source's rate, which matters behind an Ingress, where every sender has its address.
A source is an IPv4 address or an IPv6 /64 (one host can pick any address in its /64).

Bounded by construction: one request per connection; at most `max_connections` at once (and
`max_connections_per_source` from one address), the rest refused with a 429 by the accepting
thread; the request line and headers are read to at most MAX_HEAD bytes, a body to at most
`max_body` (a larger Content-Length is refused before reading, a chunked body is cut at the
limit, framing included); every read has a `read_timeout`, and a reaper on
the serving thread cuts any request still arriving after `request_deadline`, so a trickle
(slowloris) holds a thread for seconds, not forever. Bodies are parsed one at a time, so the
JSON of concurrent requests never adds up in memory.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

from archiver.errors import FatalError, MalformedEntry
from archiver.hints import Count, HintOutcome, HintQueue, ignore, parse_hint
from archiver.models import utc_now

log = structlog.get_logger(__name__)

PATH_PREFIX = "/webhook/"
MAX_CHUNK_LINE = 1024  # a chunk-size line: hex digits and extensions we ignore
# The request line and headers together. http.server alone would take 100 header lines of
# 64 KiB each (6.5 MB a connection); a webhook's headers, proxies' included, are a few KiB.
MAX_HEAD = 32 * 2**10
IPV6_SOURCE_PREFIX = 64  # one IPv6 sender holds a /64 at least: it is one source


def source_of(address: str) -> str:
    """The rate limits' key for a client address: the address itself for IPv4 (also when mapped
    into IPv6), its /64 for IPv6, where one host may pick any of 2**64 addresses."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_SOURCE_PREFIX), strict=False))
    return str(ip)


@dataclass(frozen=True)
class Limits:
    """What one sender, or all of them, can make the receiver hold."""

    max_body: int = 256 * 2**10  # a conversation is a few KiB
    # Per client address: Cradle sends one webhook per call that ends, so even a large account
    # stays far below 20 a second; the burst absorbs a backlog Cradle retries at once.
    rate: float = 20.0
    burst: float = 40.0
    max_sources: int = 4096  # addresses whose bucket is remembered (least recently seen goes)
    read_timeout: float = 2.0  # one read waiting on a silent client
    request_deadline: float = 10.0  # a whole request, headers and body
    max_connections: int = 64
    max_connections_per_source: int = 16


# One answer per outcome: the status and its body.
ANSWERS: dict[HintOutcome, tuple[int, bytes]] = {
    HintOutcome.ACCEPTED: (202, b"accepted\n"),
    HintOutcome.DUPLICATE: (202, b"accepted\n"),  # to the sender, a repeat is as welcome
    HintOutcome.NOT_FOUND: (404, b"not found\n"),
    HintOutcome.RATE_LIMITED: (429, b"too many requests\n"),
    HintOutcome.TOO_LARGE: (413, b"body too large\n"),
    HintOutcome.MALFORMED: (400, b"not a conversation: a JSON object with uuid and startedAt\n"),
}


class SourceLimiter:
    """A token bucket per client address, `rate` a second up to `burst`; bounded in memory
    (the least recently seen address is forgotten, and comes back with a full bucket)."""

    def __init__(
        self, rate: float, burst: float, max_sources: int, monotonic: Callable[[], float]
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._monotonic = monotonic
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when
        self._lock = threading.Lock()

    def allow(self, source: str) -> bool:
        with self._lock:
            now = self._monotonic()
            tokens, then = self._buckets.pop(source, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            allowed = tokens >= 1
            self._buckets[source] = (tokens - 1 if allowed else tokens, now)
            if len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
            return allowed


class _HeadReader:
    """The request's stream as http.server reads the request line and headers from it: after
    `limit` bytes it reads as the end, so the headers end there (and the request is refused)."""

    def __init__(self, raw: Any, limit: int) -> None:
        self._raw = raw
        self.remaining = limit

    def readline(self, size: int = -1) -> bytes:
        cap = self.remaining if size < 0 else min(size, self.remaining)
        if cap <= 0:
            return b""
        line: bytes = self._raw.readline(cap)
        self.remaining -= len(line)
        return line

    def close(self) -> None:
        self._raw.close()


class BodyTooLarge(Exception):
    """The body is over the limit: answered 413 without reading the rest."""


class BadFraming(Exception):
    """A chunked body that is not HTTP: answered 400 without reading the rest."""


class RequestCut(Exception):
    """The body stopped coming (a timeout, or the reaper's deadline): nothing to answer."""


class _WebhookHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], receiver: WebhookReceiver) -> None:
        self.receiver = receiver
        self.limits = receiver.limits
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._connections: dict[socket.socket, tuple[str, float]] = {}  # source, start
        self._connections_lock = threading.Lock()
        super().__init__(address, _WebhookHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        source = source_of(str(client_address[0]))
        with self._connections_lock:
            from_source = sum(1 for s, _ in self._connections.values() if s == source)
            admitted = (
                len(self._connections) < self.limits.max_connections
                and from_source < self.limits.max_connections_per_source
            )
            if admitted:
                self._connections[request] = (source, self.receiver.monotonic())
        if not admitted:
            self._refuse(request)
            return
        super().process_request(request, client_address)

    def _refuse(self, request: socket.socket) -> None:
        # On the accepting thread, so it must not wait: a few bytes fit any send buffer.
        self.receiver.count(HintOutcome.RATE_LIMITED)
        try:
            request.setblocking(False)
            request.send(
                b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
                b"Connection: close\r\n\r\n"
            )
        except OSError:
            pass
        super().shutdown_request(request)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:  # forgotten before it is closed: the reaper never sees
            self._connections.pop(request, None)  # a closed socket (nor a reused descriptor)
        super().shutdown_request(request)

    def service_actions(self) -> None:
        """The reaper, on the serving thread after each poll: a request still arriving after
        the deadline is cut (its handler's read then ends)."""
        cutoff = self.receiver.monotonic() - self.limits.request_deadline
        with self._connections_lock:
            for request, (_, started) in self._connections.items():
                if started < cutoff:
                    with contextlib.suppress(OSError):  # already gone
                        request.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # a sender gone or cut: not our failure
            log.info("webhook.connection_failed", client=str(client_address[0]))
            return
        log.exception("webhook.handler_failed", client=str(client_address[0]))


class _WebhookHandler(BaseHTTPRequestHandler):
    server: _WebhookHTTPServer
    server_version = "cradle-archiver"
    sys_version = ""
    protocol_version = "HTTP/1.1"  # for Expect: 100-continue; every answer closes

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.limits.read_timeout)
        # http.server reads the request line and headers from rfile: hand it a capped view.
        self.body_file = self.rfile
        self.rfile = _HeadReader(self.body_file, MAX_HEAD)  # type: ignore[assignment]
        self._early: HintOutcome | None = None
        self._checked = False
        self._unread = True  # until the body has been read to its end

    def do_POST(self) -> None:
        early = self._early if self._checked else self._admit()
        framing = self._framing() if early is None else early
        if isinstance(framing, HintOutcome):
            self._answer(framing, unread=True)  # answered from the headers alone
            return
        outcome = self._take_body(framing)
        if outcome is not None:
            self._answer(outcome, unread=self._unread)

    def handle_expect_100(self) -> bool:
        # A client waiting to send its body learns of a wrong token or a too-large body first.
        self._early, self._checked = self._admit(), True
        if self._early is None:
            framing = self._framing()
            if isinstance(framing, HintOutcome):
                self._early = framing
        if self._early is not None:
            self._answer(self._early, unread=True)
            return False
        return super().handle_expect_100()

    def _not_found(self) -> None:
        self._answer(HintOutcome.NOT_FOUND, unread=True)

    do_GET = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_found

    def _admit(self) -> HintOutcome | None:
        """404 or 429 from the request line and address alone; None to go on."""
        if not self.server.receiver.path_matches(self.path):
            return HintOutcome.NOT_FOUND
        if not self.server.receiver.sources.allow(source_of(str(self.client_address[0]))):
            return HintOutcome.RATE_LIMITED
        return None

    def _framing(self) -> int | HintOutcome | None:
        """The body's length from Content-Length, None for chunked, or the answer at once."""
        encoding = self.headers.get_all("Transfer-Encoding") or []
        lengths = self.headers.get_all("Content-Length") or []
        if encoding:
            # Both, or a coding other than chunked alone, is how requests are smuggled.
            if lengths or [e.strip().lower() for e in encoding] != ["chunked"]:
                return HintOutcome.MALFORMED
            return None
        if not lengths:
            return 0  # RFC 9112: a request with neither has no body
        value = lengths[0].strip() if len(set(lengths)) == 1 else ""
        # ASCII digits, and few: '²' passes isdigit() and a 5,000-digit int() raises.
        if not (value.isascii() and value.isdigit() and len(value) <= 20):
            return HintOutcome.MALFORMED
        length = int(value)
        return HintOutcome.TOO_LARGE if length > self.server.limits.max_body else length

    def _take_body(self, length: int | None) -> HintOutcome | None:
        limit = self.server.limits.max_body
        try:
            body = self._read(length) if length is not None else self._read_chunked(limit)
        except BodyTooLarge:
            return HintOutcome.TOO_LARGE
        except BadFraming:
            return HintOutcome.MALFORMED
        except (RequestCut, OSError):
            self.server.receiver.count(HintOutcome.TIMED_OUT)
            log.info("webhook.request_cut", client=str(self.client_address[0]))
            self.close_connection = True
            return None
        self._unread = False
        return self.server.receiver.receive(body)

    def _read(self, length: int) -> bytes:
        body = self.body_file.read(length)
        if len(body) < length:
            raise RequestCut
        return body

    def _read_chunked(self, limit: int) -> bytes:
        body = bytearray()
        framing = 0  # a body in one-byte chunks is six times its size on the wire
        while True:
            line = self.body_file.readline(MAX_CHUNK_LINE)
            if not line.endswith(b"\n"):
                raise RequestCut
            digits = line.split(b";", 1)[0].strip()
            if not digits or digits.strip(b"0123456789abcdefABCDEF"):
                raise BadFraming
            size = int(digits, 16)
            if size == 0:
                self._skip_trailers()
                return bytes(body)
            framing += len(line) + 2
            if len(body) + size > limit or framing > limit:
                raise BodyTooLarge
            body += self._read(size)
            self._read(2)  # the CRLF after the chunk

    def _skip_trailers(self) -> None:
        for _ in range(32):
            line = self.body_file.readline(MAX_CHUNK_LINE)
            if line in (b"\r\n", b"\n"):
                return
            if not line.endswith(b"\n"):
                raise RequestCut
        raise RequestCut

    def _answer(self, outcome: HintOutcome, *, unread: bool) -> None:
        status, body = ANSWERS[outcome]
        if outcome not in (HintOutcome.ACCEPTED, HintOutcome.DUPLICATE):
            self.server.receiver.count(outcome)  # the queue counts what reached it
        self.close_connection = True
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            if status == 429:
                self.send_header("Retry-After", "1")
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()
            if unread:
                self._linger()
        except OSError:
            pass  # the sender left: nothing to tell it

    def _linger(self) -> None:
        """Read and drop what the sender is still sending, briefly, before closing: closing a
        socket with unread data resets it, and the reset can destroy our answer in flight."""
        self.connection.shutdown(socket.SHUT_WR)
        self.connection.settimeout(0.5)
        budget = self.server.limits.max_body
        while budget > 0 and self.connection.recv(min(budget, 65536)):
            budget -= 65536

    def log_message(self, format: str, *args: Any) -> None:
        # Never the request line: the path holds the token.
        log.debug("webhook.http", client=str(self.client_address[0]))

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("webhook.answered", client=str(self.client_address[0]), status=str(code))


class WebhookReceiver:
    """`POST /webhook/<token>` → hints in `queue`; bound in the constructor, served after
    start(). `count` is called with each request's outcome (the queue counts its own)."""

    def __init__(
        self,
        address: tuple[str, int],
        token: str,
        queue: HintQueue,
        *,
        count: Count = ignore,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        limits: Limits | None = None,
    ) -> None:
        if not token:
            raise ValueError("a webhook receiver needs a token")
        self.queue = queue
        self.count = count
        self.clock = clock
        self.monotonic = monotonic
        self.limits = limits or Limits()
        self.sources = SourceLimiter(
            self.limits.rate, self.limits.burst, self.limits.max_sources, monotonic
        )
        self._expected = (PATH_PREFIX + token).encode("latin-1")
        self._parse_lock = threading.Lock()
        try:
            self._server = _WebhookHTTPServer(address, self)
        except OSError as exc:
            where = f"{address[0]}:{address[1]}"
            raise FatalError(f"cannot listen on {where} (webhook.listen): {exc.strerror}") from exc
        host, port = self._server.server_address[:2]
        self.address = (str(host), int(port))  # the real port when asked for port 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # The reaper runs once per poll: 0.1 s keeps its cut (and stop()) prompt.
        serve = partial(self._server.serve_forever, poll_interval=0.1)
        self._thread = threading.Thread(target=serve, name="webhook", daemon=True)
        self._thread.start()
        log.info("webhook.listening", host=self.address[0], port=self.address[1])

    def stop(self) -> None:
        """Stop serving and free the port; safe to call twice or without start()."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread = None
        self._server.server_close()

    def path_matches(self, path: str) -> bool:
        """Whether the request's path (its query ignored) is ours, compared in constant time
        whatever is wrong in it. http.server decodes the request line as Latin-1, so the
        encoding gives back the bytes that came."""
        return hmac.compare_digest(path.split("?", 1)[0].encode("latin-1"), self._expected)

    def receive(self, body: bytes) -> HintOutcome:
        """A body that came whole: parsed (one at a time, see the module docstring) and queued."""
        with self._parse_lock:
            try:
                hint = parse_hint(body, self.clock())
            except MalformedEntry as exc:
                log.info("webhook.malformed", problem=str(exc))
                return HintOutcome.MALFORMED
        outcome = self.queue.offer(hint)
        log.info("webhook.hint", uuid=hint.uuid, outcome=str(outcome))
        return outcome
