"""The S3 writer: recordings and our own small objects (audit records, manifests), never overwritten.

Uploads never overwrite. `put` HEADs the key first; an object already there is judged by its
`sha256` metadata (same body: already archived; anything else: a conflict, left untouched).
Otherwise the write is conditional (`If-None-Match: *`), so a writer that raced us between the
HEAD and the write makes S3 answer 412, and the HEAD is repeated and judged the same way. A store
that answers 501 NotImplemented to the condition is written without it from then on, the HEAD
still guarding it.

Bodies stream from the staged file: one PutObject below the multipart threshold, else a
multipart upload whose parts are read one at a time (memory stays at one part), and which is
aborted on any failure so no orphaned parts remain.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from archiver import layout
from archiver.config import MIN_PART_SIZE, S3Config
from archiver.errors import ArchiverError, ObjectConflict, RecordingFailed, SinkUnavailable
from archiver.models import PutOutcome, PutResult, Recording, StagedFile, StoredObject
from archiver.retention import BucketLock, Lock
from archiver.sink.connection import (
    MISSING_CODES,
    ConditionUnsupported,
    Denied,
    KeyTaken,
    base64_digest,
    error_code,
    make_client,
    map_error,
    stored_object,
)

log = structlog.get_logger(__name__)

CONTENT_TYPE = "audio/mpeg"
# Multipart parts: 8 MiB (S3's own default) keeps a 100 MB recording to 13 parts, each its
# own retriable request with its own checksum.
PART_SIZE = 8 * 2**20
MAX_PARTS = 10_000
READ_BLOCK = 2**20
CHECK_DIR = ".cradle-archiver-check/"


class S3Sink:
    """Writes recordings to one bucket, never overwriting an object."""

    def __init__(
        self,
        config: S3Config,
        *,
        client: Any | None = None,
        multipart_threshold: int | None = None,
        part_size: int = PART_SIZE,
    ) -> None:
        if multipart_threshold is None:
            multipart_threshold = config.multipart_threshold
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size {part_size} is below S3's minimum of {MIN_PART_SIZE}")
        if multipart_threshold < 1:
            raise ValueError(f"multipart_threshold {multipart_threshold} must be positive")
        self._config = config
        self._client = client if client is not None else make_client(config)
        self._multipart_threshold = multipart_threshold
        self._part_size = part_size
        self._conditional = True
        self._endpoint = str(getattr(self._client.meta, "endpoint_url", config.endpoint_url))

    @property
    def bucket(self) -> str:
        return self._config.bucket

    def key_for(self, recording: Recording) -> str:
        return layout.object_key(self._config.prefix, recording)

    def head(self, key: str) -> StoredObject | None:
        """The object at `key`, or None when there is none."""
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in MISSING_CODES:
                return None
            raise self._error(exc, "read from") from exc
        except BotoCoreError as exc:
            raise self._error(exc, "read from") from exc
        return stored_object(key, response)

    def put(
        self,
        recording: Recording,
        staged: StagedFile,
        lock: Lock | None = None,
        legal_hold: bool = False,
    ) -> PutResult:
        """Archive `staged` as `recording`'s object unless an object is already at its key."""
        key = self.key_for(recording)
        existing = self.head(key)
        if existing is not None:
            return PutResult(_judge(existing, staged), existing)
        multipart = staged.size >= self._multipart_threshold
        started = time.monotonic()
        try:
            args = self._object_args(recording, staged, lock, legal_hold)
            if multipart:
                response = self._put_multipart(key, staged, args)
            else:
                response = self._put_single(
                    key, staged, args, locked=lock is not None or legal_hold
                )
        except KeyTaken:
            log.info("s3.put_raced", key=key)
            existing = self.head(key)
            if existing is None:
                raise SinkUnavailable(
                    f"S3 refused to create {key} in bucket {self.bucket} as already present, "
                    "yet a HEAD finds nothing there; the next pass tries again"
                ) from None
            return PutResult(_judge(existing, staged), existing)
        log.info(
            "s3.put",
            key=key,
            bytes=staged.size,
            multipart=multipart,
            seconds=round(time.monotonic() - started, 3),
        )
        version = response.get("VersionId")
        stored = StoredObject(
            key,
            staged.size,
            staged.sha256.lower(),
            recording.recording_id,
            version_id=version if version and version != "null" else None,
        )
        return PutResult(PutOutcome.CREATED, stored)

    def check_write(self) -> None:
        """Prove the bucket exists and accepts our writes, or say exactly what is wrong.

        Writes a small probe object under `{prefix}.cradle-archiver-check/` the way recordings
        are written (conditional, checksum, storage class, encryption, tags), reads it back, and
        deletes it if allowed. A HEAD of a missing key comes first, since `put` relies on S3
        answering 404 rather than 403 for it (which needs s3:ListBucket).
        """
        key = f"{self._config.prefix}{CHECK_DIR}{uuid.uuid4().hex}"
        body = b"cradle-archiver write check\n"
        try:
            self.head(key)
        except Denied as exc:
            raise SinkUnavailable(
                f"{exc} (a HEAD of a missing key needs s3:GetObject and s3:ListBucket)"
            ) from exc
        args = self._storage_args()
        args.update(
            Body=body,
            ContentType="text/plain",
            ChecksumSHA256=base64_digest(hashlib.sha256(body).digest()),
        )
        if self._config.tags:
            args["Tagging"] = layout.tagging_header({"purpose": "cradle-archiver-check"})
        try:
            self._conditional_write("put_object", key, args)
        except KeyTaken:
            pass  # a probe of that name is there already: the write was still allowed to happen
        except Denied as exc:
            needed = "s3:PutObject" + (" and s3:PutObjectTagging" if self._config.tags else "")
            raise SinkUnavailable(f"{exc} (the archiver needs {needed})") from exc
        stored = self.head(key)
        if stored is None or stored.size != len(body):
            raise SinkUnavailable(f"bucket {self.bucket} accepted a write to {key} but lost it")
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            log.warning("s3.check_probe_left", key=key, error=str(self._error(exc, "delete from")))
        log.info("s3.check", bucket=self.bucket, endpoint=self._endpoint)

    def write_once(
        self, key: str, body: bytes, content_type: str, lock: Lock | None = None
    ) -> str | None:
        """A small object of ours (an audit record, a manifest), written once; returns its
        version id. The same bytes already at the key count as written (a run killed after the
        write does it again); other bytes are an ObjectConflict, left as they are."""
        args = self._storage_args()
        args.update(
            Body=body,
            ContentType=content_type,
            ContentLength=len(body),
            ChecksumSHA256=base64_digest(hashlib.sha256(body).digest()),
        )
        if lock is not None:
            args.update(
                ChecksumAlgorithm="SHA256",
                ObjectLockMode=lock.mode.s3,
                ObjectLockRetainUntilDate=lock.retain_until,
            )
        if not self._conditional and self.head(key) is not None:
            return self._same_or_conflict(key, body)  # no If-None-Match here: the HEAD guards
        try:
            response = self._conditional_write("put_object", key, args)
        except KeyTaken:
            return self._same_or_conflict(key, body)
        version = response.get("VersionId")
        return version if version and version != "null" else None

    def _same_or_conflict(self, key: str, body: bytes) -> str | None:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            found = response["Body"].read(len(body) + 1)
            response["Body"].close()
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "read from") from exc
        if found != body:
            raise ObjectConflict(
                f"an object with other content is already at {key} in bucket {self.bucket};"
                " it was left as it is"
            )
        log.info("s3.already_present", key=key, bytes=len(body))
        version = response.get("VersionId")
        return version if version and version != "null" else None

    def set_legal_hold(self, key: str, on: bool) -> None:
        self._call(
            "put_object_legal_hold",
            "write to",
            Key=key,
            LegalHold={"Status": "ON" if on else "OFF"},
            ChecksumAlgorithm="SHA256",
        )

    def extend_retention(self, key: str, lock: Lock) -> None:
        """Move an object's retain-until on (S3 refuses to shorten a COMPLIANCE lock)."""
        self._call(
            "put_object_retention",
            "write to",
            Key=key,
            Retention={"Mode": lock.mode.s3, "RetainUntilDate": lock.retain_until},
            ChecksumAlgorithm="SHA256",
        )

    def lock_configuration(self) -> BucketLock:
        """Versioning, Object Lock and a default retention, as the bucket reports them."""
        try:
            versioning = self._client.get_bucket_versioning(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "read from") from exc
        try:
            found = self._client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if error_code(exc) != "ObjectLockConfigurationNotFoundError":
                raise self._error(exc, "read from") from exc
            found = {}
        except BotoCoreError as exc:
            raise self._error(exc, "read from") from exc
        configuration = found.get("ObjectLockConfiguration") or {}
        default = (configuration.get("Rule") or {}).get("DefaultRetention") or {}
        period = (
            f"{default.get('Years')} years"
            if default.get("Years")
            else f"{default.get('Days')} days"
        )
        return BucketLock(
            versioning=versioning.get("Status") == "Enabled",
            object_lock=configuration.get("ObjectLockEnabled") == "Enabled",
            default_retention=f"{default.get('Mode')} {period}" if default else None,
        )

    def _put_single(
        self, key: str, staged: StagedFile, args: dict[str, Any], *, locked: bool
    ) -> dict[str, Any]:
        # The whole body's SHA-256 also answers S3's rule that a locked write carry a checksum.
        args["ChecksumSHA256"] = base64_digest(bytes.fromhex(staged.sha256))
        if locked:
            # S3 wants the algorithm named (x-amz-sdk-checksum-algorithm) on a locked write; the
            # value we give is still ours, so nothing is computed again or sent as a trailer.
            args["ChecksumAlgorithm"] = "SHA256"
        args["ContentLength"] = staged.size
        with _open_staged(staged) as body:
            # Read once more before sending: a store that ignores ChecksumSHA256 (older MinIO,
            # moto) would keep a body that changed on disk since it was verified, and a write
            # is never repeated over it.
            _require_digest(body, staged)
            body.seek(0)
            args["Body"] = body
            return dict(self._conditional_write("put_object", key, args))

    def _put_multipart(self, key: str, staged: StagedFile, args: dict[str, Any]) -> dict[str, Any]:
        # Every part carries its SHA-256, which a locked multipart upload requires.
        upload_id = self._call(
            "create_multipart_upload", "write to", Key=key, ChecksumAlgorithm="SHA256", **args
        )["UploadId"]
        try:
            parts = self._upload_parts(key, upload_id, staged)
            return dict(
                self._conditional_write(
                    "complete_multipart_upload",
                    key,
                    {"UploadId": upload_id, "MultipartUpload": {"Parts": parts}},
                )
            )
        except BaseException:
            self._abort(key, upload_id)
            raise

    def _upload_parts(self, key: str, upload_id: str, staged: StagedFile) -> list[dict[str, Any]]:
        """Send the staged file one part at a time, checking it still has the digest we know."""
        part_size = max(self._part_size, math.ceil(staged.size / MAX_PARTS))
        whole = hashlib.sha256()
        parts: list[dict[str, Any]] = []
        with _open_staged(staged) as body:
            for start in range(0, staged.size, part_size):
                # Streamed from disk block by block: memory stays flat whatever the part size.
                part = _PartBody(body, start, min(part_size, staged.size - start))
                digest = hashlib.sha256()
                for block in part.blocks():
                    digest.update(block)
                    whole.update(block)
                number = len(parts) + 1
                checksum = base64_digest(digest.digest())
                part.seek(0)
                response = self._call(
                    "upload_part",
                    "write to",
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=part,
                    ContentLength=len(part),
                    ChecksumSHA256=checksum,
                )
                parts.append(
                    {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}
                )
        if whole.hexdigest() != staged.sha256.lower():
            raise RecordingFailed(
                f"staged file {staged.path} no longer has the sha256 it was verified with",
                reason="staged_corrupt",
            )
        return parts

    def abort_stale_uploads(self, ours: Callable[[str], bool]) -> int:
        """Abort the multipart uploads a killed process left under our prefix.

        Their parts cost storage and never become an object. Only uploads for recordings
        `ours(recording_id)` claims are touched, so another archiver sharing the bucket and
        prefix keeps its own; the caller holds the checkpoint's one-writer lock, so none of
        ours is in progress."""
        aborted = 0
        try:
            pages = self._client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self._config.prefix
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    recording_id = layout.recording_id_from_key(upload["Key"])
                    if recording_id is not None and ours(recording_id):
                        self._abort(upload["Key"], upload["UploadId"])
                        aborted += 1
        except (ClientError, BotoCoreError) as exc:
            # Needs s3:ListBucketMultipartUploads; without it the parts wait for a lifecycle rule.
            log.warning("s3.stale_uploads_not_listed", error=str(exc))
        return aborted

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError) as exc:
            log.warning("s3.abort_failed", key=key, upload_id=upload_id, error=str(exc))
        else:
            log.info("s3.abort", key=key, upload_id=upload_id)

    def _conditional_write(self, method: str, key: str, args: dict[str, Any]) -> Any:
        """Call `method` with `If-None-Match: *` unless the store is known not to support it."""
        if self._conditional:
            try:
                return self._call(
                    method, "write to", conditional=True, Key=key, IfNoneMatch="*", **args
                )
            except ConditionUnsupported:
                self._conditional = False
                log.warning("s3.conditional_write_unsupported", endpoint=self._endpoint)
                if hasattr(args.get("Body"), "seek"):
                    args["Body"].seek(0)
        return self._call(method, "write to", Key=key, **args)

    def _call(self, method: str, action: str, *, conditional: bool = False, **args: Any) -> Any:
        operation: Callable[..., Any] = getattr(self._client, method)
        try:
            return operation(Bucket=self.bucket, **args)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, action, conditional=conditional) from exc

    def _object_args(
        self, recording: Recording, staged: StagedFile, lock: Lock | None, legal_hold: bool
    ) -> dict[str, Any]:
        args = self._storage_args()
        if lock is not None:
            args["ObjectLockMode"] = lock.mode.s3
            args["ObjectLockRetainUntilDate"] = lock.retain_until
        if legal_hold:
            args["ObjectLockLegalHoldStatus"] = "ON"
        args["ContentType"] = CONTENT_TYPE
        args["Metadata"] = layout.object_metadata(
            recording,
            staged.sha256,
            audio_seconds=staged.audio_seconds,
            audio_mismatch=staged.audio_mismatch,
        )
        if self._config.tags:
            args["Tagging"] = layout.tagging_header(layout.object_tags(recording))
        return args

    def _storage_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self._config.storage_class:
            args["StorageClass"] = self._config.storage_class
        if self._config.sse:
            args["ServerSideEncryption"] = self._config.sse
        if self._config.kms_key_id:
            args["SSEKMSKeyId"] = self._config.kms_key_id
        return args

    def _error(self, exc: Exception, action: str, *, conditional: bool = False) -> ArchiverError:
        return map_error(
            exc, bucket=self.bucket, endpoint=self._endpoint, action=action, conditional=conditional
        )


