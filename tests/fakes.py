"""In-memory stand-ins for the pass's ports, held to the same contract as the real ones.

`FakeStore` keys objects exactly as `archiver.layout` does (prefix, UTC date, id) and answers
like `S3Sink.put`; tests/integration/test_store_contract.py runs the same cases against it, the
sink on moto and the sink on SeaweedFS, so it cannot drift from the real layout.

`ReadRecorder` stands between the sink and the staged file it opens, to show how it reads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from archiver.errors import ObjectConflict, RecordingFailed, SinkUnavailable
from archiver.layout import object_key
from archiver.models import PutOutcome, PutResult, Recording, StagedFile, StoredObject
from archiver.retention import Lock


@dataclass
class FakeStore:
    """A bucket in a dict: key -> (body, sha256). `fail_next` S3 outages, then `refuse`d keys."""

    prefix: str = "cradle/"
    objects: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    puts: int = 0
    fail_next: int = 0
    refuse: dict[str, Exception] = field(default_factory=dict)
    locks: dict[str, Lock] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)  # keys with the legal hold on

    def set_legal_hold(self, key: str, on: bool) -> None:
        if on:
            self.held.add(key)
        else:
            self.held.discard(key)

    def abort_stale_uploads(self, ours: Callable[[str], bool]) -> int:
        return 0

    def key_for(self, recording: Recording) -> str:
        return object_key(self.prefix, recording)

    def head(self, key: str) -> StoredObject | None:
        if key not in self.objects:
            return None
        data, sha = self.objects[key]
        lock = self.locks.get(key)
        return StoredObject(
            key,
            len(data),
            sha,
            key.rsplit("/", 1)[-1].removesuffix(".mp3"),
            lock.mode.s3 if lock else None,
            lock.retain_until if lock else None,
        )

    def put(
        self,
        recording: Recording,
        staged: StagedFile,
        lock: Lock | None = None,
        legal_hold: bool = False,
    ) -> PutResult:
        self.puts += 1
        if self.fail_next:
            self.fail_next -= 1
            raise SinkUnavailable("S3 unreachable")
        if recording.recording_id in self.refuse:
            raise self.refuse.pop(recording.recording_id)
        key = self.key_for(recording)
        existing = self.head(key)
        if existing is not None:
            same = existing.sha256 == staged.sha256
            return PutResult(PutOutcome.ALREADY_PRESENT if same else PutOutcome.CONFLICT, existing)
        data = staged.path.read_bytes()
        # As the sink does before it sends: the bytes must still be the ones verified.
        if len(data) != staged.size or hashlib.sha256(data).hexdigest() != staged.sha256.lower():
            raise RecordingFailed(
                f"staged file {staged.path} is not the body verified", reason="staged_corrupt"
            )
        self.objects[key] = (data, staged.sha256)
        if lock is not None:
            self.locks[key] = lock
        if legal_hold:
            self.held.add(key)
        return PutResult(
            PutOutcome.CREATED, StoredObject(key, len(data), staged.sha256, recording.recording_id)
        )

    def write_once(
        self, key: str, body: bytes, content_type: str, lock: Lock | None = None
    ) -> str | None:
        """As S3Sink.write_once: the same bytes already there count as written; other bytes
        are an ObjectConflict. `fail_next` outages first, as `put` has them."""
        if self.fail_next:
            self.fail_next -= 1
            raise SinkUnavailable("S3 unreachable")
        if key in self.objects:
            if self.objects[key][0] != body:
                raise ObjectConflict(f"an object with other content is already at {key}")
            return None
        self.objects[key] = (body, hashlib.sha256(body).hexdigest())
        if lock is not None:
            self.locks[key] = lock
        return None


class ReadRecorder:
    """Wraps the staged file the sink opens and records every read size; install its `open`
    as the sink module's (`monkeypatch.setattr(sink, "open", recorder.open, raising=False)`)."""

    def __init__(self) -> None:
        self.sizes: list[int | None] = []

    def open(self, path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = open(path, mode, *args, **kwargs)  # noqa: SIM115  returned to the sink
        recorder = self

        class Wrapped:
            def read(self, size: int | None = -1) -> bytes:
                recorder.sizes.append(size)
                return handle.read(-1 if size is None else size)

            def __getattr__(self, name: str) -> Any:
                return getattr(handle, name)

            def __enter__(self) -> Wrapped:
                return self

            def __exit__(self, *exc: object) -> None:
                handle.close()

        return Wrapped()
