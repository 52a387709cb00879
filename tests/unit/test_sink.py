"""The S3 sink against moto's in-process S3 (`mock_aws`)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest
import structlog
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from moto import mock_aws
from moto.core import enable_iam_authentication

from archiver import layout
from archiver.config import S3Config
from archiver.errors import RecordingFailed, SinkUnavailable
from archiver.sink import PutOutcome, S3Sink, StoredObject, make_client, map_error
from archiver.sink import writer as sink_module
from tests.builders import RECORDING_ID, mp3, recording, stage
from tests.fakes import ReadRecorder
from tests.ports import free_port

BUCKET = "recordings-test"
KEY = f"cradle/2022/06/01/{RECORDING_ID}.mp3"
MIB = 2**20


class Requests:
    """Every request a client sends: (operation, headers)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.sent: list[tuple[str, dict[str, str]]] = []
        client.meta.events.register("before-send.s3", self._record)

    def _record(self, request: Any, event_name: str, **_: Any) -> None:
        headers = {k.lower(): _text(v) for k, v in request.headers.items()}
        self.sent.append((event_name.rsplit(".", 1)[-1], headers))

    def operations(self) -> list[str]:
        return [operation for operation, _ in self.sent]

    def headers(self, operation: str) -> dict[str, str]:
        return next(h for op, h in self.sent if op == operation)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def fail_with(
    status: int, code: str, only_if: Callable[[dict[str, Any]], bool] = lambda _: True
) -> Callable[..., Any]:
    """A before-call hook answering the call with an S3 error (as after botocore's retries)."""

    def hook(params: dict[str, Any], **_: Any) -> Any:
        if not only_if(params):
            return None
        parsed: dict[str, Any] = {"Error": {"Code": code, "Message": f"injected {code}"}}
        parsed["ResponseMetadata"] = {"HTTPStatusCode": status}
        return AWSResponse("https://s3.test", status, {}, None), parsed

    return hook


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def new_sink(**config: Any) -> tuple[S3Sink, Requests]:
    s3_config = S3Config(bucket=config.pop("bucket", BUCKET), **config)
    client = make_client(s3_config)
    return S3Sink(
        s3_config, client=client, multipart_threshold=6 * MIB, part_size=5 * MIB
    ), Requests(client)


def writes(requests: Requests) -> list[str]:
    return [op for op in requests.operations() if op not in ("HeadObject",)]


