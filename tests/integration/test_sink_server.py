"""The S3 sink over real HTTP against moto's ThreadedMotoServer, as an S3-compatible store."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import structlog

from archiver import layout
from archiver.config import S3Config
from archiver.errors import SinkUnavailable
from archiver.retention import BucketLock, Lock, LockMode
from archiver.sink import PutOutcome, S3Sink, StoredObject, make_client
from archiver.sink import writer as sink_module
from tests.builders import RECORDING_ID, leap_day_recording, mp3, stage
from tests.fakes import ReadRecorder

KEY = f"cradle/2024/02/29/{RECORDING_ID}.mp3"
MIB = 2**20
# What boto3 1.36+ adds by default and older S3-compatible stores reject.
CHECKSUM_EXTRAS = ("x-amz-trailer", "x-amz-sdk-checksum-algorithm", "x-amz-decoded-content-length")
CRC_HEADERS = ("x-amz-checksum-crc32", "x-amz-checksum-crc32c", "x-amz-checksum-crc64nvme")


class Wire:
    """Every request the sink's client puts on the wire: (operation, url, headers), and status."""

    def __init__(self, client: Any) -> None:
        self.sent: list[tuple[str, str, dict[str, str]]] = []
        self.statuses: list[tuple[str, int]] = []
        client.meta.events.register("before-send.s3", self._request)
        client.meta.events.register("after-call.s3", self._response)

    def _request(self, request: Any, event_name: str, **_: Any) -> None:
        headers = {k.lower(): _text(v) for k, v in request.headers.items()}
        self.sent.append((event_name.rsplit(".", 1)[-1], request.url, headers))

    def _response(self, http_response: Any, event_name: str, **_: Any) -> None:
        self.statuses.append((event_name.rsplit(".", 1)[-1], http_response.status_code))

    def operations(self) -> list[str]:
        return [operation for operation, _, _ in self.sent]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


@pytest.fixture
def bucket(moto_server: str) -> str:
    name = f"rec-{uuid.uuid4().hex[:12]}"
    admin(moto_server).create_bucket(Bucket=name)
    return name


