"""moto's S3 in a process of its own, which can be stopped and started again on the same port.

`ThreadedMotoServer.stop()` leaves the listening socket open and keep-alive connections served,
so a client would hang rather than see the server gone. Here `stop` closes the listener and
shuts every live connection, as a crashed or restarted S3 endpoint would; `start` listens again
on the same port. The data lives in moto's in-process backend and survives both.

It runs in its own process so that moto's request handling never competes for the GIL with the
simulator, whose rate gate timestamps arrivals (a stall there would show as a false violation).

    python -m tests.chaos.s3server      # prints "ready URL", then obeys lines on stdin:
    stop | start | iam on | iam off | quit
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parents[2]


class MotoS3:
    """moto's WSGI app on a werkzeug server whose stop really drops every connection."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._app: Any = None
        self._live: set[socket.socket] = set()  # the connections being served
        self._live_lock = threading.Lock()

    def start(self) -> str:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        live: set[socket.socket] = set()
        lock = threading.Lock()

        class Handler(MotoRequestHandler):
            def setup(self) -> None:
                super().setup()
                with lock:
                    live.add(self.connection)

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    with lock:
                        live.discard(self.connection)

            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass

        if self._app is None:
            self._app = DomainDispatcherApplication(create_backend_app)
        server = make_server(self.host, self.port, self._app, True, request_handler=Handler)
        self._live, self._live_lock = live, lock
        self.port = server.server_port
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._live_lock:
            connections = list(self._live)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join()


def set_iam(enabled: bool) -> None:
    """moto checks IAM policies on every request while enabled (as `enable_iam_authentication`)."""
    from moto import settings
    from moto.core.responses import ActionAuthenticatorMixin

    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0 if enabled else float("inf")
    ActionAuthenticatorMixin.request_count = 0


def main() -> None:
    server = MotoS3()
    print(f"ready {server.start()}", flush=True)
    commands = {
        "stop": server.stop,
        "start": server.start,
        "iam on": lambda: set_iam(True),
        "iam off": lambda: set_iam(False),
    }
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        action = commands.get(command)
        if action is None:
            print(f"error unknown command {command!r}", flush=True)
            continue
        action()
        print(f"ok {command}", flush=True)
    server.stop()


class S3Server(Protocol):
    """An S3 endpoint a scenario can take down and bring back: S3Process (moto), or
    tests.seaweed.SeaweedFS."""

    @property
    def url(self) -> str: ...
    def stop(self) -> None: ...
    def start(self) -> None: ...
    def close(self) -> None: ...


class S3Process:
    """The parent's handle on `python -m tests.chaos.s3server`."""

    def __init__(self) -> None:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        env["AWS_DEFAULT_REGION"] = "us-east-1"
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.s3server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            env=env,
        )
        self.url = self._reply("ready").split(" ", 1)[1]

    @property
    def pid(self) -> int:
        return self._process.pid

    def stop(self) -> None:
        self._command("stop")

    def start(self) -> None:
        self._command("start")

    def iam(self, enabled: bool) -> None:
        self._command("iam on" if enabled else "iam off")

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                self._process.communicate("quit\n", timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.communicate()

    def _command(self, command: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        self._reply(f"ok {command}")

    def _reply(self, expected: str) -> str:
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if not line.startswith(expected):
            raise RuntimeError(f"s3 server answered {line!r}, expected {expected!r}")
        return line


if __name__ == "__main__":
    main()
