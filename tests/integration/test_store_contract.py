"""One contract for every store the pass can be given: the in-memory fake, the S3 sink on moto's
server, and the S3 sink on SeaweedFS (a real store, which checks what it is sent).

Each case runs against all three, so the fake cannot drift from the real thing (its keys, its
answers) and the sink is held to what a real store does, not only to what moto lets through.
Buckets are versioned, so a second write to a key would show as a second version.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from archiver import layout
from archiver.config import S3Config
from archiver.errors import RecordingFailed
from archiver.models import PutOutcome, StagedFile, StoredObject
from archiver.sink import S3Sink, make_client
from tests import seaweed
from tests.builders import RECORDING_ID, leap_day_recording, mp3, stage
from tests.fakes import FakeStore

PREFIX = "calls/"
MIB = 2**20
MULTIPART_THRESHOLD = 5 * MIB  # the smallest s3.multipart_threshold the config accepts
PART_SIZE = 8 * MIB  # the sink's
_buckets = itertools.count()


def change_after_hashing(staged: StagedFile, at: int = 1000) -> None:
    """Flip one byte of the staged file: the same size, no longer the verified bytes."""
    with open(staged.path, "r+b") as handle:
        handle.seek(at)
        byte = handle.read(1)
        handle.seek(at)
        handle.write(bytes([byte[0] ^ 0xFF]))


@dataclass
class Subject:
    """A store under contract, and an independent look at what it holds."""

    name: str
    store: Any  # FakeStore or S3Sink: archiver.archive.Store, plus `head`
    body_at: Callable[[str], bytes | None]  # the body at a key, or None
    versions_at: Callable[[str], int]  # how many times the key was written
    open_uploads: Callable[[], int]  # multipart uploads begun and not completed or aborted
    sent: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)


def fake_subject() -> Subject:
    fake = FakeStore(prefix=PREFIX)

    def body_at(key: str) -> bytes | None:
        return fake.objects[key][0] if key in fake.objects else None

    return Subject(
        "fake",
        fake,
        body_at,
        lambda key: int(key in fake.objects),
        lambda: 0,
    )


def sink_subject(name: str, endpoint: str, admin: Any) -> Subject:
    bucket = f"contract-{os.getpid()}-{next(_buckets)}"
    admin.create_bucket(Bucket=bucket)
    admin.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    config = S3Config(
        bucket=bucket,
        prefix=PREFIX,
        endpoint_url=endpoint,
        multipart_threshold=MULTIPART_THRESHOLD,
    )
    client = make_client(config)
    subject = Subject(
        name,
        S3Sink(config, client=client),
        lambda key: _body_at(admin, bucket, key),
        lambda key: _versions_at(admin, bucket, key),
        lambda: len(admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])),
    )

    def record(request: Any, event_name: str, **_: Any) -> None:
        headers = {k.lower(): _text(v) for k, v in request.headers.items()}
        body = request.body if isinstance(request.body, bytes) else b""
        subject.sent.append((event_name.rsplit(".", 1)[-1], headers, body))

    client.meta.events.register("before-send.s3", record)
    return subject


def _body_at(admin: Any, bucket: str, key: str) -> bytes | None:
    try:
        body: bytes = admin.get_object(Bucket=bucket, Key=key)["Body"].read()
    except admin.exceptions.NoSuchKey:
        return None
    return body


def _versions_at(admin: Any, bucket: str, key: str) -> int:
    listed = admin.list_object_versions(Bucket=bucket, Prefix=key)
    return sum(1 for v in listed.get("Versions", []) if v["Key"] == key)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


STORES = ["fake", "moto", "seaweedfs"]
S3_STORES = ["moto", "seaweedfs"]


@pytest.fixture
def subject(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Subject]:
    name: str = request.param
    if name == "fake":
        yield fake_subject()
    elif name == "moto":
        endpoint = request.getfixturevalue("moto_server")
        yield sink_subject(name, endpoint, boto3.client("s3", endpoint_url=endpoint))
    else:
        endpoint = request.getfixturevalue("seaweed_server")
        # SeaweedFS takes a session token for an STS credential it does not know: none here.
        monkeypatch.delenv("AWS_SESSION_TOKEN")
        yield sink_subject(name, endpoint, seaweed.client(endpoint))


every_store = pytest.mark.parametrize("subject", STORES, indirect=True)
s3_stores = pytest.mark.parametrize("subject", S3_STORES, indirect=True)


@every_store
def test_key_for_is_the_layouts_key(subject: Subject) -> None:
    rec = leap_day_recording()

    key = subject.store.key_for(rec)

    assert key == layout.object_key(PREFIX, rec)
    assert key == f"{PREFIX}2024/02/29/{RECORDING_ID}.mp3"


@every_store
def test_a_new_recording_is_created_at_its_key(subject: Subject, tmp_path: Path) -> None:
    body = mp3(200_000)
    staged = stage(tmp_path, body)

    outcome, stored = subject.store.put(leap_day_recording(), staged)

    key = layout.object_key(PREFIX, leap_day_recording())
    assert outcome is PutOutcome.CREATED
    assert stored == StoredObject(key, len(body), staged.sha256, RECORDING_ID)
    assert subject.body_at(key) == body
    assert subject.store.head(key) == StoredObject(key, len(body), staged.sha256, RECORDING_ID)


@every_store
def test_the_same_body_again_is_already_present_and_not_written(
    subject: Subject, tmp_path: Path
) -> None:
    body = mp3(200_000)
    subject.store.put(leap_day_recording(), stage(tmp_path, body, "first.mp3"))

    outcome, stored = subject.store.put(leap_day_recording(), stage(tmp_path, body, "again.mp3"))

    key = layout.object_key(PREFIX, leap_day_recording())
    assert outcome is PutOutcome.ALREADY_PRESENT
    assert stored == StoredObject(key, len(body), hashlib.sha256(body).hexdigest(), RECORDING_ID)
    assert subject.versions_at(key) == 1


@every_store
def test_a_different_body_at_the_key_is_a_conflict_left_untouched(
    subject: Subject, tmp_path: Path
) -> None:
    ours, theirs = mp3(200_000), mp3(150_000)
    subject.store.put(leap_day_recording(), stage(tmp_path, theirs, "theirs.mp3"))

    outcome, stored = subject.store.put(leap_day_recording(), stage(tmp_path, ours, "ours.mp3"))

    key = layout.object_key(PREFIX, leap_day_recording())
    assert outcome is PutOutcome.CONFLICT
    assert stored == StoredObject(
        key, len(theirs), hashlib.sha256(theirs).hexdigest(), RECORDING_ID
    )
    assert subject.body_at(key) == theirs
    assert subject.versions_at(key) == 1


@every_store
def test_a_body_over_the_multipart_threshold_lands_whole(subject: Subject, tmp_path: Path) -> None:
    body = mp3(PART_SIZE + 3 * MIB + 7)
    staged = stage(tmp_path, body)

    outcome, stored = subject.store.put(leap_day_recording(), staged)

    key = layout.object_key(PREFIX, leap_day_recording())
    assert outcome is PutOutcome.CREATED
    assert stored == StoredObject(key, len(body), staged.sha256, RECORDING_ID)
    assert subject.body_at(key) == body
    assert subject.open_uploads() == 0


@s3_stores
def test_each_part_of_a_multipart_upload_carries_its_own_sha256(
    subject: Subject, tmp_path: Path
) -> None:
    body = mp3(PART_SIZE + 3 * MIB + 7)
    parts = [body[:PART_SIZE], body[PART_SIZE:]]

    subject.store.put(leap_day_recording(), stage(tmp_path, body))

    digests = [base64.b64encode(hashlib.sha256(part).digest()).decode() for part in parts]
    uploads = [headers for operation, headers, _ in subject.sent if operation == "UploadPart"]
    assert [h["x-amz-checksum-sha256"] for h in uploads] == digests
    create = [h for operation, h, _ in subject.sent if operation == "CreateMultipartUpload"]
    assert create[0]["x-amz-checksum-algorithm"] == "SHA256"
    complete = [b for operation, _, b in subject.sent if operation == "CompleteMultipartUpload"]
    for digest in digests:
        assert f"<ChecksumSHA256>{digest}</ChecksumSHA256>".encode() in complete[0]


@pytest.mark.parametrize(
    "subject",
    ["fake", "moto", "seaweedfs"],
    indirect=True,
)
def test_a_body_that_is_not_the_verified_one_is_refused_by_the_store(
    subject: Subject, tmp_path: Path
) -> None:
    """One PUT of a staged file changed after it was hashed (same size): the store would refuse
    it (BadDigest; SeaweedFS and S3 check, moto does not: tests/integration/test_seaweed_server.py
    shows SeaweedFS's answer), but the sink reads the file again first and never sends it."""
    staged = stage(tmp_path, mp3(200_000))
    change_after_hashing(staged)

    with pytest.raises(RecordingFailed) as refused:
        subject.store.put(leap_day_recording(), staged)

    assert refused.value.reason == "staged_corrupt"
    assert subject.versions_at(layout.object_key(PREFIX, leap_day_recording())) == 0


@pytest.mark.parametrize("subject", ["fake", *S3_STORES], indirect=True)
def test_a_staged_file_that_changed_size_is_refused_before_sending(
    subject: Subject, tmp_path: Path
) -> None:
    staged = stage(tmp_path, mp3(200_000))
    with open(staged.path, "ab") as grown:
        grown.write(b"\0")

    with pytest.raises(RecordingFailed) as refused:
        subject.store.put(leap_day_recording(), staged)

    assert refused.value.reason == "staged_corrupt"
    assert subject.versions_at(layout.object_key(PREFIX, leap_day_recording())) == 0
    assert [operation for operation, _, _ in subject.sent] in ([], ["HeadObject"])


@pytest.mark.parametrize("subject", ["fake", *S3_STORES], indirect=True)
def test_a_multipart_body_that_is_not_the_verified_one_is_refused(
    subject: Subject, tmp_path: Path
) -> None:
    """Over the multipart threshold each part's checksum is of the bytes sent, so no store can
    tell; the whole body's digest, taken on the way, stops the upload and aborts it."""
    staged = stage(tmp_path, mp3(PART_SIZE + 3 * MIB + 7))
    change_after_hashing(staged, at=PART_SIZE + 1000)

    with pytest.raises(RecordingFailed) as refused:
        subject.store.put(leap_day_recording(), staged)

    # The sink's own digest says staged_corrupt; a store without parts, checksum_mismatch.
    assert refused.value.reason in {"staged_corrupt", "checksum_mismatch"}
    assert not refused.value.permanent  # the next pass downloads it again
    assert subject.versions_at(layout.object_key(PREFIX, leap_day_recording())) == 0
    assert subject.open_uploads() == 0
