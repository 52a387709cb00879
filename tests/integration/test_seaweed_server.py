"""What the suite relies on SeaweedFS for, checked with plain boto3: the reasons it runs beside
moto (conditional writes, checksums, versions, Object Lock) and the restart the outage uses."""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests import seaweed

_buckets = itertools.count()


@pytest.fixture
def s3(seaweed_server: str) -> Any:
    return seaweed.client(seaweed_server)


def new_bucket(s3: Any, **options: Any) -> str:
    name = f"weed-{os.getpid()}-{next(_buckets)}"
    s3.create_bucket(Bucket=name, **options)
    return name


def sha256_b64(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


def code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def test_every_component_listens_on_its_port_and_its_grpc_partner() -> None:
    ports = seaweed.free_ports(5)
    assert len({*ports, *(p + seaweed.GRPC_OFFSET for p in ports)}) == 10
    assert all(p + seaweed.GRPC_OFFSET < 32768 for p in ports)


def test_if_none_match_on_a_taken_key_is_refused(s3: Any) -> None:
    bucket = new_bucket(s3)
    s3.put_object(Bucket=bucket, Key="k", Body=b"first", IfNoneMatch="*")

    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key="k", Body=b"second", IfNoneMatch="*")

    assert code(refused) == "PreconditionFailed"
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"first"


def test_a_wrong_sha256_is_bad_digest_and_nothing_lands(s3: Any) -> None:
    bucket = new_bucket(s3)

    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key="k", Body=b"body", ChecksumSHA256=sha256_b64(b"other"))

    assert code(refused) == "BadDigest"
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_a_part_with_a_wrong_sha256_is_bad_digest(s3: Any) -> None:
    bucket = new_bucket(s3)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="SHA256")
    part = os.urandom(5 * 2**20)

    with pytest.raises(ClientError) as refused:
        s3.upload_part(
            Bucket=bucket,
            Key="k",
            UploadId=upload["UploadId"],
            PartNumber=1,
            Body=part,
            ChecksumSHA256=sha256_b64(part[1:]),
        )

    assert code(refused) == "BadDigest"
    s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload["UploadId"])


def test_a_versioned_bucket_keeps_every_write(s3: Any) -> None:
    bucket = new_bucket(s3)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="k", Body=b"one")
    s3.put_object(Bucket=bucket, Key="k", Body=b"two")

    versions = s3.list_object_versions(Bucket=bucket)["Versions"]

    assert [v["Key"] for v in versions] == ["k", "k"]


def test_a_version_locked_in_compliance_mode_cannot_be_deleted(s3: Any) -> None:
    bucket = new_bucket(s3, ObjectLockEnabledForBucket=True)
    put = s3.put_object(
        Bucket=bucket,
        Key="k",
        Body=b"kept",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=1),
    )

    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=bucket, Key="k", VersionId=put["VersionId"])

    assert code(refused) == "AccessDenied"
    retention = s3.get_object_retention(Bucket=bucket, Key="k", VersionId=put["VersionId"])
    assert retention["Retention"]["Mode"] == "COMPLIANCE"


def test_a_write_to_a_missing_bucket_is_no_such_bucket(s3: Any) -> None:
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket="no-such-bucket-here", Key="k", Body=b"body")

    assert code(refused) == "NoSuchBucket"
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert "no-such-bucket-here" not in names


def test_requests_without_its_credentials_are_refused(seaweed_server: str) -> None:
    stranger = seaweed.client(seaweed_server, access_key="someone-else")

    with pytest.raises(ClientError) as refused:
        stranger.list_buckets()

    assert code(refused) == "InvalidAccessKeyId"


def test_a_stopped_server_starts_again_on_the_same_port_and_data(tmp_path: Path) -> None:
    with seaweed.running(tmp_path) as server:
        s3 = server.client(retries={"max_attempts": 1}, connect_timeout=1)
        bucket = new_bucket(s3)
        s3.put_object(Bucket=bucket, Key="k", Body=b"survives")
        url = server.url

        server.stop()
        with pytest.raises(Exception, match="Could not connect"):
            s3.list_buckets()
        server.start()

        assert server.url == url
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"survives"
