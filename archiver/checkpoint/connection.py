"""The open checkpoint: one SQLite connection, the writer's lock, and one way to read and write.

Every write is one `BEGIN IMMEDIATE` transaction (`_write`), so a kill at any instant leaves the
state of the last commit; reads are single statements (`_query`). The tables' own methods
(recordings.py, manifests.py, ...) are mixins over this class. Times are integer microseconds
since the epoch, UTC (`micros`, `from_micros`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

from archiver.checkpoint import files, schema
from archiver.errors import CheckpointError
from archiver.models import utc_now

BUSY_TIMEOUT_SECONDS = 5.0

Clock = Callable[[], datetime]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROS_PER_DAY = 86_400_000_000
_LOWEST, _HIGHEST = -(2**63), 2**63 - 1


class Connection:
    """The connection and its lock; `Checkpoint` adds each table's methods."""

    def __init__(
        self, path: Path, conn: sqlite3.Connection, lock_fd: int | None, clock: Clock
    ) -> None:
        self.path = path
        self._conn = conn
        self._lock_fd = lock_fd
        self._clock = clock
        self._mutex = threading.RLock()  # the connection may be shared with a reader thread

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        writer: bool = True,
        create: bool = True,
        clock: Clock = utc_now,
    ) -> Self:
        path = Path(path)
        files.refuse_links(path)
        if not create and not path.exists():
            raise CheckpointError(f"no checkpoint at {path} yet; run the archiver first")
        lock_fd = None
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock_fd = files.take_lock(path) if writer else None
            if create:
                # Made here, not by SQLite, so it is 0600 from its first instant; SQLite gives
                # the -wal and -shm files the database file's mode.
                os.close(files.open_file(str(path), os.O_RDONLY | os.O_CREAT))
            if writer:
                files.make_private(path)
            return cls(path, connect(path, writer=writer, create=create), lock_fd, clock)
        except BaseException as exc:
            if lock_fd is not None:
                os.close(lock_fd)
            if isinstance(exc, OSError):
                raise CheckpointError(f"cannot open the checkpoint {path}: {exc}") from exc
            raise

    def close(self) -> None:
        """Close the file and release the writer's lock; safe to call twice."""
        with self._mutex:
            self._conn.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # closing the descriptor drops the flock
                self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _now(self) -> int:
        return micros(self._clock())

    def _query(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        with self._mutex:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise CheckpointError(f"checkpoint {self.path}: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front: a deferred transaction that upgrades later can
        # fail with SQLITE_BUSY at once instead of waiting out the busy timeout.
        with self._mutex:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise CheckpointError(f"checkpoint {self.path}: {exc}") from exc


def connect(path: Path, *, writer: bool, create: bool) -> sqlite3.Connection:
    try:
        # mode=rw: SQLite must never create the file itself, with whatever mode the umask gives.
        conn = sqlite3.connect(
            f"file:{quote(str(path.absolute()))}?mode=rw",
            uri=True,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        raise CheckpointError(f"cannot open the checkpoint {path}: {exc}") from exc
    try:
        conn.row_factory = sqlite3.Row
        schema.prepare(conn, path, writer=writer, create=create)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.Error):
            raise CheckpointError(f"{path} is not a usable checkpoint: {exc}") from exc
        raise
    return conn


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def micros(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone; the checkpoint stores UTC times")
    return (value - EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def bounds(since: datetime | None, until: datetime | None) -> tuple[int, int]:
    low = _LOWEST if since is None else micros(since)
    return low, _HIGHEST if until is None else micros(until)
