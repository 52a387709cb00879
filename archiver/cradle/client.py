"""The Cradle API client: auth, the shared limiter, redirects and streaming downloads.

The only module (with its siblings in this package) that sends requests. One request is in
flight at a time (a lock held from the request's start until its body is read or closed), every
start goes through one RateLimiter, and only RetriableError reaches tenacity (`retries`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin

import requests
import structlog
import urllib3

from archiver.config import CradleConfig
from archiver.cradle.lists import (
    ConversationListing,
    Listing,
    decode_json,
    parse_conversations,
    parse_listing,
)
from archiver.cradle.responses import content_length, parse_retry_after, verify_body
from archiver.cradle.retries import RetryPolicy, with_retries
from archiver.cradle.watchdog import Transfer, Watchdog, WatchedAdapter
from archiver.errors import (
    ApiUnavailable,
    ArchiverError,
    AuthError,
    Interrupted,
    RateLimited,
    RecordingFailed,
    RetriableError,
)
from archiver.limiter import RateLimiter
from archiver.models import Recording, StagedFile, Window, format_time
from archiver.spool import Spool
from archiver.urls import UrlRefused, checked_url, origin_of, refuse_characters

# One logger for the whole client, as before it was split into modules.
log = structlog.get_logger("archiver.cradle")

LIST_PATHS = {"list": "/api/v1/public/recordings", "conversations": "/api/v1/public/conversations"}
CHUNK_SIZE = 256 * 1024
MAX_REDIRECTS = 5
# A connection that takes longer than this is not going to work: fail it and retry, whatever
# `cradle.timeout` allows for the (slower) first byte of a response.
CONNECT_TIMEOUT_CAP = 10.0
USER_AGENT = "cradle-archiver/0.1 (+https://github.com/cradle-archiver)"
# The API serves recordings of up to 100 MB; past this margin a body is refused, not spooled,
# so an endless body cannot fill the disk.
MAX_RECORDING_BYTES = 128 * 2**20
# A list of 500 entries is about 150 KB; a decoded list body past this is refused (a gzip bomb
# would otherwise be joined in memory whole).
MAX_LIST_BYTES = 16 * 2**20


class CradleClient:
    def __init__(
        self,
        config: CradleConfig,
        *,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
        stop: threading.Event | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_response: Callable[[str, int], None] | None = None,
    ) -> None:
        self.config = config
        self.limiter = limiter or RateLimiter(config.requests_per_second)
        self.retry = retry or RetryPolicy()
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        # Environment proxies and .netrc must not see or change our credentials.
        self.session.trust_env = False
        self.watchdog = Watchdog()
        adapter = WatchedAdapter(self.watchdog)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.stop = stop or threading.Event()
        self._wall_clock = wall_clock
        self._on_response = on_response or (lambda endpoint, code: None)
        self._origin = origin_of(config.base_url)
        self._timeout = (
            min(CONNECT_TIMEOUT_CAP, config.timeout.total_seconds()),
            config.timeout.total_seconds(),
        )
        # One request in flight, from its start until its body is read or closed.
        self._in_flight = threading.Lock()

    def close(self) -> None:
        self.watchdog.close()
        self.session.close()

    def is_on_host(self, url: str) -> bool:
        try:
            checked_url(url, self._origin)
        except UrlRefused:
            return False
        return True

    # -- list ------------------------------------------------------------------------------

    def list_recordings(
        self, window: Window, listed_from: datetime, listed_until: datetime
    ) -> Listing:
        """List one window; the caller chooses the bounds sent (the window plus an overlap)."""
        started = time.monotonic()
        listing: Listing = self._list(window, listed_from, listed_until, "list", parse_listing)
        log.info(
            "window.listed",
            window=str(window),
            listed=len(listing.recordings),
            malformed=len(listing.malformed),
            truncated=listing.truncated,
            seconds=round(time.monotonic() - started, 3),
        )
        return listing

    def list_conversations(
        self, window: Window, listed_from: datetime, listed_until: datetime
    ) -> ConversationListing:
        """List one window of the call history, as `list_recordings` lists recordings."""
        started = time.monotonic()
        listing: ConversationListing = self._list(
            window, listed_from, listed_until, "conversations", parse_conversations
        )
        log.info(
            "conversations.listed",
            window=str(window),
            listed=len(listing.conversations),
            malformed=len(listing.malformed),
            seconds=round(time.monotonic() - started, 3),
        )
        return listing

    def _list(
        self,
        window: Window,
        listed_from: datetime,
        listed_until: datetime,
        endpoint: str,
        parse: Callable[[Window, Any, datetime], Any],
    ) -> Any:
        """One list call with retries: the body read within its cap, then `parse`d; a 4xx is
        not about one entry, so the window cannot be listed (ApiUnavailable)."""
        params = {"from": format_time(listed_from), "until": format_time(listed_until)}
        url = self.config.base_url + LIST_PATHS[endpoint]
        try:
            return self._with_retries(
                lambda: parse(window, self._get_json(url, params, endpoint), self._wall_clock()),
                endpoint,
            )
        except RecordingFailed as exc:
            raise ApiUnavailable(f"{endpoint} call refused: {exc}", reason=exc.reason) from exc

    def probe(self) -> int:
        """One small list call, to prove the credentials (`check`)."""
        end = self._wall_clock().replace(microsecond=0)
        listing = self.list_recordings(
            Window(end - timedelta(minutes=1), end), end - timedelta(minutes=1), end
        )
        return listing.size

    def _get_json(self, url: str, params: dict[str, str], endpoint: str = "list") -> Any:
        body = bytearray()
        with self._request(url, params=params, endpoint=endpoint, max_bytes=MAX_LIST_BYTES) as (
            response,
            transfer,
        ):
            if (content_length(response) or 0) > MAX_LIST_BYTES:
                raise RetriableError(
                    f"list response declares more than {MAX_LIST_BYTES} bytes",
                    reason="malformed_list",
                )
            for chunk in self._chunks(response, transfer, retriable=True):
                body += chunk
                if len(body) > MAX_LIST_BYTES:
                    raise RetriableError(
                        f"list response is over {MAX_LIST_BYTES} bytes", reason="malformed_list"
                    )
        return decode_json(bytes(body))

    # -- download --------------------------------------------------------------------------

    def download(self, recording: Recording, spool: Spool) -> StagedFile:
        """Stream one recording into the spool, and verify it (SPEC 3)."""
        try:
            url = checked_url(recording.url, self._origin)
        except UrlRefused as exc:
            raise RecordingFailed(str(exc), exc.reason, permanent=True) from exc
        started = time.monotonic()
        staged = self._with_retries(
            lambda: self._download_once(url, recording.recording_id, spool), "download"
        )
        seconds = time.monotonic() - started
        log.info(
            "recording.downloaded",
            recording_id=recording.recording_id,
            bytes=staged.size,
            seconds=round(seconds, 3),
        )
        return staged

    def _download_once(self, url: str, recording_id: str, spool: Spool) -> StagedFile:
        with (
            self._request(url, endpoint="download", max_bytes=MAX_RECORDING_BYTES) as (
                response,
                transfer,
            ),
            spool.receive(recording_id) as receiver,
        ):
            expected = content_length(response)
            if expected is not None and expected > MAX_RECORDING_BYTES:
                raise RecordingFailed(
                    f"recording declares {expected} bytes, over {MAX_RECORDING_BYTES}",
                    "too_large",
                    permanent=True,
                )
            for chunk in self._chunks(response, transfer, retriable=False):
                receiver.write(chunk)
                if receiver.size > MAX_RECORDING_BYTES:
                    raise RecordingFailed(
                        f"recording body is over {MAX_RECORDING_BYTES} bytes",
                        "too_large",
                        permanent=True,
                    )
            # Content-Length counts the bytes on the wire: encoded ones, when a server
            # compresses although we asked for identity. The decoded bytes are the MP3.
            wire = response.raw.tell()
            problem = verify_body(receiver.size, wire, expected, receiver.head)
            if problem is None and not receiver.finish().has_audio:
                problem = "not_mp3"  # it starts like one, but no MPEG frame follows the tag
            if problem == "truncated":
                raise RetriableError(f"body has {wire} of {expected} bytes", reason="truncated")
            if problem is not None:
                raise RecordingFailed(f"recording body rejected: {problem}", problem)
            return receiver.commit()

    # -- plumbing --------------------------------------------------------------------------

    @contextmanager
    def _request(
        self,
        url: str,
        *,
        endpoint: str,
        max_bytes: int,
        params: dict[str, str] | None = None,
    ) -> Iterator[tuple[requests.Response, Transfer]]:
        """One GET under the in-flight lock, the limiter and the watchdog; redirects followed
        by hand, each target checked by the same parser as the first url. The watchdog's
        deadline allows for the body's declared length, never more than `max_bytes`."""
        with self._in_flight:
            try:
                for _ in range(MAX_REDIRECTS + 1):
                    response, transfer = self._send(url, params, endpoint)
                    if response.is_redirect:
                        location = response.headers.get("Location", "")
                        response.close()
                        url, params = self._redirect_target(url, location), None
                        continue
                    try:
                        self._check_status(response)
                        expected = content_length(response)
                        budget = max_bytes if expected is None else min(expected, max_bytes)
                        self.watchdog.arm(transfer.hard_deadline(budget))
                        yield response, transfer
                    finally:
                        response.close()
                    return
            finally:
                self.watchdog.disarm()
            raise RecordingFailed(f"more than {MAX_REDIRECTS} redirects", "redirect_loop")

    def _redirect_target(self, url: str, location: str) -> str:
        try:
            # The raw header is checked too: urljoin is not the parser that will connect.
            refuse_characters(location)
            return checked_url(urljoin(url, location), self._origin)
        except UrlRefused as exc:
            # Following would hand another host our credentials, or trust a parser's guess.
            raise RecordingFailed(f"redirect refused: {exc}", exc.reason, permanent=True) from exc

    def _send(
        self, url: str, params: dict[str, str] | None, endpoint: str
    ) -> tuple[requests.Response, Transfer]:
        if self.stop.is_set():
            raise Interrupted("shutdown asked for")
        headers = {"CRADLE_ID": self.config.id, "CRADLE_API_KEY": self.config.api_key}
        if endpoint == "download":
            # A compressed recording would not match its Content-Length as we count it.
            headers["Accept-Encoding"] = "identity"
        prepared = self.session.prepare_request(
            requests.Request("GET", url, params=params, headers=headers)
        )
        try:
            # What is sent is what was checked: the prepared url, parsed by the same parser
            # that will pick the connection, must still be on base_url's origin.
            checked_url(prepared.url or "", self._origin)
        except UrlRefused as exc:
            raise RecordingFailed(str(exc), exc.reason, permanent=True) from exc
        self.limiter.acquire()
        # The budget starts once the limiter lets the request go: a 429 pause is not slowness.
        transfer = Transfer(
            time.monotonic(), self.config.timeout.total_seconds(), self.config.min_transfer_rate
        )
        self.watchdog.arm(transfer.hard_deadline(0))
        try:
            response = self.session.send(
                prepared, stream=True, timeout=self._timeout, allow_redirects=False
            )
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            self.limiter.arrived()
            self._on_response(endpoint, 0)
            if self.watchdog.fired:
                raise self._too_slow(
                    f"{endpoint} headers", transfer, 0, retriable=endpoint != "download"
                ) from exc
            if isinstance(exc, requests.Timeout):
                raise RetriableError(
                    f"{endpoint} timed out: {type(exc).__name__}", reason="timeout"
                ) from exc
            raise RetriableError(
                f"{endpoint} connection failed: {type(exc).__name__}", reason="connection"
            ) from exc
        self.limiter.arrived()  # the headers are here, so the request reached the server
        self._on_response(endpoint, response.status_code)
        return response, transfer

    def _chunks(
        self, response: requests.Response, transfer: Transfer, *, retriable: bool
    ) -> Iterator[bytes]:
        """The body as it arrives: read1 returns whatever the socket has (up to CHUNK_SIZE), so
        a slow body never keeps the caller from seeing a stop request, or its deadline, long."""
        received = 0
        try:
            while chunk := response.raw.read1(CHUNK_SIZE, decode_content=True):
                if self.stop.is_set():
                    raise Interrupted("shutdown asked for during a transfer")
                received += len(chunk)
                if transfer.too_slow(received):
                    raise self._too_slow("body", transfer, received, retriable=retriable)
                yield chunk
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            if self.watchdog.fired:
                raise self._too_slow("body", transfer, received, retriable=retriable) from exc
            raise RetriableError(
                f"body cut short: {type(exc).__name__}", reason="truncated"
            ) from exc

    def _too_slow(
        self, what: str, transfer: Transfer, received: int, *, retriable: bool = True
    ) -> ArchiverError:
        seconds = time.monotonic() - transfer.started
        message = (
            f"{what} too slow: {received} bytes in {seconds:.1f}s, below"
            f" {transfer.min_rate:.0f} bytes/s after {transfer.timeout:.0f}s"
        )
        if retriable:
            return RetriableError(message, reason="too_slow")
        # A trickling recording fails this attempt only; the pass goes on to the next.
        return RecordingFailed(message, "too_slow")

    def _check_status(self, response: requests.Response) -> None:
        """Map a status to what the caller must do: the one place statuses are judged."""
        code = response.status_code
        if code == 200:
            return
        if code == 429:
            wait = parse_retry_after(response.headers.get("Retry-After"), self._wall_clock())
            raise RateLimited("429 Too Many Requests", retry_after=wait, reason="http_429")
        if code >= 500:
            raise RetriableError(f"server error {code}", reason=f"http_{code}")
        if code in (401, 403):
            raise AuthError(
                f"the Cradle API refused the credentials ({code}): check cradle.id and the API key"
            )
        raise RecordingFailed(f"unexpected status {code}", f"http_{code}")

    def _with_retries(self, call: Callable[[], Any], endpoint: str) -> Any:
        sleep = self.retry.sleep or self._sleep_unless_stopped
        return with_retries(call, endpoint, self.retry, limiter=self.limiter, sleep=sleep)

    def _sleep_unless_stopped(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Interrupted("shutdown asked for during a retry wait")
