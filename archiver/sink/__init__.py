"""The S3 boundary, the only code that imports boto3: the connection and what its errors mean,
the writer (`S3Sink`: recordings and our own small objects, never overwriting) and the read-only
`BucketReader` that `audit`, `reconcile` and `rebuild-state` use."""

from archiver.models import PutOutcome, StoredObject
from archiver.sink.connection import make_client, map_error
from archiver.sink.reader import BucketReader, ListedObject
from archiver.sink.writer import S3Sink

__all__ = [
    "BucketReader",
    "ListedObject",
    "PutOutcome",
    "S3Sink",
    "StoredObject",
    "make_client",
    "map_error",
]
