"""The CLI as a measured process: exit code, output, wall time, peak RSS and the spool's peak.

Peak RSS is the kernel's high-water mark of the child's memory (`VmHWM` in /proc/PID/status),
polled every 20 ms while it runs: the mark only grows, so a poll sees every earlier spike. Not
wait4's `ru_maxrss`: it keeps the high-water mark of the memory the child had before its exec,
which is this test process's (a vfork shares it), so it measures pytest, not the CLI. The spool
directory is polled for its size in bytes as well.

`retry_attempts` runs the CLI with a smaller retry budget for API calls: a list call that fails
every time otherwise costs eight attempts and about a minute of backoff, and the config has no key
for the budget. The budget is the only thing changed; the process is otherwise the real CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.e2e.harness import ROOT, cli_env

# Patches the client's default RetryPolicy where CradleClient reads it (archiver.cradle.client),
# then runs the real entry point: `-c` argv is ["-c", attempts, *cli args].
_LAUNCH = """
import functools, sys
import archiver.cradle.client as client
attempts = int(sys.argv.pop(1))
client.RetryPolicy = functools.partial(
    client.RetryPolicy, attempts=attempts, initial=0.05, maximum=0.2
)
from archiver.cli import main
main(sys.argv[1:])
"""


@dataclass
class Finished:
    code: int
    stdout: str
    stderr: str
    wall: float  # seconds
    peak_rss: int  # bytes
    spool_peak: int  # bytes
    killed: bool = False

    @property
    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.stderr.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                found.append(event)
        return found

    def named(self, name: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event.get("event") == name]

    @property
    def messages(self) -> list[str]:
        """The stderr lines that are not JSON log lines: what an operator reads."""
        lines = []
        for line in self.stderr.splitlines():
            try:
                json.loads(line)
            except ValueError:
                lines.append(line)
        return lines

    def explain(self) -> str:
        tail = "\n".join(self.stderr.splitlines()[-25:])
        return (
            f"exit {self.code} after {self.wall:.1f}s; stdout {self.stdout!r}; stderr tail:\n{tail}"
        )


@dataclass
class _Watch:
    pid: int
    spool: Path | None
    rss: int = 0
    spool_peak: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.poll()

    def poll(self) -> None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.rss = max(self.rss, int(line.split()[1]) * 1024)
        if self.spool is not None:
            self.spool_peak = max(self.spool_peak, tree_size(self.spool))


def tree_size(path: Path) -> int:
    total = 0
    try:
        for entry in os.scandir(path):
            try:
                if entry.is_dir(follow_symlinks=False):
                    total += tree_size(Path(entry.path))
                else:
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:  # gone between the listing and the stat
                continue
    except OSError:
        return total
    return total


def run_cli(
    *args: str,
    config: Path,
    spool: Path | None = None,
    retry_attempts: int | None = None,
    timeout: float = 90,
) -> Finished:
    """Run `cradle-archiver --log-format json --config CONFIG ARGS` and measure it."""
    command = _command(args, config, retry_attempts)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=cli_env(), cwd=ROOT)
        watch = _Watch(proc.pid, spool)
        watcher = threading.Thread(target=watch.run, daemon=True)
        watcher.start()
        try:
            killed = _wait_unreaped(proc, deadline=started + timeout)
        finally:
            watch.done.set()
            watcher.join()
        _, status = os.waitpid(proc.pid, 0)
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        stdout, stderr = _text_of(out), _text_of(err)
    return Finished(
        code=code,
        stdout=stdout,
        stderr=stderr,
        wall=wall,
        peak_rss=watch.rss,
        spool_peak=watch.spool_peak,
        killed=killed,
    )


def _command(args: tuple[str, ...], config: Path, retry_attempts: int | None) -> list[str]:
    if retry_attempts is None:
        command = [sys.executable, "-m", "archiver"]
    else:
        command = [sys.executable, "-c", _LAUNCH, str(retry_attempts)]
    return [*command, "--log-format", "json", "--config", str(config), *args]


def _wait_unreaped(proc: subprocess.Popen[bytes], *, deadline: float) -> bool:
    """Waits for the child to exit, killing it at `deadline` (True then), without reaping it:
    its pid cannot be reused while the watch may still read /proc/PID or we may kill it."""
    while True:
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
            return False
        if time.monotonic() > deadline:
            proc.kill()
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            return True
        time.sleep(0.01)


def _text_of(output: IO[bytes]) -> str:
    output.seek(0)
    return output.read().decode("utf-8", "replace")