def admin(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def new_sink(endpoint: str, bucket: str, **options: Any) -> tuple[S3Sink, Wire]:
    config = S3Config(bucket=bucket, endpoint_url=endpoint, storage_class="STANDARD_IA")
    client = make_client(config)
    return S3Sink(config, client=client, **options), Wire(client)


def assert_only_what_compatible_stores_accept(wire: Wire, endpoint: str, bucket: str) -> None:
    assert wire.sent
    for operation, url, headers in wire.sent:
        assert url.startswith(f"{endpoint}/{bucket}/"), (operation, url)  # path-style
        for name in CHECKSUM_EXTRAS + CRC_HEADERS:
            assert name not in headers, (operation, name)
        assert "aws-chunked" not in headers.get("content-encoding", ""), operation
        assert not headers["x-amz-content-sha256"].startswith("STREAMING-"), operation


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[ReadRecorder]:
    recorder = ReadRecorder()
    monkeypatch.setattr(sink_module, "open", recorder.open, raising=False)
    yield recorder


def test_single_put_over_http_lands_and_sends_no_crc_trailers(
    moto_server: str, bucket: str, tmp_path: Path, reads: ReadRecorder
) -> None:
    sink, wire = new_sink(moto_server, bucket)
    body = mp3(3 * MIB)
    staged = stage(tmp_path, body)

    outcome, stored = sink.put(leap_day_recording(), staged)

    assert outcome is PutOutcome.CREATED
    assert stored == StoredObject(KEY, len(body), staged.sha256, RECORDING_ID)
    s3 = admin(moto_server)
    got = s3.get_object(Bucket=bucket, Key=KEY)
    assert got["Body"].read() == body
    assert got["ContentType"] == "audio/mpeg"
    assert got["StorageClass"] == "STANDARD_IA"
    assert got["Metadata"] == layout.object_metadata(leap_day_recording(), staged.sha256)
    assert layout.decode_metadata_value(got["Metadata"]["agent1"]) == "Zoë O'Neill"
    tags = s3.get_object_tagging(Bucket=bucket, Key=KEY)["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == layout.object_tags(leap_day_recording())
    assert wire.operations() == ["HeadObject", "PutObject"]
    put_headers = wire.sent[1][2]
    assert put_headers["if-none-match"] == "*"
    assert "x-amz-checksum-sha256" in put_headers
    assert_only_what_compatible_stores_accept(wire, moto_server, bucket)
    assert reads.sizes
    assert all(size is not None and 0 < size <= MIB for size in reads.sizes)


def test_multipart_upload_over_http_lands_the_exact_bytes(
    moto_server: str, bucket: str, tmp_path: Path
) -> None:
    sink, wire = new_sink(moto_server, bucket, multipart_threshold=5 * MIB, part_size=5 * MIB)
    body = mp3(11 * MIB + 7)
    staged = stage(tmp_path, body)

    outcome, _ = sink.put(leap_day_recording(), staged)

    assert outcome is PutOutcome.CREATED
    s3 = admin(moto_server)
    got = s3.get_object(Bucket=bucket, Key=KEY)
    assert got["Body"].read() == body
    assert got["ETag"].strip('"').endswith("-3")
    assert got["Metadata"]["sha256"] == staged.sha256
    assert wire.operations() == [
        "HeadObject",
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPart",
        "UploadPart",
        "CompleteMultipartUpload",
    ]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert_only_what_compatible_stores_accept(wire, moto_server, bucket)


def create_between_head_and_write(
    sink: S3Sink, monkeypatch: pytest.MonkeyPatch, endpoint: str, bucket: str, body: bytes, sha: str
) -> None:
    """Another writer stores `body` at the key just after the sink's first HEAD."""
    real_head = sink.head
    raced = [False]

    def head(key: str) -> StoredObject | None:
        if raced[0]:
            return real_head(key)
        raced[0] = True
        found = real_head(key)
        admin(endpoint).put_object(Bucket=bucket, Key=key, Body=body, Metadata={"sha256": sha})
        return found

    monkeypatch.setattr(sink, "head", head)


@pytest.mark.parametrize("multipart", [False, True], ids=["put", "multipart"])
def test_a_412_race_with_our_own_body_is_already_present(
    moto_server: str, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, multipart: bool
) -> None:
    threshold = 5 * MIB if multipart else 16 * MIB
    sink, wire = new_sink(moto_server, bucket, multipart_threshold=threshold, part_size=5 * MIB)
    body = mp3(6 * MIB)
    staged = stage(tmp_path, body)
    create_between_head_and_write(sink, monkeypatch, moto_server, bucket, body, staged.sha256)

    with structlog.testing.capture_logs() as logs:
        outcome, stored = sink.put(leap_day_recording(), staged)

    assert outcome is PutOutcome.ALREADY_PRESENT
    assert stored.sha256 == staged.sha256
    write = "CompleteMultipartUpload" if multipart else "PutObject"
    assert (write, 412) in wire.statuses
    assert "s3.put_raced" in [e["event"] for e in logs]
    s3 = admin(moto_server)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert "-" not in s3.get_object(Bucket=bucket, Key=KEY)["ETag"]  # still the racer's object


@pytest.mark.parametrize("multipart", [False, True], ids=["put", "multipart"])
def test_a_412_race_with_another_body_is_a_conflict_left_untouched(
    moto_server: str, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, multipart: bool
) -> None:
    threshold = 5 * MIB if multipart else 16 * MIB
    sink, wire = new_sink(moto_server, bucket, multipart_threshold=threshold, part_size=5 * MIB)
    staged = stage(tmp_path, mp3(6 * MIB))
    theirs = mp3(1000)
    create_between_head_and_write(
        sink, monkeypatch, moto_server, bucket, theirs, hashlib.sha256(theirs).hexdigest()
    )

    outcome, stored = sink.put(leap_day_recording(), staged)

    assert outcome is PutOutcome.CONFLICT
    assert stored.size == len(theirs)
    write = "CompleteMultipartUpload" if multipart else "PutObject"
    assert (write, 412) in wire.statuses
    s3 = admin(moto_server)
    assert s3.get_object(Bucket=bucket, Key=KEY)["Body"].read() == theirs
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_check_over_http_writes_and_removes_its_probe(moto_server: str, bucket: str) -> None:
    sink, wire = new_sink(moto_server, bucket)

    sink.check_write()

    assert wire.operations() == ["HeadObject", "PutObject", "HeadObject", "DeleteObject"]
    assert admin(moto_server).list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert_only_what_compatible_stores_accept(wire, moto_server, bucket)


def test_check_over_http_of_a_missing_bucket_says_so(moto_server: str) -> None:
    sink, _ = new_sink(moto_server, "no-such-bucket-here")
    with pytest.raises(SinkUnavailable) as raised:
        sink.check_write()
    assert str(raised.value) == "bucket no-such-bucket-here does not exist"


def test_a_locked_write_carries_the_mode_and_the_date_from_the_call(
    moto_server: str, tmp_path: Path
) -> None:
    """moto keeps the lock of a PutObject; of a multipart upload it drops it (real S3 and
    SeaweedFS keep both), so the multipart case is proven on SeaweedFS."""
    bucket = f"locked-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    sink = S3Sink(
        S3Config(bucket=bucket, endpoint_url=moto_server, multipart_threshold=5 * MIB),
        part_size=5 * MIB,
    )
    until = datetime(2029, 3, 1, 0, 30, tzinfo=UTC)  # 2024-02-29T23:30Z plus 5 years
    lock = Lock(LockMode.COMPLIANCE, until)
    outcome, stored = sink.put(leap_day_recording(), stage(tmp_path, mp3(1 * MIB)), lock)
    assert outcome is PutOutcome.CREATED
    head = sink.head(stored.key)
    assert head is not None and head.lock_mode == "COMPLIANCE"
    assert head.retain_until == until


def test_the_bucket_reports_versioning_object_lock_and_a_default_retention(
    moto_server: str,
) -> None:
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    plain, locked = (f"{kind}-{uuid.uuid4().hex[:12]}" for kind in ("plain", "locked"))
    client.create_bucket(Bucket=plain)
    client.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
    client.put_object_lock_configuration(
        Bucket=locked,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Years": 5}},
        },
    )
    sink = lambda bucket: S3Sink(S3Config(bucket=bucket, endpoint_url=moto_server))  # noqa: E731
    assert sink(plain).lock_configuration() == BucketLock(False, False, None)
    assert sink(locked).lock_configuration() == BucketLock(True, True, "GOVERNANCE 5 years")