def miss_first_head(sink: S3Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sink's first HEAD sees nothing, as if the other writer came just after it."""
    real_head = sink.head
    blind = [True]

    def head(key: str) -> StoredObject | None:
        if blind:
            blind.pop()
            return None
        return real_head(key)

    monkeypatch.setattr(sink, "head", head)


# --- single PutObject ------------------------------------------------------------------------


def test_single_put_lands_the_exact_bytes_with_metadata_tags_and_headers(
    s3: Any, tmp_path: Path
) -> None:
    sink, _ = new_sink(storage_class="STANDARD_IA", sse="AES256")
    body = mp3(100_000)
    staged = stage(tmp_path, body)
    call = recording(agent1="Jürgen Müller")

    outcome, stored = sink.put(call, staged)

    assert outcome is PutOutcome.CREATED
    assert stored == StoredObject(KEY, len(body), staged.sha256, RECORDING_ID)
    got = s3.get_object(Bucket=BUCKET, Key=KEY)
    assert got["Body"].read() == body
    assert got["ContentType"] == "audio/mpeg"
    assert got["StorageClass"] == "STANDARD_IA"
    assert got["ServerSideEncryption"] == "AES256"
    assert got["Metadata"] == layout.object_metadata(call, staged.sha256)
    assert got["Metadata"]["sha256"] == staged.sha256
    tags = s3.get_object_tagging(Bucket=BUCKET, Key=KEY)["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == layout.object_tags(call)
    assert {t["Key"]: t["Value"] for t in tags}["agent1"] == "Jürgen Müller"


def test_single_put_is_conditional_and_carries_the_whole_body_sha256(
    s3: Any, tmp_path: Path
) -> None:
    sink, requests = new_sink()
    body = mp3(10_000)

    sink.put(recording(), stage(tmp_path, body))

    assert requests.operations() == ["HeadObject", "PutObject"]
    headers = requests.headers("PutObject")
    assert headers["if-none-match"] == "*"
    assert (
        headers["x-amz-checksum-sha256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
    )
    assert headers["content-type"] == "audio/mpeg"


def test_kms_encryption_sends_the_key_id(s3: Any, tmp_path: Path) -> None:
    key_id = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["Arn"]
    sink, _ = new_sink(sse="aws:kms", kms_key_id=key_id)

    sink.put(recording(), stage(tmp_path, mp3(1000)))

    head = s3.head_object(Bucket=BUCKET, Key=KEY)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == key_id


def test_tags_off_writes_no_tags(s3: Any, tmp_path: Path) -> None:
    sink, requests = new_sink(tags=False)

    sink.put(recording(), stage(tmp_path, mp3(1000)))

    assert "x-amz-tagging" not in requests.headers("PutObject")
    assert s3.get_object_tagging(Bucket=BUCKET, Key=KEY)["TagSet"] == []
    assert s3.head_object(Bucket=BUCKET, Key=KEY)["Metadata"]["nature"] == "in"


def test_put_logs_one_event_with_size_and_timing(s3: Any, tmp_path: Path) -> None:
    sink, _ = new_sink()
    with structlog.testing.capture_logs() as logs:
        sink.put(recording(), stage(tmp_path, mp3(1000)))
    [event] = [e for e in logs if e["event"] == "s3.put"]
    assert event["key"] == KEY
    assert event["bytes"] == 1000
    assert event["multipart"] is False
    assert event["seconds"] >= 0
    assert "testing" not in repr(logs)


def test_the_sink_builds_one_client_for_all_its_puts(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Any] = []
    real = sink_module.make_client

    def make_client(config: S3Config) -> Any:
        built.append(config)
        return real(config)

    monkeypatch.setattr(sink_module, "make_client", make_client)
    sink = S3Sink(S3Config(bucket=BUCKET))
    for n in range(3):
        rid = f"{n}b6a3c1e-8f7d-4c2a-9e1b-5d4f3a2b1c0d"
        rec = recording(rid)
        sink.put(rec, stage(tmp_path, mp3(500), name=f"{n}.mp3"))
    assert len(built) == 1


# --- multipart ------------------------------------------------------------------------------


def test_multipart_upload_lands_the_exact_bytes_reading_one_part_at_a_time(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = ReadRecorder()
    monkeypatch.setattr(sink_module, "open", reads.open, raising=False)
    sink, requests = new_sink(storage_class="STANDARD_IA", sse="AES256")
    body = mp3(12 * MIB + 12345)
    staged = stage(tmp_path, body)

    with structlog.testing.capture_logs() as logs:
        outcome, stored = sink.put(recording(), staged)

    assert outcome is PutOutcome.CREATED
    assert stored == StoredObject(KEY, len(body), staged.sha256, RECORDING_ID)
    got = s3.get_object(Bucket=BUCKET, Key=KEY)
    assert got["Body"].read() == body
    assert got["ETag"].strip('"').endswith("-3")
    assert got["ContentType"] == "audio/mpeg"
    assert got["StorageClass"] == "STANDARD_IA"
    assert got["Metadata"] == layout.object_metadata(recording(), staged.sha256)
    tags = s3.get_object_tagging(Bucket=BUCKET, Key=KEY)["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == layout.object_tags(recording())
    assert requests.operations() == [
        "HeadObject",
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPart",
        "UploadPart",
        "CompleteMultipartUpload",
    ]
    assert requests.headers("CreateMultipartUpload")["x-amz-checksum-algorithm"] == "SHA256"
    part = body[: 5 * MIB]
    expected = base64.b64encode(hashlib.sha256(part).digest()).decode()
    assert requests.headers("UploadPart")["x-amz-checksum-sha256"] == expected
    assert requests.headers("CompleteMultipartUpload")["if-none-match"] == "*"
    assert reads.sizes, "the sink read the staged file through open()"
    assert all(size is not None and 0 < size <= 5 * MIB for size in reads.sizes)
    assert [e["multipart"] for e in logs if e["event"] == "s3.put"] == [True]


def test_a_failing_part_aborts_the_upload_leaving_no_parts_and_no_object(
    s3: Any, tmp_path: Path
) -> None:
    sink, requests = new_sink()
    calls = iter(range(100))
    requests.client.meta.events.register(
        "before-call.s3.UploadPart", fail_with(503, "SlowDown", lambda _: next(calls) == 1)
    )

    with pytest.raises(SinkUnavailable) as raised:
        sink.put(recording(), stage(tmp_path, mp3(12 * MIB)))

    assert "unreachable" in str(raised.value)
    assert "SlowDown" in str(raised.value)
    assert "AbortMultipartUpload" in requests.operations()
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_a_staged_file_changed_since_verification_is_not_completed(s3: Any, tmp_path: Path) -> None:
    sink, _ = new_sink()
    staged = stage(tmp_path, mp3(7 * MIB))
    staged.path.write_bytes(mp3(7 * MIB, name="other"))  # same size, other bytes

    with pytest.raises(RecordingFailed) as raised:
        sink.put(recording(), staged)

    assert raised.value.reason == "staged_corrupt"
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_a_staged_file_of_the_wrong_size_is_not_uploaded(s3: Any, tmp_path: Path) -> None:
    sink, requests = new_sink()
    staged = stage(tmp_path, mp3(1000))
    staged.path.write_bytes(b"ID3 truncated")

    with pytest.raises(RecordingFailed) as raised:
        sink.put(recording(), staged)

    assert raised.value.reason == "staged_corrupt"
    assert requests.operations() == ["HeadObject"]
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_a_multipart_race_lost_at_complete_aborts_and_finds_our_twin(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, _ = new_sink()
    staged = stage(tmp_path, mp3(6 * MIB))
    first, _ = new_sink()
    first.put(recording(), staged)
    etag = s3.head_object(Bucket=BUCKET, Key=KEY)["ETag"]
    miss_first_head(sink, monkeypatch)

    outcome, stored = sink.put(recording(), staged)

    assert outcome is PutOutcome.ALREADY_PRESENT
    assert stored.sha256 == staged.sha256
    assert s3.head_object(Bucket=BUCKET, Key=KEY)["ETag"] == etag
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


# --- never overwrite ------------------------------------------------------------------------


def test_a_second_put_of_the_same_body_is_already_present_and_writes_nothing(
    s3: Any, tmp_path: Path
) -> None:
    sink, requests = new_sink()
    staged = stage(tmp_path, mp3(5000))
    sink.put(recording(), staged)
    before = s3.head_object(Bucket=BUCKET, Key=KEY)
    requests.sent.clear()

    outcome, stored = sink.put(recording(), staged)

    assert outcome is PutOutcome.ALREADY_PRESENT
    assert stored == StoredObject(KEY, staged.size, staged.sha256, RECORDING_ID)
    assert requests.operations() == ["HeadObject"]
    after = s3.head_object(Bucket=BUCKET, Key=KEY)
    assert (after["ETag"], after["LastModified"]) == (before["ETag"], before["LastModified"])


@pytest.mark.parametrize(
    "metadata",
    [{"sha256": "cd" * 32, "recording-id": RECORDING_ID}, {}, {"sha256": "not-a-digest"}],
    ids=["other-sha256", "no-metadata", "garbage-sha256"],
)
def test_an_object_with_another_or_no_sha256_is_a_conflict_left_untouched(
    s3: Any, tmp_path: Path, metadata: dict[str, str]
) -> None:
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"someone else's bytes", Metadata=metadata)
    before = s3.head_object(Bucket=BUCKET, Key=KEY)
    sink, requests = new_sink()

    outcome, stored = sink.put(recording(), stage(tmp_path, mp3(5000)))

    assert outcome is PutOutcome.CONFLICT
    assert stored == StoredObject(
        KEY, len(b"someone else's bytes"), metadata.get("sha256"), metadata.get("recording-id")
    )
    assert writes(requests) == []
    after = s3.get_object(Bucket=BUCKET, Key=KEY)
    assert after["Body"].read() == b"someone else's bytes"
    assert (after["ETag"], after["LastModified"]) == (before["ETag"], before["LastModified"])


def test_same_sha256_but_another_size_is_a_conflict(s3: Any, tmp_path: Path) -> None:
    staged = stage(tmp_path, mp3(5000))
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"short", Metadata={"sha256": staged.sha256})
    sink, _ = new_sink()

    outcome, _ = sink.put(recording(), staged)

    assert outcome is PutOutcome.CONFLICT


def test_a_single_put_race_lost_to_another_body_is_a_conflict(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"raced", Metadata={"sha256": "ef" * 32})
    sink, requests = new_sink()
    miss_first_head(sink, monkeypatch)

    outcome, stored = sink.put(recording(), stage(tmp_path, mp3(5000)))

    assert outcome is PutOutcome.CONFLICT
    assert stored.sha256 == "ef" * 32
    assert requests.operations() == ["PutObject", "HeadObject"]
    assert s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read() == b"raced"


def test_a_store_without_conditional_writes_is_written_after_the_head_alone(
    s3: Any, tmp_path: Path
) -> None:
    sink, requests = new_sink()
    requests.client.meta.events.register(
        "before-call.s3.PutObject",
        fail_with(501, "NotImplemented", lambda params: "If-None-Match" in params["headers"]),
    )

    with structlog.testing.capture_logs() as logs:
        outcome, _ = sink.put(recording(), stage(tmp_path, mp3(5000)))
        rid = "1b6a3c1e-8f7d-4c2a-9e1b-5d4f3a2b1c0d"
        other = recording(rid)
        second, _ = sink.put(other, stage(tmp_path, mp3(5000), name="2.mp3"))

    assert (outcome, second) == (PutOutcome.CREATED, PutOutcome.CREATED)
    assert s3.get_object(Bucket=BUCKET, Key=KEY)["ContentLength"] == 5000
    assert [e["event"] for e in logs].count("s3.conditional_write_unsupported") == 1
    assert writes(requests) == ["PutObject", "PutObject"]


# --- head -------------------------------------------------------------------------------------


def test_head_of_a_missing_key_is_none(s3: Any) -> None:
    sink, _ = new_sink()
    assert sink.head("cradle/nothing.mp3") is None


def test_key_for_is_the_layout_key(s3: Any) -> None:
    sink, _ = new_sink(prefix="archive/")
    assert sink.key_for(recording()) == f"archive/2022/06/01/{RECORDING_ID}.mp3"


# --- errors ---------------------------------------------------------------------------------


def test_put_to_a_missing_bucket_says_so(s3: Any, tmp_path: Path) -> None:
    sink, _ = new_sink(bucket="no-such-bucket")
    with pytest.raises(SinkUnavailable) as raised:
        sink.put(recording(), stage(tmp_path, mp3(1000)))
    assert str(raised.value) == "bucket no-such-bucket does not exist"


def test_multipart_to_a_missing_bucket_says_so(s3: Any, tmp_path: Path) -> None:
    sink, _ = new_sink(bucket="no-such-bucket")
    with pytest.raises(SinkUnavailable) as raised:
        sink.put(recording(), stage(tmp_path, mp3(6 * MIB)))
    assert str(raised.value) == "bucket no-such-bucket does not exist"


def test_check_of_a_missing_bucket_says_so(s3: Any) -> None:
    sink, _ = new_sink(bucket="no-such-bucket")
    with pytest.raises(SinkUnavailable) as raised:
        sink.check_write()
    assert str(raised.value) == "bucket no-such-bucket does not exist"


@pytest.fixture
def restricted_keys(s3: Any) -> Callable[[list[str]], dict[str, str]]:
    """Credentials of a moto IAM user allowed only the given S3 actions."""

    def make(actions: list[str]) -> dict[str, str]:
        iam = boto3.client("iam", region_name="us-east-1")
        name = f"archiver-{len(actions)}-{os.urandom(4).hex()}"
        iam.create_user(UserName=name)
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
        }
        iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return {
            "aws_access_key_id": key["AccessKeyId"],
            "aws_secret_access_key": key["SecretAccessKey"],
        }

    return make


def restricted_sink(keys: dict[str, str], **config: Any) -> S3Sink:
    client = boto3.client("s3", region_name="us-east-1", **keys)
    return S3Sink(S3Config(bucket=BUCKET, **config), client=client)


def test_put_without_write_permission_is_denied_and_writes_nothing(
    s3: Any, tmp_path: Path, restricted_keys: Callable[[list[str]], dict[str, str]]
) -> None:
    sink = restricted_sink(restricted_keys(["s3:GetObject", "s3:ListBucket"]))

    with enable_iam_authentication(), pytest.raises(SinkUnavailable) as raised:
        sink.put(recording(), stage(tmp_path, mp3(1000)))

    assert str(raised.value).startswith(f"write to bucket {BUCKET} denied (AccessDenied)")
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_check_without_write_permission_names_what_is_missing(
    s3: Any, restricted_keys: Callable[[list[str]], dict[str, str]]
) -> None:
    sink = restricted_sink(restricted_keys(["s3:GetObject", "s3:ListBucket"]))

    with enable_iam_authentication(), pytest.raises(SinkUnavailable) as raised:
        sink.check_write()

    message = str(raised.value)
    assert message.startswith(f"write to bucket {BUCKET} denied (AccessDenied)")
    assert "s3:PutObject and s3:PutObjectTagging" in message


def test_check_without_read_permission_says_so(
    s3: Any, restricted_keys: Callable[[list[str]], dict[str, str]]
) -> None:
    sink = restricted_sink(restricted_keys(["s3:PutObject"]))

    with enable_iam_authentication(), pytest.raises(SinkUnavailable) as raised:
        sink.check_write()

    assert str(raised.value).startswith(f"read from bucket {BUCKET} denied")
    assert "s3:ListBucket" in str(raised.value)


def test_check_passes_and_leaves_a_probe_only_when_delete_is_denied(
    s3: Any, restricted_keys: Callable[[list[str]], dict[str, str]]
) -> None:
    keys = restricted_keys(["s3:GetObject", "s3:ListBucket", "s3:PutObject", "s3:PutObjectTagging"])
    sink = restricted_sink(keys)

    with enable_iam_authentication(), structlog.testing.capture_logs() as logs:
        sink.check_write()

    [left] = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert left["Key"].startswith("cradle/.cradle-archiver-check/")
    assert "s3.check_probe_left" in [e["event"] for e in logs]


def test_check_writes_a_probe_like_a_recording_and_deletes_it(s3: Any) -> None:
    sink, requests = new_sink(storage_class="STANDARD_IA", sse="AES256")

    sink.check_write()

    assert requests.operations() == ["HeadObject", "PutObject", "HeadObject", "DeleteObject"]
    headers = requests.headers("PutObject")
    assert headers["if-none-match"] == "*"
    assert headers["x-amz-storage-class"] == "STANDARD_IA"
    assert headers["x-amz-server-side-encryption"] == "AES256"
    assert "x-amz-checksum-sha256" in headers
    assert "x-amz-tagging" in headers
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_an_unreachable_endpoint_is_reported_with_its_url(s3: Any, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    sink = S3Sink(S3Config(bucket=BUCKET, endpoint_url=url), client=client)

    with pytest.raises(SinkUnavailable) as raised:
        sink.check_write()

    assert str(raised.value).startswith(f"S3 at {url} unreachable: ")


def _client_error(status: int, code: str) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "msg"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "PutObject")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_client_error(404, "NoSuchBucket"), "bucket b does not exist"),
        (_client_error(403, "AccessDenied"), "write to bucket b denied (AccessDenied): msg"),
        (_client_error(403, "InvalidAccessKeyId"), "write to bucket b denied (InvalidAccessKeyId)"),
        (_client_error(503, "SlowDown"), "S3 at http://s3 unreachable: still answering SlowDown"),
        (_client_error(500, "InternalError"), "S3 at http://s3 unreachable: still answering"),
        (
            _client_error(400, "InvalidStorageClass"),
            "write to bucket b refused (InvalidStorageClass)",
        ),
        (EndpointConnectionError(endpoint_url="http://s3"), "S3 at http://s3 unreachable: "),
        (NoCredentialsError(), "no usable AWS credentials for S3"),
    ],
)
def test_errors_map_to_sink_unavailable_with_a_clear_message(exc: Exception, expected: str) -> None:
    mapped = map_error(exc, bucket="b", endpoint="http://s3", action="write to")
    assert isinstance(mapped, SinkUnavailable)
    assert str(mapped).startswith(expected)


