"""The Cradle API client: auth, the shared limiter, retries and streaming downloads.

The only module that imports requests. One request is in flight at a time (a lock held from the
request's start until its body is read or closed), every start goes through one RateLimiter, and
only RetriableError reaches tenacity.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import structlog
import tenacity
import urllib3

from archiver.config import CradleConfig
from archiver.errors import (
    ApiUnavailable,
    AuthError,
    Interrupted,
    MalformedEntry,
    RateLimited,
    RecordingFailed,
    RetriableError,
    StagingError,
)
from archiver.limiter import RateLimiter
from archiver.models import Recording, StagedFile, Window, format_time

log = structlog.get_logger(__name__)

LIST_PATH = "/api/v1/public/recordings"
CHUNK_SIZE = 256 * 1024
MAX_REDIRECTS = 5
MAX_RETRY_AFTER = 900.0
USER_AGENT = "cradle-archiver/0.1 (+https://github.com/cradle-archiver)"


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried; `sleep` is injected so tests never wait."""

    attempts: int = 8
    initial: float = 0.5
    maximum: float = 30.0
    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True)
class Listing:
    """One list call's answer: valid recordings, malformed entries, and whether it looked cut."""

    window: Window
    recordings: list[Recording]
    malformed: list[tuple[str, str]] = field(default_factory=list)  # (reason, raw entry)
    truncated: bool = False

    @property
    def size(self) -> int:
        return len(self.recordings) + len(self.malformed)


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port): credentials go only where all three match `base_url`'s."""
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delta seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def looks_like_mp3(head: bytes) -> bool:
    """An ID3v2 tag or an MPEG audio frame sync (11 set bits)."""
    return head.startswith(b"ID3") or (
        len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0
    )


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
        self.stop = stop or threading.Event()
        self._wall_clock = wall_clock
        self._on_response = on_response or (lambda endpoint, code: None)
        self._origin = origin(config.base_url)
        self._timeout = (min(10.0, config.timeout.total_seconds()), config.timeout.total_seconds())
        # One request in flight, from its start until its body is read or closed.
        self._in_flight = threading.Lock()

    def close(self) -> None:
        self.session.close()

    def is_on_host(self, url: str) -> bool:
        return origin(url) == self._origin

    # -- list ------------------------------------------------------------------------------

    def list_recordings(
        self, window: Window, listed_from: datetime, listed_until: datetime
    ) -> Listing:
        """List one window; the caller chooses the bounds sent (the window plus an overlap)."""
        params = {"from": format_time(listed_from), "until": format_time(listed_until)}
        url = self.config.base_url + LIST_PATH
        started = time.monotonic()
        try:
            listing = self._with_retries(
                lambda: parse_listing(window, self._get_json(url, params)), "list"
            )
        except RecordingFailed as exc:
            # A 4xx on a list call is not about one recording: the window cannot be listed.
            raise ApiUnavailable(f"list call refused: {exc}", reason=exc.reason) from exc
        log.info(
            "window.listed",
            window=str(window),
            listed=len(listing.recordings),
            malformed=len(listing.malformed),
            truncated=listing.truncated,
            seconds=round(time.monotonic() - started, 3),
        )
        return listing

    def probe(self) -> int:
        """One small list call, to prove the credentials (`check`)."""
        end = self._wall_clock().replace(microsecond=0)
        listing = self.list_recordings(
            Window(end - timedelta(minutes=1), end), end - timedelta(minutes=1), end
        )
        return listing.size

    def _get_json(self, url: str, params: dict[str, str]) -> Any:
        with self._request(url, params=params, endpoint="list") as response:
            text = b"".join(_chunks(response)).decode(response.encoding or "utf-8", "replace")
        try:
            return json.loads(text)
        except ValueError as exc:
            raise RetriableError(
                f"list response is not JSON: {text[:80]!r}", reason="malformed_list"
            ) from exc

    # -- download --------------------------------------------------------------------------

    def download(self, recording: Recording, spool_dir: Path) -> StagedFile:
        """Stream one recording to the spool directory, hashing it, and verify it (SPEC 3)."""
        if not self.is_on_host(recording.url):
            raise RecordingFailed(
                f"url {recording.url} is not on {self.config.base_url}",
                "off_host_url",
                permanent=True,
            )
        final = spool_dir / f"{recording.recording_id}.mp3"
        started = time.monotonic()
        staged = self._with_retries(lambda: self._download_once(recording, final), "download")
        seconds = time.monotonic() - started
        log.info(
            "recording.downloaded",
            recording_id=recording.recording_id,
            bytes=staged.size,
            seconds=round(seconds, 3),
        )
        return staged

    def _download_once(self, recording: Recording, final: Path) -> StagedFile:
        partial = final.with_suffix(".part")
        try:
            with self._request(recording.url, endpoint="download") as response:
                expected = _content_length(response)
                digest = hashlib.sha256()
                size = 0
                head = b""
                with _open_staging(partial) as out:
                    for chunk in _chunks(response):
                        if self.stop.is_set():
                            raise Interrupted("shutdown asked for during a download")
                        if len(head) < 4:
                            head += chunk[:4]
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        problem = _verify_body(size, expected, head)
        if problem is not None:
            partial.unlink(missing_ok=True)
            if problem == "truncated":
                raise RetriableError(f"body has {size} of {expected} bytes", reason="truncated")
            raise RecordingFailed(f"recording body rejected: {problem}", problem)
        partial.replace(final)
        return StagedFile(path=final, size=size, sha256=digest.hexdigest())

    # -- plumbing --------------------------------------------------------------------------

    @contextmanager
    def _request(
        self, url: str, *, endpoint: str, params: dict[str, str] | None = None
    ) -> Iterator[requests.Response]:
        """One GET under the in-flight lock and the limiter; redirects followed by hand."""
        with self._in_flight:
            for _ in range(MAX_REDIRECTS + 1):
                response = self._send(url, params, endpoint)
                if response.is_redirect:
                    target = urljoin(url, response.headers.get("Location", ""))
                    response.close()
                    if not self.is_on_host(target):
                        # Following would hand the next host our credentials.
                        raise RecordingFailed(
                            f"redirect to another host: {target}", "off_host_url", permanent=True
                        )
                    url, params = target, None
                    continue
                try:
                    self._check_status(response)
                    yield response
                finally:
                    response.close()
                return
            raise RecordingFailed(f"more than {MAX_REDIRECTS} redirects", "redirect_loop")

    def _send(self, url: str, params: dict[str, str] | None, endpoint: str) -> requests.Response:
        if self.stop.is_set():
            raise Interrupted("shutdown asked for")
        headers = {}
        if self.is_on_host(url):
            headers = {"CRADLE_ID": self.config.id, "CRADLE_API_KEY": self.config.api_key}
        self.limiter.acquire()
        try:
            response = self.session.get(
                url,
                params=params,
                headers=headers,
                stream=True,
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.Timeout as exc:
            self.limiter.arrived()
            self._on_response(endpoint, 0)
            raise RetriableError(
                f"{endpoint} timed out: {type(exc).__name__}", reason="timeout"
            ) from exc
        except requests.RequestException as exc:
            self.limiter.arrived()
            self._on_response(endpoint, 0)
            raise RetriableError(
                f"{endpoint} connection failed: {type(exc).__name__}", reason="connection"
            ) from exc
        self.limiter.arrived()  # the headers are here, so the request reached the server
        self._on_response(endpoint, response.status_code)
        return response

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
        policy = self.retry
        backoff = tenacity.wait_exponential_jitter(multiplier=policy.initial, max=policy.maximum)

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            delay = backoff(state)
            if isinstance(exc, RetriableError) and exc.retry_after is not None:
                delay = exc.retry_after
            if isinstance(exc, RateLimited):
                # A 429 holds every request, not only the retry of this one.
                self.limiter.pause_for(delay)
            log.warning(
                "api.retry",
                endpoint=endpoint,
                attempt=state.attempt_number,
                reason=getattr(exc, "reason", type(exc).__name__),
                wait=round(delay, 3),
            )
            return delay

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(RetriableError),
            stop=tenacity.stop_after_attempt(policy.attempts),
            wait=wait,
            sleep=self._interruptible_sleep(policy.sleep),
            reraise=True,
        )
        try:
            return retrying(call)
        except RetriableError as exc:
            raise ApiUnavailable(
                f"{endpoint} failed {policy.attempts} times, last: {exc}", reason=exc.reason
            ) from exc

    def _interruptible_sleep(self, sleep: Callable[[float], None]) -> Callable[[float], None]:
        def wait(seconds: float) -> None:
            if sleep is time.sleep:
                if self.stop.wait(seconds):
                    raise Interrupted("shutdown asked for during a retry wait")
            else:
                sleep(seconds)

        return wait