def _judge(existing: StoredObject, staged: StagedFile) -> PutOutcome:
    same = existing.sha256 is not None and existing.sha256.lower() == staged.sha256.lower()
    if same and existing.size == staged.size:
        log.info("s3.already_present", key=existing.key, bytes=existing.size)
        return PutOutcome.ALREADY_PRESENT
    log.warning(
        "s3.conflict",
        key=existing.key,
        existing_sha256=existing.sha256,
        existing_bytes=existing.size,
        sha256=staged.sha256,
        bytes=staged.size,
    )
    return PutOutcome.CONFLICT


class _PartBody:
    """One part of the staged file as a body botocore can stream, rewind on retry, and measure."""

    def __init__(self, handle: BinaryIO, start: int, length: int) -> None:
        self._handle = handle
        self._start = start
        self._length = length
        self._position = 0

    def __len__(self) -> int:
        return self._length

    def read(self, amount: int | None = -1) -> bytes:
        left = self._length - self._position
        if amount is None or amount < 0 or amount > left:
            amount = left
        if amount <= 0:
            return b""
        self._handle.seek(self._start + self._position)
        data = self._handle.read(amount)
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._length}[whence]
        self._position = min(max(base + offset, 0), self._length)
        return self._position

    def tell(self) -> int:
        return self._position

    def blocks(self) -> Iterator[bytes]:
        """The part from its start, READ_BLOCK bytes at a time."""
        self.seek(0)
        while block := self.read(READ_BLOCK):
            yield block


def _require_digest(body: BinaryIO, staged: StagedFile) -> None:
    digest = hashlib.sha256()
    while block := body.read(READ_BLOCK):
        digest.update(block)
    if digest.hexdigest() != staged.sha256.lower():
        raise RecordingFailed(
            f"staged file {staged.path} no longer has the sha256 it was verified with",
            reason="staged_corrupt",
        )


def _open_staged(staged: StagedFile) -> BinaryIO:
    """The staged file, checked to be as long as when it was verified."""
    try:
        handle = open(staged.path, "rb")  # noqa: SIM115  closed by the caller's `with`
    except OSError as exc:
        raise RecordingFailed(f"cannot read staged file {staged.path}: {exc}", "staging") from exc
    size = os.fstat(handle.fileno()).st_size
    if size != staged.size:
        handle.close()
        raise RecordingFailed(
            f"staged file {staged.path} has {size} bytes, not the {staged.size} verified",
            reason="staged_corrupt",
        )
    return handle
