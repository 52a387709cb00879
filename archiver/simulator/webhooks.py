"""End-of-call webhooks: each conversation POSTed to one url when its call ends, as Cradle does.

They go out from a thread of their own, so a slow or dead receiver never holds up the API, and
they are not API requests, so the rate gate never sees them. Each POST times out quickly: a
receiver is meant to answer at once.

Only calls that end after start-up are posted: a live feed, as a receiver subscribed now would
get, not the account's whole past. A call is due when it ends, plus `webhook_delay`; with the
default `processing_delay` its recordings are listed a few seconds later. The injected clock is
polled, so a test that moves it forward sees the calls it passes posted.

Which webhooks are dropped or posted twice is a hash of the seed and the conversation's uuid,
so it is the same in every run of a seed whatever the timing, and a rate of 0 never rolls.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from archiver.simulator.conversations import SimConversation
from archiver.simulator.state import SimState

log = structlog.get_logger()

TIMEOUT = 2.0  # seconds for one POST, connect to answer
_POLL = 0.1  # how often the clock is read while waiting: an injected one may jump
_READ_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Due:
    """When a conversation's webhook goes out."""

    at: datetime
    conversation: SimConversation


def schedule(calls: Iterable[SimConversation], started_at: datetime, delay: float) -> list[Due]:
    """The webhooks of calls ending after `started_at`, in the order they are due."""
    due = [Due(c.ended_at + timedelta(seconds=delay), c) for c in calls if c.ended_at > started_at]
    return sorted(due, key=lambda d: (d.at, d.conversation.uuid))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer like any other that is not 2xx: the webhook failed."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# No proxies from the environment: the receiver is named by its url alone.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


class WebhookSender:
    """Posts the scheduled webhooks in order until they are all out or the simulator stops."""

    def __init__(self, state: SimState, url: str, due: list[Due]) -> None:
        self._state = state
        self._url = url
        self._due = due
        self._thread = threading.Thread(target=self._run, name="simulator-webhooks", daemon=True)

    def start(self) -> None:
        log.info("simulator.webhooks_started", url=self._url, scheduled=len(self._due))
        self._thread.start()

    def join(self) -> None:
        """Wait for the thread, which ends within one POST's timeout of `stopping`."""
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        for due in self._due:
            if not self._wait_until(due.at):
                return
            self._deliver(due.conversation)

    def _wait_until(self, at: datetime) -> bool:
        """False if the simulator stops first."""
        clock, stopping = self._state.options.clock, self._state.stopping
        while (now := clock()) < at:
            if stopping.wait(min((at - now).total_seconds(), _POLL)):
                return False
        return not stopping.is_set()

    def _deliver(self, conversation: SimConversation) -> None:
        state = self._state
        switches, counters = state.switches, state.counters
        if _hit(state.options.seed, conversation.uuid, "drop", switches.webhook_drop):
            counters.add("webhooks_dropped")
            log.info("simulator.webhook_dropped", uuid=conversation.uuid)
            return
        body = json.dumps(conversation.entry_at(state.options.clock())).encode()
        posts = 1
        if _hit(state.options.seed, conversation.uuid, "repeat", switches.webhook_repeat):
            counters.add("webhooks_repeated")
            posts = 2
        for attempt in range(1, posts + 1):
            status, error = self._post(body)
            ok = status is not None and 200 <= status < 300
            counters.add("webhooks_sent" if ok else "webhooks_failed")
            event = "simulator.webhook_sent" if ok else "simulator.webhook_failed"
            (log.info if ok else log.warning)(
                event, uuid=conversation.uuid, attempt=attempt, status=status, error=error
            )

    def _post(self, body: bytes) -> tuple[int | None, str | None]:
        """The receiver's status, or None and why there was none."""
        # The url's scheme was checked to be http or https when the options were made.
        request = urllib.request.Request(  # noqa: S310
            self._url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "cradle-simulator"},
        )
        try:
            with _OPENER.open(request, timeout=TIMEOUT) as response:
                response.read(_READ_LIMIT)
                return int(response.status), None
        except urllib.error.HTTPError as exc:
            exc.close()
            return exc.code, None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # URLError and timeouts are OSErrors; a garbled answer is an HTTPException.
            return None, f"{type(exc).__name__}: {exc}"


def _hit(seed: int, uuid: str, what: str, rate: float) -> bool:
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"{seed}|{uuid}|webhook-{what}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate
