"""The checkpoint's files on disk: the writer's lock, private modes, and no symbolic links.

Its files (the database, `-wal`, `-shm` and `.lock`) are never reached through a symbolic link:
the writer truncates the lock file, writes its pid into it and makes every file 0600, so a link
planted at one of those names would have it do that to whatever file the link points at. We open
them with O_NOFOLLOW and check the names SQLite opens itself (it cannot be told not to follow)
just before it does; the directory is the archiver's own (0700), so nothing swaps one in between.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from archiver.errors import CheckpointError, CheckpointLocked

_LINK = "{} is a symbolic link; refusing to follow it (the checkpoint's files must be real files)"


@contextmanager
def writer_lock(path: Path) -> Iterator[None]:
    """The writer's lock on the checkpoint at `path` alone, without opening the database (which
    may be missing or unreadable): `rebuild-state` holds it while it moves a checkpoint aside and
    puts a rebuilt one in its place, so no archiver opens the path meanwhile."""
    path = Path(path)
    refuse_links(path)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = take_lock(path)
    except OSError as exc:
        raise CheckpointError(f"cannot lock the checkpoint {path}: {exc}") from exc
    try:
        yield
    finally:
        os.close(fd)


def take_lock(path: Path) -> int:
    fd = open_file(f"{path}.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        raise CheckpointLocked(
            f"another cradle-archiver process (pid {holder if holder.isdigit() else 'unknown'})"
            f" holds the checkpoint {path}; stop it first"
        ) from None
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_private(path: Path) -> None:
    """The state is readable by its owner only (guarantee 6), even a file copied in by hand."""
    for name in (str(path), f"{path}-wal", f"{path}-shm"):
        try:
            fd = open_file(name, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:  # through the descriptor: a chmod by name would follow a link put there since
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)


def refuse_links(path: Path) -> None:
    for name in (str(path), f"{path}-wal", f"{path}-shm", f"{path}.lock"):
        if os.path.islink(name):
            raise CheckpointError(_LINK.format(name))


def open_file(name: str, flags: int) -> int:
    """Open (or create, 0600) one of the checkpoint's files: never through a link, never a FIFO
    or device (O_NONBLOCK: opening a FIFO must not hang before we can look at it)."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError:
        if os.path.islink(name):  # O_NOFOLLOW's ELOOP (EMLINK on some BSDs)
            raise CheckpointError(_LINK.format(name)) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CheckpointError(f"{name} is not a regular file; refusing to use it")
    return fd
