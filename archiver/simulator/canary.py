"""The canary: a second listener standing for "some other host".

Off-host and redirected recording urls point here. It answers everything 200 with a small
MP3-looking body, so a client that wrongly follows such a url believes it succeeded, and it
counts requests that carried the Cradle credentials, which must never leave the API host.
"""

from __future__ import annotations

import structlog

from archiver.simulator.body import canary_body
from archiver.simulator.transport import SimHandler

log = structlog.get_logger()

CREDENTIAL_HEADERS = ("CRADLE_ID", "CRADLE_API_KEY")
_BODY = canary_body()


class CanaryHandler(SimHandler):
    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def do_POST(self) -> None:
        self._answer(with_body=True)

    def do_PUT(self) -> None:
        self._answer(with_body=True)

    def _answer(self, with_body: bool) -> None:
        stats = self.server.state.counters
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= 1 << 20:
            self.rfile.read(length)
        leaked = [name for name in CREDENTIAL_HEADERS if self.headers.get(name) is not None]
        stats.add("canary_requests")
        if leaked:
            stats.add("canary_credential_requests")
            # Header names only: the point is to catch a leak, not to repeat it.
            log.warning("simulator.canary_got_credentials", path=self.path, headers=leaked)
        else:
            log.info("simulator.canary_request", path=self.path)
        if with_body:
            self.send(200, "audio/mpeg", len(_BODY), [_BODY])
        else:
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            self.send_header("Content-Length", str(len(_BODY)))
            self.end_headers()
