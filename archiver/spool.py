"""The spool: the local directory where recording bodies are staged between download and upload.

Its rules, all kept here:
- A download streams into `<id>.part` (created 0600, never through a link), hashed and measured
  as it arrives, so the body is read once.
- Only a body the client has verified is flushed, fsynced and renamed to `<id>.mp3`: a `.mp3` is
  always complete and verified, a `.part` never is.
- A verified body stays until the checkpoint records its recording archived (or dead-lettered):
  a process killed after the download, or an S3 outage, costs no second download; the next pass
  restages it (hashing it again, since the checkpoint never saw its digest).
- At the start of a pass, `.part` files and bodies of recordings no longer pending are removed.
- Any failure to use the directory is a StagingError naming it: the pass stops, nothing is lost.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from archiver.audio import AudioSummary, FrameWalker
from archiver.errors import StagingError
from archiver.models import StagedFile

READ_SIZE = 2**20  # restaging reads the disk; the network's chunks are the client's business
SNIFF_BYTES = 4  # enough of the head to tell an ID3 tag or an MPEG frame sync


class Receiver:
    """One download in progress: the open `.part`, its running hash and size, and its head."""

    def __init__(self, handle: BinaryIO, partial: Path, final: Path) -> None:
        self._handle = handle
        self._partial = partial
        self._final = final
        self._digest = hashlib.sha256()
        self._audio = FrameWalker()
        self.size = 0
        self.head = b""
        self.audio: AudioSummary | None = None  # once the body is complete

    def write(self, chunk: bytes) -> None:
        if len(self.head) < SNIFF_BYTES:
            self.head = (self.head + chunk)[:SNIFF_BYTES]
        self._digest.update(chunk)
        self._audio.feed(chunk)
        self.size += len(chunk)
        try:
            self._handle.write(chunk)
        except OSError as exc:
            raise _staging_error(self._partial.parent, exc) from exc

    def finish(self) -> AudioSummary:
        """The body is complete: what its frame walk found (the body is read once, here)."""
        self.audio = self._audio.finish()
        return self.audio

    def commit(self) -> StagedFile:
        """The body is verified: make it durable under its final name."""
        audio = self.audio or self.finish()
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._partial.replace(self._final)
        except OSError as exc:
            raise _staging_error(self._partial.parent, exc) from exc
        return StagedFile(
            path=self._final,
            size=self.size,
            sha256=self._digest.hexdigest(),
            audio_seconds=audio.seconds if audio.has_audio else None,
        )

    def close(self) -> None:
        self._handle.close()  # a no-op after commit


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __str__(self) -> str:
        return str(self.directory)

    @contextmanager
    def receive(self, recording_id: str) -> Iterator[Receiver]:
        """A `.part` to stream into; removed unless the receiver was committed."""
        partial = self.directory / f"{recording_id}.part"
        try:
            fd = os.open(
                partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise _staging_error(self.directory, exc) from exc
        receiver = Receiver(os.fdopen(fd, "wb"), partial, self.directory / f"{recording_id}.mp3")
        try:
            yield receiver
        finally:
            receiver.close()
            partial.unlink(missing_ok=True)

    def kept(self, recording_id: str) -> StagedFile | None:
        """A body an earlier process verified but did not see recorded, measured and hashed
        again for its upload; None when there is none."""
        path = self.directory / f"{recording_id}.mp3"
        digest = hashlib.sha256()
        audio = FrameWalker()
        size = 0
        try:
            with path.open("rb") as handle:
                while block := handle.read(READ_SIZE):
                    digest.update(block)
                    audio.feed(block)
                    size += len(block)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _staging_error(self.directory, exc) from exc
        walked = audio.finish()
        return StagedFile(
            path, size, digest.hexdigest(), walked.seconds if walked.has_audio else None
        )

    def discard(self, staged: StagedFile) -> None:
        """The checkpoint has recorded what became of this body: it is no longer needed."""
        staged.path.unlink(missing_ok=True)

    def prepare(self, keep: Callable[[str], bool]) -> None:
        """Make the directory (0700) and remove what an earlier process left that is of no use:
        every `.part`, and verified bodies of recordings for which `keep(id)` is false."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            for leftover in self.directory.glob("*.part"):
                leftover.unlink(missing_ok=True)
            for leftover in self.directory.glob("*.mp3"):
                if not keep(leftover.stem):
                    leftover.unlink(missing_ok=True)
        except OSError as exc:
            raise _staging_error(self.directory, exc) from exc


def _staging_error(directory: Path, exc: OSError) -> StagingError:
    return StagingError(f"cannot use the spool directory {directory}: {exc.strerror or exc}")
