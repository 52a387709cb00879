"""Reading a manifest back: whatever the bucket holds, a clear ManifestInvalid or a manifest
whose every field a checkpoint, a key and a header can hold (the bucket is not trusted)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from archiver import manifest
from archiver.manifest import Entry, Manifest, ManifestInvalid

SHA = "ab" * 32
GOOD = Entry(
    id="0b6a3c1e-8f7d-4c2a-9e1b-5d4f3a2b1c0d",
    key="cradle/2026/03/01/0b6a3c1e-8f7d-4c2a-9e1b-5d4f3a2b1c0d.mp3",
    version_id="v1",
    sha256=SHA,
    size=1234,
    started_at=datetime(2026, 3, 1, 10, tzinfo=UTC),
    duration_seconds=93,
    audio_seconds=92.5,
    retain_until=None,
)
BODY = Manifest(date(2026, 3, 1), 0, 1, None, (GOOD,)).body()


def test_a_manifest_reads_back_as_it_was_written() -> None:
    assert manifest.parse(BODY).entries == (GOOD,)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"size":1234', b'"size":' + str(2**70).encode()),  # no database integer holds it
        (b'"size":1234', b'"size":-1'),
        (b'"audio_seconds":92.5', b'"audio_seconds":NaN'),
        (b'"audio_seconds":92.5', b'"audio_seconds":Infinity'),
        (b'"version_id":"v1"', b'"version_id":"\\ud800"'),  # a lone surrogate
        (b'"started_at":"2026-03-01T10:00:00.000Z"', b'"started_at":"0001-01-01T00:00+01:00"'),
        (b'"sequence":1', b'"sequence":' + str(2**64).encode()),
        (b'{"audio_seconds"', b"[" * 100_000 + b'{"audio_seconds"'),  # deeper than any stack
    ],
)
def test_what_no_archiver_writes_is_refused_as_invalid(old: bytes, new: bytes) -> None:
    assert old in BODY
    with pytest.raises(ManifestInvalid):
        manifest.parse(BODY.replace(old, new, 1))
