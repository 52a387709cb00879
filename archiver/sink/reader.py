"""Read-only access to the bucket: what `audit` needs (and `reconcile` and `rebuild-state` share).

An auditor runs with read-only credentials (s3:GetObject, s3:GetObjectVersion, s3:ListBucket,
s3:GetObjectRetention, and s3:ListBucketVersions for `versions`): nothing here writes. HEADs ask for S3's own checksum
(`ChecksumMode=ENABLED`), which proves the stored bytes without reading them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from archiver.config import S3Config
from archiver.errors import ArchiverError, SinkUnavailable
from archiver.models import StoredObject
from archiver.sink.connection import (
    MISSING_CODES,
    error_code,
    make_client,
    map_error,
    stored_object,
)

READ_BLOCK = 2**20


@dataclass(frozen=True)
class ListedObject:
    """One key of a listing (the latest version)."""

    key: str
    size: int
    last_modified: datetime | None


@dataclass(frozen=True)
class ListedVersion:
    """One version of a key, or a delete marker, as a version listing gives it."""

    key: str
    version_id: str | None
    latest: bool
    delete_marker: bool


class BucketReader:
    """Reads one bucket; thread-safe (boto3 clients are), so HEADs may run in parallel."""

    def __init__(
        self, config: S3Config, *, client: Any | None = None, connections: int = 4
    ) -> None:
        """`connections`: how many requests may be in flight at once (threads of HEADs)."""
        self._config = config
        self._client = (
            client if client is not None else make_client(config, connections=connections)
        )
        self._endpoint = str(getattr(self._client.meta, "endpoint_url", config.endpoint_url))

    @property
    def bucket(self) -> str:
        return self._config.bucket

    @property
    def prefix(self) -> str:
        return self._config.prefix

    def head(self, key: str, version_id: str | None = None) -> StoredObject | None:
        """The object at `key` (that version, if given) with S3's checksum, or None."""
        response = self._object("head_object", key, version_id, ChecksumMode="ENABLED")
        return None if response is None else stored_object(key, response)

    def read(self, key: str, limit: int, version_id: str | None = None) -> bytes | None:
        """The whole body of a small object (a manifest), or None when there is none; a body
        longer than `limit` is refused rather than read into memory."""
        response = self._object("get_object", key, version_id)
        if response is None:
            return None
        try:
            body = response["Body"].read(limit + 1)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc) from exc
        finally:
            response["Body"].close()
        if len(body) > limit:
            raise SinkUnavailable(f"{key} in bucket {self.bucket} is over {limit} bytes")
        return bytes(body)

    def digest(self, key: str, version_id: str | None = None) -> tuple[str, int] | None:
        """The hex SHA-256 and size of the body as S3 serves it now, streamed (memory stays at
        one block), or None when there is no such object."""
        response = self._object("get_object", key, version_id)
        if response is None:
            return None
        digest, size = hashlib.sha256(), 0
        try:
            for block in response["Body"].iter_chunks(READ_BLOCK):
                digest.update(block)
                size += len(block)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc) from exc
        finally:
            response["Body"].close()
        return digest.hexdigest(), size

    def list(self, prefix: str) -> Iterator[ListedObject]:
        """Every key under `prefix`, in S3's (lexicographic) order, a page at a time."""
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield ListedObject(item["Key"], int(item["Size"]), item.get("LastModified"))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc) from exc

    def versions(self, prefix: str) -> Iterator[ListedVersion]:
        """Every version and delete marker under `prefix` (s3:ListBucketVersions): what a
        written-once object went through since."""
        try:
            pages = self._client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for kind, marker in (("Versions", False), ("DeleteMarkers", True)):
                    for item in page.get(kind, []):
                        version = item.get("VersionId")
                        yield ListedVersion(
                            item["Key"],
                            version if version and version != "null" else None,
                            bool(item.get("IsLatest")),
                            marker,
                        )
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc) from exc

    def _object(
        self, method: str, key: str, version_id: str | None, **extra: Any
    ) -> dict[str, Any] | None:
        """`method` on one object (that version, if given); None when there is none."""
        args: dict[str, Any] = {"Key": key, **extra}
        if version_id:
            args["VersionId"] = version_id
        return self._missing_is_none(method, args)

    def _missing_is_none(self, method: str, args: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return dict(getattr(self._client, method)(Bucket=self.bucket, **args))
        except ClientError as exc:
            if error_code(exc) in MISSING_CODES or error_code(exc) == "NoSuchVersion":
                return None
            raise self._error(exc) from exc
        except BotoCoreError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: Exception) -> ArchiverError:
        return map_error(exc, bucket=self.bucket, endpoint=self._endpoint, action="read from")