def parse_listing(window: Window, body: Any) -> Listing:
    """Validate a list response; a bad shape fails the call, a bad entry is set aside."""
    if not isinstance(body, dict) or not isinstance(body.get("recordings"), list):
        raise RetriableError("list response has no recordings array", reason="malformed_list")
    recordings: list[Recording] = []
    malformed: list[tuple[str, str]] = []
    for entry in body["recordings"]:
        try:
            recordings.append(Recording.from_api(entry))
        except MalformedEntry as exc:
            malformed.append((str(exc), json.dumps(entry, sort_keys=True, default=str)[:2000]))
    size = body.get("size")
    # A `size` larger than what came back means the server cut the list short.
    truncated = isinstance(size, int) and size > len(body["recordings"])
    return Listing(window, recordings, malformed, truncated)


def _content_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _chunks(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives: read1 returns whatever the socket has (up to CHUNK_SIZE), so a
    slow body never keeps the caller from seeing a stop request for long."""
    try:
        while chunk := response.raw.read1(CHUNK_SIZE, decode_content=True):
            yield chunk
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise RetriableError(f"body cut short: {type(exc).__name__}", reason="truncated") from exc


def _verify_body(size: int, expected: int | None, head: bytes) -> str | None:
    if expected is not None and size != expected:
        return "truncated"
    if size == 0:
        return "empty"
    if not looks_like_mp3(head):
        return "not_mp3"
    return None


@contextmanager
def _open_staging(path: Path) -> Iterator[Any]:
    try:
        handle = open(path, "wb")  # noqa: SIM115  closed below; the error must name the spool
    except OSError as exc:
        raise StagingError(
            f"cannot write to the spool directory {path.parent}: {exc.strerror}"
        ) from exc
    try:
        yield handle
    except OSError as exc:
        raise StagingError(
            f"cannot write to the spool directory {path.parent}: {exc.strerror}"
        ) from exc
    finally:
        handle.close()
