"""The S3 connection: the one boto3 client we make, and what its failures mean to us.

Shared by the writer (`S3Sink`) and the reader (`BucketReader`); botocore has already retried
throttling, 5xx and connection errors by the time a failure reaches `map_error`.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import boto3
import botocore.config
import botocore.session
from botocore.exceptions import (
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.utils import parse_timestamp

from archiver.config import S3Config
from archiver.errors import ArchiverError, RecordingFailed, SinkUnavailable
from archiver.models import StoredObject

RETRIES = 5  # after the first attempt (botocore's `max_attempts`)
MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_TAKEN_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "InvalidToken",
        "ExpiredToken",
        "SignatureDoesNotMatch",
    }
)
_DIGEST_CODES = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"})
# Refusals of this one object (its metadata, tags or size), not of the bucket: dead-letter it.
_OBJECT_REFUSED_CODES = frozenset(
    {"MetadataTooLarge", "InvalidTag", "KeyTooLongError", "EntityTooLarge"}
)
_BUSY_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "ServiceUnavailable"}
)


class KeyTaken(SinkUnavailable):
    """The conditional write found an object at the key (412, or 409 while another completes)."""


class Denied(SinkUnavailable):
    """S3 refused the credentials or the permission (403)."""


class ConditionUnsupported(SinkUnavailable):
    """The store answered 501 NotImplemented to `If-None-Match: *`."""


def make_client(config: S3Config, *, connections: int = 4) -> Any:
    """One S3 client for the life of the sink (it pools connections and is thread-safe);
    `connections` bounds its pool, so callers making requests in parallel threads raise it to
    their number of threads (urllib3 would otherwise open and drop a connection per extra one)."""
    options: dict[str, Any] = {
        "retries": {"max_attempts": RETRIES, "mode": "standard"},
        "connect_timeout": 10,
        "read_timeout": 120,
        "max_pool_connections": connections,
    }
    if config.endpoint_url:
        # boto3 1.36+ adds CRC32 checksums (as aws-chunked trailers over TLS) that older MinIO,
        # Ceph and other S3-compatible stores reject; send a checksum only where we give one.
        options["request_checksum_calculation"] = "when_required"
        options["response_checksum_validation"] = "when_required"
        options["s3"] = {"addressing_style": "path"}
    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_timestamp)
    session = boto3.session.Session(botocore_session=core)
    return session.client(
        "s3",
        region_name=config.region or session.region_name or "us-east-1",
        endpoint_url=config.endpoint_url or None,
        config=botocore.config.Config(**options),
    )


def _timestamp(value: Any) -> datetime:
    """botocore's timestamp parser, with a fast path for the zoned ISO 8601 that S3's XML carries.
    A listing page holds 1,000 `LastModified` values, and botocore's default (dateutil's general
    parser, ~0.4 ms each) took longer over them than the requests themselves: 40 s of a
    100,000-key listing. Anything else (HTTP dates in headers, epochs) goes to the default."""
    if isinstance(value, str) and "T" in value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return parse_timestamp(value)
        if parsed.tzinfo is not None:
            return parsed
    return parse_timestamp(value)


def map_error(
    exc: Exception, *, bucket: str, endpoint: str, action: str, conditional: bool = False
) -> ArchiverError:
    """The one place a boto3/botocore failure becomes an archiver error.

    `action` reads "write to", "read from" or "delete from". botocore has already retried
    throttling, 5xx and connection errors by the time one reaches here.
    """
    if isinstance(exc, ClientError):
        return _client_error(exc, bucket, endpoint, action, conditional)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return SinkUnavailable(f"no usable AWS credentials for S3: {exc}")
    if isinstance(exc, ConnectionError | HTTPClientError):
        return SinkUnavailable(f"S3 at {endpoint} unreachable: {exc}")
    return SinkUnavailable(f"S3 request to {endpoint} failed: {exc}")


def _client_error(
    exc: ClientError, bucket: str, endpoint: str, action: str, conditional: bool
) -> ArchiverError:
    """S3 answered, with an error code: what it means for the caller."""
    code = error_code(exc)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    message = exc.response.get("Error", {}).get("Message") or ""
    if code in _TAKEN_CODES or status == 412:
        return KeyTaken(f"an object appeared in bucket {bucket} ({code})")
    if code == "NotImplemented" and conditional:
        return ConditionUnsupported(f"S3 at {endpoint} does not support If-None-Match")
    if code == "NoSuchBucket":
        return SinkUnavailable(f"bucket {bucket} does not exist")
    if code in _DIGEST_CODES:
        return RecordingFailed(
            f"S3 refused the body as corrupt ({code}): {message}", reason="checksum_mismatch"
        )
    if code in _OBJECT_REFUSED_CODES:
        return RecordingFailed(
            f"S3 refused the object ({code}): {message}", reason="s3_refused", permanent=True
        )
    if code in _DENIED_CODES or status == 403:
        return Denied(f"{action} bucket {bucket} denied ({code}): {message}")
    if code in _BUSY_CODES or status >= 500:
        return SinkUnavailable(
            f"S3 at {endpoint} unreachable: still answering {code} ({status}) "
            f"after {RETRIES} retries: {message}"
        )
    return SinkUnavailable(f"{action} bucket {bucket} refused ({code}): {message}")


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def base64_digest(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def stored_object(key: str, response: dict[str, Any]) -> StoredObject:
    """What a HEAD (or GET) response tells about the object at `key`."""
    metadata = response.get("Metadata") or {}
    version = response.get("VersionId")
    hold = response.get("ObjectLockLegalHoldStatus")
    return StoredObject(
        key=key,
        size=int(response.get("ContentLength", 0)),
        sha256=metadata.get("sha256"),
        recording_id=metadata.get("recording-id"),
        lock_mode=response.get("ObjectLockMode"),
        retain_until=response.get("ObjectLockRetainUntilDate"),
        version_id=version if version and version != "null" else None,
        checksum_sha256=response.get("ChecksumSHA256"),
        metadata=dict(metadata),
        legal_hold=None if hold is None else hold == "ON",
    )
