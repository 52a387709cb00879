"""The API listener: rate rules, auth, injected faults, and the three Cradle endpoints.

The order of checks is a real API's: the edge's rate limiter first, then auth, then the
backend (where faults happen), then routing.
"""

from __future__ import annotations

import hmac
import json
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from archiver.simulator import admin
from archiver.simulator.data import RECORDING_PATH
from archiver.simulator.faults import Plan, malformed_list_body
from archiver.simulator.listing import conversations_body, parse_window, recordings_body
from archiver.simulator.options import SimulatorOptions
from archiver.simulator.state import SimState
from archiver.simulator.stats import Ticket
from archiver.simulator.transport import DISCONNECTS, SimHandler

LIST_PATH = "/api/v1/public/recordings"
CONVERSATIONS_PATH = "/api/v1/public/conversations"
_DOWNLOAD = re.compile(re.escape(RECORDING_PATH) + r"([0-9a-fA-F-]{36})\.mp3")
_LISTED = {"list": "recordings", "conversations": "conversations"}  # the list's key
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:\d+)?|\[[0-9A-Fa-f:.]+\](:\d+)?")


class ApiHandler(SimHandler):
    """The Cradle API, with the admin endpoints under /_sim/ on the same port."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        # One handler object serves every request of a keep-alive connection.
        self.api_request = not self.path.startswith(admin.PREFIX)
        if self.api_request:
            self._api(method)
        else:
            admin.handle(self, method)

    def _api(self, method: str) -> None:
        state = self.server.state
        switches = state.switches
        target = urlsplit(self.path)
        kind = _kind(method, target.path)
        if switches.arrival_jitter:
            # In transit: the edge has not seen the request yet, so neither has the rate gate.
            state.stopping.wait(state.dice.jitter(switches.arrival_jitter, self.path))
        state.counters.request(kind)
        ticket = state.gate.arrive(switches.rps, self.path, self.connection)
        try:
            query = parse_qs(target.query)
            self._serve(state, switches, method, kind, target.path, query, ticket)
        except DISCONNECTS:
            state.counters.add("client_disconnects")
            self.close_connection = True
        finally:
            ticket.finish()

    def _serve(
        self,
        state: SimState,
        switches: SimulatorOptions,
        method: str,
        kind: str,
        path: str,
        query: dict[str, list[str]],
        ticket: Ticket,
    ) -> None:
        if self._refused(state, switches, ticket):
            return
        plan = state.dice.plan(switches, kind, self.path)
        if self._faulted(state, switches, plan, ticket):
            return
        if kind in ("list", "conversations"):
            self._list(state, switches, kind, query, plan, ticket)
        elif kind == "download":
            self._download(state, path, plan, ticket)
        elif method != "GET":
            self.send_json(405, {"error": f"{method} is not allowed here"}, ticket)
        else:
            self.send_json(404, {"error": "Not found"}, ticket)

    def _refused(self, state: SimState, switches: SimulatorOptions, ticket: Ticket) -> bool:
        """Answers a request the API would refuse (a rate rule broken, bad credentials, a
        forbidden key); False when it may go on."""
        if ticket.violation:
            # Not counted as an injected fault: the client broke a rule.
            error = {"error": "Too many requests", "rule": ticket.violation}
            self.send_json(429, error, ticket, {"Retry-After": "1"})
            return True
        if not self._authorised(state.options):
            self.send_json(401, {"error": "Missing or invalid CRADLE_ID / CRADLE_API_KEY"}, ticket)
            return True
        if switches.forbid:
            self.send_json(403, {"error": "This API key may not use this endpoint"}, ticket)
            return True
        return False

    def _faulted(
        self, state: SimState, switches: SimulatorOptions, plan: Plan, ticket: Ticket
    ) -> bool:
        """Waits out the latency, then plays the plan's fault before any answer (headers
        dropped, a 429, a 5xx); False when the request is to be answered."""
        if switches.latency and state.stopping.wait(switches.latency):
            self.close_connection = True  # shutting down: answer nothing
            return True
        if plan.drop_headers:
            state.counters.fault("drop_headers")
            ticket.finish()
            self.close_connection = True
            return True
        if plan.status_429:
            state.counters.fault("429")
            headers = _retry_after_header(plan.retry_after)
            self.send_json(429, {"error": "Too many requests"}, ticket, headers)
            return True
        if plan.status_5xx:
            state.counters.fault("5xx")
            self.send_json(plan.status_5xx, {"error": "Internal error, try again"}, ticket)
            return True
        return False

    def _authorised(self, options: SimulatorOptions) -> bool:
        given_id = self.headers.get("CRADLE_ID", "").encode()
        given_key = self.headers.get("CRADLE_API_KEY", "").encode()
        id_ok = hmac.compare_digest(given_id, options.cradle_id.encode())
        return hmac.compare_digest(given_key, options.api_key.encode()) and id_ok

    def _list(
        self,
        state: SimState,
        switches: SimulatorOptions,
        kind: str,
        query: dict[str, list[str]],
        plan: Plan,
        ticket: Ticket,
    ) -> None:
        try:
            since, until = parse_window(query)
        except ValueError as exc:
            self.send_json(400, {"error": str(exc)}, ticket)
            return
        if plan.malformed is not None:
            state.counters.fault("malformed_list")
            body = malformed_list_body(plan.malformed, _LISTED[kind])
            content_type = "text/html" if body.startswith(b"<") else "application/json"
            self.send(200, content_type, len(body), [body], ticket)
            return
        document, found = self._listing(state, switches, kind, since, until)
        if switches.list_cap is not None and found > switches.list_cap:
            state.counters.fault("list_cap")
        body = json.dumps(document).encode()
        self.send(200, "application/json", len(body), [body], ticket, plan=plan)

    def _listing(
        self,
        state: SimState,
        switches: SimulatorOptions,
        kind: str,
        since: datetime,
        until: datetime,
    ) -> tuple[dict[str, Any], int]:
        """The list body of a window, and how many it held before `list_cap`."""
        now, root, cap = state.options.clock(), self._root(state.base_url), switches.list_cap
        if kind == "list":
            items = state.catalog.window(since, until, switches.bounds, now)
            return recordings_body(items, root, state.base_url, cap), len(items)
        calls = state.calls.window(since, until, switches.bounds, now)
        return conversations_body(calls, now, root, state.base_url, cap), len(calls)

    def _download(self, state: SimState, path: str, plan: Plan, ticket: Ticket) -> None:
        match = _DOWNLOAD.fullmatch(path)
        recording = state.catalog.by_id.get(match.group(1).lower()) if match else None
        if recording is None or recording.poison == "404":
            self.send_json(404, {"error": "Recording not found"}, ticket)
        elif recording.poison == "html":
            page = b"<!DOCTYPE html><html><body><h1>Something went wrong</h1></body></html>"
            self.send(200, "text/html; charset=utf-8", len(page), [page], ticket)
        elif recording.poison == "redirect":
            location = f"{state.canary_url}{path}?source=api"
            note = f"Found: {location}".encode()
            headers = {"Location": location}
            self.send(302, "text/plain", len(note), [note], ticket, headers=headers)
        else:
            body = state.body(recording.recording_id)
            self.send(200, "audio/mpeg", recording.size, body, ticket, plan=plan, download=True)

    def _root(self, base_url: str) -> str:
        host = self.headers.get("Host", "")
        return f"http://{host}" if _HOST.fullmatch(host) else base_url


def _kind(method: str, path: str) -> str:
    if method != "GET":
        return "other"
    if path.rstrip("/") == LIST_PATH:
        return "list"
    if path.rstrip("/") == CONVERSATIONS_PATH:
        return "conversations"
    if path.startswith(RECORDING_PATH):
        return "download"
    return "other"


def _retry_after_header(mode: str) -> dict[str, str]:
    if mode == "seconds":
        return {"Retry-After": "1"}
    if mode == "date":
        # Two seconds, not one: an HTTP date has whole seconds, so one could round to "now".
        # Real time, not the injected clock: the client compares it with its own clock.
        when = datetime.now(UTC) + timedelta(seconds=2)
        return {"Retry-After": format_datetime(when, usegmt=True)}
    return {}