@pytest.mark.parametrize("size", [1 * MIB, 6 * MIB], ids=["single", "multipart"])
def test_on_seaweedfs_a_locked_write_is_locked_whole_or_in_parts(
    seaweed_server: str, tmp_path: Path, size: int
) -> None:
    """A store that enforces Object Lock takes the lock of a PutObject and of a multipart
    upload (whose every part names its SHA-256), and the legal hold with it."""
    from tests import seaweed

    admin = seaweed.client(seaweed_server)
    bucket = f"locked-{uuid.uuid4().hex[:12]}"
    admin.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    sink = S3Sink(
        S3Config(bucket=bucket, endpoint_url=seaweed_server, multipart_threshold=5 * MIB),
        client=seaweed.client(seaweed_server),
        part_size=5 * MIB,
    )
    until = datetime(2029, 3, 1, 0, 30, tzinfo=UTC)
    lock = Lock(LockMode.GOVERNANCE, until)
    outcome, stored = sink.put(
        leap_day_recording(), stage(tmp_path, mp3(size)), lock, legal_hold=True
    )
    assert outcome is PutOutcome.CREATED
    head = admin.head_object(Bucket=bucket, Key=stored.key)
    assert head["ObjectLockMode"] == "GOVERNANCE" and head["ObjectLockRetainUntilDate"] == until
    assert head["ObjectLockLegalHoldStatus"] == "ON"
