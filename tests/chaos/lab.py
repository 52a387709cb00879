"""The chaos lab: simulators, a bucket on a stoppable S3 server, the CLI as real processes, and a
record of everything those processes printed (for the secrets scan).

Used by `python -m tests.chaos` (heavy) and by tests/e2e/test_faults_e2e.py (light); both call the
same scenario functions with different sizes.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.config

from archiver.checkpoint import Checkpoint
from archiver.simulator import Simulator
from tests.chaos.s3server import S3Process, S3Server
from tests.e2e.harness import (
    API_KEY,
    ROOT,
    Bucket,
    cli_command,
    cli_env,
    events,
    simulator_options,
    write_config,
)

_names = itertools.count()


@dataclass
class Run:
    """A finished CLI process."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def events(self) -> list[dict[str, Any]]:
        return events(self.stderr)

    @property
    def crashed(self) -> bool:
        """An unexpected exception: a traceback or an "internal error" instead of a message
        that says what is wrong."""
        return (
            any("internal error" in line for line in self.errors())
            or any(line.startswith("Traceback (most recent call last)") for line in self.stray())
            or any(event.get("event") == "command.crashed" for event in self.events)
        )

    def errors(self) -> list[str]:
        """What the CLI printed as its error: `cradle-archiver: ...` lines."""
        return [line for line in self.stderr.splitlines() if line.startswith("cradle-archiver:")]

    def stray(self) -> list[str]:
        """Lines on stderr that are neither JSON log events nor the CLI's error message."""
        return [
            line
            for line in self.stderr.splitlines()
            if line.strip() and not line.startswith(("{", "cradle-archiver:"))
        ]

    def tail(self, lines: int = 6) -> str:
        """The last things the process said, compactly: log events by name (with any error),
        and whatever else it printed."""
        shown = []
        for line in (self.stdout + self.stderr).splitlines()[-lines:]:
            try:
                event = json.loads(line)
            except ValueError:
                shown.append(f"    {line[:240]}")
                continue
            error = event.get("error") or event.get("reason") or ""
            shown.append(f"    [{event.get('event')}] {str(error)[:200]}".rstrip())
        return "\n".join(shown)


