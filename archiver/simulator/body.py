"""MP3-looking bodies generated chunk by chunk, so any size streams in constant memory.

A body is an ID3v2.3 tag (one TIT2 frame) followed by MPEG-1 Layer III frames of 128 kbps at
44.1 kHz: a 4-byte header starting with the 0xFF 0xFB sync, then pseudo-random payload. Each
64 KiB chunk is generated from its own seed, so the server, `iter_body` and `body_sha256` agree
byte for byte without ever holding a whole body.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

CHUNK_SIZE = 64 * 1024
FRAME_HEADER = b"\xff\xfb\x90\x64"
# 144 * 128000 / 44100, rounded down: the length of an unpadded 128 kbps frame.
FRAME_LENGTH = 417


def id3_tag(title: str) -> bytes:
    """An ID3v2.3 tag holding only a title, the way recorders stamp their files."""
    text = b"\x00" + title.encode("latin-1", "replace")  # 0x00: ISO-8859-1 encoding byte
    frame = b"TIT2" + len(text).to_bytes(4, "big") + b"\x00\x00" + text
    return b"ID3\x03\x00\x00" + _syncsafe(len(frame)) + frame


def _syncsafe(n: int) -> bytes:
    # ID3 sizes keep the top bit of each byte clear so no 0xFF can fake a frame sync.
    return bytes(((n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F))


def iter_body(seed: int, recording_id: str, size: int) -> Iterator[bytes]:
    """The exact bytes served for a recording, in chunks of at most CHUNK_SIZE."""
    tag = id3_tag(f"Cradle recording {recording_id}")
    for chunk_no in range((size + CHUNK_SIZE - 1) // CHUNK_SIZE):
        start = chunk_no * CHUNK_SIZE
        length = min(CHUNK_SIZE, size - start)
        rng = random.Random(f"{seed}:{recording_id}:{chunk_no}")
        chunk = bytearray(rng.randbytes(length))
        if start < len(tag):
            head = tag[start : start + length]
            chunk[: len(head)] = head
        _stamp_frame_headers(chunk, start, len(tag))
        yield bytes(chunk)


def _stamp_frame_headers(chunk: bytearray, start: int, audio_start: int) -> None:
    """Write the frame headers that fall inside this chunk, one byte column at a time.

    Extended-slice assignment does a whole chunk's worth of headers in C, which keeps the
    generator well above 100 MB/s; a header split across two chunks is handled because each
    of its four bytes is placed independently.
    """
    end = start + len(chunk)
    for offset, value in enumerate(FRAME_HEADER):
        first = audio_start + offset
        if first < start:
            first += -(-(start - first) // FRAME_LENGTH) * FRAME_LENGTH
        if first >= end:
            continue
        positions = range(first - start, len(chunk), FRAME_LENGTH)
        chunk[positions.start :: FRAME_LENGTH] = bytes((value,)) * len(positions)


def canary_body() -> bytes:
    """A small but plausible MP3, so a client that follows a bad url sees 'success'."""
    return b"".join(iter_body(0, "canary", 2 * 1024))