def test_a_corrupt_body_fails_only_that_recording() -> None:
    mapped = map_error(_client_error(400, "BadDigest"), bucket="b", endpoint="e", action="write to")
    assert isinstance(mapped, RecordingFailed)
    assert mapped.reason == "checksum_mismatch"


def test_a_refusal_of_this_object_alone_dead_letters_only_that_recording() -> None:
    error = _client_error(400, "MetadataTooLarge")
    mapped = map_error(error, bucket="b", endpoint="e", action="write to")
    assert isinstance(mapped, RecordingFailed)
    assert (mapped.reason, mapped.permanent) == ("s3_refused", True)


def test_part_size_below_the_s3_minimum_is_refused(s3: Any) -> None:
    with pytest.raises(ValueError, match="part_size"):
        S3Sink(S3Config(bucket=BUCKET), part_size=MIB)


# --- client configuration ------------------------------------------------------------------


def test_aws_client_keeps_boto3_checksum_defaults_and_retries() -> None:
    client = make_client(S3Config(bucket=BUCKET))
    config = client.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 6}  # 5 retries
    assert config.request_checksum_calculation == "when_supported"
    assert client.meta.endpoint_url == "https://s3.amazonaws.com"
    assert client.meta.region_name == "us-east-1"


def test_endpoint_client_sends_checksums_only_when_required_with_path_style() -> None:
    client = make_client(S3Config(bucket=BUCKET, endpoint_url="http://minio:9000", region="eu-1"))
    config = client.meta.config
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.s3 == {"addressing_style": "path"}
    assert client.meta.endpoint_url == "http://minio:9000"
    assert client.meta.region_name == "eu-1"


def test_stale_uploads_of_our_recordings_are_aborted_and_others_kept(s3: Any) -> None:
    sink, _ = new_sink()
    ours = "11111111-1111-1111-1111-111111111111"
    theirs = "22222222-2222-2222-2222-222222222222"
    for rid in (ours, theirs):
        s3.create_multipart_upload(Bucket=BUCKET, Key=f"cradle/2024/01/01/{rid}.mp3")
    s3.create_multipart_upload(Bucket=BUCKET, Key="cradle/notes.txt")
    assert sink.abort_stale_uploads(lambda rid: rid == ours) == 1
    left = sorted(u["Key"] for u in s3.list_multipart_uploads(Bucket=BUCKET)["Uploads"])
    assert left == [
        "cradle/2024/01/01/22222222-2222-2222-2222-222222222222.mp3",
        "cradle/notes.txt",
    ]