class Proc:
    """A running CLI process whose stdout and stderr go to files (so it never blocks on a pipe)."""

    def __init__(self, lab: Lab, args: tuple[str, ...], config: Path, env: dict[str, str]) -> None:
        n = next(_names)
        self.args = args
        self.out_path = lab.logs / f"{n:04d}-{args[0]}.out"
        self.err_path = lab.logs / f"{n:04d}-{args[0]}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen(
                cli_command(*args, config=config),
                stdout=out,
                stderr=err,
                env=cli_env(**env),
                cwd=ROOT,
            )
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.ended_wall: float | None = None
        self.signalled: float | None = None
        lab.transcripts.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        return events(self.stderr())

    def saw(self, event: str) -> bool:
        return f'"event": "{event}"' in self.stderr()

    def count(self, event: str) -> int:
        """How many times the process has logged `event` so far (cheap enough to poll)."""
        return self.stderr().count(f'"event": "{event}"')

    def send(self, signum: int) -> None:
        self.signalled = time.monotonic()
        self.popen.send_signal(signum)

    def kill(self) -> Run:
        self.send(signal.SIGKILL)
        return self.wait(30)

    def wait(self, timeout: float) -> Run:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            code = -999
        self.ended_wall = time.time()
        since = self.signalled if self.signalled is not None else self.started
        return Run(self.args, code, self.stdout(), self.stderr(), time.monotonic() - since)

    def rss_kb(self) -> int | None:
        """VmRSS from /proc, or None once the process is gone."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return None


@dataclass
class Lab:
    """One working directory, one S3 server, any number of simulators."""

    root: Path
    s3: S3Server
    own_s3: bool = False
    simulators: list[Simulator] = field(default_factory=list)
    transcripts: list[Run | Proc] = field(default_factory=list)
    state_dirs: list[Path] = field(default_factory=list)

    @classmethod
    @contextmanager
    def open(cls, root: Path, s3: S3Server | None = None) -> Iterator[Lab]:
        _fake_aws_environment()
        lab = cls(root, s3 or S3Process(), own_s3=s3 is None)
        lab.logs.mkdir(parents=True, exist_ok=True)
        try:
            yield lab
        finally:
            lab.close()

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def close(self) -> None:
        for sim in self.simulators:
            sim.stop()
        for item in self.transcripts:
            if isinstance(item, Proc) and item.alive():
                item.kill()
        if self.own_s3:
            self.s3.close()

    # -- servers ----------------------------------------------------------------------------

    def simulator(self, hours: float = 3, **options: Any) -> Simulator:
        """The e2e tier's simulator (calls that all ended well in the past), started."""
        sim = Simulator(simulator_options(hours, **options)).start()
        self.simulators.append(sim)
        return sim

    def s3_client(self, s3: S3Server | None = None, **keys: str) -> Any:
        config = botocore.config.Config(retries={"max_attempts": 3}, max_pool_connections=16)
        url = (s3 or self.s3).url
        return boto3.client("s3", endpoint_url=url, region_name="us-east-1", config=config, **keys)

    def bucket(self, versioned: bool = True, s3: S3Server | None = None) -> Bucket:
        """A fresh bucket; versioned, so a second write to a key shows as a second version."""
        client = self.s3_client(s3)
        name = f"chaos-{os.getpid()}-{next(_names)}"
        client.create_bucket(Bucket=name)
        if versioned:
            client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return Bucket(name, (s3 or self.s3).url, client)

    def config(self, name: str, sim: Simulator, bucket: Bucket, **sections: dict[str, Any]) -> Path:
        workdir = self.root / name
        workdir.mkdir(parents=True, exist_ok=True)
        self.state_dirs.append(workdir)
        return write_config(workdir / "config.toml", sim, bucket, **sections)

    # -- the CLI ----------------------------------------------------------------------------

    def cli(self, *args: str, config: Path, timeout: float = 300, **env: str) -> Run:
        proc = self.spawn(*args, config=config, **env)
        run = proc.wait(timeout)
        if run.returncode == -999:
            run.stderr += f"\n(test: {' '.join(args)} still running after {timeout}s, killed)"
        return run

    def spawn(self, *args: str, config: Path, **env: str) -> Proc:
        return Proc(self, args, config, env)

    def checkpoint(self, config: Path) -> Checkpoint:
        """The checkpoint beside `config`, opened as a reader (safe beside a running writer)."""
        return Checkpoint.open(config.parent / "state.db", writer=False, create=False)

    # -- the secrets scan -------------------------------------------------------------------

    def secret_sightings(self, secret: str = API_KEY) -> list[str]:
        """Everywhere `secret` shows: any output of any process, any state file byte."""
        found = []
        needle = secret.encode()
        for item in self.transcripts:
            text = (item.stdout + item.stderr) if isinstance(item, Run) else None
            if isinstance(item, Proc):
                text = item.stdout() + item.stderr()
            if text and secret in text:
                found.append(f"output of `{' '.join(item.args)}`")
        for directory in self.state_dirs:
            for path in sorted(directory.glob("state.db*")):
                if needle in path.read_bytes():
                    found.append(str(path))
        return found

    def across_restart(self, violation: dict[str, Any]) -> bool:
        """Whether the violation's one-second window holds arrivals from a process that has
        since ended: the restarted process added to the last second of the one it replaced."""
        earliest = violation["at"] + min(violation["arrivals_ms_before"]) / 1000
        return any(
            isinstance(p, Proc)
            and p.ended_wall is not None
            and earliest - 0.05 <= p.ended_wall <= violation["at"]
            for p in self.transcripts
        )

    def explain_violation(self, violation: dict[str, Any]) -> str:
        """A violation with the processes that were alive around it, for a post-mortem."""
        at = violation["at"]
        around = [
            f"{' '.join(p.args[:1])} pid {p.pid} {p.started_wall - at:+.2f}s.."
            + (f"{p.ended_wall - at:+.2f}s" if p.ended_wall else "running")
            for p in self.transcripts
            if isinstance(p, Proc)
            and p.started_wall - 5 <= at
            and (p.ended_wall is None or p.ended_wall + 5 >= at)
        ]
        where = "across a kill/restart" if self.across_restart(violation) else "within one run"
        return (
            f"{violation['rule']} violation ({where}) at {violation['path']}; arrivals in the "
            f"second before (ms): {violation['arrivals_ms_before']}; processes: {around}"
        )

    def canary_credential_requests(self) -> int:
        return sum(sim.stats()["canary_credential_requests"] for sim in self.simulators)

    def loose_state_files(self) -> list[str]:
        """State files readable by anyone but their owner (guarantee 6)."""
        return [
            str(path)
            for directory in self.state_dirs
            for path in directory.glob("state.db*")
            if path.stat().st_mode & 0o077
        ]


def wait_for(condition: Callable[[], Any], timeout: float, every: float = 0.05) -> Any:
    """Poll `condition` until it is truthy (returned) or `timeout` passes (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def _fake_aws_environment() -> None:
    """This process's boto3 talks only to moto, never to a developer's AWS account."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            del os.environ[name]
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
