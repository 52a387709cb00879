"""Where and how a recording lands in S3: its key, metadata and tags, each built in one place.

The key depends on the recording alone, so a second upload of the same recording finds the first.

Metadata values travel as HTTP headers, which S3 accepts in ASCII only. A value that is printable
ASCII goes as it is; any other value (non-ASCII, control characters, leading or trailing spaces,
or one that itself looks like an encoded word) is sent as one RFC 2047 encoded word,
`=?UTF-8?B?<base64 of the UTF-8 bytes>?=` — the form S3 itself uses for non-ASCII metadata.
`decode_metadata_value` reverses it exactly.

S3 refuses an object whose user metadata exceeds 2 KB (the UTF-8 bytes of every key and value,
added up), and a refused object is a dead letter that no retry can fix. The fields we control
(id, times, nature, checksum) are small and bounded; the free text from the API (agent names and
numbers) is not. So when the whole would not fit, the free-text values share what is left fairly
(the short ones are kept whole) and each one cut is marked with `TRUNCATED`, so that a reader of
the object knows it is not the full value: the recording is archived, and the full entry is kept
in the checkpoint.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from datetime import UTC
from urllib.parse import quote

import structlog

from archiver.errors import MalformedEntry
from archiver.models import Recording, format_time, recording_id_from_url

TAG_VALUE_MAX = 256
TAG_REPLACEMENT = "_"
_TAG_PUNCTUATION = frozenset("+-=._:/@")
_ENCODED_WORD = re.compile(r"^=\?UTF-8\?B\?([A-Za-z0-9+/=]*)\?=$")
METADATA_MAX = 2048  # bytes of user metadata S3 accepts: keys plus values
TRUNCATED = "...[truncated]"  # ASCII, so a cut ASCII value is still sent readable
FREE_TEXT = ("agent1", "agent2", "cradle-number", "third-party-number")

log = structlog.get_logger(__name__)


def object_key(prefix: str, recording: Recording) -> str:
    """`{prefix}{YYYY}/{MM}/{DD}/{recording_id}.mp3`, dated by `started_at` in UTC."""
    if recording.started_at.tzinfo is None:
        raise ValueError(f"started_at of {recording.recording_id} has no time zone")
    day = recording.started_at.astimezone(UTC)
    return f"{prefix}{day:%Y/%m/%d}/{recording.recording_id}.mp3"


def recording_id_from_key(key: str) -> str | None:
    """The recording id an object key was made from, or None for a key of another shape."""
    name = key.rsplit("/", 1)[-1]
    if not name.endswith(".mp3"):
        return None
    try:
        return recording_id_from_url(name)
    except MalformedEntry:
        return None


def object_metadata(
    recording: Recording,
    sha256: str,
    *,
    audio_seconds: float | None = None,
    audio_mismatch: bool = False,
) -> dict[str, str]:
    """The user metadata (`x-amz-meta-*`) of a recording's object, ASCII-safe and at most
    `METADATA_MAX` bytes (over-long free text cut, with a marker)."""
    duration = recording.duration_seconds
    fields: dict[str, str | None] = {
        "recording-id": recording.recording_id,
        "started-at": format_time(recording.started_at),
        # Absent when the API gave none: "0" would claim a length nobody measured.
        "duration-seconds": str(duration) if duration is not None else None,
        "nature": recording.nature,
        "agent1": recording.agent1,
        "agent2": recording.agent2,
        "cradle-number": recording.cradle_number,
        "third-party-number": recording.third_party_number,
        "sha256": sha256.lower(),
        "audio-seconds": f"{audio_seconds:.1f}" if audio_seconds is not None else None,
        "audio-mismatch": "true" if audio_mismatch else None,
    }
    metadata = {k: encode_metadata_value(v) for k, v in fields.items() if v is not None}
    if metadata_size(metadata) <= METADATA_MAX:
        return metadata
    free = [key for key in FREE_TEXT if key in metadata]
    fixed = metadata_size({k: v for k, v in metadata.items() if k not in free})
    budget = METADATA_MAX - fixed - sum(len(key) for key in free)
    shares = _fair_shares({key: len(metadata[key]) for key in free}, budget)
    cut = [key for key in free if len(metadata[key]) > shares[key]]
    for key in cut:
        metadata[key] = _fit(fields[key] or "", shares[key])
    log.warning("metadata.truncated", recording_id=recording.recording_id, keys=cut)
    return metadata


def metadata_size(metadata: dict[str, str]) -> int:
    """What S3 counts against its 2 KB: the UTF-8 bytes of every key and value."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())


def _fair_shares(sizes: dict[str, int], budget: int) -> dict[str, int]:
    """Split `budget` bytes so that values under an equal share keep their size and the others
    share the rest equally (max-min fairness)."""
    shares: dict[str, int] = {}
    left = sorted(sizes, key=lambda key: sizes[key])
    while left:
        share = max(budget, 0) // len(left)
        key = left.pop(0)
        shares[key] = min(sizes[key], share)
        budget -= shares[key]
    return shares


def _fit(value: str, limit: int) -> str:
    """The longest `value[:n] + TRUNCATED` whose encoded form has at most `limit` bytes ("" if
    not even the marker fits). Encoded length only grows with n, so a binary search finds it."""
    low, high = -1, len(value)  # the answer n is in [low, high); -1 means nothing fits
    while high - low > 1:
        middle = (low + high) // 2
        if len(encode_metadata_value(value[:middle] + TRUNCATED)) <= limit:
            low = middle
        else:
            high = middle
    return encode_metadata_value(value[:low] + TRUNCATED) if low >= 0 else ""


def encode_metadata_value(value: str) -> str:
    """`value` as it is when S3 can carry it in a header, else as an RFC 2047 encoded word."""
    if value.isascii() and value.isprintable() and value == value.strip(" ") and "=?" not in value:
        return value
    encoded = base64.b64encode(value.encode("utf-8")).decode("ascii")
    return f"=?UTF-8?B?{encoded}?="


def decode_metadata_value(value: str) -> str:
    """The original of a value written by `encode_metadata_value`."""
    match = _ENCODED_WORD.match(value)
    if match is None:
        return value
    return base64.b64decode(match.group(1)).decode("utf-8")


def object_tags(recording: Recording) -> dict[str, str]:
    """The object tags of a recording's object, values fitted to S3's tag character set."""
    fields = {
        "nature": recording.nature,
        "agent1": recording.agent1,
        "cradle-number": recording.cradle_number,
        "third-party-number": recording.third_party_number,
    }
    return {key: fit_tag_value(value) for key, value in fields.items() if value is not None}


def fit_tag_value(value: str) -> str:
    """Replace what S3 refuses in a tag value with `_` and cut it to 256 characters.

    S3 accepts letters, digits and spaces of any script (Unicode categories L, N and Z) and
    `+ - = . _ : / @`.
    """
    fitted = "".join(ch if _allowed_in_tag(ch) else TAG_REPLACEMENT for ch in value)
    return fitted[:TAG_VALUE_MAX]


def _allowed_in_tag(ch: str) -> bool:
    return ch in _TAG_PUNCTUATION or unicodedata.category(ch)[0] in "LNZ"


def tagging_header(tags: dict[str, str]) -> str:
    """The `x-amz-tagging` value: `k=v&k=v`, each part percent-encoded (UTF-8, space as %20)."""
    return "&".join(f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in tags.items())
